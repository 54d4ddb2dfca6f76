//! `http`: one HTTP request. Success on 2xx; the result holds the status, selected headers and
//! up to 64 KiB of body. 429 and 5xx are retryable and honour `Retry-After`; other 4xx (and
//! 3xx left after redirects) fail without retry; a connection error is retryable.
//!
//! A job that names limits tells them what the upstream said: a 429 (or a 403 with nothing
//! remaining) with `Retry-After` or a reset, or any answer with a remaining budget of 0 and a
//! reset, holds every limit the job names until then (on every instance), so the jobs behind it
//! wait instead of spending attempts on calls bound to be refused. The headers are read as
//! [`super::upstream::RateLimitInfo`] says. With `JOBYARD_HTTP_ALLOWED_HOSTS` set, a URL naming
//! another host is refused at submit, and redirects are not followed (a 3xx fails the job).
//! `https://` URLs are verified against the webpki root certificates (rustls with ring).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use awc::http::{Method, StatusCode};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::upstream::{parse_retry_after, AllowedHosts, RateLimitInfo};
use crate::job::{Job, JobContext, JobError};

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
    /// The same, following no redirect: used while `JOBYARD_HTTP_ALLOWED_HOSTS` is set, since
    /// a redirect could lead to a host outside the list.
    static CLIENT_NO_REDIRECTS: awc::Client = awc::Client::builder()
        .disable_timeout()
        .disable_redirects()
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
        // Checked here too, not only at submit: the job may have been submitted through an
        // instance without the list, or before it was set.
        let allowed_hosts = match ctx.extension::<AllowedHosts>() {
            Some(hosts) => {
                hosts.check(&self.url).map_err(JobError::fatal)?;
                true
            }
            None => false,
        };
        let client = if allowed_hosts { &CLIENT_NO_REDIRECTS } else { &CLIENT };
        let mut request = client
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
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let exhausted_until =
            RateLimitInfo::read(header, chrono::Utc::now()).exhausted_until(status.as_u16(), 0);
        if let Some(until) = exhausted_until.filter(|_| !ctx.limits().is_empty()) {
            for limit in ctx.limits() {
                ctx.limit_exhausted(limit, until);
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let limit = ctx.limits()[0].to_string();
                return Err(JobError::limit_exhausted(limit, until));
            }
        }
        if status.is_redirection() && allowed_hosts {
            let to = headers.get("location").map_or("nowhere", String::as_str);
            return Err(JobError::fatal(format!(
                "{status} to {to}: redirects are not followed while JOBYARD_HTTP_ALLOWED_HOSTS \
                 is set (a redirect could lead outside it); call the final URL"
            )));
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
}
