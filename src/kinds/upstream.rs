//! What every call to an upstream HTTP API shares, whoever makes it (the `http` kind, a tool's
//! refresh): which hosts may be called at all (`JOBYARD_HTTP_ALLOWED_HOSTS`), and what an
//! upstream says about its rate limit (`X-RateLimit-*`, `RateLimit-*`, `Retry-After`).
//!
//! Nothing here sends a request: the functions read a URL or a header lookup, so they build
//! without an HTTP client and are tested as plain functions.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::queue::flow::MAX_HOLD;

/// The hosts upstream calls may name (`JOBYARD_HTTP_ALLOWED_HOSTS`); `None` in
/// [`AllowedHosts::check`]'s caller means any host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// From the variable's value: comma-separated hosts, case-insensitive, blanks ignored.
    pub fn parse(raw: &str) -> Self {
        AllowedHosts(
            raw.split(',')
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }

    /// The hosts, lowercase.
    pub fn hosts(&self) -> &[String] {
        &self.0
    }

    /// The first entry that is not a bare host (a scheme, a port, a path or a user would
    /// never match a URL's host, so the list would refuse what it seems to allow).
    pub fn not_a_host(&self) -> Option<&str> {
        self.0.iter().map(String::as_str).find(|entry| {
            let colons = entry.matches(':').count();
            entry.contains(['/', '@', '?', '#', ' ', '[', ']']) || colons == 1
        })
    }

    /// Ok when `url` names one of the hosts; the error says which host was refused.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let host = host_of(url).ok_or_else(|| format!("url '{url}' names no host"))?;
        if self.0.contains(&host) {
            Ok(())
        } else {
            Err(format!("host '{host}' is not in JOBYARD_HTTP_ALLOWED_HOSTS"))
        }
    }
}

/// The host of an absolute `scheme://[user@]host[:port]/...` URL, lowercase, without brackets
/// around an IPv6 address. A hand-made parse, since the leanest build has no URL crate; it
/// only has to agree with what the HTTP client connects to for the URLs the kinds accept
/// (absolute http and https URLs).
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    // The last `@` ends the user info (a password may hold `@` only escaped, but be safe).
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        host_port.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// What an answer said about the caller's budget with the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Calls left in the current window (`X-RateLimit-Remaining` or `RateLimit-Remaining`).
    pub remaining: Option<u64>,
    /// When the window resets (`X-RateLimit-Reset` or `RateLimit-Reset`).
    pub reset: Option<DateTime<Utc>>,
    /// When a refused call may be made again (`Retry-After`).
    pub retry_after: Option<DateTime<Utc>>,
}

impl RateLimitInfo {
    /// Reads the headers through `header` (a lookup by lowercase name) at `now`.
    ///
    /// `X-RateLimit-Reset` is epoch seconds (GitHub, GitLab), epoch milliseconds, or seconds
    /// from now when too small to be a date; `RateLimit-Reset` (the IETF draft) is seconds
    /// from now. Every time is cut to [`MAX_HOLD`] ahead, so an absurd header can neither hold
    /// a limit for good nor overflow a date.
    pub fn read<'a>(header: impl Fn(&str) -> Option<&'a str>, now: DateTime<Utc>) -> Self {
        let latest = now + chrono::Duration::from_std(MAX_HOLD).expect("a day fits");
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<i64>().ok());
        let remaining = number("x-ratelimit-remaining")
            .or_else(|| number("ratelimit-remaining"))
            .map(|n| n.max(0) as u64);
        let reset = number("x-ratelimit-reset")
            .and_then(|n| reset_time(n, now))
            .or_else(|| number("ratelimit-reset").and_then(|n| seconds_from(now, n)));
        let retry_after = header("retry-after")
            .and_then(parse_retry_after)
            .map(|d| d.min(MAX_HOLD))
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d);
        RateLimitInfo {
            remaining,
            reset: reset.map(|t| t.min(latest)),
            retry_after: retry_after.map(|t| t.min(latest)),
        }
    }

    /// Until when the upstream allows no more calls, when it said so: a refusal's (429, or
    /// 403 with nothing remaining) `Retry-After` or reset, or a reset when at most `threshold`
    /// calls remain on any answer.
    pub fn exhausted_until(&self, status: u16, threshold: u64) -> Option<DateTime<Utc>> {
        let out = self.remaining.is_some_and(|left| left <= threshold);
        let refused = status == 429 || (status == 403 && self.remaining == Some(0));
        if refused {
            self.retry_after.or(self.reset)
        } else if out {
            self.reset
        } else {
            None
        }
    }
}

