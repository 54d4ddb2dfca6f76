//! Every Redis key and channel jobyard uses, built in one place under `JOBYARD_REDIS_PREFIX`.

/// Builds the keys of one deployment.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_owned() }
    }

    /// A cache entry's value (header + bytes), with the entry's TTL.
    pub fn cache_value(&self, key: &str) -> String {
        format!("{}:cache:v:{key}", self.prefix)
    }

    /// The start of every cache value key; the cache key follows it.
    pub fn cache_value_prefix(&self) -> String {
        format!("{}:cache:v:", self.prefix)
    }

    /// A `SCAN MATCH` pattern for the values whose cache keys start with `prefix`.
    pub fn cache_value_pattern(&self, prefix: &str) -> String {
        format!("{}{}*", glob_escape(&self.cache_value_prefix()), glob_escape(prefix))
    }

    /// The set of cache keys that name `tag`.
    pub fn cache_tag(&self, tag: &str) -> String {
        format!("{}:cache:t:{tag}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every tag set.
    pub fn cache_tag_pattern(&self) -> String {
        format!("{}*", glob_escape(&format!("{}:cache:t:", self.prefix)))
    }

    /// The pub/sub channel of cache invalidations.
    pub fn cache_events(&self) -> String {
        format!("{}:cache:events", self.prefix)
    }
}

/// Escapes the glob metacharacters of `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys::new("jy-test");
        assert_eq!(keys.cache_value("tool:github"), "jy-test:cache:v:tool:github");
        assert_eq!(keys.cache_tag("github"), "jy-test:cache:t:github");
        assert_eq!(keys.cache_events(), "jy-test:cache:events");
    }

    #[test]
    fn patterns_escape_glob_characters() {
        let keys = Keys::new("p*");
        assert_eq!(keys.cache_value_pattern("a?[b]"), r"p\*:cache:v:a\?\[b\]*");
    }
}
