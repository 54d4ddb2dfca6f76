//! A tool's configuration: what `PUT /v1/tools/{name}` takes ([`ToolSpec`]), how it is checked
//! ([`ToolSpec::validate`]), and what is stored and shown ([`Tool`]). Header values are kept as
//! written, `${NAME}` references included (see [`super::secrets`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::manage::ToolError;
use super::secrets;
use crate::kinds::upstream::{host_of, AllowedHosts};
use crate::schedule::CronExpr;

/// Longest accepted URL, in bytes.
pub const MAX_URL_BYTES: usize = 2_048;
/// Most headers of one tool.
pub const MAX_HEADERS: usize = 32;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 8_192;
/// Longest `ttl_secs` or `stale_secs`: a year.
pub const MAX_SECS: u64 = 31_536_000;
/// Methods a tool may use: requests without a body.
const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "OPTIONS"];

/// Our own budget with an upstream, on top of what it enforces: at most `requests` refreshes
/// in any window of `per_secs` seconds (the rate of the tool's limit).
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests a window allows (1 to 1 000 000 000).
    pub requests: u64,
    /// The window, in seconds (1 to a year).
    pub per_secs: u64,
}

/// The body of `PUT /v1/tools/{name}`.
///
/// ```
/// use jobyard::tools::ToolSpec;
///
/// let spec: ToolSpec = serde_json::from_str(r#"{
///     "url": "https://api.github.com/repos/rust-lang/rust",
///     "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}"},
///     "refresh": "0 */5 * * * *",
///     "ttl_secs": 300,
///     "stale_secs": 600,
///     "rate_limit": {"requests": 60, "per_secs": 3600}
/// }"#)?;
/// assert_eq!(spec.method, None); // GET
/// # Ok::<(), serde_json::Error>(())
/// ```
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// The method (default `GET`): `GET`, `HEAD`, `POST` or `OPTIONS`, sent without a body.
    #[serde(default, deserialize_with = "crate::job::non_null::deserialize")]
    pub method: Option<String>,
    /// Request headers; values may reference `${NAME}` of a variable listed in
    /// `JOBYARD_TOOL_SECRETS`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Cron expression of the scheduled refreshes (with seconds, or five fields); none: the
    /// tool is refreshed only when read stale or empty, or on demand.
    #[serde(default, deserialize_with = "crate::job::non_null::deserialize")]
    pub refresh: Option<String>,
    /// How long fetched data is fresh, in seconds (default 300).
    #[serde(default, deserialize_with = "crate::job::non_null::deserialize")]
    pub ttl_secs: Option<u64>,
    /// How long after that it is still served, stale, while a refresh runs (default 0).
    #[serde(default, deserialize_with = "crate::job::non_null::deserialize")]
    pub stale_secs: Option<u64>,
    /// Our own budget with the upstream.
    #[serde(default, deserialize_with = "crate::job::non_null::deserialize")]
    pub rate_limit: Option<RateLimit>,
}

/// A stored tool, as `GET /v1/tools/{name}` shows it (its state aside).
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// The tool's name: 1 to 64 of `[a-z0-9_-]`.
    pub name: String,
    /// The upstream URL.
    pub url: String,
    /// The method, upper-case.
    pub method: String,
    /// Request headers, references unresolved.
    pub headers: BTreeMap<String, String>,
    /// Cron expression of the scheduled refreshes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// Seconds fetched data is fresh.
    pub ttl_secs: u64,
    /// Seconds it is served stale after that.
    pub stale_secs: u64,
    /// Our own budget with the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// When the tool was first stored (kept when replaced): refresh jobs of a tool deleted and
    /// created again do not share idempotency keys with the old one's.
    pub created_at: DateTime<Utc>,
    /// When it was last stored.
    pub updated_at: DateTime<Utc>,
}

/// Checks a tool name: the shared documents' rule.
pub fn validate_name(name: &str) -> Result<(), ToolError> {
    crate::metadata::validate_name(name)
        .map_err(|_| ToolError::invalid("name", "tool names are 1 to 64 of [a-z0-9_-]"))
}

