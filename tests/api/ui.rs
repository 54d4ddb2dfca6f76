//! The dashboard at `/ui/`: the page and every file of `ui/` served from the binary with its
//! type, validator and the page's security headers; `/ui/config.json`; `JOBYARD_UI=off` and
//! `read-only` (the dashboard's writes refused, the same write from another client not).

use std::path::{Path, PathBuf};

use actix_web::http::header::HeaderMap;
use jobyard::config::{Secret, UiMode};
use serde_json::{json, Value};

use crate::helpers::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page and its assets together stay well under this (a first load on a slow link).
const MAX_TOTAL_BYTES: usize = 300 * 1024;

/// An answer with its bytes as they came.
struct Raw {
    status: u16,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

/// GET without following redirects, with `headers`.
async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Raw {
    let client = awc::Client::builder().disable_redirects().finish();
    let mut request = client.get(format!("{}{path}", app.base));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut response = request.send().await.expect("request reaches the server");
    let bytes = response.body().limit(16 << 20).await.expect("body readable").to_vec();
    Raw { status: response.status().as_u16(), headers: response.headers().clone(), bytes }
}

fn assert_page_headers(resp: &Raw, what: &str) {
    assert_eq!(resp.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(resp.header("referrer-policy"), Some("no-referrer"), "{what}");
}

/// Every file under `ui/`, by its path there (`views/jobs.js`).
fn ui_files() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).expect("ui/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push((name, path));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    files
}

fn expected_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        other => {
            panic!("ui/{name}: no type expected for {other:?}; add it here and in src/api/ui.rs")
        }
    }
}

