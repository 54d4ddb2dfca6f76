//! The `jobyard` binary's subcommands: `serve` (the default), the HTTP client commands
//! (`submit`, `status`, `cancel`, `jobs`, `stats`) and `check`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::config::Config;
#[cfg(feature = "redis")]
use crate::queue::redis::{evicts_job_records, RedisQueueError};
#[cfg(feature = "redis")]
use crate::redis::{RedisClient, RedisSettings};
use crate::startup::Server;

#[derive(Parser, Debug)]
#[command(name = "jobyard", version, about = "An actor-based background job runtime")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the actor system and the HTTP API until SIGTERM/SIGINT (the default).
    Serve,
    /// Submit a job to the server at JOBYARD_URL and print it.
    Submit {
        #[arg(long)]
        kind: String,
        /// The payload, as JSON.
        #[arg(long)]
        payload: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        #[arg(long = "depends-on")]
        depends_on: Vec<String>,
        #[arg(long = "delay-ms")]
        delay_ms: Option<u64>,
        /// Print the job once it is terminal.
        #[arg(long)]
        wait: bool,
    },
    /// Print one job.
    Status { id: String },
    /// Cancel one job.
    Cancel { id: String },
    /// List jobs, newest first.
    Jobs {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print queue, worker and cache figures.
    Stats,
    /// Validate the configuration (and the Redis connection, when one is configured).
    Check,
}

/// Runs the parsed command inside an actix system.
pub fn run(cli: Cli) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let system = actix_rt::System::new();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => system.block_on(serve(config)),
        Command::Check => system.block_on(check(&config)),
        command => system.block_on(client_command(&config, command)),
    }
}

async fn serve(config: Config) -> ExitCode {
    crate::telemetry::init(config.log_format);
    let host = config.addr.rsplit_once(':').map_or("127.0.0.1", |(host, _)| host).to_owned();
    let server = match Server::build(config).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // Printed whatever the log level, so a caller that asked for port 0 learns the port.
    println!("jobyard listening on http://{host}:{}", server.port());
    match server.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn check(config: &Config) -> ExitCode {
    println!("configuration: ok");
    println!("  listen address: {}", config.addr);
    println!("  queue backend:  {}", config.queue_backend_name());
    println!("  cache backend:  {}", config.cache_backend.as_str());
    println!("  concurrency:    {}", config.concurrency);
    check_redis(config).await
}

#[cfg(not(feature = "redis"))]
async fn check_redis(config: &Config) -> ExitCode {
    if config.redis_url.is_none() {
        println!("  redis:          not configured");
        return ExitCode::SUCCESS;
    }
    eprintln!("error: REDIS_URL is set, but this build of jobyard has no Redis support");
    ExitCode::FAILURE
}

/// Probes the configured Redis: reachable, and fit for the queue if the queue uses it.
#[cfg(feature = "redis")]
async fn check_redis(config: &Config) -> ExitCode {
    let Some(settings) = RedisSettings::from_config(config) else {
        println!("  redis:          not configured");
        return ExitCode::SUCCESS;
    };
    let url = settings.url.redacted();
    match RedisClient::probe(&settings).await {
        Ok(probe) => {
            println!(
                "  redis:          {url} (version {}, round trip {} µs, maxmemory-policy {})",
                probe.version,
                probe.rtt.as_micros(),
                probe.maxmemory_policy
            );
            let evicting = evicts_job_records(&probe.maxmemory_policy);
            if config.queue_backend == crate::config::QueueBackendKind::Redis && evicting {
                let err = RedisQueueError::EvictingPolicy(probe.maxmemory_policy);
                eprintln!("error: the Redis queue cannot use {url}: {err}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot use redis at {url}: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn client_command(config: &Config, command: Command) -> ExitCode {
    let client = HttpClient::new(config);
    let result = match command {
        Command::Submit { kind, payload, priority, depends_on, delay_ms, wait } => {
            submit(&client, kind, payload, priority, depends_on, delay_ms, wait).await
        }
        Command::Status { id } => client.request("GET", &format!("/v1/jobs/{id}"), None).await,
        Command::Cancel { id } => {
            client.request("POST", &format!("/v1/jobs/{id}/cancel"), None).await
        }
        Command::Jobs { status, limit } => {
            let mut query = vec![];
            if let Some(status) = status {
                query.push(format!("status={status}"));
            }
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            client.request("GET", &format!("/v1/jobs?{}", query.join("&")), None).await
        }
        Command::Stats => client.request("GET", "/v1/stats", None).await,
        Command::Serve | Command::Check => unreachable!("handled by run"),
    };
    match result {
        Ok(value) => {
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn submit(
    client: &HttpClient,
    kind: String,
    payload: Option<String>,
    priority: Option<i32>,
    depends_on: Vec<String>,
    delay_ms: Option<u64>,
    wait: bool,
) -> Result<Value, String> {
    let payload: Value = match payload {
        Some(text) => {
            serde_json::from_str(&text).map_err(|err| format!("--payload is not JSON: {err}"))?
        }
        None => Value::Null,
    };
    let mut spec = json!({"kind": kind, "payload": payload});
    if let Some(priority) = priority {
        spec["priority"] = json!(priority);
    }
    if !depends_on.is_empty() {
        spec["depends_on"] = json!(depends_on);
    }
    if let Some(delay) = delay_ms {
        spec["delay_ms"] = json!(delay);
    }
    let mut job = client.request("POST", "/v1/jobs", Some(spec)).await?;
    while wait && !is_terminal(&job) {
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        job = client.request("GET", &format!("/v1/jobs/{id}/wait?timeout_ms=60000"), None).await?;
    }
    Ok(job)
}

fn is_terminal(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// A small JSON client of the server's API.
struct HttpClient {
    base: String,
    token: Option<String>,
    http: awc::Client,
}

impl HttpClient {
    fn new(config: &Config) -> Self {
        HttpClient {
            base: config.url.trim_end_matches('/').to_owned(),
            token: config.api_token.as_ref().map(|t| t.expose().to_owned()),
            http: awc::Client::builder().timeout(Duration::from_secs(75)).finish(),
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let method = awc::http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let sent = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        let mut response =
            sent.map_err(|err| format!("cannot reach jobyard at {}: {err}", self.base))?;
        let bytes = response
            .body()
            .limit(64 << 20)
            .await
            .map_err(|err| format!("reading the answer from {url} failed: {err}"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if response.status().is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"].as_str().unwrap_or("no error message");
            Err(format!("{} {}: {message}", response.status().as_u16(), url))
        }
    }
}
