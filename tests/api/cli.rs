//! The `jobyard` binary's client subcommands and `check`, run as a real process against a test
//! server.

use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::helpers::*;

async fn jobyard(args: &[&str], env: &[(&str, &str)]) -> Output {
    // A scratch directory, so no `.env.local` of the developer's is read.
    jobyard_in(&std::env::temp_dir(), args, env).await
}

/// `jobyard` run in `dir` (where it reads `.env.local`).
async fn jobyard_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobyard"));
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    // Coverage runs collect the child's profile too.
    if let Ok(profile) = std::env::var("LLVM_PROFILE_FILE") {
        command.env("LLVM_PROFILE_FILE", profile);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.current_dir(dir);
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

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[actix_web::test]
async fn wait_exits_with_how_the_job_ended() {
    let app = spawn_app().await;
    let env = [("JOBYARD_URL", app.base.as_str())];
    let payload = r#"{"retryable": false, "message": "upstream said no"}"#;
    let out = jobyard(&["submit", "--kind", "fail", "--payload", payload, "--wait"], &env).await;
    assert_eq!(out.status.code(), Some(3), "a failed job exits 3: {}", stderr(&out));
    let job = stdout_json(&out);
    assert_eq!(
        (job["status"].as_str(), job["error"].as_str()),
        (Some("failed"), Some("upstream said no"))
    );

    let sleep = r#"{"ms": 60000}"#;
    let out = jobyard(
        &["submit", "--kind", "sleep", "--payload", sleep, "--wait", "--wait-ms", "200"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "a job still running exits 5: {}", stderr(&out));
    let job = stdout_json(&out);
    assert!(stderr(&out).contains("has not ended"), "{}", stderr(&out));
    let id = job["id"].as_str().unwrap().to_owned();

    // `cancel` waits for the job to stop and says how it ended.
    let out = jobyard(&["cancel", &id], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["status"], "cancelled");
}

#[actix_web::test]
async fn errors_are_one_line_with_a_status_that_says_so() {
    let app = spawn_app().await;
    let env = [("JOBYARD_URL", app.base.as_str())];
    let out = jobyard(&["status", "0193a4b2-0000-7000-8000-000000000000"], &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));

    let out = jobyard(&["submit", "--kind", "noop", "--payload", "{nope"], &env).await;
    assert_eq!(out.status.code(), Some(2), "bad input is a usage error");
    assert!(stderr(&out).contains("--payload is not JSON"), "{}", stderr(&out));

    let out = jobyard(&["submit", "--kind", "noop", "--priority", "5000"], &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("400") && stderr(&out).contains("priority"), "{}", stderr(&out));
}

#[actix_web::test]
async fn jobs_filters_by_kind_and_queue_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let env = [("JOBYARD_URL", app.base.as_str())];
    for (kind, queue) in [("noop", "a"), ("noop", "b"), ("sleep", "a"), ("noop", "a")] {
        let payload = if kind == "sleep" { r#"{"ms": 1}"# } else { "{}" };
        let args = ["submit", "--kind", kind, "--queue", queue, "--payload", payload, "--wait"];
        assert!(jobyard(&args, &env).await.status.success());
    }
    let out = jobyard(&["jobs", "--kind", "noop", "--queue", "a", "--limit", "1"], &env).await;
    let page = stdout_json(&out);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    let first = page["jobs"][0].clone();
    assert_eq!((first["kind"].as_str(), first["queue"].as_str()), (Some("noop"), Some("a")));
    let cursor = page["next_cursor"].as_str().expect("a second page").to_owned();
    let out = jobyard(
        &["jobs", "--kind", "noop", "--queue", "a", "--limit", "1", "--cursor", &cursor],
        &env,
    )
    .await;
    let page = stdout_json(&out);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_ne!(page["jobs"][0]["id"], first["id"]);
    assert_eq!(
        (page["jobs"][0]["kind"].as_str(), page["jobs"][0]["queue"].as_str()),
        (Some("noop"), Some("a"))
    );
}

#[actix_web::test]
async fn schedules_and_cache_subcommands_cover_their_routes() {
    let app = spawn_app().await;
    let env = [("JOBYARD_URL", app.base.as_str())];
    let out = jobyard(
        &["schedules", "put", "nightly", "--cron", "0 0 3 * * *", "--job", r#"{"kind":"noop"}"#],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["cron"], "0 0 3 * * *");
    let out = jobyard(&["schedules", "list"], &env).await;
    let names: Vec<Value> = stdout_json(&out)["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert!(names.contains(&json!("nightly")), "{names:?}");
    assert!(jobyard(&["schedules", "delete", "nightly"], &env).await.status.success());
    assert_eq!(jobyard(&["schedules", "get", "nightly"], &env).await.status.code(), Some(1));

    let out =
        jobyard(&["cache", "put", "dash/a:b", "--value", r#"{"x":1}"#, "--tag", "dash"], &env)
            .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = jobyard(&["cache", "get", "dash/a:b"], &env).await;
    assert_eq!(stdout_json(&out), json!({"x": 1}));
    let out = jobyard(&["cache", "invalidate", "--tag", "dash"], &env).await;
    assert_eq!(stdout_json(&out)["removed"], 1);
    assert_eq!(jobyard(&["cache", "get", "dash/a:b"], &env).await.status.code(), Some(1));
}

/// A proxy in front of `app` that answers the first submit 503 (after passing it on, as a
/// server that stored the job but could not say so would), and passes everything else on.
async fn flaky_proxy(app: &TestApp) -> (String, Arc<Mutex<Vec<Value>>>) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let submits: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (target, seen) = (app.base.clone(), submits.clone());
    let server = HttpServer::new(move || {
        let (target, seen) = (target.clone(), seen.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (target, seen) = (target.clone(), seen.clone());
            async move {
                let url = format!("{target}{}", req.uri());
                let mut forward = awc::Client::new().request(req.method().clone(), url);
                for (name, value) in req.headers() {
                    if !matches!(name.as_str(), "host" | "content-length") {
                        forward = forward.insert_header((name.clone(), value.clone()));
                    }
                }
                let mut answer = forward.send_body(body.clone()).await.expect("the app answers");
                let bytes = answer.body().await.expect("the app's body");
                if req.path() == "/v1/jobs" && req.method() == actix_web::http::Method::POST {
                    let mut seen = seen.lock().unwrap();
                    seen.push(serde_json::from_slice(&body).expect("a JSON submit"));
                    if seen.len() == 1 {
                        return HttpResponse::ServiceUnavailable()
                            .insert_header(("Retry-After", "0"))
                            .json(json!({"error": {"code": "backend_unavailable", "message": "try again"}}));
                    }
                }
                let mut reply = HttpResponse::build(answer.status());
                for (name, value) in answer.headers() {
                    if name.as_str() != "content-length" {
                        reply.insert_header((name.clone(), value.clone()));
                    }
                }
                reply.body(bytes)
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("a free port");
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}"), submits)
}

#[actix_web::test]
async fn a_submit_answered_503_is_retried_without_a_second_job() {
    let app = spawn_app().await;
    let (proxy, submits) = flaky_proxy(&app).await;
    let out = jobyard(
        &["submit", "--kind", "noop", "--payload", "{}"],
        &[("JOBYARD_URL", proxy.as_str())],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout_json(&out);
    let submits = submits.lock().unwrap().clone();
    assert_eq!(submits.len(), 2, "the 503 was retried: {submits:?}");
    let key = submits[0]["idempotency_key"].as_str().expect("a key is made up");
    assert_eq!(submits[1]["idempotency_key"], key, "the retry carries the same key");
    let listed = app.get("/v1/jobs?limit=10").await.body;
    let ids: Vec<&Value> = listed["jobs"].as_array().unwrap().iter().map(|j| &j["id"]).collect();
    assert_eq!(ids, vec![&job["id"]], "one job, the one printed");
}

#[actix_web::test]
async fn check_points_at_a_bad_env_file_line_and_a_misspelt_variable() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = "JOBYARD_ADDR=127.0.0.1:0\n# a comment\nJOBYARD_LEASE_MS 5000\n";
    std::fs::write(dir.path().join(".env.local"), file).unwrap();
    let out = jobyard_in(dir.path(), &["check"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out);
    assert!(said.contains("line 3, column 18: 'JOBYARD_LEASE_MS 5000'"), "{said}");

    std::fs::write(dir.path().join(".env.local"), "JOBYARD_ADDR=127.0.0.1:0\n").unwrap();
    let out = jobyard_in(dir.path(), &["check"], &[("JOBYARD_CONCURENCY", "4")]).await;
    assert!(out.status.success(), "a warning, not a failure: {}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(
            "JOBYARD_CONCURENCY is not a variable jobyard reads; did you mean JOBYARD_CONCURRENCY?"
        ),
        "{said}"
    );
}

#[actix_web::test]
async fn a_busy_port_names_the_variable_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for command in ["serve", "check"] {
        let out = jobyard(&[command], &[("JOBYARD_ADDR", addr.as_str())]).await;
        assert!(!out.status.success(), "{command} on a busy port fails");
        let said = stderr(&out);
        assert_eq!(said.trim().lines().count(), 1, "{command}: {said}");
        assert!(
            said.contains(&format!("cannot listen on {addr}")) && said.contains("set JOBYARD_ADDR"),
            "{command}: {said}"
        );
    }
}

#[actix_web::test]
async fn retry_run_delete_and_jobs_by_group() {
    let app = spawn_app().await;
    let env = [("JOBYARD_URL", app.base.as_str())];
    let payload = r#"{"retryable": false, "message": "no"}"#;
    let out = jobyard(&["submit", "--kind", "fail", "--payload", payload, "--wait"], &env).await;
    let id = stdout_json(&out)["id"].as_str().unwrap().to_owned();
    let out = jobyard(&["retry", &id], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout_json(&out);
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("queued"), Some(0)));
    let failed_times = |n: usize| {
        move |job: &Value| {
            job["status"] == "failed" && job["history"].as_array().map_or(0, Vec::len) == n
        }
    };
    app.wait_until(&id, "failed again", failed_times(2)).await;
    let out = jobyard(&["retry", "--status", "failed", "--kind", "fail"], &env).await;
    assert_eq!(stdout_json(&out), json!({"retried": 1}), "{}", stderr(&out));
    app.wait_until(&id, "failed a third time", failed_times(3)).await;
    let out = jobyard(&["delete", &id], &env).await;
    assert_eq!(stdout_json(&out), json!({}), "{}", stderr(&out));
    let out = jobyard(&["status", &id], &env).await;
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));

    let out = jobyard(&["submit", "--kind", "noop", "--delay-ms", "3600000", "--group", "g"], &env);
    let delayed = stdout_json(&out.await)["id"].as_str().unwrap().to_owned();
    let out = jobyard(&["jobs", "--group", "g"], &env).await;
    assert_eq!(stdout_json(&out)["jobs"][0]["id"], delayed.as_str());
    let out = jobyard(&["run", &delayed], &env).await;
    assert_eq!(stdout_json(&out)["status"], "queued", "{}", stderr(&out));
    app.wait_terminal(&delayed).await;
    let out = jobyard(&["run", &delayed], &env).await;
    assert!(stderr(&out).contains("409"), "not scheduled any more: {}", stderr(&out));
    let out = jobyard(&["retry"], &env).await;
    assert_eq!(out.status.code(), Some(2), "an id or --status is needed");
}
