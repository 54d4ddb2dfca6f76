//! [`Tools`]: the service behind `/v1/tools` and the `tool.refresh` kind. It keeps tool
//! configurations and their state in the shared documents, creates and removes what a tool
//! owns in other layers (its limit, its schedule, its cache entries), and triggers refreshes.
//!
//! # At most one refresh per tool
//! Every trigger (a read of stale or missing data, `POST .../refresh`, a start finding nothing
//! cached) submits the refresh with the idempotency key `tool:<name>:<created ms>:<generation>`:
//! the generation is bumped by each refresh that ends, so every trigger that saw the same state
//! gets the same job back, on every instance. Scheduled refreshes come once per tick across
//! instances from the schedule's own key. The tool's limit has a concurrency of 1, so even a
//! tick and a trigger never call the upstream at once; and a refresh that starts after another
//! one ended since it was created skips the upstream altogether (see `refresh.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::recent::Recent;
use super::spec::{Tool, ToolSpec};
use super::state::{ServedCounters, ToolState};
use super::{data_key, limit_name, schedule_name, tag, REFRESH_KIND};
use crate::config::Config;
use crate::documents::{DocumentError, Documents, Namespace};
use crate::job::record::json_from_str;
use crate::job::JobSpec;
use crate::kinds::upstream::AllowedHosts;
use crate::queue::flow::{LimitSpec, Rate};
use crate::queue::{QueueError, SubmitResult};
use crate::runtime::{Client, RuntimeError};
use crate::schedule::ScheduleSpec;

/// Attempts of a refresh job: a failed upstream call is retried with backoff a couple of
/// times; a refusal for rate limiting is retried once its limit's hold ends.
pub const REFRESH_ATTEMPTS: u32 = 3;

/// Errors of the tools layer.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A field of the configuration is not acceptable.
    #[error("{message}")]
    Invalid {
        /// The field at fault (`url`, `headers.Authorization`, ...).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No tool has this name.
    #[error("no tool '{0}'")]
    NotFound(String),
    /// The document store failed.
    #[error(transparent)]
    Store(#[from] DocumentError),
    /// The runtime refused a limit, schedule or job of the tool.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl ToolError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ToolError::Invalid { field: field.into(), message: message.into() }
    }
}

/// A tool with its state, as `GET /v1/tools/{name}` shows it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct ToolView {
    /// The configuration.
    #[serde(flatten)]
    pub tool: Tool,
    /// The shared state, with the next scheduled refresh and this instance's serving counts.
    pub state: StateView,
}

/// The state part of [`ToolView`].
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct StateView {
    /// What the refreshes found out.
    #[serde(flatten)]
    pub shared: ToolState,
    /// The next scheduled refresh, if the tool has a schedule.
    pub next_refresh_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What this instance served of the tool.
    pub served: super::state::ServedCounts,
}

/// How long a read of a tool's data trusts this instance's copy of the tool's configuration.
/// A read must not cost a store lookup (a file read, or a Redis round trip and a parse) when
/// the data itself is in memory; a change made through another instance reaches this one's
/// reads within this time, and this instance's own changes at once.
const CONFIG_FOR: Duration = Duration::from_secs(1);

/// The tools service; cheap to clone (a runtime's client and its handlers share one).
#[derive(Clone)]
pub struct Tools {
    docs: Documents,
    secrets: Arc<[String]>,
    allowed_hosts: Option<AllowedHosts>,
    served: ServedCounters,
    /// The configurations reads trust, for [`Tools::for_read`].
    copies: Recent<Arc<Tool>>,
    /// The tools a stale read triggered a refresh of lately, for [`Tools::stale_trigger_due`].
    stale_triggers: Recent<()>,
    /// The values `.env.local` gives the listed secrets, read once at start (the process
    /// environment, read at each request, wins over them).
    file_secrets: Arc<HashMap<String, String>>,
}

impl Tools {
    /// The service over `docs`, with the secrets and allowed hosts of `config`.
    pub fn new(docs: Documents, config: &Config) -> Self {
        Tools {
            docs,
            secrets: config.tool_secrets.clone().into(),
            allowed_hosts: config.http_allowed_hosts.clone(),
            served: ServedCounters::default(),
            copies: Recent::new(CONFIG_FOR),
            file_secrets: Arc::new(file_secrets(&config.tool_secrets)),
            stale_triggers: Recent::new(CONFIG_FOR),
        }
    }

    /// Whether a stale read of tool `name` should trigger a refresh: not when one did less
    /// than [`CONFIG_FOR`] ago on this instance. Every trigger of one refresh answers the same
    /// job anyway; this spares a busy tool a task and a submit per read.
    pub fn stale_trigger_due(&self, name: &str) -> bool {
        if self.stale_triggers.get(name).is_some() {
            return false;
        }
        self.stale_triggers.note(name, ());
        true
    }

