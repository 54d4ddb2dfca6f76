//! The client subcommands: what each asks the server, and how its answer is printed and turned
//! into an exit status.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{ClientError, HttpClient, Retry};
use super::output::{self, Output};
use super::{exit, Command};

/// `jobyard submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job's kind (registered on some instance, or accepted there).
    #[arg(long)]
    kind: String,
    /// The payload, as JSON.
    #[arg(long)]
    payload: Option<String>,
    /// -1000 to 1000, higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// The queue (default `default`).
    #[arg(long)]
    queue: Option<String>,
    /// A job that must succeed first (repeat for several).
    #[arg(long = "depends-on")]
    depends_on: Vec<String>,
    /// Run no earlier than this many milliseconds from now.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Most attempts (1 to 100).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Longest an attempt may run, in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// A limit the job runs under (repeat for several).
    #[arg(long = "limit")]
    limits: Vec<String>,
    /// Tokens the job takes from each rate limit it names.
    #[arg(long)]
    cost: Option<u32>,
    /// The job's group, for fair turns within its queue.
    #[arg(long)]
    group: Option<String>,
    /// While a job with this key exists, a submit with it answers that job. One is made up
    /// when none is given, so that a submit retried after a 503 or a refused connection never
    /// makes a second job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait until the job ends (a progress line on a terminal); exit 3 if it failed, 4 if it
    /// was cancelled.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many milliseconds (exit 5).
    #[arg(long, requires = "wait")]
    wait_ms: Option<u64>,
}

/// `jobyard retry`: one job by id, or every job of a state (`--status`), narrowed by kind and
/// queue.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "status"])))]
pub struct RetryArgs {
    /// The job's id.
    id: Option<String>,
    /// Every job in this state: failed or cancelled.
    #[arg(long, conflicts_with = "id")]
    status: Option<String>,
    /// With --status: only jobs of this kind.
    #[arg(long, requires = "status")]
    kind: Option<String>,
    /// With --status: only jobs of this queue.
    #[arg(long, requires = "status")]
    queue: Option<String>,
}

/// `jobyard jobs`.
#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Only jobs in this state (waiting, scheduled, queued, running, succeeded, failed,
    /// cancelled).
    #[arg(long)]
    status: Option<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only jobs of this group.
    #[arg(long)]
    group: Option<String>,
    /// Most jobs to list (at most 1 000; default 100).
    #[arg(long)]
    limit: Option<usize>,
    /// Where to go on from (the `next_cursor` of the previous page).
    #[arg(long)]
    cursor: Option<String>,
}

/// `jobyard schedules ...`.
#[derive(Subcommand, Debug)]
pub enum SchedulesCommand {
    /// List every schedule.
    List,
    /// Print one schedule.
    Get {
        /// The schedule's name.
        name: String,
    },
    /// Create or replace a schedule.
    Put {
        /// The schedule's name.
        name: String,
        /// A cron expression with seconds (`sec min hour day month weekday`).
        #[arg(long)]
        cron: String,
        /// An IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// The job each tick submits, as a JobSpec in JSON (`{"kind": "noop"}`).
        #[arg(long)]
        job: String,
        /// Run the latest tick missed while no instance ran.
        #[arg(long)]
        catch_up: bool,
    },
    /// Remove a schedule.
    Delete {
        /// The schedule's name.
        name: String,
    },
}

