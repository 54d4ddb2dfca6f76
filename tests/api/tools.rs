//! Tools against a fake upstream on loopback: configuration and validation, data served from
//! the cache (fresh, stale-while-revalidate, stale-if-error, single flight), conditional
//! refreshes, rate-limit holds, and Redis-shared tools, data and metadata across instances
//! and restarts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobyard::config::{CacheBackendKind, QueueBackendKind, RedisUrl};
use jobyard::Config;
use serde_json::{json, Value};

use crate::fake_upstream::FakeUpstream;
use crate::helpers::*;
use crate::redis_support::TestRedis;

/// A memory-backed app whose documents go to a directory of its own.
async fn app_with(adjust: impl FnOnce(&mut Config)) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let app = spawn_app_with(move |c| {
        c.data_dir = path;
        adjust(c);
    })
    .await;
    (app, dir)
}

async fn put_tool(app: &TestApp, name: &str, body: Value) -> Value {
    let resp = app.put(&format!("/v1/tools/{name}"), body.clone()).await;
    assert!(resp.status == 201 || resp.status == 200, "PUT {body}: {} {}", resp.status, resp.body);
    resp.body
}

/// A read of the tool's data: status, headers and the body as text.
async fn read(
    app: &TestApp,
    name: &str,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, String) {
    let mut request = app.http.get(format!("{}/v1/tools/{name}/data", app.base));
    for (n, v) in headers {
        request = request.insert_header((*n, *v));
    }
    let mut response = request.send().await.expect("reaches the server");
    let body = response.body().limit(16 << 20).await.expect("a body");
    (
        response.status().as_u16(),
        response.headers().clone(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn header<'a>(headers: &'a awc::http::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn warnings(headers: &awc::http::header::HeaderMap) -> Vec<String> {
    headers.get_all("warning").filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
}

/// Waits until the tool's cached data is past its `ttl_secs` (a wait on the clock, not on
/// another task).
async fn until_stale(app: &TestApp, name: &str, ttl_secs: i64, stale_secs: i64) {
    let key = format!("tool:{name}:data");
    let entry = app.runtime.cache().get(&key).await.expect("data cached");
    let stale_at = entry.expires_at - chrono::Duration::seconds(stale_secs)
        + chrono::Duration::milliseconds(50);
    assert!(stale_at - Utc::now() <= chrono::Duration::seconds(ttl_secs + 1));
    if let Ok(wait) = (stale_at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

async fn tool_state(app: &TestApp, name: &str) -> Value {
    let resp = app.get(&format!("/v1/tools/{name}")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body["state"].clone()
}

#[actix_web::test]
async fn tools_are_created_replaced_shown_and_deleted_with_what_they_own() {
    let upstream = FakeUpstream::start(r#"{"stars": 1}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    let spec = json!({"url": upstream.url, "refresh": "0 0 * * * *", "ttl_secs": 60, "stale_secs": 30, "rate_limit": {"requests": 10, "per_secs": 60}});
    let resp = app.put("/v1/tools/github", spec.clone()).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.body["method"], "GET");
    assert!(resp.body["state"]["next_refresh_at"].is_string(), "{}", resp.body);
    assert_eq!(app.put("/v1/tools/github", spec).await.status, 200);
    let limit = app.get("/v1/limits/tool:github").await;
    assert_eq!(limit.status, 200, "{}", limit.body);
    assert_eq!(limit.body["concurrency"], 1, "{}", limit.body);
    assert_eq!(app.get("/v1/schedules/tool:github").await.status, 200);
    let list = app.get("/v1/tools").await;
    assert_eq!(list.body["tools"].as_array().unwrap().len(), 1);
    let (status, _, body) = read(&app, "github", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"stars": 1}"#));
    assert_eq!(app.delete("/v1/tools/github").await.status, 204);
    assert_eq!(app.get("/v1/tools/github").await.status, 404);
    assert_eq!(app.delete("/v1/tools/github").await.status, 404);
    assert_eq!(app.get("/v1/limits/tool:github").await.status, 404);
    assert_eq!(app.get("/v1/schedules/tool:github").await.status, 404);
    assert!(app.runtime.cache().get("tool:github:data").await.is_none());
    assert_eq!(read(&app, "github", &[]).await.0, 404);
}

#[actix_web::test]
async fn bad_tools_are_refused_naming_the_field() {
    let (app, _dir) = app_with(|c| {
        c.tool_secrets = vec!["GITHUB_TOKEN".into()];
        c.http_allowed_hosts = Some(jobyard::kinds::upstream::AllowedHosts::parse("127.0.0.1"));
    })
    .await;
    let cases = [
        (
            "gh",
            json!({"url": "http://127.0.0.1:1/", "headers": {"Authorization": "Bearer ${REDIS_URL}"}}),
            "headers.Authorization",
        ),
        ("gh", json!({"url": "http://example.com/"}), "url"),
        ("gh", json!({"url": "http://127.0.0.1:1/", "refresh": "every minute"}), "refresh"),
        ("gh", json!({"url": "http://127.0.0.1:1/", "ttl_secs": 0}), "ttl_secs"),
        (
            "gh",
            json!({"url": "http://127.0.0.1:1/", "rate_limit": {"requests": 1, "per_secs": 0}}),
            "rate_limit.per_secs",
        ),
        ("Not_Valid", json!({"url": "http://127.0.0.1:1/"}), "name"),
    ];
    for (name, body, field) in cases {
        let resp = app.put(&format!("/v1/tools/{name}"), body.clone()).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.body);
        assert_eq!(resp.field(), Some(field), "{body}: {}", resp.body);
    }
    let resp = app.put("/v1/tools/gh", json!({"url": "http://127.0.0.1:1/", "headers": {"Authorization": "Bearer ${REDIS_URL}"}})).await;
    assert!(resp.body["error"]["message"].as_str().unwrap().contains("REDIS_URL"), "{}", resp.body);
    let ok = put_tool(&app, "gh", json!({"url": "http://127.0.0.1:1/", "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}"}})).await;
    assert_eq!(ok["headers"]["Authorization"], "Bearer ${GITHUB_TOKEN}", "shown as written");
    // The `http` kind is held to the same hosts.
    let resp = app
        .post("/v1/jobs", json!({"kind": "http", "payload": {"url": "http://example.com/"}}))
        .await;
    assert_eq!((resp.status, resp.field()), (400, Some("payload")), "{}", resp.body);
    app.submit(
        json!({"kind": "http", "payload": {"url": "http://127.0.0.1:1/"}, "max_attempts": 1}),
    )
    .await;
}

#[actix_web::test]
async fn header_references_are_resolved_only_in_the_request() {
    let Ok(home) = std::env::var("HOME") else { return };
    let upstream = FakeUpstream::start("{}").await;
    let (app, _dir) = app_with(|c| c.tool_secrets = vec!["HOME".into()]).await;
    put_tool(
        &app,
        "env",
        json!({"url": upstream.url, "headers": {"Authorization": "Bearer ${HOME}"}}),
    )
    .await;
    assert_eq!(read(&app, "env", &[]).await.0, 200);
    assert_eq!(
        upstream.seen()[0].authorization.as_deref(),
        Some(format!("Bearer {home}").as_str())
    );
    let shown = app.get("/v1/tools/env").await;
    assert_eq!(shown.body["headers"]["Authorization"], "Bearer ${HOME}");
}

#[actix_web::test]
async fn fresh_data_is_served_from_the_cache_without_upstream_requests() {
    let upstream = FakeUpstream::start(r#"{"open_issues": 7}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "jira", json!({"url": upstream.url, "ttl_secs": 300, "stale_secs": 60})).await;
    let (status, headers, body) = read(&app, "jira", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"open_issues": 7}"#));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let cache_control = header(&headers, "cache-control").unwrap();
    assert!(
        cache_control.starts_with("max-age=")
            && cache_control.ends_with(", stale-while-revalidate=60"),
        "{cache_control}"
    );
    assert!(header(&headers, "age").is_some() && header(&headers, "last-modified").is_some());
    let etag = header(&headers, "etag").unwrap().to_owned();
    assert_eq!(upstream.count(), 1);
    for _ in 0..1000 {
        let (status, headers, _) = read(&app, "jira", &[]).await;
        assert_eq!(status, 200);
        assert!(warnings(&headers).is_empty());
    }
    let (status, _, body) = read(&app, "jira", &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.as_str()), (304, ""));
    assert_eq!(upstream.count(), 1, "1000 fresh reads cost no upstream request");
    let state = tool_state(&app, "jira").await;
    assert_eq!(state["requests"]["ok"], 1, "{state}");
    assert_eq!(state["served"]["fresh"], 1001, "{state}");
    assert_eq!(state["served"]["misses"], 1, "the first read found nothing: {state}");
}

#[actix_web::test]
async fn concurrent_reads_of_an_uncached_tool_share_one_refresh() {
    let upstream = FakeUpstream::start(r#"{"builds": []}"#).await;
    upstream.set(|b| b.delay = Duration::from_millis(300));
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "ci", json!({"url": upstream.url})).await;
    let reads = (0..50).map(|_| read(&app, "ci", &[]));
    for (status, _, body) in futures_util::future::join_all(reads).await {
        assert_eq!((status, body.as_str()), (200, r#"{"builds": []}"#));
    }
    assert_eq!(upstream.count(), 1);
}

#[actix_web::test]
async fn a_read_that_waits_too_little_gets_the_job() {
    let upstream = FakeUpstream::start("{}").await;
    upstream.set(|b| b.delay = Duration::from_millis(500));
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "slow", json!({"url": upstream.url})).await;
    let resp = app.get("/v1/tools/slow/data?wait_ms=0").await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = resp.body["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&id).await["status"], "succeeded");
    assert_eq!(read(&app, "slow", &[]).await.0, 200);
    let forced = app.post_empty("/v1/tools/slow/refresh").await;
    assert_eq!(forced.status, 202, "{}", forced.body);
    assert_eq!(forced.body["kind"], "tool.refresh");
    assert_eq!(app.get("/v1/tools/slow/data?wait_ms=soon").await.field(), Some("wait_ms"));
}

#[actix_web::test]
async fn stale_data_is_served_at_once_and_refreshed_once() {
    let upstream = FakeUpstream::start(r#"{"v": 1}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "gitlab", json!({"url": upstream.url, "ttl_secs": 1, "stale_secs": 600})).await;
    assert_eq!(read(&app, "gitlab", &[]).await.0, 200);
    upstream.set(|b| {
        b.body = r#"{"v": 2}"#.into();
        b.delay = Duration::from_millis(300);
    });
    until_stale(&app, "gitlab", 1, 600).await;
    let reads = (0..10).map(|_| read(&app, "gitlab", &[]));
    for (status, headers, body) in futures_util::future::join_all(reads).await {
        assert_eq!((status, body.as_str()), (200, r#"{"v": 1}"#), "served at once, stale");
        assert_eq!(warnings(&headers), ["110 - \"Response is Stale\""]);
        assert!(header(&headers, "cache-control").unwrap().starts_with("max-age=0,"));
    }
    let refreshed = poll(|| async {
        let (_, _, body) = read(&app, "gitlab", &[]).await;
        (body == r#"{"v": 2}"#).then_some(())
    })
    .await;
    assert!(refreshed.is_some(), "the refresh stored the new data");
    assert_eq!(upstream.count(), 2, "one refresh for every stale read");
    let stale = tool_state(&app, "gitlab").await["served"]["stale"].as_u64().unwrap();
    assert!(stale >= 10, "{stale} stale serves counted");
}

#[actix_web::test]
async fn a_304_keeps_the_body_and_extends_freshness() {
    let upstream = FakeUpstream::start(r#"{"same": true}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "same", json!({"url": upstream.url, "ttl_secs": 1, "stale_secs": 600})).await;
    let (_, first, _) = read(&app, "same", &[]).await;
    until_stale(&app, "same", 1, 600).await;
    let before = app.runtime.cache().get("tool:same:data").await.unwrap().expires_at;
    let forced = app.post_empty("/v1/tools/same/refresh").await;
    assert_eq!(app.wait_terminal(forced.body["id"].as_str().unwrap()).await["status"], "succeeded");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].if_none_match.is_some(), "a conditional request: {seen:?}");
    let state = tool_state(&app, "same").await;
    assert_eq!(state["requests"]["not_modified"], 1, "{state}");
    let entry = app.runtime.cache().get("tool:same:data").await.unwrap();
    assert!(entry.expires_at > before, "freshness extended");
    let (status, headers, body) = read(&app, "same", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"same": true}"#));
    assert_eq!(header(&headers, "etag"), header(&first, "etag"), "same bytes, same ETag");
    assert_eq!(header(&headers, "last-modified"), header(&first, "last-modified"));
}

#[actix_web::test]
async fn an_exhausted_budget_holds_refreshes_until_the_reset() {
    let upstream = FakeUpstream::start(r#"{"limited": true}"#).await;
    upstream.set(|b| {
        b.headers = vec![
            ("x-ratelimit-remaining".into(), "0".into()),
            ("x-ratelimit-reset".into(), "{reset+3}".into()),
        ]
    });
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "rl", json!({"url": upstream.url})).await;
    assert_eq!(read(&app, "rl", &[]).await.0, 200);
    let state = tool_state(&app, "rl").await;
    assert_eq!(state["rate_limit"]["remaining"], 0, "{state}");
    assert!(state["rate_limit"]["reset_at"].is_string(), "{state}");
    let forced = app.post_empty("/v1/tools/rl/refresh").await;
    assert_eq!(app.wait_terminal(forced.body["id"].as_str().unwrap()).await["status"], "succeeded");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    let reset = DateTime::from_timestamp(seen[0].at.timestamp() + 3, 0).unwrap();
    assert!(seen[1].at >= reset, "second request at {} before the reset {reset}", seen[1].at);
}

#[actix_web::test]
async fn a_429_holds_the_tool_until_retry_after() {
    let upstream = FakeUpstream::start("{}").await;
    upstream.set(|b| {
        b.status = Some(429);
        b.headers = vec![("retry-after".into(), "2".into())];
    });
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "busy", json!({"url": upstream.url})).await;
    let resp = app.get("/v1/tools/busy/data?wait_ms=200").await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let first =
        poll(|| async { (upstream.count() >= 1).then(|| upstream.seen()[0].at) }).await.unwrap();
    upstream.set(|b| {
        b.status = None;
        b.headers.clear();
    });
    let id = resp.body["job"]["id"].as_str().unwrap();
    assert_eq!(app.wait_terminal(id).await["status"], "succeeded", "retried once the hold ended");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "no blind retries");
    assert!(seen[1].at >= first + chrono::Duration::milliseconds(1_900), "{:?}", seen);
    let state = tool_state(&app, "busy").await;
    assert_eq!(state["requests"]["rate_limited"], 1, "{state}");
    assert_eq!(state["last_error"], Value::Null, "{state}");
}

#[actix_web::test]
async fn a_failing_upstream_leaves_the_last_good_data_served() {
    let upstream = FakeUpstream::start(r#"{"good": 1}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "flaky", json!({"url": upstream.url, "ttl_secs": 1, "stale_secs": 600})).await;
    assert_eq!(read(&app, "flaky", &[]).await.0, 200);
    upstream.set(|b| b.status = Some(500));
    until_stale(&app, "flaky", 1, 600).await;
    let (status, _, body) = read(&app, "flaky", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"good": 1}"#));
    let failed = poll(|| async {
        let state = tool_state(&app, "flaky").await;
        state["last_error"].is_string().then_some(state)
    })
    .await
    .expect("the refresh failed");
    assert_eq!(failed["last_error"], "HTTP 500 Internal Server Error");
    let (status, headers, body) = read(&app, "flaky", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"good": 1}"#));
    let warnings = warnings(&headers);
    assert!(warnings.contains(&"111 - \"Revalidation Failed\"".to_owned()), "{warnings:?}");
    let age: u64 = header(&headers, "age").unwrap().parse().unwrap();
    assert!(age >= 1, "says how old the data is");
    assert!(header(&headers, "x-jobyard-stale-secs").is_some());
}

#[actix_web::test]
async fn a_refresh_that_ended_without_a_trace_does_not_block_the_next() {
    let upstream = FakeUpstream::start("{}").await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "lost", json!({"url": upstream.url})).await;
    assert_eq!(read(&app, "lost", &[]).await.0, 200);
    // As if that refresh had timed out before it could record its end.
    let tools = app.runtime.tools();
    let mut state = tools.state("lost").await.unwrap();
    assert_eq!(state.generation, 1);
    state.generation = 0;
    tools.save_state("lost", &state).await.unwrap();
    let forced = app.post_empty("/v1/tools/lost/refresh").await;
    assert_eq!(app.wait_terminal(forced.body["id"].as_str().unwrap()).await["status"], "succeeded");
    assert_eq!(upstream.count(), 2, "a new refresh, not the ended one");
    assert_eq!(tools.state("lost").await.unwrap().generation, 2);
}

#[actix_web::test]
async fn a_tool_deleted_during_its_refresh_stays_deleted() {
    let upstream = FakeUpstream::start("{}").await;
    upstream.set(|b| b.delay = Duration::from_millis(500));
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "gone", json!({"url": upstream.url})).await;
    let resp = app.get("/v1/tools/gone/data?wait_ms=0").await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert!(poll(|| async { (upstream.count() == 1).then_some(()) }).await.is_some());
    assert_eq!(app.delete("/v1/tools/gone").await.status, 204);
    let done = app.wait_terminal(resp.body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["result"]["skipped"].is_string(), "{done}");
    assert!(app.runtime.cache().get("tool:gone:data").await.is_none(), "no data brought back");
    let docs = app.runtime.tools().documents();
    let state = docs.get_value(jobyard::documents::Namespace::ToolState, "gone").await.unwrap();
    assert_eq!(state, None, "no state brought back");
}

#[actix_web::test]
async fn redirects_are_not_followed() {
    let upstream = FakeUpstream::start("{}").await;
    upstream.set(|b| {
        b.status = Some(302);
        b.headers = vec![("location".into(), "http://169.254.169.254/latest".into())];
    });
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "moved", json!({"url": upstream.url})).await;
    let resp = app.get("/v1/tools/moved/data?wait_ms=0").await;
    let done = app.wait_terminal(resp.body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    let state = tool_state(&app, "moved").await;
    let error = state["last_error"].as_str().unwrap();
    assert!(error.contains("redirects are not followed"), "{error}");
    assert_eq!(upstream.count(), 1);
}

#[actix_web::test]
async fn metadata_documents_are_stored_validated_and_bounded() {
    let (app, dir) = app_with(|_| {}).await;
    let doc = json!({"layout": ["github", "ci"]});
    assert_eq!(app.put("/v1/metadata/dashboard", doc.clone()).await.status, 201);
    assert_eq!(app.put("/v1/metadata/dashboard", doc.clone()).await.status, 200);
    assert_eq!(app.get("/v1/metadata/dashboard").await.body, doc);
    // The file store the embedding API reads.
    assert!(dir.path().join("dashboard.json").exists());
    assert_eq!(app.put("/v1/metadata/Bad%20Name", doc.clone()).await.field(), Some("name"));
    let reserved = app.put("/v1/metadata/cache-warming", doc.clone()).await;
    assert_eq!(reserved.field(), Some("name"), "the warming's own document");
    let big = json!({"x": "y".repeat(70 * 1024)});
    assert_eq!(app.put("/v1/metadata/big", big).await.status, 413);
    let put = app.http.put(format!("{}/v1/metadata/x", app.base));
    let not_json = app.send(put, Some(("application/json", b"{".to_vec()))).await;
    assert_eq!((not_json.status, not_json.field()), (400, Some("body")));
    assert_eq!(app.delete("/v1/metadata/dashboard").await.status, 204);
    assert_eq!(app.get("/v1/metadata/dashboard").await.status, 404);
    assert_eq!(app.delete("/v1/metadata/dashboard").await.status, 404);
}

#[actix_web::test]
async fn at_start_tools_with_nothing_cached_are_refreshed_at_once() {
    let upstream = FakeUpstream::start(r#"{"cold": true}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let first = spawn_app_with(|c| c.data_dir = path.clone()).await;
    put_tool(&first, "cold", json!({"url": upstream.url})).await;
    first.shutdown().await;
    assert_eq!(upstream.count(), 0);
    // The tool survives in the file store; the memory cache does not.
    let second = spawn_app_with(|c| c.data_dir = path).await;
    let fetched = poll(|| async { (upstream.count() == 1).then_some(()) }).await;
    assert!(fetched.is_some(), "refreshed without a read");
    let cached = poll(|| async { second.runtime.cache().get("tool:cold:data").await }).await;
    assert!(cached.is_some());
    let (status, _, body) = read(&second, "cold", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"cold": true}"#));
    assert_eq!(upstream.count(), 1);
}

/// An app on the Redis queue and the hybrid cache under `prefix`.
async fn on_redis(redis: &TestRedis, prefix: &str) -> TestApp {
    let url = redis.url();
    let prefix = prefix.to_owned();
    spawn_app_with(move |c| {
        c.redis_url = Some(RedisUrl::parse(&url).unwrap());
        c.redis_prefix = prefix;
        c.queue_backend = QueueBackendKind::Redis;
        c.cache_backend = CacheBackendKind::Hybrid;
        c.data_dir = std::env::temp_dir().join("jobyard-tools-test-unused");
    })
    .await
}

#[actix_web::test]
async fn after_a_restart_cached_data_is_served_before_any_upstream_request() {
    let redis = TestRedis::start();
    let upstream = FakeUpstream::start(r#"{"kept": true}"#).await;
    let first = on_redis(&redis, "restart").await;
    put_tool(&first, "kept", json!({"url": upstream.url, "ttl_secs": 300})).await;
    assert_eq!(read(&first, "kept", &[]).await.0, 200);
    first.shutdown().await;
    assert_eq!(upstream.count(), 1);
    let second = on_redis(&redis, "restart").await;
    let (status, _, body) = read(&second, "kept", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"kept": true}"#));
    assert_eq!(upstream.count(), 1, "served from Redis, no refresh at start");
    assert_eq!(second.get("/v1/tools/kept").await.status, 200, "the tool is kept in Redis");
}

#[actix_web::test]
async fn three_instances_make_one_upstream_request_per_tick() {
    let redis = TestRedis::start();
    let upstream = FakeUpstream::start(r#"{"tick": true}"#).await;
    let a = on_redis(&redis, "three").await;
    let b = on_redis(&redis, "three").await;
    let c = on_redis(&redis, "three").await;
    put_tool(&a, "ticked", json!({"url": upstream.url, "refresh": "* * * * * *", "ttl_secs": 300}))
        .await;
    assert_eq!(b.get("/v1/tools/ticked").await.status, 200, "every instance sees the tool");
    let ticks = poll(|| async { (upstream.count() >= 4).then_some(()) }).await;
    assert!(ticks.is_some(), "the schedule fires");
    assert_eq!(a.delete("/v1/tools/ticked").await.status, 204);
    let seen = upstream.seen();
    // One tick a second: two requests less than half a second apart came from one tick.
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap > chrono::Duration::milliseconds(500), "two requests {gap} apart: {seen:?}");
    }
    // Metadata written through one instance is read through another.
    assert_eq!(c.put("/v1/metadata/layout", json!({"cols": 3})).await.status, 201);
    assert_eq!(b.get("/v1/metadata/layout").await.body, json!({"cols": 3}));
    // The embedding API reads the same documents.
    let doc = a.runtime.metadata().load::<Value>("layout").await.unwrap();
    assert_eq!(doc, Some(json!({"cols": 3})));
}

#[actix_web::test]
async fn a_tools_requests_reads_and_refreshes_are_on_metrics() {
    let upstream = FakeUpstream::start(r#"{"stars": 1}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "metered", json!({"url": upstream.url, "ttl_secs": 300})).await;
    for _ in 0..3 {
        assert_eq!(read(&app, "metered", &[]).await.0, 200);
    }
    let mut scrape = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let text = String::from_utf8(scrape.body().limit(4 << 20).await.unwrap().to_vec()).unwrap();
    for line in [
        r#"jobyard_tool_upstream_requests_total{tool="metered",outcome="ok"} 1"#,
        r#"jobyard_tool_upstream_requests_total{tool="metered",outcome="error"} 0"#,
        r#"jobyard_tool_reads_total{tool="metered",served="miss"} 1"#,
        r#"jobyard_tool_reads_total{tool="metered",served="fresh"} 2"#,
        r#"jobyard_tool_refresh_seconds_count{tool="metered"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}

#[actix_web::test]
async fn at_start_the_tools_read_most_are_refreshed_first() {
    let upstream = FakeUpstream::start(r#"{"n": 1}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    for name in ["alpha", "bravo", "charlie"] {
        put_tool(&app, name, json!({"url": upstream.url})).await;
    }
    // The previous run read charlie most, then alpha; bravo was never read.
    let hot = ["tool:charlie:data".to_owned(), "tool:alpha:data".to_owned()];
    let triggered = app.runtime.tools().start(&app.runtime, &hot).await.expect("start");
    assert_eq!(triggered, 3, "none had data");
    let listed = app.get("/v1/jobs?kind=tool.refresh&limit=10").await;
    let mut jobs: Vec<Value> = listed.body["jobs"].as_array().unwrap().clone();
    // Job ids grow with their submission (UUIDv7); the listing is newest first.
    jobs.sort_by_key(|j| j["id"].as_str().unwrap().to_owned());
    let order: Vec<&str> = jobs.iter().map(|j| j["payload"]["tool"].as_str().unwrap()).collect();
    assert_eq!(order, ["charlie", "alpha", "bravo"]);
}

/// An app on Redis under `prefix`, adjusted.
async fn on_redis_with(
    redis: &TestRedis,
    prefix: &str,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let url = redis.url();
    let prefix = prefix.to_owned();
    spawn_app_with(move |c| {
        c.redis_url = Some(RedisUrl::parse(&url).unwrap());
        c.redis_prefix = prefix;
        c.queue_backend = QueueBackendKind::Redis;
        c.cache_backend = CacheBackendKind::Hybrid;
        c.data_dir = std::env::temp_dir().join("jobyard-tools-test-unused");
        adjust(c);
    })
    .await
}

#[actix_web::test]
async fn allowed_hosts_hold_when_the_request_is_made_not_only_when_stored() {
    let redis = TestRedis::start();
    let upstream = FakeUpstream::start(r#"{"secret": 1}"#).await;
    // Stored through an instance without the list (and running no jobs)...
    let lax = on_redis_with(&redis, "hosts-at-request", |c| c.concurrency = 0).await;
    put_tool(&lax, "elsewhere", json!({"url": upstream.url})).await;
    // ...refreshed by one whose list does not name the upstream's host.
    let strict = on_redis_with(&redis, "hosts-at-request", |c| {
        c.http_allowed_hosts = Some(jobyard::kinds::upstream::AllowedHosts::parse("example.com"));
    })
    .await;
    let job = strict.post_empty("/v1/tools/elsewhere/refresh").await;
    assert_eq!(job.status, 202, "{}", job.body);
    let done = strict.wait_terminal(job.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("JOBYARD_HTTP_ALLOWED_HOSTS"), "{done}");
    assert_eq!(upstream.count(), 0, "no request left for a host outside the list");
}

#[actix_web::test]
async fn a_refresh_in_flight_when_the_url_changes_stores_nothing() {
    let old = FakeUpstream::start(r#"{"from": "old"}"#).await;
    old.set(|b| b.delay = Duration::from_millis(500));
    let new = FakeUpstream::start(r#"{"from": "new"}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "moved", json!({"url": old.url})).await;
    let job = app.post_empty("/v1/tools/moved/refresh").await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    let asked = poll(|| async { (old.count() == 1).then_some(()) }).await;
    assert!(asked.is_some(), "the old upstream is being asked");
    put_tool(&app, "moved", json!({"url": new.url})).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (status, headers, body) = read(&app, "moved", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"from": "new"}"#), "the old answer was dropped");
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&headers, "content-security-policy"), Some("sandbox"));
}

#[actix_web::test]
async fn a_restart_keeps_a_tools_schedule_as_it_is() {
    let upstream = FakeUpstream::start(r#"{"n": 1}"#).await;
    let (app, _dir) = app_with(|_| {}).await;
    put_tool(&app, "ticking", json!({"url": upstream.url, "refresh": "0 0 * * * *"})).await;
    let before = app.get("/v1/schedules/tool:ticking").await;
    assert_eq!(before.status, 200, "{}", before.body);
    // What every start does for every tool: the schedule is not put again (which would move
    // its next run, skipping a tick that is due during a rolling restart).
    let triggered = app.runtime.tools().start(&app.runtime, &[]).await.expect("start");
    assert_eq!(triggered, 1, "nothing was cached");
    let after = app.get("/v1/schedules/tool:ticking").await;
    assert_eq!(after.body["updated_at"], before.body["updated_at"], "{}", after.body);
    // A changed cron is put.
    put_tool(&app, "ticking", json!({"url": upstream.url, "refresh": "0 30 * * * *"})).await;
    let changed = app.get("/v1/schedules/tool:ticking").await;
    assert_eq!(changed.body["cron"], "0 30 * * * *");
}