    /// The value of secret variable `name` (one of `JOBYARD_TOOL_SECRETS`): the process
    /// environment's, else `.env.local`'s as read at start.
    pub fn secret(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.file_secrets.get(name).cloned())
    }

    /// The hosts tools may call (`JOBYARD_HTTP_ALLOWED_HOSTS`); `None`: any.
    pub fn allowed_hosts(&self) -> Option<&AllowedHosts> {
        self.allowed_hosts.as_ref()
    }

    /// Tool `name` for a read of its data: this instance's copy while it is younger than
    /// [`CONFIG_FOR`], else read from the store (and copied).
    pub async fn for_read(&self, name: &str) -> Result<Arc<Tool>, ToolError> {
        if let Some(tool) = self.copies.get(name) {
            return Ok(tool);
        }
        let tool = Arc::new(self.require(name).await?);
        self.copies.note(name, tool.clone());
        Ok(tool)
    }

    /// Where tools, their state and user metadata are kept.
    pub fn documents(&self) -> &Documents {
        &self.docs
    }

    /// The variables headers may reference (`JOBYARD_TOOL_SECRETS`).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// This instance's serving counters.
    pub fn served(&self) -> &ServedCounters {
        &self.served
    }

    /// Tool `name`, or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<Tool>, ToolError> {
        super::spec::validate_name(name)?;
        Ok(self.docs.get(Namespace::Tools, name).await?)
    }

    /// Tool `name`, or [`ToolError::NotFound`].
    pub async fn require(&self, name: &str) -> Result<Tool, ToolError> {
        self.get(name).await?.ok_or_else(|| ToolError::NotFound(name.to_owned()))
    }

    /// Every tool, by name.
    pub async fn list(&self) -> Result<Vec<Tool>, ToolError> {
        Ok(self.docs.list(Namespace::Tools).await?.into_iter().map(|(_, tool)| tool).collect())
    }

    /// The shared state of tool `name` (the default before its first refresh).
    pub async fn state(&self, name: &str) -> Result<ToolState, ToolError> {
        Ok(self.docs.get(Namespace::ToolState, name).await?.unwrap_or_default())
    }

    /// Replaces the shared state of tool `name`.
    pub async fn save_state(&self, name: &str, state: &ToolState) -> Result<(), ToolError> {
        self.docs.put(Namespace::ToolState, name, state).await?;
        Ok(())
    }

    /// `tool` with its state, as shown.
    pub async fn view(&self, client: &Client, tool: Tool) -> Result<ToolView, ToolError> {
        let shared = self.state(&tool.name).await?;
        let next_refresh_at = match tool.refresh {
            Some(_) => match client.get_schedule(&schedule_name(&tool.name)).await {
                Ok(schedule) => schedule.next_run_at,
                Err(RuntimeError::Queue(QueueError::ScheduleNotFound(_))) => None,
                Err(err) => return Err(err.into()),
            },
            None => None,
        };
        let served = self.served.get(&tool.name);
        Ok(ToolView { tool, state: StateView { shared, next_refresh_at, served } })
    }

    /// Creates or replaces tool `name` with its limit and schedule; answers it and whether it
    /// was created. A tool whose upstream request changed loses its cached data and state,
    /// which described another request.
    pub async fn put(
        &self,
        client: &Client,
        name: &str,
        spec: ToolSpec,
    ) -> Result<(Tool, bool), ToolError> {
        let now = chrono::Utc::now();
        let mut tool = spec.validate(name, &self.secrets, self.allowed_hosts.as_ref(), now)?;
        let existing = self.get(name).await?;
        if let Some(old) = &existing {
            tool.created_at = old.created_at;
        }
        self.install(client, &tool).await?;
        let created = self.docs.put(Namespace::Tools, name, &tool).await?;
        self.copies.forget(name);
        let changed = existing.as_ref().is_some_and(|old| {
            (&old.url, &old.method, &old.headers) != (&tool.url, &tool.method, &tool.headers)
        });
        if changed {
            client.cache().invalidate_tags(&[tag(name)]).await;
            self.docs.delete(Namespace::ToolState, name).await?;
        }
        Ok((tool, created))
    }

    /// Creates or replaces what `tool` owns in the queue backend: its limit and its schedule.
    /// Idempotent (a replaced limit keeps what it counted), so a start may call it for every
    /// tool: the memory backend forgets limits and schedules when the process ends, while
    /// the tools themselves are kept in files.
    pub async fn install(&self, client: &Client, tool: &Tool) -> Result<(), ToolError> {
        let name = &tool.name;
        let rate = tool.rate_limit.map(|r| Rate { tokens: r.requests, per_ms: r.per_secs * 1_000 });
        client.put_limit(&limit_name(name), LimitSpec { rate, concurrency: Some(1) }).await?;
        match &tool.refresh {
            Some(cron) => {
                let spec = ScheduleSpec {
                    cron: cron.clone(),
                    timezone: None,
                    job: refresh_spec(name),
                    catch_up: false,
                };
                // Put again only when it differs: putting a schedule sets its next run anew,
                // so every start of a rolling restart would skip a tick that is due.
                let current = client.get_schedule(&schedule_name(name)).await.ok();
                let same = current.is_some_and(|s| {
                    (&s.cron, s.timezone.as_str(), s.catch_up) == (cron, "UTC", false)
                        && serde_json::to_value(&s.job).ok() == serde_json::to_value(&spec.job).ok()
                });
                if !same {
                    client.put_schedule(&schedule_name(name), spec).await?;
                }
            }
            None => ignore_missing(client.delete_schedule(&schedule_name(name)).await)?,
        }
        Ok(())
    }

    /// Removes tool `name` with its schedule, limit, cached data and state.
    pub async fn delete(&self, client: &Client, name: &str) -> Result<(), ToolError> {
        super::spec::validate_name(name)?;
        self.copies.forget(name);
        if !self.docs.delete(Namespace::Tools, name).await? {
            return Err(ToolError::NotFound(name.to_owned()));
        }
        ignore_missing(client.delete_schedule(&schedule_name(name)).await)?;
        ignore_missing(client.delete_limit(&limit_name(name)).await)?;
        client.cache().invalidate_tags(&[tag(name)]).await;
        self.docs.delete(Namespace::ToolState, name).await?;
        self.served.forget(name);
        Ok(())
    }

    /// Submits a refresh of `tool`, or gets back the one every trigger that saw `state` shares
    /// (see the module doc).
    pub async fn trigger(
        &self,
        client: &Client,
        tool: &Tool,
        state: &ToolState,
    ) -> Result<SubmitResult, ToolError> {
        let submitted = client.submit_spec(keyed_refresh(tool, state.generation)).await?;
        if submitted.created || !submitted.record.status.is_terminal() {
            return Ok(submitted);
        }
        // The job of this generation ended. When it moved the state on, it is the refresh this
        // trigger asked for (it just ran). When it did not (its attempt timed out, or the state
        // could not be saved), move the state on here, or every later trigger would get that
        // ended job back for as long as it is kept.
        let mut current = self.state(&tool.name).await?;
        if current.generation != state.generation {
            return Ok(submitted);
        }
        current.generation += 1;
        self.save_state(&tool.name, &current).await?;
        Ok(client.submit_spec(keyed_refresh(tool, current.generation)).await?)
    }

    /// At start: every tool's limit and schedule installed (see [`Tools::install`]), and a
    /// refresh of every tool with nothing cached, so that a fresh deployment has data at once
    /// (the data already in Redis is served as it is). `hot` lists the cache keys read most in
    /// the previous run, hottest first: the tools whose data was read most are refreshed
    /// first. Answers how many were refreshed.
    pub async fn start(&self, client: &Client, hot: &[String]) -> Result<usize, ToolError> {
        let mut tools = self.list().await?;
        let rank = |tool: &Tool| hot.iter().position(|k| *k == data_key(&tool.name));
        tools.sort_by_key(|tool| rank(tool).unwrap_or(usize::MAX));
        let mut triggered = 0;
        for tool in tools {
            self.install(client, &tool).await?;
            if client.cache().get(&data_key(&tool.name)).await.is_some() {
                continue;
            }
            let state = self.state(&tool.name).await?;
            self.trigger(client, &tool, &state).await?;
            triggered += 1;
        }
        Ok(triggered)
    }
}

