//! Where the configuration comes from: the process environment over `.env.local` in the
//! working directory, the list of variables jobyard reads, and the warnings about `JOBYARD_*`
//! variables set that it does not read.

use std::collections::HashMap;

use super::ConfigError;

/// Every variable the configuration reads (a test checks this list against what
/// [`Config::from_lookup`] asks for).
pub const VARIABLES: &[&str] = &[
    "REDIS_URL",
    "JOBYARD_ACCEPT_KINDS",
    "JOBYARD_ADDR",
    "JOBYARD_API_TOKEN",
    "JOBYARD_BLOCKING_THRESHOLD_MS",
    "JOBYARD_CACHE_BACKEND",
    "JOBYARD_CACHE_COMPRESS_MIN_BYTES",
    "JOBYARD_CACHE_MAX_BYTES",
    "JOBYARD_CACHE_TTL_SECS",
    "JOBYARD_CANCEL_GRACE_MS",
    "JOBYARD_CONCURRENCY",
    "JOBYARD_DATA_DIR",
    "JOBYARD_HTTP_ALLOWED_HOSTS",
    "JOBYARD_INSTANCE",
    "JOBYARD_LEASE_MS",
    "JOBYARD_LOG_FORMAT",
    "JOBYARD_MAX_BODY_BYTES",
    "JOBYARD_MAX_CONNECTIONS_PER_PEER",
    "JOBYARD_MAX_QUEUED",
    "JOBYARD_MAX_RESULT_BYTES",
    "JOBYARD_QUEUE_BACKEND",
    "JOBYARD_QUEUE_TIMEOUT_MS",
    "JOBYARD_REDIS_POOL_SIZE",
    "JOBYARD_REDIS_PREFIX",
    "JOBYARD_RETENTION_MAX_JOBS",
    "JOBYARD_RETENTION_SECS",
    "JOBYARD_SHUTDOWN_GRACE_MS",
    "JOBYARD_TOOL_SECRETS",
    "JOBYARD_UI",
    "JOBYARD_URL",
    "JOBYARD_WORKER_THREADS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// A warning for each `JOBYARD_*` variable among `names` that jobyard does not read (a typo
/// would otherwise be silently ignored), naming the closest one it reads when one is close.
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut unknown: Vec<&str> = names
        .into_iter()
        .filter(|name| name.starts_with("JOBYARD_") && !VARIABLES.contains(name))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
        .into_iter()
        .map(|name| {
            let closest = VARIABLES.iter().min_by_key(|known| edit_distance(name, known));
            match closest.filter(|known| edit_distance(name, known) <= 3) {
                Some(known) => {
                    format!("{name} is not a variable jobyard reads; did you mean {known}?")
                }
                None => format!("{name} is not a variable jobyard reads (ignored)"),
            }
        })
        .collect()
}

/// Levenshtein distance between two ASCII-ish names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What is wrong in `.env.local`, by line and column (dotenvy reports the bad line's text and
/// a position within it, which its message calls a "line index").
fn env_file_error(err: &dotenvy::Error) -> String {
    let dotenvy::Error::LineParse(text, column) = err else {
        return format!("expected KEY=VALUE lines: {err}");
    };
    let file = std::fs::read_to_string(".env.local").unwrap_or_default();
    let first = text.lines().next().unwrap_or_default();
    let line = file
        .lines()
        .position(|l| l == first)
        .map_or(String::new(), |n| format!("line {}, ", n + 1));
    format!("expected KEY=VALUE lines; {line}column {}: '{}'", column + 1, first.escape_debug())
}

/// The process environment over `.env.local` in the working directory.
pub(crate) struct EnvVars {
    file: HashMap<String, String>,
}