/// `X-RateLimit-Reset`: epoch milliseconds or seconds, or seconds from now when too small to be
/// a date.
fn reset_time(n: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match n {
        n if n > 100_000_000_000 => DateTime::from_timestamp_millis(n),
        n if n > 1_000_000_000 => DateTime::from_timestamp(n, 0),
        n => seconds_from(now, n),
    }
}

fn seconds_from(now: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
    now.checked_add_signed(chrono::Duration::seconds(n.clamp(0, 86_400)))
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let delay = at.with_timezone(&Utc) - Utc::now();
    Some(delay.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> RateLimitInfo {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        RateLimitInfo::read(
            |name| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()),
            Utc::now(),
        )
    }

    #[test]
    fn hosts_are_read_from_urls_and_checked() {
        assert_eq!(host_of("https://API.github.com/repos?x=1").as_deref(), Some("api.github.com"));
        assert_eq!(host_of("http://user:pw@127.0.0.1:8080/x").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(host_of("http://evil.com#@good.com/").as_deref(), Some("evil.com"));
        assert_eq!(host_of("/relative"), None);
        let allowed = AllowedHosts::parse(" api.github.com, 127.0.0.1 ,,");
        assert_eq!(allowed.hosts().len(), 2);
        assert!(allowed.check("https://api.github.com/x").is_ok());
        assert!(allowed.check("http://127.0.0.1:9/x").is_ok());
        let err = allowed.check("http://169.254.169.254/latest").unwrap_err();
        assert!(err.contains("169.254.169.254"), "{err}");
    }

    #[test]
    fn an_upstream_that_says_stop_is_read() {
        // GitHub's reset: epoch seconds, within the hour.
        let soon = (Utc::now() + chrono::Duration::minutes(30)).timestamp();
        let soon_text = soon.to_string();
        let at = DateTime::from_timestamp(soon, 0);
        let info = read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &soon_text)]);
        assert_eq!(info.exhausted_until(200, 0), at, "the last call allowed");
        let left = read(&[("x-ratelimit-remaining", "5"), ("x-ratelimit-reset", &soon_text)]);
        assert_eq!(left.exhausted_until(200, 0), None);
        assert_eq!(left.exhausted_until(200, 5), at, "at the threshold");
        let delay = read(&[("retry-after", "30"), ("x-ratelimit-reset", &soon_text)]);
        let wait = delay.exhausted_until(429, 0).unwrap() - Utc::now();
        assert!(wait <= chrono::Duration::seconds(30) && wait > chrono::Duration::seconds(25));
        let seconds = read(&[("x-ratelimit-reset", "60")]);
        let until = seconds.exhausted_until(429, 0).unwrap();
        assert!(until > Utc::now() + chrono::Duration::seconds(55), "seconds from now");
        assert_eq!(read(&[]).exhausted_until(429, 0), None);
        // The IETF draft's fields; a 403 with nothing left is a refusal too.
        let draft = read(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "10")]);
        assert_eq!(draft.remaining, Some(0));
        assert!(draft.exhausted_until(403, 0).is_some());
        assert_eq!(read(&[("ratelimit-remaining", "3")]).exhausted_until(403, 0), None);
        // Absurd answers hold a day at most, and never overflow a date.
        let day = Utc::now() + chrono::Duration::days(1) + chrono::Duration::seconds(5);
        for absurd in ["10000000000000", "99999999999999999"] {
            let until = read(&[("retry-after", absurd)]).exhausted_until(429, 0).unwrap();
            assert!(until <= day, "{absurd}: {until}");
        }
        let millis_text = (soon * 1_000).to_string();
        let millis = read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &millis_text)]);
        assert_eq!(millis.exhausted_until(200, 0), at, "epoch milliseconds");
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        let later = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let delay = parse_retry_after(&later).unwrap();
        assert!(delay <= Duration::from_secs(30) && delay >= Duration::from_secs(25));
    }
}