/// `jobyard cache ...`.
#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Print an entry's value.
    Get {
        /// The entry's key.
        key: String,
    },
    /// Store a value (from --value, or else from stdin).
    Put {
        /// The entry's key.
        key: String,
        /// The value (default: read stdin).
        #[arg(long)]
        value: Option<String>,
        /// Its content type.
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Its time to live, in seconds (default: the server's).
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// A tag it can be invalidated by (repeat for several).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Remove an entry.
    Delete {
        /// The entry's key.
        key: String,
    },
    /// Remove the entries under a prefix and/or naming tags.
    Invalidate {
        /// Every key starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Every key naming this tag (repeat for several).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
}

/// Runs a client command against the server of `client`.
pub async fn run(client: &HttpClient, output: Output, command: Command) -> ExitCode {
    let result = match command {
        Command::Submit(args) => submit(client, output, args).await,
        Command::Status { id } => {
            let path = format!("/v1/jobs/{}", encode(&id));
            let job = client.request("GET", &path, None, Retry::WhenUnavailable).await;
            job.map(|job| print(output, &job, output::job))
        }
        Command::Cancel { id, wait_ms } => cancel(client, output, &id, wait_ms).await,
        Command::Retry(args) => retry(client, output, args).await,
        Command::Run { id } => {
            // Not retried: a second request for a job the first one queued answers 409.
            let path = format!("/v1/jobs/{}/run", encode(&id));
            let job = client.request("POST", &path, None, Retry::Never).await;
            job.map(|job| print(output, &job, output::job))
        }
        Command::Delete { id } => {
            let path = format!("/v1/jobs/{}", encode(&id));
            let removed = client.request("DELETE", &path, None, Retry::Never).await;
            removed.map(|_| done(output, &format!("job {id} removed")))
        }
        Command::Jobs(args) => {
            let query = query(&[
                ("status", args.status),
                ("kind", args.kind),
                ("queue", args.queue),
                ("group", args.group),
                ("limit", args.limit.map(|l| l.to_string())),
                ("cursor", args.cursor),
            ]);
            let path = format!("/v1/jobs{query}");
            let page = client.request("GET", &path, None, Retry::WhenUnavailable).await;
            page.map(|page| print(output, &page, output::jobs))
        }
        Command::Stats => {
            let stats = client.request("GET", "/v1/stats", None, Retry::WhenUnavailable).await;
            stats.map(|stats| print(output, &stats, output::stats))
        }
        Command::Schedules(command) => schedules(client, output, command).await,
        Command::Cache(command) => cache(client, output, command).await,
        Command::Serve | Command::Check => unreachable!("run by the caller"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn print(output: Output, value: &Value, human: fn(&Value) -> String) -> ExitCode {
    output.print(value, human);
    ExitCode::SUCCESS
}

async fn submit(
    client: &HttpClient,
    output: Output,
    args: SubmitArgs,
) -> Result<ExitCode, ClientError> {
    let payload: Value = match &args.payload {
        Some(text) => serde_json::from_str(text)
            .map_err(|err| ClientError::Input(format!("--payload is not JSON: {err}")))?,
        None => Value::Null,
    };
    let key = args.idempotency_key.unwrap_or_else(|| format!("cli:{}", uuid::Uuid::now_v7()));
    let mut spec = json!({"kind": args.kind, "payload": payload, "idempotency_key": key});
    let optional = [
        ("priority", args.priority.map(Value::from)),
        ("queue", args.queue.map(Value::from)),
        ("delay_ms", args.delay_ms.map(Value::from)),
        ("max_attempts", args.max_attempts.map(Value::from)),
        ("timeout_ms", args.timeout_ms.map(Value::from)),
        ("cost", args.cost.map(Value::from)),
        ("group", args.group.map(Value::from)),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            spec[field] = value;
        }
    }
    if !args.depends_on.is_empty() {
        spec["depends_on"] = json!(args.depends_on);
    }
    if !args.limits.is_empty() {
        spec["limits"] = json!(args.limits);
    }
    // Safe to retry: the key makes a second submit answer the first job.
    let job = client.request("POST", "/v1/jobs", Some(&spec), Retry::WhenUnavailable).await?;
    if !args.wait {
        return Ok(print(output, &job, output::job));
    }
    let deadline = args.wait_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let job = wait(client, output, job, deadline).await?;
    output.print(&job, output::job);
    Ok(match job["status"].as_str() {
        Some("succeeded") => ExitCode::SUCCESS,
        Some("failed") => ExitCode::from(exit::JOB_FAILED),
        Some("cancelled") => ExitCode::from(exit::JOB_CANCELLED),
        _ => {
            eprintln!("error: job {} has not ended ({})", job["id"], job["status"]);
            ExitCode::from(exit::STILL_RUNNING)
        }
    })
}

/// Follows `job` until it ends or `deadline` passes, showing a progress line on a terminal.
async fn wait(
    client: &HttpClient,
    output: Output,
    mut job: Value,
    deadline: Option<Instant>,
) -> Result<Value, ClientError> {
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    let show = output == Output::Human && std::io::stderr().is_terminal();
    while !is_terminal(&job) {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            break;
        }
        if show {
            let progress = job.get("progress").filter(|p| !p.is_null()).map(|p| format!(" {p}"));
            eprint!(
                "\rjob {id}: {} (attempt {} of {}){}\x1b[K",
                job["status"].as_str().unwrap_or("?"),
                job["attempts"],
                job["max_attempts"],
                progress.unwrap_or_default()
            );
            let _ = std::io::stderr().flush();
        }
        // Short polls while a terminal shows progress; otherwise as long as the server allows.
        let poll = if show { Duration::from_secs(1) } else { Duration::from_secs(60) };
        let poll = left.map_or(poll, |left| left.min(poll)).as_millis().max(1);
        let path = format!("/v1/jobs/{}/wait?timeout_ms={poll}", encode(&id));
        job = client.request("GET", &path, None, Retry::WhenUnavailable).await?;
    }
    if show {
        eprint!("\r\x1b[K");
    }
    Ok(job)
}

async fn cancel(
    client: &HttpClient,
    output: Output,
    id: &str,
    wait_ms: u64,
) -> Result<ExitCode, ClientError> {
    // Not retried: a second cancel of a job the first one stopped answers 409.
    let path = format!("/v1/jobs/{}/cancel", encode(id));
    let job = client.request("POST", &path, None, Retry::Never).await?;
    let deadline = Some(Instant::now() + Duration::from_millis(wait_ms));
    let job = wait(client, Output::Json, job, deadline).await?;
    output.print(&job, output::job);
    if is_terminal(&job) {
        if output == Output::Human {
            println!("job {} ended {}", id, job["status"].as_str().unwrap_or("?"));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: job {id} is still stopping after {wait_ms} ms (its cancel was requested)"
        );
        Ok(ExitCode::from(exit::STILL_RUNNING))
    }
}

async fn retry(
    client: &HttpClient,
    output: Output,
    args: RetryArgs,
) -> Result<ExitCode, ClientError> {
    // Not retried: a second request finds the jobs the first one retried no longer failed,
    // and answers 409 (one job) or counts none (a filter).
    if let Some(id) = args.id {
        let path = format!("/v1/jobs/{}/retry", encode(&id));
        let job = client.request("POST", &path, None, Retry::Never).await?;
        return Ok(print(output, &job, output::job));
    }
    let mut filter = json!({"status": args.status});
    for (field, value) in [("kind", args.kind), ("queue", args.queue)] {
        if let Some(value) = value {
            filter[field] = json!(value);
        }
    }
    let answer = client.request("POST", "/v1/jobs/retry", Some(&filter), Retry::Never).await?;
    Ok(print(output, &answer, |a| format!("{} jobs retried\n", a["retried"])))
}

async fn schedules(
    client: &HttpClient,
    output: Output,
    command: SchedulesCommand,
) -> Result<ExitCode, ClientError> {
    match command {
        SchedulesCommand::List => {
            let list = client.request("GET", "/v1/schedules", None, Retry::WhenUnavailable).await?;
            Ok(print(output, &list, output::schedules))
        }
        SchedulesCommand::Get { name } => {
            let path = format!("/v1/schedules/{}", encode(&name));
            let schedule = client.request("GET", &path, None, Retry::WhenUnavailable).await?;
            Ok(print(output, &schedule, output::schedule))
        }
        SchedulesCommand::Put { name, cron, timezone, job, catch_up } => {
            let job: Value = serde_json::from_str(&job)
                .map_err(|err| ClientError::Input(format!("--job is not JSON: {err}")))?;
            let mut spec = json!({"cron": cron, "job": job, "catch_up": catch_up});
            if let Some(timezone) = timezone {
                spec["timezone"] = json!(timezone);
            }
            // Safe to retry: it sets the schedule to the same thing.
            let path = format!("/v1/schedules/{}", encode(&name));
            let schedule =
                client.request("PUT", &path, Some(&spec), Retry::WhenUnavailable).await?;
            Ok(print(output, &schedule, output::schedule))
        }
        SchedulesCommand::Delete { name } => {
            let path = format!("/v1/schedules/{}", encode(&name));
            client.request("DELETE", &path, None, Retry::Never).await?;
            Ok(done(output, &format!("schedule {name} removed")))
        }
    }
}

async fn cache(
    client: &HttpClient,
    output: Output,
    command: CacheCommand,
) -> Result<ExitCode, ClientError> {
    match command {
        CacheCommand::Get { key } => {
            let path = format!("/v1/cache/{}", encode_path(&key));
            let (_, body) = client.send("GET", &path, None, Retry::WhenUnavailable).await?;
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(&body);
            if output == Output::Human && !body.ends_with(b"\n") {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Put { key, value, content_type, ttl_secs, tags } => {
            let body = match value {
                Some(value) => value.into_bytes(),
                None => {
                    let mut body = Vec::new();
                    std::io::stdin().read_to_end(&mut body).map_err(|err| {
                        ClientError::Input(format!("cannot read the value from stdin: {err}"))
                    })?;
                    body
                }
            };
            let tags = (!tags.is_empty()).then(|| tags.join(","));
            let query = query(&[("ttl_secs", ttl_secs.map(|t| t.to_string())), ("tags", tags)]);
            let path = format!("/v1/cache/{}{query}", encode_path(&key));
            // Safe to retry: it stores the same value.
            client.send("PUT", &path, Some((&content_type, body)), Retry::WhenUnavailable).await?;
            Ok(done(output, &format!("{key} stored")))
        }
        CacheCommand::Delete { key } => {
            let path = format!("/v1/cache/{}", encode_path(&key));
            client.request("DELETE", &path, None, Retry::Never).await?;
            Ok(done(output, &format!("{key} removed")))
        }
        CacheCommand::Invalidate { prefix, tags } => {
            let mut body = json!({});
            if let Some(prefix) = prefix {
                body["prefix"] = json!(prefix);
            }
            if !tags.is_empty() {
                body["tags"] = json!(tags);
            }
            let answer =
                client.request("POST", "/v1/cache/invalidate", Some(&body), Retry::WhenUnavailable);
            let answer = answer.await?;
            Ok(print(output, &answer, |a| format!("{} entries removed\n", a["removed"])))
        }
    }
}

/// What a command that answers nothing prints: a line on a terminal, `{}` for a program.
fn done(output: Output, line: &str) -> ExitCode {
    match output {
        Output::Json => println!("{{}}"),
        Output::Human => println!("{line}"),
    }
    ExitCode::SUCCESS
}

fn is_terminal(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// A query string (`?a=1&b=2`, or empty) of the values given.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `text` percent-encoded for a URL path segment or query value (unreserved characters kept).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A cache key as a path: its `/` kept (the route takes the rest of the path as the key).
fn encode_path(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_for_urls() {
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(encode("tool:github"), "tool:github");
        assert_eq!(encode_path("a/b c"), "a/b%20c");
        assert_eq!(
            query(&[("a", Some("1".into())), ("b", None), ("c", Some("x y".into()))]),
            "?a=1&c=x%20y"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
