//! The `/v1/cache` endpoints (memory backend): raw bodies with their content type, validators
//! and 304s, deletes, invalidation by prefix and tag, and bad input.

use serde_json::json;

use crate::helpers::*;

impl TestApp {
    pub async fn put_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Resp {
        let request = self.http.put(format!("{}{path}", self.base));
        self.send(request, Some((content_type, body.to_vec()))).await
    }
}

#[actix_web::test]
async fn a_stored_body_comes_back_with_its_type_and_validators() {
    let app = spawn_app().await;
    let resp = app
        .put_raw(
            "/v1/cache/tool:github:repos?ttl_secs=60&tags=github,repos",
            "text/csv",
            b"a,b\n1,2\n",
        )
        .await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let raw = app.http.get(format!("{}/v1/cache/tool:github:repos", app.base)).send().await;
    let mut raw = raw.unwrap();
    assert_eq!(raw.status(), 200);
    let headers = raw.headers().clone();
    assert_eq!(headers.get("content-type").unwrap(), "text/csv");
    assert!(headers.get("etag").is_some());
    assert!(headers.get("last-modified").is_some());
    assert_eq!(headers.get("age").unwrap(), "0");
    assert!(headers.get("cache-control").unwrap().to_str().unwrap().starts_with("max-age="));
    assert_eq!(&raw.body().await.unwrap()[..], b"a,b\n1,2\n");
    let etag = headers.get("etag").unwrap().to_str().unwrap();
    let modified = headers.get("last-modified").unwrap().to_str().unwrap();
    let again = app.get_with("/v1/cache/tool:github:repos", &[("if-none-match", etag)]).await;
    assert_eq!(again.status, 304);
    let since =
        app.get_with("/v1/cache/tool:github:repos", &[("if-modified-since", modified)]).await;
    assert_eq!(since.status, 304);
    let stale =
        app.get_with("/v1/cache/tool:github:repos", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(stale.status, 200);
}

#[actix_web::test]
async fn keys_may_hold_slashes_and_a_missing_type_is_octet_stream() {
    let app = spawn_app().await;
    let request = app.http.put(format!("{}/v1/cache/repos/jobyard/pulls", app.base));
    let resp = app.send(request, Some(("", b"x".to_vec()))).await;
    assert_eq!(resp.status, 204);
    let raw =
        app.http.get(format!("{}/v1/cache/repos/jobyard/pulls", app.base)).send().await.unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers().get("content-type").unwrap(), "application/octet-stream");
}

#[actix_web::test]
async fn the_content_type_is_kept_whole_and_invalidate_is_a_usable_key() {
    let app = spawn_app().await;
    let resp = app.put_raw("/v1/cache/latin", "text/plain; charset=iso-8859-1", b"caf\xe9").await;
    assert_eq!(resp.status, 204);
    let raw = app.http.get(format!("{}/v1/cache/latin", app.base)).send().await.unwrap();
    assert_eq!(raw.headers().get("content-type").unwrap(), "text/plain; charset=iso-8859-1");
    assert_eq!(app.put_raw("/v1/cache/invalidate", "application/json", b"1").await.status, 204);
    assert_eq!(app.get("/v1/cache/invalidate").await.body, json!(1));
    assert_eq!(app.delete("/v1/cache/invalidate").await.status, 204);
}

#[actix_web::test]
async fn delete_and_misses_answer_404_with_the_error_body() {
    let app = spawn_app().await;
    let resp = app.get("/v1/cache/nothing").await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    app.put_raw("/v1/cache/k", "application/json", b"{}").await;
    assert_eq!(app.delete("/v1/cache/k").await.status, 204);
    assert_eq!(app.get("/v1/cache/k").await.status, 404);
    let resp = app.delete("/v1/cache/k").await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
}

#[actix_web::test]
async fn invalidation_by_prefix_and_tags_reports_what_it_removed() {
    let app = spawn_app().await;
    app.put_raw("/v1/cache/tool:github:1?tags=github", "application/json", b"1").await;
    app.put_raw("/v1/cache/tool:github:2", "application/json", b"2").await;
    app.put_raw("/v1/cache/tool:jira:1?tags=github,jira", "application/json", b"3").await;
    app.put_raw("/v1/cache/tool:jira:2?tags=jira", "application/json", b"4").await;
    let resp = app.post("/v1/cache/invalidate", json!({"prefix": "tool:github:"})).await;
    assert_eq!((resp.status, &resp.body), (200, &json!({"removed": 2})));
    let resp = app.post("/v1/cache/invalidate", json!({"tags": ["github"]})).await;
    assert_eq!(resp.body, json!({"removed": 1}));
    assert_eq!(app.get("/v1/cache/tool:jira:1").await.status, 404);
    assert_eq!(app.get("/v1/cache/tool:jira:2").await.status, 200);
    let resp =
        app.post("/v1/cache/invalidate", json!({"prefix": "tool:jira:", "tags": ["jira"]})).await;
    assert_eq!(resp.body, json!({"removed": 1}));
}

