//! `tool.refresh`: one conditional request to a tool's upstream, its answer kept in the cache.
//!
//! - The request carries `If-None-Match` / `If-Modified-Since` from the upstream validators
//!   of the cached data (when the cache still holds those bytes); header references are
//!   resolved here, at request time, and nowhere else.
//! - 2xx: the body, its content type and the upstream's validators are stored under
//!   `tool:<name>:data`, tagged `tool:<name>`, for `ttl_secs + stale_secs`. 304: the cached
//!   bytes are stored again with their freshness extended (their `Last-Modified` kept).
//! - The upstream's rate-limit headers are recorded in the tool's state. When nothing remains
//!   (`X-RateLimit-Remaining: 0` or `RateLimit-Remaining: 0`), or on a 429 (or a 403 with
//!   nothing remaining), the tool's limit is held until the reset or `Retry-After`, on every
//!   instance, so that no refresh calls the upstream before then; a refused refresh is
//!   retried once the hold ends instead of blindly.
//! - A refresh created before another one succeeded skips the upstream: its data is already
//!   as new as it could make it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::freshness;
use super::manage::Tools;
use super::secrets;
use super::spec::Tool;
use super::state::ToolState;
use super::{data_key, limit_name};
use crate::cache::{CacheHandle, Entry};
use crate::events::{EventHub, RefreshOutcome as Refreshed, ToolRefresh};
use crate::job::{Job, JobContext, JobError, JobId};
use crate::kinds::upstream::RateLimitInfo;

/// Longest an upstream request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest upstream body kept.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// A refresh refused for rate limiting without a time to retry at waits this long.
const DEFAULT_HOLD: chrono::Duration = chrono::Duration::seconds(60);

thread_local! {
    /// One client per handler thread, so connections are pooled across refreshes (awc's
    /// client is not `Send`). Unlike the `http` kind's, it follows no redirect: a tool names
    /// its URL, and a redirect could lead its headers (and their secrets) to a host outside
    /// `JOBYARD_HTTP_ALLOWED_HOSTS`. A 3xx is a failed refresh that says so.
    static CLIENT: awc::Client = awc::Client::builder()
        .disable_timeout()
        .disable_redirects()
        .finish();
}

/// The payload: which tool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshTool {
    /// The tool's name.
    pub tool: String,
}

/// The result of a refresh.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RefreshOutcome {
    /// The upstream's status; `None` when no request was made.
    pub status: Option<u16>,
    /// Whether the cached data changed.
    pub changed: bool,
    /// Why no request was made, when none was (the tool is gone, or a newer refresh did it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl RefreshOutcome {
    fn skipped(why: &str) -> Self {
        RefreshOutcome { skipped: Some(why.to_owned()), ..Self::default() }
    }
}

impl Job for RefreshTool {
    const KIND: &'static str = super::REFRESH_KIND;
    type Output = RefreshOutcome;

