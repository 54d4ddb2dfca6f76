//! An embedder's whole day: define a typed job, start the runtime inside your own actix system,
//! submit with options, chain jobs, wait for typed results, cancel, schedule, list, shut down.
//!
//! `cargo run --example embed`

use std::time::Duration;

use jobyard::queue::ListQuery;
use jobyard::schedule::ScheduleSpec;
use jobyard::{Backoff, Config, Job, JobContext, JobError, JobSpec, Runtime};
use serde::{Deserialize, Serialize};

/// Refreshes one tool's data (say, a GitHub repository's open pull requests).
#[derive(Serialize, Deserialize)]
struct RefreshTool {
    tool: String,
    items: u32,
}

impl Job for RefreshTool {
    const KIND: &'static str = "tool.refresh";
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

fn refresh(tool: &str, items: u32) -> RefreshTool {
    RefreshTool { tool: tool.into(), items }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config { concurrency: 4, ..Config::default() };
    let runtime =
        Runtime::builder().config(config).register::<RefreshTool>().with_builtin_kinds().start()?;

    // Submit with options, then wait for the typed result.
    let github = runtime
        .submit(refresh("github", 3))
        .priority(10)
        .max_attempts(5)
        .backoff(Backoff { initial_ms: 200, ..Backoff::default() })
        .idempotency_key("refresh:github")
        .await?;
    println!("github: {:?}", github.wait().await?);

    // A chain: jira runs only after gitlab succeeded.
    let gitlab = runtime.submit(refresh("gitlab", 2)).await?;
    let jira = runtime
        .submit(refresh("jira", 2))
        .depends_on(gitlab.id())
        .delay(Duration::from_millis(50))
        .await?;
    println!("jira after gitlab: {:?}", jira.wait().await?);

    // Cancel a long refresh; it stops at its next check of the token.
    let slow = runtime.submit(refresh("slow", 10_000)).await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    slow.cancel().await?;
    let ended = runtime.wait(slow.id(), Duration::from_secs(10)).await?;
    println!("slow ended: {}", ended.status);

    // Refresh every tool every 10 seconds, Paris time.
    let schedule = ScheduleSpec {
        cron: "*/10 * * * * *".into(),
        timezone: Some("Europe/Paris".into()),
        job: JobSpec::new("noop"),
        catch_up: false,
    };
    let (schedule, _) = runtime.put_schedule("refresh-all", schedule).await?;
    println!("next refresh at {:?}", schedule.next_run_at);

    // What a dashboard would show.
    let page = runtime.list(ListQuery { limit: 10, ..ListQuery::default() }).await?;
    for job in &page.jobs {
        println!("{} {:<13} {}", job.id, job.kind, job.status);
    }
    let stats = runtime.stats().await?;
    println!("stats: {}", serde_json::to_string(&stats.queues)?);

    let handed_back = runtime.shutdown().await;
    println!("shut down; {handed_back} running jobs handed back");
    Ok(())
}