#[actix_web::test]
async fn bad_cache_requests_are_invalid_or_too_large() {
    let app = spawn_app_with(|c| c.max_body_bytes = 2048).await;
    let cases = [
        ("/v1/cache/k?ttl_secs=0", "ttl_secs"),
        ("/v1/cache/k?ttl_secs=forever", "ttl_secs"),
        ("/v1/cache/k?tags=a%20b", "tags"),
        ("/v1/cache/k?colour=red", "colour"),
        (&format!("/v1/cache/{}", "k".repeat(513)), "key"),
    ];
    for (path, field) in cases {
        let resp = app.put_raw(path, "text/plain", b"v").await;
        assert_eq!((resp.status, resp.code()), (400, "invalid_request"), "{path}: {}", resp.body);
        assert_eq!(resp.field(), Some(field), "{path}: {}", resp.body);
    }
    let resp = app.put_raw("/v1/cache/big", "text/plain", &[b'x'; 4096]).await;
    assert_eq!((resp.status, resp.code()), (413, "payload_too_large"));
    for (body, field) in [
        (json!({}), "body"),
        (json!({"prefix": ""}), "prefix"),
        (json!({"tags": []}), "tags"),
        (json!({"tags": ["a b"]}), "tags"),
        (json!({"prefix": "p", "extra": 1}), "extra"),
    ] {
        let resp = app.post("/v1/cache/invalidate", body.clone()).await;
        assert_eq!((resp.status, resp.field()), (400, Some(field)), "{body}: {}", resp.body);
    }
}

#[actix_web::test]
async fn job_results_are_cached() {
    let app = spawn_app().await;
    let job = app.submit(json!({"kind": "noop", "payload": {"answer": 42}})).await;
    let id = job["id"].as_str().unwrap();
    app.wait_terminal(id).await;
    let path = format!("/v1/cache/jobs:{id}:result");
    let cached = poll(|| async {
        let resp = app.get(&path).await;
        (resp.status == 200).then_some(resp.body)
    })
    .await;
    assert_eq!(cached, Some(json!({"answer": 42})));
}

/// A job's result is read from its record: there the moment the job ends, with no copy in
/// the cache (its memory holds no entry), and gone with the job.
async fn a_result_is_read_from_its_job_and_never_copied(on: &On) {
    let app = on
        .spawn(|config| {
            if matches!(on, On::Redis(_)) {
                // The production default: a Redis queue and the hybrid cache.
                config.cache_backend = jobyard::config::CacheBackendKind::Hybrid;
            }
        })
        .await;
    let job = app.submit(json!({"kind": "noop", "payload": {"answer": 42}})).await;
    let id = job["id"].as_str().unwrap();
    let ended = app.wait_terminal(id).await;
    let path = format!("/v1/cache/jobs:{id}:result");
    let resp = app.get(&path).await;
    assert_eq!((resp.status, &resp.body), (200, &json!({"answer": 42})), "at once, no wait");
    let stats = app.get("/v1/stats").await.body;
    let entries = &stats["cache"]["entries"];
    assert_eq!(entries, &json!(0), "no copy of the result in the cache: {}", stats["cache"]);
    // Made when the job ended.
    let modified = app.http.get(format!("{}{path}", app.base)).send().await.unwrap();
    let modified = modified.headers().get("last-modified").unwrap().to_str().unwrap().to_owned();
    let finished: chrono::DateTime<chrono::Utc> =
        ended["finished_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(modified, finished.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
    // A job that has not ended has no result yet; an unknown job none at all.
    let waiting = app.submit(json!({"kind": "sleep", "payload": {"ms": 60000}})).await;
    let waiting = format!("/v1/cache/jobs:{}:result", waiting["id"].as_str().unwrap());
    assert_eq!(app.get(&waiting).await.status, 404);
    let unknown = "/v1/cache/jobs:0190b6a2-4f3c-7d4e-9a1b-2c3d4e5f6a7b:result";
    assert_eq!(app.get(unknown).await.status, 404);
    // Gone with its job.
    assert_eq!(app.delete(&format!("/v1/jobs/{id}")).await.status, 204);
    assert_eq!(app.get(&path).await.status, 404);
}

on_both_backends!(a_result_is_read_from_its_job_and_never_copied);
