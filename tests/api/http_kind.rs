//! The built-in `http` kind against a real HTTP server on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::helpers::*;

/// A loopback server: `/ok` answers JSON, `/flaky` answers 503 (Retry-After: 0) once then 200,
/// `/missing` 404, `/big` 100 KiB, `/echo` the request body and a header.
async fn upstream() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new()
            .route(
                "/ok",
                web::get().to(|| async {
                    HttpResponse::Ok().insert_header(("etag", "\"v1\"")).json(json!({"ok": true}))
                }),
            )
            .route(
                "/flaky",
                web::get().to(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n == 0 {
                            HttpResponse::ServiceUnavailable()
                                .insert_header(("retry-after", "0"))
                                .finish()
                        } else {
                            HttpResponse::Ok().body("recovered")
                        }
                    }
                }),
            )
            .route("/missing", web::get().to(|| async { HttpResponse::NotFound().finish() }))
            // To a host no list allows (a name for loopback the tests never allow).
            .route(
                "/elsewhere",
                web::get().to(|| async {
                    HttpResponse::Found()
                        .insert_header(("location", "http://localhost:9/ok"))
                        .finish()
                }),
            )
            .route(
                "/big",
                web::get().to(|| async { HttpResponse::Ok().body(vec![b'x'; 100 * 1024]) }),
            )
            .route(
                "/echo",
                web::post().to(|req: actix_web::HttpRequest, body: web::Bytes| async move {
                    let marker = req
                        .headers()
                        .get("x-marker")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    HttpResponse::Ok().insert_header(("location", marker)).body(body)
                }),
            )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind upstream");
    let base = format!("http://{}", server.addrs()[0]);
    actix_rt::spawn(server.run());
    (base, calls)
}

#[actix_web::test]
async fn a_2xx_answer_succeeds_with_status_headers_and_body() {
    let app = spawn_app().await;
    let (base, _) = upstream().await;
    let job = app.submit(json!({"kind": "http", "payload": {"url": format!("{base}/ok")}})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["status"], 200);
    assert_eq!(done["result"]["headers"]["etag"], "\"v1\"");
    assert_eq!(done["result"]["headers"]["content-type"], "application/json");
    assert_eq!(done["result"]["body"], r#"{"ok":true}"#);
    assert_eq!(done["result"]["body_truncated"], false);
}

#[actix_web::test]
async fn method_headers_and_body_are_sent() {
    let app = spawn_app().await;
    let (base, _) = upstream().await;
    let payload = json!({"method": "post", "url": format!("{base}/echo"), "headers": {"x-marker": "m1"}, "body": "hello"});
    let job = app.submit(json!({"kind": "http", "payload": payload})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["result"]["body"], "hello");
    assert_eq!(done["result"]["headers"]["location"], "m1");
}

#[actix_web::test]
async fn a_503_is_retried_honouring_retry_after() {
    let app = spawn_app().await;
    let (base, calls) = upstream().await;
    // A backoff of an hour: only the upstream's `Retry-After: 0` lets the retry come soon.
    let spec = json!({"kind": "http", "payload": {"url": format!("{base}/flaky")}, "backoff": {"initial_ms": 3600000, "max_ms": 3600000}});
    let job = app.submit(spec).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"]["body"], "recovered");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn a_404_fails_without_retry() {
    let app = spawn_app().await;
    let (base, _) = upstream().await;
    let job = app.submit(json!({"kind": "http", "payload": {"url": format!("{base}/missing")}, "max_attempts": 5})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["error"], "HTTP 404 Not Found");
}

#[actix_web::test]
async fn a_large_body_is_truncated_at_64_kib() {
    let app = spawn_app().await;
    let (base, _) = upstream().await;
    let job = app.submit(json!({"kind": "http", "payload": {"url": format!("{base}/big")}})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["result"]["body"].as_str().unwrap().len(), 64 * 1024);
    assert_eq!(done["result"]["body_truncated"], true);
}

#[actix_web::test]
async fn a_connection_failure_is_a_retryable_error() {
    let app = spawn_app().await;
    // Bound then dropped: nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (base, _) = upstream().await;
    let tls_to_plain = base.replace("http://", "https://") + "/ok";
    for url in [format!("http://127.0.0.1:{port}/"), tls_to_plain] {
        let spec = json!({"kind": "http", "payload": {"url": url}, "max_attempts": 2, "backoff": {"initial_ms": 1, "jitter": false}});
        let job = app.submit(spec).await;
        let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["attempts"], 2, "retried: {done}");
        assert!(done["error"].as_str().unwrap().starts_with("request failed"), "{done}");
    }
}

#[actix_web::test]
async fn with_allowed_hosts_a_redirect_is_not_followed() {
    let app = spawn_app_with(|c| {
        c.http_allowed_hosts = Some(jobyard::kinds::upstream::AllowedHosts::parse("127.0.0.1"));
    })
    .await;
    let (base, _) = upstream().await;
    let refused = app
        .post("/v1/jobs", json!({"kind": "http", "payload": {"url": "http://localhost:9/ok"}}))
        .await;
    assert_eq!(
        (refused.status, refused.body["error"]["field"].as_str()),
        (400, Some("payload")),
        "{}",
        refused.body
    );
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'localhost' is not in JOBYARD_HTTP_ALLOWED_HOSTS"), "{message}");
    let job = app.submit(json!({"kind": "http", "payload": {"url": format!("{base}/elsewhere")}, "max_attempts": 3})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{done}"
    );
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("302")
            && error.contains("http://localhost:9/ok")
            && error.contains("not followed"),
        "{error}"
    );
}

#[actix_web::test]
async fn allowed_hosts_hold_when_the_job_runs_not_only_at_submit() {
    let on = On::redis();
    let (base, calls) = upstream().await;
    let prefix = format!("t{}", fastrand::u32(..));
    // Submitted through an instance without the list (running no jobs)...
    let lax = on.spawn_shared(&prefix, |c| c.concurrency = 0).await;
    // ...and run by one whose list does not name the upstream's host.
    let _strict = on
        .spawn_shared(&prefix, |c| {
            c.http_allowed_hosts =
                Some(jobyard::kinds::upstream::AllowedHosts::parse("example.com"));
        })
        .await;
    let job =
        lax.submit(json!({"kind": "http", "payload": {"url": format!("{base}/flaky")}})).await;
    let done = lax.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{done}"
    );
    assert!(done["error"].as_str().unwrap().contains("JOBYARD_HTTP_ALLOWED_HOSTS"), "{done}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no request left for a host outside the list");
}