#[actix_web::test]
async fn the_page_is_served_with_its_security_headers_and_ui_redirects_to_it() {
    let app = spawn_app().await;
    let page = get(&app, "/ui/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_page_headers(&page, "GET /ui/");
    assert!(page.header("etag").is_some_and(|t| t.starts_with('"')));
    let html = String::from_utf8(page.bytes.clone()).expect("UTF-8");
    assert!(html.contains(r#"<script type="module" src="assets/app.js"></script>"#), "{html}");
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");

    let redirect = get(&app, "/ui", &[]).await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("ui/"), "relative: /ui resolves it to /ui/");
    assert_page_headers(&redirect, "GET /ui");

    let elsewhere = get(&app, "/ui/nothing-here", &[]).await;
    assert_eq!(elsewhere.status, 404);
    assert_eq!(elsewhere.json()["error"]["code"], "not_found");
    assert_page_headers(&elsewhere, "GET /ui/nothing-here");
}

#[actix_web::test]
async fn every_file_of_ui_is_served_with_its_type_and_a_validator_and_all_stay_small() {
    let app = spawn_app().await;
    let mut total = 0;
    let files = ui_files();
    assert!(files.iter().any(|(name, _)| name == "app.js"), "{files:?}");
    for (name, path) in &files {
        let on_disk = std::fs::read(path).expect("readable");
        total += on_disk.len();
        if name == "index.html" {
            continue; // served at /ui/
        }
        let url = format!("/ui/assets/{name}");
        let resp = get(&app, &url, &[]).await;
        assert_eq!(resp.status, 200, "{url} is served (listed in src/api/ui.rs ASSETS?)");
        assert_eq!(resp.header("content-type"), Some(expected_type(name)), "{url}");
        assert_eq!(resp.header("cache-control"), Some("no-cache"), "{url}");
        assert_page_headers(&resp, &url);
        assert_eq!(resp.bytes, on_disk, "{url} serves the file's bytes");
        let etag = resp.header("etag").expect("an ETag").to_owned();

        let again = get(&app, &url, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, 304, "{url} with its ETag");
        assert!(again.bytes.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    }
    println!("the dashboard: {} files, {total} bytes in all", files.len());
    assert!(total < MAX_TOTAL_BYTES, "the dashboard weighs {total} bytes, over {MAX_TOTAL_BYTES}");
}

#[actix_web::test]
async fn an_unknown_asset_is_a_404_in_the_error_body() {
    let app = spawn_app().await;
    for path in ["/ui/assets/nope.js", "/ui/assets/../app.js", "/ui/assets/views/"] {
        let resp = get(&app, path, &[]).await;
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(resp.json()["error"]["code"], "not_found", "{path}");
        assert_page_headers(&resp, path);
    }
}

#[actix_web::test]
async fn config_json_says_the_mode_and_whether_a_token_is_needed_without_one() {
    let app = spawn_app().await;
    let resp = get(&app, "/ui/config.json", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["mode"], "on");
    assert_eq!(body["token_required"], false);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "nothing else: {body}");

    let app = spawn_app_with(|c| {
        c.api_token = Some(Secret::new("s3cret"));
        c.ui = UiMode::ReadOnly;
    })
    .await;
    let resp = get(&app, "/ui/config.json", &[]).await;
    assert_eq!(resp.status, 200, "open: the page reads it before it has a token");
    assert_eq!(
        resp.json(),
        json!({"mode": "read-only", "token_required": true, "version": env!("CARGO_PKG_VERSION")})
    );
    assert_eq!(get(&app, "/ui/", &[]).await.status, 200, "the page itself is open");
    assert_eq!(app.get("/v1/stats").await.status, 401, "the data is not");
}

#[actix_web::test]
async fn off_serves_no_dashboard() {
    let app = spawn_app_with(|c| c.ui = UiMode::Off).await;
    for path in ["/ui", "/ui/", "/ui/config.json", "/ui/assets/app.js"] {
        let resp = get(&app, path, &[]).await;
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(resp.json()["error"]["code"], "not_found", "{path}");
    }
    assert_eq!(app.get("/v1/stats").await.status, 200, "the API is still served");
}

#[actix_web::test]
async fn read_only_refuses_the_dashboards_writes_and_only_those() {
    let app = spawn_app_with(|c| c.ui = UiMode::ReadOnly).await;
    app.submit(json!({"kind": "noop", "queue": "mail", "delay_ms": 600_000})).await;
    let from_ui = app
        .send(
            app.http
                .post(format!("{}/v1/queues/mail/pause", app.base))
                .insert_header(("X-Jobyard-Client", "ui")),
            None,
        )
        .await;
    assert_eq!(from_ui.status, 403, "{}", from_ui.body);
    assert_eq!(from_ui.code(), "read_only");
    let message = from_ui.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("read-only"), "{message}");
    assert!(!paused(&app, "mail").await, "nothing changed");

    let reads = app.get_with("/v1/queues", &[("X-Jobyard-Client", "ui")]).await;
    assert_eq!(reads.status, 200, "reads pass");

    let other_client = app.post_empty("/v1/queues/mail/pause").await;
    assert_eq!(
        other_client.status, 200,
        "the same write without the header: {}",
        other_client.body
    );
    assert!(paused(&app, "mail").await);
}

async fn paused(app: &TestApp, queue: &str) -> bool {
    let body = app.get("/v1/queues").await.body;
    let queues = body["queues"].as_array().expect("queues");
    let found = queues.iter().find(|q| q["name"] == queue).unwrap_or_else(|| panic!("{body}"));
    found["paused"].as_bool().expect("paused")
}

#[actix_web::test]
async fn on_lets_the_dashboard_write_and_the_token_is_checked_first() {
    let app = spawn_app().await;
    let from_ui = app
        .send(
            app.http
                .post(format!("{}/v1/queues/mail/pause", app.base))
                .insert_header(("X-Jobyard-Client", "ui")),
            None,
        )
        .await;
    assert_eq!(from_ui.status, 200, "{}", from_ui.body);

    let app = spawn_app_with(|c| {
        c.api_token = Some(Secret::new("s3cret"));
        c.ui = UiMode::ReadOnly;
    })
    .await;
    let without_token = app
        .send(
            app.http
                .post(format!("{}/v1/queues/mail/pause", app.base))
                .insert_header(("X-Jobyard-Client", "ui")),
            None,
        )
        .await;
    assert_eq!(without_token.status, 401, "{}", without_token.body);
}