impl ToolSpec {
    /// Checks every field (naming the one at fault) and builds the tool to store at `now`.
    pub fn validate(
        self,
        name: &str,
        secrets: &[String],
        allowed_hosts: Option<&AllowedHosts>,
        now: DateTime<Utc>,
    ) -> Result<Tool, ToolError> {
        validate_name(name)?;
        validate_url(&self.url, allowed_hosts)?;
        let method = self.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(ToolError::invalid("method", format!("method must be one of {METHODS:?}")));
        }
        validate_headers(&self.headers, secrets)?;
        if let Some(cron) = &self.refresh {
            CronExpr::parse(cron, None)
                .map_err(|err| ToolError::invalid("refresh", err.message.clone()))?;
        }
        let ttl_secs = self.ttl_secs.unwrap_or(300);
        if !(1..=MAX_SECS).contains(&ttl_secs) {
            return Err(ToolError::invalid(
                "ttl_secs",
                format!("ttl_secs must be 1 to {MAX_SECS}"),
            ));
        }
        let stale_secs = self.stale_secs.unwrap_or(0);
        if stale_secs > MAX_SECS {
            return Err(ToolError::invalid(
                "stale_secs",
                format!("stale_secs must be 0 to {MAX_SECS}"),
            ));
        }
        if let Some(rate) = self.rate_limit {
            if !(1..=crate::queue::flow::MAX_TOKENS).contains(&rate.requests) {
                return Err(ToolError::invalid(
                    "rate_limit.requests",
                    "rate_limit.requests must be 1 to 1000000000",
                ));
            }
            if !(1..=MAX_SECS).contains(&rate.per_secs) {
                return Err(ToolError::invalid(
                    "rate_limit.per_secs",
                    format!("rate_limit.per_secs must be 1 to {MAX_SECS}"),
                ));
            }
        }
        Ok(Tool {
            name: name.to_owned(),
            url: self.url,
            method,
            headers: self.headers,
            refresh: self.refresh,
            ttl_secs,
            stale_secs,
            rate_limit: self.rate_limit,
            created_at: now,
            updated_at: now,
        })
    }
}

/// An absolute http(s) URL naming an allowed host. Also what the `http` kind checks at submit.
pub fn validate_url(url: &str, allowed_hosts: Option<&AllowedHosts>) -> Result<(), ToolError> {
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if url.len() > MAX_URL_BYTES
        || !scheme_ok
        || host_of(url).is_none()
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ToolError::invalid(
            "url",
            format!(
                "url must be an absolute http:// or https:// URL of at most {MAX_URL_BYTES} bytes"
            ),
        ));
    }
    if let Some(allowed) = allowed_hosts {
        allowed.check(url).map_err(|why| ToolError::invalid("url", why))?;
    }
    Ok(())
}

fn validate_headers(
    headers: &BTreeMap<String, String>,
    secrets: &[String],
) -> Result<(), ToolError> {
    if headers.len() > MAX_HEADERS {
        return Err(ToolError::invalid("headers", format!("at most {MAX_HEADERS} headers")));
    }
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            return Err(ToolError::invalid(field, format!("header name '{name}' is invalid")));
        }
        let printable = value.chars().all(|c| c == '\t' || (' '..='~').contains(&c));
        if value.len() > MAX_HEADER_VALUE_BYTES || !printable {
            return Err(ToolError::invalid(
                field,
                format!("header '{name}' must be printable ASCII of at most {MAX_HEADER_VALUE_BYTES} bytes"),
            ));
        }
        secrets::check(value, secrets)
            .map_err(|err| ToolError::invalid(field, format!("header '{name}': {err}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ToolSpec {
        serde_json::from_value(json).unwrap()
    }

    fn field(result: Result<Tool, ToolError>) -> String {
        match result {
            Err(ToolError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_tool_needs_only_a_url_and_bad_fields_are_named() {
        let now = Utc::now();
        let ok = spec(serde_json::json!({"url": "http://127.0.0.1:1/x"}));
        let tool = ok.validate("gh", &[], None, now).unwrap();
        assert_eq!((tool.method.as_str(), tool.ttl_secs, tool.stale_secs), ("GET", 300, 0));
        let bad = |json, allowed: Option<&AllowedHosts>| {
            field(spec(json).validate("gh", &["TOKEN".to_owned()], allowed, now))
        };
        assert_eq!(bad(serde_json::json!({"url": "ftp://x/"}), None), "url");
        let hosts = AllowedHosts::parse("api.github.com");
        assert_eq!(bad(serde_json::json!({"url": "http://127.0.0.1/"}), Some(&hosts)), "url");
        assert_eq!(bad(serde_json::json!({"url": "http://x/", "method": "PUT"}), None), "method");
        assert_eq!(
            bad(serde_json::json!({"url": "http://x/", "refresh": "nope"}), None),
            "refresh"
        );
        assert_eq!(bad(serde_json::json!({"url": "http://x/", "ttl_secs": 0}), None), "ttl_secs");
        let secret = serde_json::json!({"url": "http://x/", "headers": {"A": "${REDIS_URL}"}});
        assert_eq!(bad(secret, None), "headers.A");
        let rate =
            serde_json::json!({"url": "http://x/", "rate_limit": {"requests": 0, "per_secs": 1}});
        assert_eq!(bad(rate, None), "rate_limit.requests");
        let listed = spec(serde_json::json!({"url": "http://x/", "headers": {"A": "${TOKEN}"}}));
        assert!(listed.validate("gh", &["TOKEN".to_owned()], None, now).is_ok());
        assert_eq!(
            field(ToolSpec { ..spec(serde_json::json!({"url": "http://x/"})) }.validate(
                "Bad Name",
                &[],
                None,
                now
            )),
            "name"
        );
    }
}
