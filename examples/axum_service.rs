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
//!
//! `cargo run --example axum_service -- --self-test` serves on a free port, calls both routes
//! itself from other tokio tasks and exits non-zero if an answer is wrong (CI runs it so).

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
    let self_test = std::env::args().any(|arg| arg == "--self-test");
    let port = match self_test {
        true => "0".into(),
        false => std::env::var("PORT").unwrap_or_else(|_| "3000".into()),
    };
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = stopped => {}
                }
            })
            .await
    });
    let outcome = if self_test { check(addr).await } else { Ok(()) };
    let _ = stop.send(());
    serving.await??;
    let handed_back = runtime.shutdown().await;
    println!("stopped; {handed_back} unfinished jobs handed back");
    outcome
}

/// Calls both routes over plain HTTP/1.1 from other tasks, as clients would, and checks the
/// answers.
async fn check(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let repos = ["jobyard/jobyard", "tokio-rs/axum", "actix/actix-web"];
    let expected: u64 = repos.iter().flat_map(|repo| repo.bytes()).map(u64::from).sum();
    let body = serde_json::json!({ "repos": repos }).to_string();
    let answers = (0..4).map(|_| {
        let body = body.clone();
        tokio::spawn(async move { request(addr, "POST", "/stars", Some(&body)).await })
    });
    let mut job = None;
    for answer in answers {
        let (status, body) = answer.await??;
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        if status != 200 || answer["total"] != expected {
            return Err(format!("POST /stars answered {status}: {body}").into());
        }
        job = answer["job"].as_str().map(str::to_owned);
    }
    let job = job.ok_or("no job id in the answer")?;
    let (status, body) = request(addr, "GET", &format!("/jobs/{job}"), None).await?;
    let record: serde_json::Value = serde_json::from_str(&body)?;
    if status != 200
        || record["status"] != "succeeded"
        || record["depends_on"].as_array().map(Vec::len) != Some(3)
    {
        return Err(format!("GET /jobs/{job} answered {status}: {body}").into());
    }
    let (status, _) = request(addr, "GET", "/jobs/not-an-id", None).await?;
    if status != 400 {
        return Err(format!("a bad id answered {status}, not 400").into());
    }
    println!("self-test passed: submits, waits and reads from tokio tasks on any thread");
    Ok(())
}

/// One HTTP/1.1 request on its own connection: the status and the body.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let invalid = || std::io::Error::other(format!("not an HTTP answer: {answer:?}"));
    let status = answer.get(9..12).and_then(|code| code.parse().ok()).ok_or_else(invalid)?;
    let body =
        answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).ok_or_else(invalid)?;
    Ok((status, body))
}