    async fn run(self, ctx: JobContext) -> Result<RefreshOutcome, JobError> {
        let tools = ctx.extension::<Tools>().ok_or_else(|| JobError::fatal("no tools service"))?;
        let cache = ctx.extension::<CacheHandle>().ok_or_else(|| JobError::fatal("no cache"))?;
        let Some(tool) = tools.get(&self.tool).await? else {
            return Ok(RefreshOutcome::skipped("the tool no longer exists"));
        };
        let mut state = tools.state(&tool.name).await?;
        let cached = cache.get(&data_key(&tool.name)).await;
        let newer = state.last_success_at.is_some_and(|at| at > created_at(ctx.job_id()));
        if cached.is_some() && newer && state.last_job_id != Some(ctx.job_id()) {
            return Ok(RefreshOutcome::skipped("a later refresh already ran"));
        }
        let conditional = cached
            .as_deref()
            .filter(|entry| state.upstream.for_etag.as_deref() == Some(entry.etag.as_str()));
        let started = Instant::now();
        let answer = tokio::select! {
            answer = request(&tool, tools, conditional.map(|_| &state)) => answer,
            _ = ctx.cancelled() => return Err(JobError::Cancelled),
        };
        // Deleted (or deleted and created again), or given another request, while the request
        // ran: what it brought belongs to no tool as it is now, and storing it would bring back
        // data and state the change removed.
        let current = tools.get(&tool.name).await?;
        let same = |current: &Tool| {
            current.created_at == tool.created_at
                && (&current.url, &current.method, &current.headers)
                    == (&tool.url, &tool.method, &tool.headers)
        };
        if !current.as_ref().is_some_and(same) {
            return Ok(RefreshOutcome::skipped(
                "the tool was deleted or changed during the request",
            ));
        }
        let now = Utc::now();
        state.last_refresh_at = Some(now);
        state.last_job_id = Some(ctx.job_id());
        state.last_duration_ms = Some(started.elapsed().as_millis() as u64);
        metrics::histogram!("jobyard_tool_refresh_seconds", "tool" => tool.name.clone())
            .record(started.elapsed().as_secs_f64());
        let outcome = match answer {
            Err(failure) => {
                state.requests.errors += 1;
                Err(failure)
            }
            Ok(answer) => settle(&ctx, &tool, &mut state, cached, answer, cache, now).await,
        };
        if let Err(err) = &outcome {
            state.last_error = Some(err.to_string());
            state.last_error_at = Some(now);
        }
        // A refresh that will be retried is still the one in flight: triggers keep sharing
        // it (through the generation in their idempotency key) rather than adding another
        // call to a failing upstream. Once it ended, the next trigger makes a new one.
        let retried =
            matches!(outcome, Err(JobError::Retryable { .. } | JobError::LimitExhausted { .. }))
                && ctx.attempt() < ctx.max_attempts();
        if !retried {
            state.generation += 1;
        }
        tools.save_state(&tool.name, &state).await?;
        if let Some(events) = ctx.extension::<EventHub>() {
            events.tool(announced(&tool.name, &outcome, now));
        }
        outcome
    }
}

/// A refresh's end as the event stream announces it.
fn announced(
    name: &str,
    outcome: &Result<RefreshOutcome, JobError>,
    at: DateTime<Utc>,
) -> ToolRefresh {
    let (outcome, error) = match outcome {
        Ok(RefreshOutcome { status: Some(304), .. }) => (Refreshed::NotModified, None),
        Ok(_) => (Refreshed::Refreshed, None),
        Err(err) => (Refreshed::Failed, Some(err.to_string())),
    };
    ToolRefresh { name: name.to_owned(), outcome, error, at }
}

/// What the upstream answered.
struct Answer {
    status: StatusCode,
    rate: RateLimitInfo,
    content_type: String,
    etag: Option<String>,
    last_modified: Option<String>,
    body: Vec<u8>,
}

/// Sends the request: `validators` make it conditional. The allowed hosts are checked here
/// too, not only when the tool was stored: another instance, or this one before the list was
/// set, may have stored it.
async fn request(
    tool: &Tool,
    tools: &Tools,
    validators: Option<&ToolState>,
) -> Result<Answer, JobError> {
    if let Some(hosts) = tools.allowed_hosts() {
        hosts.check(&tool.url).map_err(JobError::fatal)?;
    }
    let method = Method::from_bytes(tool.method.as_bytes())
        .map_err(|_| JobError::fatal(format!("invalid method '{}'", tool.method)))?;
    let mut request = CLIENT.with(|c| c.request(method, &tool.url)).timeout(REQUEST_TIMEOUT);
    for (name, value) in &tool.headers {
        let value = secrets::resolve(value, tools.secrets(), |var| tools.secret(var))
            .map_err(|err| JobError::fatal(format!("header '{name}': {err}")))?;
        request = request.insert_header((name.as_str(), value));
    }
    if let Some(state) = validators {
        if let Some(etag) = &state.upstream.etag {
            request = request.insert_header(("if-none-match", etag.as_str()));
        }
        if let Some(modified) = &state.upstream.last_modified {
            request = request.insert_header(("if-modified-since", modified.as_str()));
        }
    }
    let mut response = request
        .send()
        .await
        .map_err(|err| JobError::retryable(format!("request failed: {err}")))?;
    let header =
        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let rate = {
        let headers = response.headers();
        RateLimitInfo::read(|n| headers.get(n).and_then(|v| v.to_str().ok()), Utc::now())
    };
    let content_type = header("content-type").unwrap_or_else(|| "application/octet-stream".into());
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let status = response.status();
    let body = if status.is_success() {
        response
            .body()
            .limit(MAX_BODY_BYTES)
            .await
            .map_err(|err| JobError::retryable(format!("reading the body failed: {err}")))?
            .to_vec()
    } else {
        Vec::new()
    };
    Ok(Answer { status, rate, content_type, etag, last_modified, body })
}

