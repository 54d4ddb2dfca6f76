//! A service on axum (plain multi-threaded tokio, no actix in sight) that runs jobyard beside
//! it: the runtime runs on a thread of its own (`spawn`), and axum's handlers, on any of
//! tokio's threads, submit typed jobs, wait on them and read them.
//!
//! `cargo run --example axum_service`, then:
//! - `curl -X POST localhost:3000/stars -H 'content-type: application/json' -d '{"repos": ["a/b", "c/d"]}'`
//!   fetches each repository's stars in parallel jobs and adds them up in a job that depends
//!   on them all;
//! - `curl localhost:3000/jobs/<id>` reads one job.
//!
//! The jobyard configuration comes from the environment as for `jobyard serve` (the memory
//! backends by default; `REDIS_URL` makes the jobs durable). `PORT` picks the port.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jobyard::{
    Config, Job, JobContext, JobError, JobHandle, JobId, JobOptions, Runtime, RuntimeError,
};
use serde::{Deserialize, Serialize};

/// Fetches one repository's star count (here: made up from its name, after a short wait).
#[derive(Serialize, Deserialize)]
struct FetchStars {
    repo: String,
}

impl Job for FetchStars {
    const KIND: &'static str = "github.stars";
    type Output = u64;
    async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = ctx.cancelled() => return Err(JobError::Cancelled),
        }
        Ok(self.repo.bytes().map(u64::from).sum())
    }
}

/// Adds up the stars of the repositories it depends on.
#[derive(Serialize, Deserialize)]
struct TotalStars;

impl Job for TotalStars {
    const KIND: &'static str = "github.total_stars";
    type Output = u64;
    async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
        Ok(ctx.dependency_results::<FetchStars>().await?.into_iter().sum())
    }
}

#[derive(Deserialize)]
struct StarsRequest {
    repos: Vec<String>,
}

#[derive(Serialize)]
struct StarsAnswer {
    total: u64,
    job: JobId,
}

/// A runtime error as an HTTP answer.
struct Failure(StatusCode, String);

impl From<RuntimeError> for Failure {
    fn from(err: RuntimeError) -> Self {
        let status = match &err {
            RuntimeError::Spec(_) => StatusCode::BAD_REQUEST,
            RuntimeError::Queue(jobyard::queue::QueueError::NotFound(_)) => StatusCode::NOT_FOUND,
            RuntimeError::WaitTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, err.to_string())
    }
}

impl axum::response::IntoResponse for Failure {
    fn into_response(self) -> axum::response::Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

async fn stars(
    State(runtime): State<Runtime>,
    Json(request): Json<StarsRequest>,
) -> Result<Json<StarsAnswer>, Failure> {
    let mut batch = runtime.batch();
    let fetches: Vec<_> = request
        .repos
        .into_iter()
        .map(|repo| batch.add(FetchStars { repo }, JobOptions::new().queue("github")))
        .collect();
    let total = batch.add(TotalStars, JobOptions::new().depends_on_all(&fetches));
    let submitted = batch.submit().await?;
    let total = submitted.handle(total);
    let stars = total.wait_timeout(Duration::from_secs(10)).await?;
    Ok(Json(StarsAnswer { total: stars, job: total.id() }))
}

async fn job(
    State(runtime): State<Runtime>,
    Path(id): Path<String>,
) -> Result<Json<jobyard::JobRecord>, Failure> {
    let id: JobId = id
        .parse()
        .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("'{id}' is not a job id")))?;
    // Any kind will do to read the record; the type matters only for a typed output.
    Ok(Json(JobHandle::<TotalStars>::from_id(&runtime, id).status().await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::from_config(Config::from_env()?)
        .register::<FetchStars>()
        .register::<TotalStars>()
        .spawn()
        .await?;
    let app = Router::new()
        .route("/stars", post(stars))
        .route("/jobs/{id}", get(job))
        .with_state(runtime.clone());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let handed_back = runtime.shutdown().await;
    println!("stopped; {handed_back} unfinished jobs handed back");
    Ok(())
}
