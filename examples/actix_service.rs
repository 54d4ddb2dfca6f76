//! An actix-web service that mounts jobyard's HTTP API beside its own routes, in its own app:
//! `/health`, `/ready` and `/v1/...` are jobyard's (authentication and limits included),
//! `/greet/{name}` is the service's, and it submits a typed job through the embedding API.
//!
//! `cargo run --example actix_service`, then:
//! - `curl localhost:3001/greet/ada` runs a typed job and answers with its output;
//! - `curl -X POST localhost:3001/v1/jobs -H 'content-type: application/json' -d '{"kind": "greet", "payload": {"name": "bob"}}'`
//!   submits the same kind through jobyard's own API.
//!
//! `cargo run --example actix_service -- --self-test` serves on a free port, calls both routes
//! itself and exits non-zero if an answer is wrong (CI runs it so).

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use jobyard::api::{configure, ApiSettings};
use jobyard::{Config, Job, JobContext, JobError, Runtime, RuntimeError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Job for Greet {
    const KIND: &'static str = "greet";
    type Output = String;
    async fn run(self, _ctx: JobContext) -> Result<String, JobError> {
        if self.name.is_empty() {
            return Err(JobError::fatal("no one to greet"));
        }
        Ok(format!("hello, {}", self.name))
    }
}

/// The service's own route: a typed submit and wait through the embedding API.
async fn greet(runtime: web::Data<Runtime>, name: web::Path<String>) -> HttpResponse {
    let submitted = runtime.submit(Greet { name: name.into_inner() }).await;
    let output = match submitted {
        Ok(job) => job.wait_timeout(Duration::from_secs(10)).await,
        Err(err) => Err(err),
    };
    match output {
        Ok(greeting) => HttpResponse::Ok().body(greeting),
        Err(err @ RuntimeError::Spec(_)) => HttpResponse::BadRequest().body(err.to_string()),
        Err(err) => HttpResponse::InternalServerError().body(err.to_string()),
    }
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let self_test = std::env::args().any(|arg| arg == "--self-test");
    let config = Config::builder().with_env().build()?;
    let runtime = Runtime::from_config(config.clone()).register::<Greet>().connect().await?;
    let settings = ApiSettings::from(&config);
    let (client, app_runtime) = (runtime.client().clone(), runtime.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(app_runtime.clone()))
            .route("/greet/{name}", web::get().to(greet))
            .configure(configure(client.clone(), settings.clone()))
    })
    .workers(2)
    .bind(if self_test { "127.0.0.1:0" } else { "127.0.0.1:3001" })?;
    let addr = server.addrs()[0];
    println!("listening on http://{addr}");
    let server = server.run();
    let outcome = if self_test {
        let handle = server.handle();
        let serving = actix_rt::spawn(server);
        let checked = check(&format!("http://{addr}")).await;
        handle.stop(true).await;
        let _ = serving.await;
        checked
    } else {
        server.await.map_err(Into::into)
    };
    runtime.shutdown().await;
    outcome
}

/// Calls the service's route and jobyard's API, as a client would.
async fn check(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let http = awc::Client::default();
    let mut greeting = http.get(format!("{base}/greet/ada")).send().await?;
    let body = greeting.body().await?;
    if greeting.status() != 200 || body != "hello, ada" {
        return Err(format!("/greet answered {}: {body:?}", greeting.status()).into());
    }
    let job = serde_json::json!({"kind": "greet", "payload": {"name": "bob"}});
    let mut submitted = http.post(format!("{base}/v1/jobs")).send_json(&job).await?;
    let record: serde_json::Value = submitted.json().await?;
    let id = record["id"].as_str().ok_or("the API's submit answered no id")?;
    let waited = format!("{base}/v1/jobs/{id}/wait?timeout_ms=10000");
    let record: serde_json::Value = http.get(waited).send().await?.json().await?;
    if record["status"] != "succeeded" || record["result"] != "hello, bob" {
        return Err(format!("the job submitted over the API ended as {record}").into());
    }
    println!("self-test passed: the service's route and jobyard's API answer side by side");
    Ok(())
}
