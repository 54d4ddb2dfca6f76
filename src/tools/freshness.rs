//! How old a tool's cached data is, and whether it is fresh or stale.
//!
//! The cache entry carries it all, so a read needs nothing else: a refresh stores the data with
//! `stored_at` = when the bytes last changed (the `Last-Modified` served) and `expires_at` =
//! when they were last confirmed by the upstream + `ttl_secs` + `stale_secs`. So the data was
//! confirmed at `expires_at - ttl - stale`, is fresh for `ttl` after that, and served stale
//! until it expires from the cache.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::spec::Tool;
use crate::cache::Entry;

/// The cache entry of freshly fetched or confirmed data.
pub fn entry(
    tool: &Tool,
    value: std::sync::Arc<[u8]>,
    content_type: String,
    changed_at: DateTime<Utc>,
    confirmed_at: DateTime<Utc>,
) -> Entry {
    let lifetime = Duration::from_secs(tool.ttl_secs + tool.stale_secs);
    let lifetime = chrono::Duration::from_std(lifetime).expect("at most two years");
    let mut entry = Entry::new(value, content_type, Duration::ZERO, vec![super::tag(&tool.name)]);
    entry.stored_at = changed_at;
    entry.expires_at = confirmed_at + lifetime;
    entry
}

/// Where a cached answer stands at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Seconds since the upstream last gave or confirmed the data (`Age`).
    pub age_secs: u64,
    /// Seconds it stays fresh (`max-age` left); 0 once stale.
    pub fresh_for_secs: u64,
    /// Whether it is past its `ttl_secs`.
    pub stale: bool,
}

impl Freshness {
    /// Of `entry`, a tool's data, at `now`.
    pub fn of(tool: &Tool, entry: &Entry, now: DateTime<Utc>) -> Self {
        let lifetime = chrono::Duration::seconds((tool.ttl_secs + tool.stale_secs) as i64);
        let confirmed = entry.expires_at - lifetime;
        let fresh_until = confirmed + chrono::Duration::seconds(tool.ttl_secs as i64);
        let age = (now - confirmed).num_seconds().max(0) as u64;
        let fresh_for = (fresh_until - now).num_seconds().max(0) as u64;
        Freshness { age_secs: age, fresh_for_secs: fresh_for, stale: now >= fresh_until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_fresh_for_its_ttl_then_stale_until_it_expires() {
        let tool: Tool = serde_json::from_value(serde_json::json!({
            "name": "gh", "url": "http://x/", "method": "GET", "headers": {},
            "ttl_secs": 10, "stale_secs": 20,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        let t0 = Utc::now();
        let changed = t0 - chrono::Duration::seconds(100);
        let entry = entry(&tool, b"x".to_vec().into(), "text/plain".into(), changed, t0);
        assert_eq!(entry.stored_at, changed);
        let at = |s| Freshness::of(&tool, &entry, t0 + chrono::Duration::seconds(s));
        assert_eq!(at(3), Freshness { age_secs: 3, fresh_for_secs: 7, stale: false });
        assert_eq!(at(12), Freshness { age_secs: 12, fresh_for_secs: 0, stale: true });
        assert!(entry.is_live(t0 + chrono::Duration::seconds(29)));
        assert!(!entry.is_live(t0 + chrono::Duration::seconds(30)));
    }
}