/// What `.env.local` says of the `listed` variables (nothing when it cannot be read: the
/// configuration, read from the same file, has said why already).
fn file_secrets(listed: &[String]) -> HashMap<String, String> {
    let Ok(file) = crate::config::EnvVars::read() else { return HashMap::new() };
    listed.iter().filter_map(|name| Some((name.clone(), file.file_value(name)?))).collect()
}

/// The job a refresh of tool `name` is: under the tool's limit, a few attempts.
pub fn refresh_spec(name: &str) -> JobSpec {
    let payload = serde_json::json!({ "tool": name }).to_string();
    JobSpec {
        payload: Some(json_from_str(&payload).expect("valid JSON")),
        limits: Some(vec![limit_name(name)]),
        max_attempts: Some(REFRESH_ATTEMPTS),
        ..JobSpec::new(REFRESH_KIND)
    }
}

/// The refresh every trigger that saw `generation` shares.
fn keyed_refresh(tool: &Tool, generation: u64) -> JobSpec {
    let mut spec = refresh_spec(&tool.name);
    let created = tool.created_at.timestamp_millis();
    spec.idempotency_key = Some(format!("tool:{}:{created}:{generation}", tool.name));
    spec
}

/// A schedule or limit that is already gone is what removing it wants.
fn ignore_missing(result: Result<(), RuntimeError>) -> Result<(), ToolError> {
    match result {
        Ok(())
        | Err(RuntimeError::Queue(QueueError::ScheduleNotFound(_)))
        | Err(RuntimeError::Queue(QueueError::LimitNotFound(_))) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