impl EnvVars {
    pub(crate) fn read() -> Result<Self, ConfigError> {
        let mut file: HashMap<String, String> = HashMap::new();
        match dotenvy::from_filename_iter(".env.local") {
            Ok(lines) => {
                for line in lines {
                    let (key, value) = line.map_err(|err| ConfigError {
                        var: ".env.local".into(),
                        value: "(file)".into(),
                        allowed: env_file_error(&err),
                    })?;
                    file.insert(key, value);
                }
            }
            Err(err) if err.not_found() => {}
            Err(err) => {
                return Err(ConfigError {
                    var: ".env.local".into(),
                    value: "(file)".into(),
                    allowed: format!("a readable file: {err}"),
                })
            }
        }
        for (name, value) in std::env::vars_os() {
            let ours = name.to_str().filter(|n| n.starts_with("JOBYARD_") || *n == "REDIS_URL");
            if let (Some(name), None) = (ours, value.to_str()) {
                return Err(ConfigError {
                    var: name.to_owned(),
                    value: "(not UTF-8)".into(),
                    allowed: "a UTF-8 value".into(),
                });
            }
        }
        Ok(EnvVars { file })
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.file.get(name).cloned())
    }

    /// What the file alone says of `name`.
    pub(crate) fn file_value(&self, name: &str) -> Option<String> {
        self.file.get(name).cloned()
    }

    /// The warnings about `JOBYARD_*` variables set here (in the environment or the file)
    /// that jobyard does not read.
    // Read by the command line only (`server`); an embedder reads its own environment.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn unknown(&self) -> Vec<String> {
        let from_env: Vec<String> =
            std::env::vars_os().filter_map(|(n, _)| n.into_string().ok()).collect();
        unknown_variables(
            from_env.iter().map(String::as_str).chain(self.file.keys().map(String::as_str)),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::Config;

    #[test]
    fn the_list_of_variables_is_what_the_configuration_reads() {
        let asked = RefCell::new(BTreeSet::new());
        for redis in [None, Some("redis://127.0.0.1:6379")] {
            let config = Config::from_lookup(|name| {
                asked.borrow_mut().insert(name.to_owned());
                (name == "REDIS_URL").then_some(redis).flatten().map(str::to_owned)
            });
            config.expect("the defaults are valid");
        }
        let listed: BTreeSet<String> = VARIABLES.iter().map(|v| v.to_string()).collect();
        assert_eq!(asked.into_inner(), listed);
    }

    #[test]
    fn tools_may_not_reach_the_servers_own_secrets_or_hosts_that_never_match() {
        let with = |name: &str, value: &str| {
            let (name, value) = (name.to_owned(), value.to_owned());
            Config::from_lookup(move |n| (n == name).then(|| value.clone()))
        };
        assert!(with("JOBYARD_TOOL_SECRETS", "GITHUB_TOKEN, JIRA_TOKEN").is_ok());
        for bad in ["GITHUB_TOKEN,REDIS_URL", "JOBYARD_API_TOKEN"] {
            let err = with("JOBYARD_TOOL_SECRETS", bad).unwrap_err().to_string();
            assert!(err.contains("not jobyard's own settings"), "{err}");
        }
        assert!(with("JOBYARD_HTTP_ALLOWED_HOSTS", "api.github.com, 127.0.0.1, ::1").is_ok());
        for bad in ["https://api.github.com", "api.github.com:443", "example.com/path"] {
            let err = with("JOBYARD_HTTP_ALLOWED_HOSTS", bad).unwrap_err().to_string();
            assert!(err.contains("without scheme, port or path"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_misspelt_variable_is_named_with_the_closest_one() {
        let warnings =
            unknown_variables(["JOBYARD_CONCURENCY", "JOBYARD_ADDR", "PATH", "JOBYARD_ZZZZZZZZZZ"]);
        assert_eq!(
            warnings,
            vec![
                "JOBYARD_CONCURENCY is not a variable jobyard reads; did you mean JOBYARD_CONCURRENCY?",
                "JOBYARD_ZZZZZZZZZZ is not a variable jobyard reads (ignored)",
            ]
        );
    }
}
