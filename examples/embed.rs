//! An embedder's whole day: define typed jobs, start the runtime inside your own actix system,
//! submit with options, fan in over a batch whose last job reads the others' typed results,
//! cancel, schedule, list, shut down.
//!
//! `cargo run --example embed`

use std::time::Duration;

use jobyard::{
    Backoff, Config, Job, JobContext, JobError, JobOptions, ListQuery, Runtime, RuntimeError,
};
use serde::{Deserialize, Serialize};

/// Refreshes one tool's data (say, a GitHub repository's open pull requests).
#[derive(Serialize, Deserialize)]
struct RefreshTool {
    tool: String,
    items: u32,
}

impl Job for RefreshTool {
    const KIND: &'static str = "repo.refresh";
    /// How many items were fetched.
    type Output = u32;

    async fn run(self, ctx: JobContext) -> Result<u32, JobError> {
        for done in 0..self.items {
            if ctx.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            ctx.progress(&serde_json::json!({"done": done, "total": self.items}));
            tokio::time::sleep(Duration::from_millis(5)).await; // an upstream call
        }
        tracing::debug!(tool = %self.tool, "refreshed");
        Ok(self.items)
    }
}

/// Adds up what the refreshes it depends on fetched: a fan-in reading their typed results.
#[derive(Serialize, Deserialize)]
struct Summarise;

impl Job for Summarise {
    const KIND: &'static str = "repo.summarise";
    type Output = u32;

    async fn run(self, ctx: JobContext) -> Result<u32, JobError> {
        Ok(ctx.dependency_results::<RefreshTool>().await?.into_iter().sum())
    }
}

fn refresh(tool: &str, items: u32) -> RefreshTool {
    RefreshTool { tool: tool.into(), items }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::builder().concurrency(4).build()?;
    let runtime = Runtime::from_config(config)
        .register::<RefreshTool>()
        .register::<Summarise>()
        .with_builtin_kinds()
        .connect()
        .await?;

    // Submit with options, then wait for the typed result.
    let github = runtime
        .submit(refresh("github", 3))
        .priority(10)
        .max_attempts(5)
        .backoff(Backoff { initial_ms: 200, ..Backoff::default() })
        .idempotency_key("refresh:github")
        .await?;
    println!("github: {:?}", github.wait().await?);

    // A fan-in, submitted as one batch: the summary runs once every refresh succeeded, and
    // reads their results.
    let mut batch = runtime.batch();
    let tools = [("gitlab", 2), ("jira", 4), ("linear", 5)]
        .map(|(tool, items)| batch.add(refresh(tool, items), JobOptions::new().queue("refresh")));
    let summary = batch.add(Summarise, JobOptions::new().depends_on_all(tools));
    let summary = batch.submit().await?.handle(summary);
    let total = summary.wait_timeout(Duration::from_secs(30)).await?;
    println!("fetched {total} items in all");
    assert_eq!(total, 11, "the summary adds up its dependencies' results");

    // Cancel a long refresh; it stops at its next check of the token.
    let slow = runtime.submit(refresh("slow", 10_000)).await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    slow.cancel().await?;
    match slow.wait_timeout(Duration::from_secs(10)).await {
        Err(RuntimeError::Cancelled { id }) => println!("slow {id} cancelled"),
        other => return Err(format!("the slow refresh should be cancelled: {other:?}").into()),
    }

    // Refresh github every 10 seconds, Paris time.
    let schedule = runtime
        .schedule::<RefreshTool>("refresh-github")
        .cron("*/10 * * * * *")
        .timezone("Europe/Paris")
        .job(refresh("github", 3))
        .await?;
    println!("next refresh at {:?}", schedule.next_run_at);

    // What a dashboard would show.
    let page = runtime.list(ListQuery { limit: 10, ..ListQuery::default() }).await?;
    for job in &page.jobs {
        println!("{} {:<15} {}", job.id, job.kind, job.status);
    }
    let stats = runtime.stats().await?;
    println!("stats: {}", serde_json::to_string(&stats.queues)?);

    let handed_back = runtime.shutdown().await;
    println!("shut down; {handed_back} running jobs handed back");
    Ok(())
}
