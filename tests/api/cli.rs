//! The `jobyard` binary's client subcommands and `check`, run as a real process against a test
//! server.

use std::process::Output;

use serde_json::{json, Value};

use crate::helpers::*;

async fn jobyard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobyard"));
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    // Coverage runs collect the child's profile too.
    if let Ok(profile) = std::env::var("LLVM_PROFILE_FILE") {
        command.env("LLVM_PROFILE_FILE", profile);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    // A scratch directory, so no `.env.local` of the developer's is read.
    command.current_dir(std::env::temp_dir());
    within(DEADLINE, command.output()).await.expect("command ends in time").expect("command runs")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "stdout is not JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[actix_web::test]
async fn submit_wait_status_jobs_stats_and_cancel() {
    let app = spawn_app().await;
    let env = [("JOBYARD_URL", app.base.as_str())];
    let out = jobyard(
        &["submit", "--kind", "noop", "--payload", r#"{"a":1}"#, "--priority", "-5", "--wait"],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job = stdout_json(&out);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["priority"], -5);
    assert_eq!(job["result"], json!({"a": 1}));
    let id = job["id"].as_str().unwrap();

    let out = jobyard(&["status", id], &env).await;
    assert_eq!(stdout_json(&out)["id"], id);
    let out = jobyard(&["jobs", "--status", "succeeded", "--limit", "5"], &env).await;
    assert_eq!(stdout_json(&out)["jobs"][0]["id"], id);
    let out = jobyard(&["stats"], &env).await;
    assert_eq!(stdout_json(&out)["queues"]["default"]["succeeded"], 1);

    let out = jobyard(&["cancel", id], &env).await;
    assert!(!out.status.success(), "cancelling a terminal job fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("409") && stderr.contains("already finished"), "{stderr}");
}

#[actix_web::test]
async fn submit_with_dependencies_and_delay() {
    let app = spawn_app().await;
    let env = [("JOBYARD_URL", app.base.as_str())];
    let first =
        stdout_json(&jobyard(&["submit", "--kind", "noop", "--delay-ms", "60000"], &env).await);
    assert_eq!(first["status"], "scheduled");
    let id = first["id"].as_str().unwrap();
    let second =
        stdout_json(&jobyard(&["submit", "--kind", "noop", "--depends-on", id], &env).await);
    assert_eq!(second["status"], "waiting");
    assert_eq!(second["depends_on"], json!([id]));
}

#[actix_web::test]
async fn the_token_is_sent_when_configured() {
    let app = spawn_app_with(|c| c.api_token = Some(jobyard::config::Secret::new("t0k"))).await;
    let out =
        jobyard(&["stats"], &[("JOBYARD_URL", app.base.as_str()), ("JOBYARD_API_TOKEN", "t0k")])
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = jobyard(&["stats"], &[("JOBYARD_URL", app.base.as_str())]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[actix_web::test]
async fn an_unreachable_server_is_one_line_and_a_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let out = jobyard(&["stats"], &[("JOBYARD_URL", url.as_str())]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach jobyard"), "{stderr}");
}

#[actix_web::test]
async fn check_validates_the_configuration() {
    let out = jobyard(&["check"], &[]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration: ok"));
    let out = jobyard(&["check"], &[("JOBYARD_LEASE_MS", "soon")]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: JOBYARD_LEASE_MS=soon is invalid: expected an integer from 1000 to 3600000"
    );
}

#[actix_web::test]
async fn check_refuses_a_redis_that_may_evict_jobs_for_the_redis_queue() {
    let redis = crate::redis_support::TestRedis::start();
    let reply = redis.command(&[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"]);
    assert!(reply.starts_with(b"+OK"));
    let url = redis.url();
    let out = jobyard(&["check"], &[("REDIS_URL", url.as_str())]).await;
    assert_eq!(out.status.code(), Some(1), "the queue defaults to redis with REDIS_URL");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("allkeys-lru") && stderr.contains("volatile-"), "{stderr}");
    let out =
        jobyard(&["check"], &[("REDIS_URL", url.as_str()), ("JOBYARD_QUEUE_BACKEND", "memory")])
            .await;
    assert!(out.status.success(), "a cache alone may live with any policy");
    assert!(String::from_utf8_lossy(&out.stdout).contains("maxmemory-policy allkeys-lru"));
}

#[actix_web::test]
async fn check_reports_the_redis_version_and_round_trip_or_why_it_cannot_connect() {
    let redis = crate::redis_support::TestRedis::start();
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("JOBYARD_QUEUE_BACKEND", "memory")];
    let out = jobyard(&["check"], &env).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The version reported is the one this server gives about itself.
    let info = String::from_utf8(redis.command(&[b"INFO", b"server"])).unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("INFO server has redis_version")
        .trim();
    assert!(stdout.contains(&format!("(version {version},")), "{stdout}");
    assert!(stdout.contains("round trip"), "{stdout}");
    drop(redis);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("redis://:hunter2@127.0.0.1:{port}");
    let out =
        jobyard(&["check"], &[("REDIS_URL", dead.as_str()), ("JOBYARD_QUEUE_BACKEND", "memory")])
            .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot use redis at redis://:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password is never printed: {stderr}");
}

#[actix_web::test]
async fn a_password_in_redis_url_is_used_and_never_printed() {
    let redis = crate::redis_support::TestRedis::start_with_password("s3cr3t-pw");
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("JOBYARD_QUEUE_BACKEND", "memory")];
    let out = jobyard(&["check"], &env).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("redis://:***@127.0.0.1"), "{stdout}");
    assert!(!stdout.contains("s3cr3t-pw"), "{stdout}");
    let wrong = url.replace("s3cr3t-pw", "wrong-pw");
    let out =
        jobyard(&["check"], &[("REDIS_URL", wrong.as_str()), ("JOBYARD_QUEUE_BACKEND", "memory")])
            .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot use redis") && !stderr.contains("wrong-pw"), "{stderr}");
}

#[actix_web::test]
async fn serve_runs_degraded_when_redis_is_down_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("redis://127.0.0.1:{port}");
    let app = spawn_app_with(|c| {
        c.redis_url = Some(crate::cache_backends::redis_url(&dead));
        c.cache_backend = jobyard::config::CacheBackendKind::Hybrid;
    })
    .await;
    let ready = app.get("/ready").await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("degraded")));
    let put = app.put_raw("/v1/cache/k", "application/json", b"1").await;
    assert_eq!(put.status, 204);
    assert_eq!(app.get("/v1/cache/k").await.body, json!(1));
}

#[actix_web::test]
async fn serve_refuses_a_bad_configuration_with_one_line() {
    let out = jobyard(&["serve"], &[("JOBYARD_QUEUE_BACKEND", "postgres")]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: JOBYARD_QUEUE_BACKEND=postgres is invalid: expected memory or redis"
    );
}