/// Records what the upstream said and keeps its data.
async fn settle(
    ctx: &JobContext,
    tool: &Tool,
    state: &mut ToolState,
    cached: Option<Arc<Entry>>,
    answer: Answer,
    cache: &CacheHandle,
    now: DateTime<Utc>,
) -> Result<RefreshOutcome, JobError> {
    let status = answer.status;
    let limit = limit_name(&tool.name);
    state.last_status = Some(status.as_u16());
    state.rate_limit.remaining = answer.rate.remaining;
    state.rate_limit.reset_at = answer.rate.reset;
    // Held when nothing remains: the call after this one would be refused.
    let refused = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && answer.rate.remaining == Some(0));
    let mut hold = answer.rate.exhausted_until(status.as_u16(), 0);
    if refused {
        hold = Some(hold.unwrap_or(now + DEFAULT_HOLD));
    }
    if let Some(until) = hold.filter(|until| *until > now) {
        ctx.limit_exhausted(&limit, until);
        state.rate_limit.held_until = Some(until);
    }
    let key = data_key(&tool.name);
    if status.is_success() {
        let value: Arc<[u8]> = answer.body.into();
        let changed = cached.as_ref().is_none_or(|old| *old.value != *value);
        let changed_at = match &cached {
            Some(old) if !changed => old.stored_at,
            _ => now,
        };
        let entry = freshness::entry(tool, value, answer.content_type, changed_at, now);
        state.upstream.for_etag = Some(entry.etag.clone());
        state.upstream.etag = answer.etag;
        state.upstream.last_modified = answer.last_modified;
        cache.set(&key, entry).await;
        succeeded(state, now);
        state.requests.ok += 1;
        return Ok(RefreshOutcome { status: Some(status.as_u16()), changed, skipped: None });
    }
    if status == StatusCode::NOT_MODIFIED {
        let Some(old) = cached else {
            // The data went while the request ran: ask again, unconditionally.
            state.upstream = Default::default();
            state.requests.errors += 1;
            return Err(JobError::retryable("HTTP 304 without cached data to keep"));
        };
        let content_type = old.content_type.clone();
        let entry = freshness::entry(tool, old.value.clone(), content_type, old.stored_at, now);
        cache.set(&key, entry).await;
        succeeded(state, now);
        state.requests.not_modified += 1;
        return Ok(RefreshOutcome { status: Some(304), changed: false, skipped: None });
    }
    if refused {
        state.requests.rate_limited += 1;
        let until = state.rate_limit.held_until.unwrap_or(now + DEFAULT_HOLD);
        return Err(JobError::limit_exhausted(limit, until));
    }
    state.requests.errors += 1;
    let mut message = format!("HTTP {status}");
    if status.is_redirection() {
        message.push_str(" (redirects are not followed: give the tool the final URL)");
    }
    if status.is_server_error() {
        Err(JobError::retryable(message))
    } else {
        Err(JobError::fatal(message))
    }
}

fn succeeded(state: &mut ToolState, now: DateTime<Utc>) {
    state.last_success_at = Some(now);
    state.last_error = None;
    state.last_error_at = None;
}

/// When job `id` was created: its id is a UUIDv7, whose first bits are that time.
fn created_at(id: JobId) -> DateTime<Utc> {
    id.0.get_timestamp()
        .and_then(|ts| {
            let (secs, nanos) = ts.to_unix();
            DateTime::from_timestamp(secs as i64, nanos)
        })
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
