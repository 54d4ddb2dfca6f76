//! `http`: one HTTP request. Success on 2xx; the result holds the status, selected headers and
//! up to 64 KiB of body. 429 and 5xx are retryable and honour `Retry-After`; other 4xx (and
//! 3xx left after redirects) fail without retry; a connection error is retryable.
//!
//! A job that names limits tells them what the upstream said: a 429 with `Retry-After` or
//! `X-RateLimit-Reset`, or any answer with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset`,
//! holds every limit the job names until then (on every instance), so the jobs behind it wait
//! instead of spending attempts on calls bound to be refused. `X-RateLimit-Reset` is read as
//! epoch seconds (GitHub, GitLab), or as seconds from now when it is too small to be a date.
//! `https://` URLs are verified against the webpki root certificates (rustls with ring).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use awc::http::{Method, StatusCode};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobContext, JobError};
use crate::queue::flow::MAX_HOLD;

/// Most body bytes kept in the result.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Response headers copied into the result.
const KEPT_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "cache-control",
];

thread_local! {
    /// One client per handler thread, so connections are pooled across the jobs of that
    /// thread (awc's client is not `Send`).
    static CLIENT: awc::Client = awc::Client::builder()
        .disable_timeout()
        .finish();
}

/// The payload: a request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRequest")]
pub struct HttpRequest {
    /// The HTTP method, upper-cased (default `GET`).
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Request headers, name to value (default none).
    pub headers: BTreeMap<String, String>,
    /// The request body: a JSON string is sent as is, as text; any other JSON value is sent as
    /// `application/json`; absent, no body is sent.
    pub body: Option<serde_json::Value>,
    /// Longest the request may take, in milliseconds (default 30000; at least 1).
    pub timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

fn get() -> String {
    "GET".into()
}

fn default_timeout() -> u64 {
    30_000
}

impl TryFrom<RawRequest> for HttpRequest {
    type Error = String;
    fn try_from(raw: RawRequest) -> Result<Self, String> {
        let method = raw.method.to_ascii_uppercase();
        Method::from_str(&method).map_err(|_| format!("'{}' is not an HTTP method", raw.method))?;
        let uri = awc::http::Uri::from_str(&raw.url)
            .map_err(|err| format!("url '{}' is invalid: {err}", raw.url))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err(format!(
                    "url '{}' must be an absolute http:// or https:// URL",
                    raw.url
                ))
            }
        }
        for (name, value) in &raw.headers {
            awc::http::header::HeaderName::from_str(name)
                .map_err(|_| format!("header name '{name}' is invalid"))?;
            awc::http::header::HeaderValue::from_str(value)
                .map_err(|_| format!("header '{name}' has an invalid value"))?;
        }
        if raw.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1".into());
        }
        Ok(HttpRequest {
            method,
            url: raw.url,
            headers: raw.headers,
            body: raw.body,
            timeout_ms: raw.timeout_ms,
        })
    }
}

/// The result of a successful request.
#[derive(Serialize, Deserialize)]
pub struct HttpResponse {
    /// The response's status code (always a 2xx: any other fails the attempt).
    pub status: u16,
    /// Those of the response's `content-type`, `content-length`, `etag`, `last-modified`,
    /// `location`, `retry-after` and `cache-control` headers it had, by lowercase name.
    pub headers: BTreeMap<String, String>,
    /// The body as text (lossy UTF-8), at most [`MAX_BODY_BYTES`].
    pub body: String,
    /// True when the body was longer than [`MAX_BODY_BYTES`] and was cut there.
    pub body_truncated: bool,
}

impl Job for HttpRequest {
    const KIND: &'static str = "http";
    type Output = HttpResponse;

