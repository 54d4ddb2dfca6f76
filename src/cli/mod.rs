//! The `jobyard` binary's subcommands: `serve` (the default) and `check`, which use the whole
//! configuration, and the client commands, which talk to a running server over its HTTP API
//! (`submit`, `status`, `cancel`, `retry`, `run`, `delete`, `jobs`, `stats`, `schedules`,
//! `cache`) and need only its
//! address and token.
//!
//! The client commands print the server's JSON when their output goes to a program, and short
//! lines and tables on a terminal (`output`); they exit non-zero with one line on stderr when
//! anything fails (`client`).

mod check;
mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, EnvVars};
use crate::startup::Server;
use client::HttpClient;
use output::Output;

/// Exit statuses beyond 0 (success), 1 (the command failed) and 2 (bad usage or
/// configuration).
pub mod exit {
    /// `--wait`: the job ended `failed`.
    pub const JOB_FAILED: u8 = 3;
    /// `--wait`: the job ended `cancelled`.
    pub const JOB_CANCELLED: u8 = 4;
    /// `--wait` or `cancel --wait-ms`: the job had not ended in the time given.
    pub const STILL_RUNNING: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "jobyard",
    version,
    about = "An actor-based background job runtime",
    after_help = "Exit status: 0 success; 1 the command failed (the server answered an error, or \
                  could not be reached); 2 bad usage or configuration; with --wait, 3 the job \
                  failed, 4 it was cancelled, 5 it had not ended in time.\n\
                  Client commands print JSON when their output is not a terminal (or with --json)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Where the client commands find the server.
#[derive(Args, Debug, Default)]
pub struct ServerArgs {
    /// The server's address [env: JOBYARD_URL, also read from .env.local; default
    /// http://127.0.0.1:8080, which is also where `serve` listens by default]
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// The server's API token, sent as a bearer token [env: JOBYARD_API_TOKEN, also read from
    /// .env.local]
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON even on a terminal.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the actor system and the HTTP API until SIGTERM/SIGINT (the default).
    Serve,
    /// Submit a job and print it.
    Submit(commands::SubmitArgs),
    /// Print one job.
    Status {
        /// The job's id.
        id: String,
    },
    /// Cancel one job, and say whether it stopped.
    Cancel {
        /// The job's id.
        id: String,
        /// How long to wait for a running job to stop, in milliseconds.
        #[arg(long, default_value_t = 5_000)]
        wait_ms: u64,
    },
    /// Put a failed or cancelled job (or every one --status selects) back to run.
    Retry(commands::RetryArgs),
    /// Make a scheduled job (delayed, or waiting for its next retry) due now.
    Run {
        /// The job's id.
        id: String,
    },
    /// Remove a finished job and its result.
    Delete {
        /// The job's id.
        id: String,
    },
    /// List jobs, newest first.
    Jobs(commands::JobsArgs),
    /// Print the queues (jobs per state), workers, cache and backends.
    Stats,
    /// Manage cron schedules.
    #[command(subcommand)]
    Schedules(commands::SchedulesCommand),
    /// Read, write and invalidate cache entries.
    #[command(subcommand)]
    Cache(commands::CacheCommand),
    /// Validate the configuration as `serve` would, without serving: the variables, the
    /// listen address, and Redis when one is configured. Exits non-zero, saying why in one
    /// line, for every configuration `serve` refuses.
    Check,
}

/// Runs the parsed command inside an actix system.
pub fn run(cli: Cli) -> ExitCode {
    let system = actix_rt::System::new();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match server_config() {
            Ok((config, unknown)) => system.block_on(serve(config, unknown)),
            Err(err) => fail(2, err),
        },
        Command::Check => match server_config() {
            Ok((config, unknown)) => {
                for warning in unknown {
                    eprintln!("warning: {warning}");
                }
                system.block_on(check::check(&config))
            }
            Err(err) => fail(2, err),
        },
        command => {
            // Only the server's address and token: a client command works whatever else the
            // environment holds for the server.
            let env = match EnvVars::read() {
                Ok(env) => env,
                Err(err) => return fail(2, err),
            };
            let url = cli.server.url.or_else(|| env.get("JOBYARD_URL"));
            let url = url.unwrap_or_else(|| crate::config::DEFAULT_URL.to_owned());
            let token = cli.server.token.or_else(|| env.get("JOBYARD_API_TOKEN"));
            let client = HttpClient::new(&url, token.filter(|t| !t.trim().is_empty()));
            let output = Output::detect(cli.server.json);
            system.block_on(commands::run(&client, output, command))
        }
    }
}

/// The whole configuration, with a warning for each `JOBYARD_*` variable set that it does not
/// read (a misspelt name is otherwise silently ignored).
fn server_config() -> Result<(Config, Vec<String>), crate::config::ConfigError> {
    let env = EnvVars::read()?;
    let config = Config::from_lookup(|name| env.get(name))?;
    Ok((config, env.unknown()))
}

async fn serve(config: Config, unknown: Vec<String>) -> ExitCode {
    crate::telemetry::init(config.log_format);
    for warning in unknown {
        tracing::warn!("{warning}");
    }
    let host = config.addr.rsplit_once(':').map_or("127.0.0.1", |(host, _)| host).to_owned();
    let server = match Server::build(config).await {
        Ok(server) => server,
        Err(err) => return fail(2, err),
    };
    // Printed whatever the log level, so a caller that asked for port 0 learns the port.
    println!("jobyard listening on http://{host}:{}", server.port());
    match server.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(1, err),
    }
}

/// Prints `err` as one line and answers exit status `code`.
fn fail(code: u8, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}