    async fn run(self, ctx: JobContext) -> Result<HttpResponse, JobError> {
        let method =
            Method::from_str(&self.method).map_err(|_| JobError::fatal("invalid method"))?;
        let mut request = CLIENT
            .with(|client| client.request(method, &self.url))
            .timeout(Duration::from_millis(self.timeout_ms));
        for (name, value) in &self.headers {
            request = request.insert_header((name.as_str(), value.as_str()));
        }
        let send = async {
            match &self.body {
                None => request.send().await,
                Some(serde_json::Value::String(text)) => request.send_body(text.clone()).await,
                Some(json) => request.send_json(json).await,
            }
        };
        let mut response = tokio::select! {
            sent = send => sent.map_err(|err| JobError::retryable(format!("request failed: {err}")))?,
            _ = ctx.cancelled() => return Err(JobError::Cancelled),
        };
        let status = response.status();
        let headers: BTreeMap<String, String> = KEPT_HEADERS
            .iter()
            .filter_map(|&name| {
                let value = response.headers().get(name)?.to_str().ok()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect();
        let exhausted_until = exhausted_until(status, response.headers());
        if let Some(until) = exhausted_until.filter(|_| !ctx.limits().is_empty()) {
            for limit in ctx.limits() {
                ctx.limit_exhausted(limit, until);
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let limit = ctx.limits()[0].to_string();
                return Err(JobError::limit_exhausted(limit, until));
            }
        }
        if !status.is_success() {
            return Err(failure(status, headers.get("retry-after").map(String::as_str)));
        }
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.next().await {
            let chunk = chunk
                .map_err(|err| JobError::retryable(format!("reading the body failed: {err}")))?;
            let room = MAX_BODY_BYTES - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status: status.as_u16(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            body_truncated: truncated,
        })
    }
}

/// The error of a non-2xx answer: retryable for 429 and 5xx (not before `Retry-After`).
fn failure(status: StatusCode, retry_after: Option<&str>) -> JobError {
    let message = format!("HTTP {status}");
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        match retry_after.and_then(parse_retry_after) {
            Some(after) => JobError::retry_after(message, after),
            None => JobError::retryable(message),
        }
    } else {
        JobError::fatal(message)
    }
}

/// Until when the upstream allows no more calls, when it said so: a 429's `Retry-After` or
/// `X-RateLimit-Reset`, or `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` on any answer.
fn exhausted_until(
    status: StatusCode,
    headers: &awc::http::header::HeaderMap,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let now = chrono::Utc::now();
    // Never further than the longest hold (an absurd header cannot hold a limit for good, nor
    // overflow a date).
    let latest = now + chrono::Duration::from_std(MAX_HOLD).expect("a day fits");
    let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok()).and_then(|n| {
        // Epoch milliseconds or seconds, or seconds from now when too small to be a date.
        match n {
            n if n > 100_000_000_000 => chrono::DateTime::from_timestamp_millis(n),
            n if n > 1_000_000_000 => chrono::DateTime::from_timestamp(n, 0),
            n => now.checked_add_signed(chrono::Duration::seconds(n.clamp(0, 86_400))),
        }
    });
    let until = if status == StatusCode::TOO_MANY_REQUESTS {
        let after = header("retry-after").and_then(parse_retry_after);
        let after = after.map(|d| d.min(MAX_HOLD));
        let after = after.and_then(|d| chrono::Duration::from_std(d).ok()).map(|d| now + d);
        after.or(reset)
    } else {
        (header("x-ratelimit-remaining") == Some("0")).then_some(reset).flatten()
    };
    until.map(|until| until.min(latest))
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let delay = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delay.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<HttpRequest, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_plain_get_needs_only_a_url() {
        let req = parse(r#"{"url": "http://127.0.0.1:1/x"}"#).unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.timeout_ms, 30_000);
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert!(parse(r#"{"url": "/relative"}"#).unwrap_err().contains("must be an absolute"));
        assert!(parse(r#"{"url": "https://example.com/x"}"#).is_ok());
        assert!(parse(r#"{"url": "ftp://example.com/x"}"#)
            .unwrap_err()
            .contains("must be an absolute"));
        assert!(parse(r#"{"url": "http://x", "method": "GE T"}"#).unwrap_err().contains("method"));
        assert!(parse(r#"{"url": "http://x", "headers": {"bad name": "v"}}"#)
            .unwrap_err()
            .contains("header"));
    }

    #[test]
    fn retryable_statuses_honour_retry_after() {
        assert_eq!(
            failure(StatusCode::TOO_MANY_REQUESTS, Some("7")),
            JobError::retry_after("HTTP 429 Too Many Requests", Duration::from_secs(7))
        );
        assert!(matches!(failure(StatusCode::BAD_GATEWAY, None), JobError::Retryable { .. }));
        assert!(matches!(failure(StatusCode::NOT_FOUND, Some("5")), JobError::Fatal(_)));
    }

    #[test]
    fn an_upstream_that_says_stop_is_read() {
        use awc::http::header::{HeaderMap, HeaderName, HeaderValue};
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(HeaderName::from_static(name), HeaderValue::from_str(value).unwrap());
            }
            map
        };
        // GitHub's reset: epoch seconds, within the hour.
        let soon = (chrono::Utc::now() + chrono::Duration::minutes(30)).timestamp();
        let soon_text = soon.to_string();
        let reset = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &soon_text)]);
        let at = chrono::DateTime::from_timestamp(soon, 0);
        assert_eq!(exhausted_until(StatusCode::OK, &reset), at, "the last call allowed");
        let left = headers(&[("x-ratelimit-remaining", "5"), ("x-ratelimit-reset", &soon_text)]);
        assert_eq!(exhausted_until(StatusCode::OK, &left), None);
        let delay = headers(&[("retry-after", "30"), ("x-ratelimit-reset", &soon_text)]);
        let until = exhausted_until(StatusCode::TOO_MANY_REQUESTS, &delay).unwrap();
        let wait = until - chrono::Utc::now();
        assert!(wait <= chrono::Duration::seconds(30) && wait > chrono::Duration::seconds(25));
        let seconds = headers(&[("x-ratelimit-reset", "60")]);
        let until = exhausted_until(StatusCode::TOO_MANY_REQUESTS, &seconds).unwrap();
        assert!(until > chrono::Utc::now() + chrono::Duration::seconds(55), "seconds from now");
        assert_eq!(exhausted_until(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()), None);
        // Absurd answers hold a day at most, and never overflow a date.
        let day = chrono::Utc::now() + chrono::Duration::days(1) + chrono::Duration::seconds(5);
        for absurd in ["10000000000000", "99999999999999999"] {
            let huge = headers(&[("retry-after", absurd)]);
            let until = exhausted_until(StatusCode::TOO_MANY_REQUESTS, &huge).unwrap();
            assert!(until <= day, "{absurd}: {until}");
        }
        let millis_text = (soon * 1_000).to_string();
        let millis =
            headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &millis_text)]);
        assert_eq!(exhausted_until(StatusCode::OK, &millis), at, "epoch milliseconds");
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let delay = parse_retry_after(&later).unwrap();
        assert!(delay <= Duration::from_secs(30) && delay >= Duration::from_secs(25));
    }
}
