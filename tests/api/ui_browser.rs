//! The dashboard at `/ui/` in real headless Chromium (through chromedriver: see
//! `tests/support/webdriver.rs`), against a real server on the memory backend.
//!
//! One browser session runs every check of the default server in turn, each check named and
//! run even when one before it failed (the test then fails listing them all): every view
//! loads with data and no console error (with a screenshot of each), a job appears and
//! updates live, the cancel and retry buttons act, job data stays text, the page fits a
//! phone's width. The token prompt and the read-only mode need servers configured otherwise,
//! each a test of its own.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install chromium
//! chromium-driver`); without them the tests fail saying so.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use jobyard::{Config, Job, JobContext, JobError, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::fake_upstream::FakeUpstream;
use crate::helpers::*;
use crate::webdriver::Browser;

/// How soon a change made through the API must show on an open page. The page follows the
/// server's event stream, so a change shows at once; this leaves room for a loaded machine,
/// yet a page that only reloaded its data every few seconds would miss it.
const LIVE: Duration = Duration::from_secs(1);

/// A string that would run script if a page put it into its markup.
const XSS: &str = r#"<img src=x onerror="window.__xss=1">"#;

/// The views of the hash routes, each with an element that shows it rendered the test's data.
const VIEWS: [(&str, &str); 6] = [
    ("overview", r#"#queues-table tr[data-queue="default"]"#),
    ("jobs", "#jobs-table tr[data-job-id]"),
    ("limits", r#"#limits-table tr[data-limit="ui-limit"]"#),
    ("tools", r#"#tools-table tr[data-tool="ui-tool"]"#),
    ("schedules", r#"#schedules-table tr[data-schedule="ui-nightly"]"#),
    ("cache", "#hot-keys"),
];

/// Gates that `test.steps` jobs wait on, by name: the test lets each step through, so it
/// sees every progress report on the page.
#[derive(Default)]
struct Gates(Mutex<HashMap<String, Arc<Semaphore>>>);

impl Gates {
    fn gate(&self, name: &str) -> Arc<Semaphore> {
        let mut gates = self.0.lock().unwrap();
        gates.entry(name.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(0))).clone()
    }

    /// Lets one step of the jobs waiting on `name` through.
    fn open(&self, name: &str) {
        self.gate(name).add_permits(1);
    }
}

/// `test.steps`: `steps` steps, each waiting for its gate to open and then reporting
/// `{"done": n, "total": steps, "note": "step n of steps"}`; succeeds with the steps done.
#[derive(Serialize, Deserialize)]
struct Steps {
    gate: String,
    steps: u32,
}

impl Job for Steps {
    const KIND: &'static str = "test.steps";
    type Output = u32;
    async fn run(self, ctx: JobContext) -> Result<u32, JobError> {
        let gate = ctx.extension::<Arc<Gates>>().expect("the gates").gate(&self.gate);
        for done in 1..=self.steps {
            tokio::select! {
                permit = gate.acquire() => permit.expect("gate open").forget(),
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
            }
            let note = format!("step {done} of {}", self.steps);
            ctx.progress(&json!({"done": done, "total": self.steps, "note": note}));
        }
        Ok(self.steps)
    }
}

/// A server for the dashboard: the environment `vars` (besides a free port), its documents in
/// a directory of its own, the built-in kinds and `test.steps`.
struct Dashboard {
    app: TestApp,
    gates: Arc<Gates>,
    token: Option<String>,
    _dir: tempfile::TempDir,
}

impl Dashboard {
    async fn start(vars: &[(&str, &str)]) -> Dashboard {
        let dir = tempfile::tempdir().unwrap();
        let lookup = |name: &str| {
            let var = vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
            var.or_else(|| (name == "JOBYARD_ADDR").then(|| "127.0.0.1:0".to_owned()))
        };
        let mut config = Config::from_lookup(lookup).expect("a valid configuration");
        config.data_dir = dir.path().to_owned();
        config.http_allowed_hosts = None;
        let gates = Arc::new(Gates::default());
        let runtime =
            Runtime::builder().with_builtin_kinds().register::<Steps>().extension(gates.clone());
        let app = spawn_app_from(config, runtime).await;
        let token = lookup("JOBYARD_API_TOKEN");
        Dashboard { app, gates, token, _dir: dir }
    }

    fn page(&self, route: &str) -> String {
        format!("{}/ui/#/{route}", self.app.base)
    }

    /// An API call with the token when the server has one.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let url = format!("{}{path}", self.app.base);
        let mut request = match method {
            "GET" => self.app.http.get(url),
            "PUT" => self.app.http.put(url),
            "DELETE" => self.app.http.delete(url),
            _ => self.app.http.post(url),
        };
        if let Some(token) = &self.token {
            request = request.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.app.send(request, body).await
    }

    async fn put(&self, path: &str, body: Value) {
        let resp = self.call("PUT", path, Some(body.clone())).await;
        assert!(
            matches!(resp.status, 200..=204),
            "PUT {path} {body}: {} {}",
            resp.status,
            resp.body
        );
    }

    async fn submit(&self, spec: Value) -> String {
        let resp = self.call("POST", "/v1/jobs", Some(spec.clone())).await;
        assert_eq!(resp.status, 201, "submit of {spec}: {}", resp.body);
        resp.body["id"].as_str().expect("an id").to_owned()
    }

    async fn job(&self, id: &str) -> Value {
        let resp = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(resp.status, 200, "GET job {id}: {}", resp.body);
        resp.body
    }

    /// Polls the job through the API until `pred` holds.
    async fn wait_job(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = poll(|| async {
            let job = self.job(id).await;
            pred(&job).then_some(job)
        })
        .await;
        found.unwrap_or_else(|| panic!("job {id} never {what} (API) within {DEADLINE:?}"))
    }

    /// Something for every view to show: finished and failed jobs, a limit, a tool with data
    /// from a fake upstream, a schedule, cache entries read a few times.
    async fn seed(&self) -> FakeUpstream {
        for n in 0..3 {
            let id = self.submit(json!({"kind": "noop", "payload": {"n": n}})).await;
            self.wait_job(&id, "succeeded", |j| j["status"] == "succeeded").await;
        }
        let failed = self.submit(json!({"kind": "fail", "payload": {}, "max_attempts": 1})).await;
        self.wait_job(&failed, "failed", |j| j["status"] == "failed").await;
        self.put(
            "/v1/limits/ui-limit",
            json!({"concurrency": 2, "rate": {"tokens": 10, "per_ms": 1000}}),
        )
        .await;
        let upstream = FakeUpstream::start(r#"{"open_issues": 12}"#).await;
        self.put("/v1/tools/ui-tool", json!({"url": upstream.url, "ttl_secs": 300})).await;
        let refreshed = self.call("POST", "/v1/tools/ui-tool/refresh", None).await;
        assert_eq!(refreshed.status, 202, "tool refresh: {}", refreshed.body);
        let refresh = refreshed.body["id"].as_str().expect("a refresh job").to_owned();
        self.wait_job(&refresh, "ended", is_terminal).await;
        let schedule = json!({"cron": "0 0 3 * * *", "timezone": "UTC", "job": {"kind": "noop"}});
        self.put("/v1/schedules/ui-nightly", schedule).await;
        for key in ["ui:greeting", "ui:report"] {
            let url = format!("{}/v1/cache/{key}?ttl_secs=600&tags=ui", self.app.base);
            let mut request = self.app.http.put(url);
            if let Some(token) = &self.token {
                request = request.insert_header(("Authorization", format!("Bearer {token}")));
            }
            let put = self.app.send(request, Some(("text/plain", b"hello".to_vec()))).await;
            assert_eq!(put.status, 204, "cache PUT {key}: {}", put.body);
            for _ in 0..3 {
                assert_eq!(self.call("GET", &format!("/v1/cache/{key}"), None).await.status, 200);
            }
        }
        upstream
    }
}

/// Opens `route` and waits for its view to be ready with `shows` on it.
async fn open_view(browser: &Browser, dash: &Dashboard, view: &str, route: &str, shows: &str) {
    browser.goto(&dash.page(route)).await;
    wait_view(browser, view, shows).await;
}

/// Waits for `#view` to be the ready `view` holding an element matching `shows`.
async fn wait_view(browser: &Browser, view: &str, shows: &str) {
    let script = format!(
        "const v = document.getElementById('view');
         return v && v.dataset.view === {view} && v.dataset.state === 'ready'
             && document.querySelector({shows}) !== null",
        view = json!(view),
        shows = json!(shows),
    );
    browser.wait_js(&format!("the {view} view ready, showing `{shows}`"), &script).await;
}

/// Fails when the page logged a `SEVERE` console message since the last read.
async fn assert_no_console_errors(browser: &Browser, when: &str) {
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors {when}: {errors:#?}");
}

/// Where the screenshots of a run go: `target/ui-screenshots/`, and `docs/img/` as well when
/// `JOBYARD_UPDATE_SCREENSHOTS=1`.
async fn screenshot(browser: &Browser, view: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    browser.screenshot(&target.join("ui-screenshots").join(format!("{view}.png"))).await;
    if std::env::var("JOBYARD_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        browser.screenshot(&root.join("docs/img").join(format!("ui-{view}.png"))).await;
    }
}

/// Marks the loaded document; [`assert_not_reloaded`] shows the same one is still there.
async fn mark_document(browser: &Browser) {
    browser.execute("window.__jobyardTestMark = 'kept'", vec![]).await;
}

async fn assert_not_reloaded(browser: &Browser, when: &str) {
    let mark = browser.execute("return window.__jobyardTestMark || null", vec![]).await;
    assert_eq!(mark, "kept", "the page was reloaded {when}");
}

/// The `#view` text of the element matching `css` (waiting for it).
async fn text_of(browser: &Browser, css: &str) -> String {
    browser.text(css).await
}

/// Runs one named check; a panic in it is recorded in `failures` (the next checks still run).
/// What the page logged before it is forgotten: a check answers for its own console errors.
async fn check(
    browser: &Browser,
    failures: &mut Vec<String>,
    name: &str,
    body: impl Future<Output = ()>,
) {
    eprintln!("browser check: {name}");
    browser.console_errors().await;
    if let Err(panic) = std::panic::AssertUnwindSafe(body).catch_unwind().await {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".into());
        failures.push(format!("{name}: {message}"));
    }
}

#[actix_web::test]
async fn the_dashboard_in_headless_chromium() {
    let browser = Browser::start().await;
    let dash = Dashboard::start(&[]).await;
    let _upstream = dash.seed().await;
    let mut failures = Vec::new();
    check(&browser, &mut failures, "every view loads with its data and no console error", async {
        every_view_loads(&browser, &dash).await
    })
    .await;
    check(&browser, &mut failures, "a submitted job appears and updates live", async {
        a_submitted_job_appears_and_updates_live(&browser, &dash).await
    })
    .await;
    check(&browser, &mut failures, "the cancel button stops a running job", async {
        the_cancel_button_stops_a_running_job(&browser, &dash).await
    })
    .await;
    check(&browser, &mut failures, "the retry button runs a failed job again", async {
        the_retry_button_runs_a_failed_job_again(&browser, &dash).await
    })
    .await;
    check(&browser, &mut failures, "job data is shown as text, never run", async {
        job_data_is_text(&browser, &dash).await
    })
    .await;
    check(&browser, &mut failures, "the overview and jobs fit a phone's width", async {
        views_fit_a_phone(&browser, &dash).await
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} browser check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn every_view_loads(browser: &Browser, dash: &Dashboard) {
    browser.set_viewport(1280, 800).await;
    // Each view is visited even when one before it logged errors: they are all reported.
    let mut logged = Vec::new();
    for (view, shows) in VIEWS {
        open_view(browser, dash, view, view, shows).await;
        logged.extend(browser.console_errors().await.into_iter().map(|e| (view, e)));
        screenshot(browser, view).await;
        if view == "overview" {
            // The queue row offers its action: the read-only test's absence of buttons means
            // something.
            let pause = r#"#queues-table tr[data-queue="default"] [data-action="pause"]"#;
            assert_eq!(
                visible_actions(browser, pause).await,
                1,
                "no pause button on the default queue"
            );
        }
    }
    // One job: the failed one, with its error and its attempts.
    let jobs = dash.call("GET", "/v1/jobs?status=failed&kind=fail", None).await;
    let id = jobs.body["jobs"][0]["id"].as_str().expect("the failed job").to_owned();
    let section = format!(r#"section#job[data-job-id="{id}"][data-status="failed"]"#);
    open_view(browser, dash, "job", &format!("jobs/{id}"), &section).await;
    let error = text_of(browser, "pre#job-error").await;
    assert!(error.contains("failed on purpose"), "#job-error reads {error:?}");
    browser.wait_for("ol#job-attempts li").await;
    logged.extend(browser.console_errors().await.into_iter().map(|e| ("job", e)));
    screenshot(browser, "job").await;
    assert!(logged.is_empty(), "console errors, by view: {logged:#?}");
}

async fn a_submitted_job_appears_and_updates_live(browser: &Browser, dash: &Dashboard) {
    browser.set_viewport(1280, 800).await;
    open_view(browser, dash, "jobs", "jobs", "#jobs-table").await;
    mark_document(browser).await;

    // In the list: the new row, its status while it runs, its final status.
    let listed =
        dash.submit(json!({"kind": "test.steps", "payload": {"gate": "listed", "steps": 1}})).await;
    let row =
        |status: &str| format!(r#"#jobs-table tr[data-job-id="{listed}"][data-status="{status}"]"#);
    let present = |css: String| format!("return document.querySelector({}) !== null", json!(css));
    let appeared = format!(r#"#jobs-table tr[data-job-id="{listed}"]"#);
    browser.wait_js_within(LIVE, "the submitted job listed", &present(appeared)).await;
    browser.wait_js_within(LIVE, "the job listed running", &present(row("running"))).await;
    dash.gates.open("listed");
    dash.wait_job(&listed, "succeeded", |j| j["status"] == "succeeded").await;
    browser.wait_js_within(LIVE, "the job listed succeeded", &present(row("succeeded"))).await;
    assert_not_reloaded(browser, "while the list followed the job").await;

    // On its own page (reached by the row's link): each progress report, then its end.
    let stepped = dash
        .submit(json!({"kind": "test.steps", "payload": {"gate": "stepped", "steps": 3}}))
        .await;
    let link = format!(r##"#jobs-table tr[data-job-id="{stepped}"] a[href="#/jobs/{stepped}"]"##);
    browser.wait_js_within(LIVE, "the second job listed", &present(link.clone())).await;
    browser.click(&link).await;
    let section =
        |status: &str| format!(r#"section#job[data-job-id="{stepped}"][data-status="{status}"]"#);
    wait_view(browser, "job", &section("running")).await;
    for done in 1..=3 {
        dash.gates.open("stepped");
        let note = format!("step {done} of 3");
        let script = format!(
            "const p = document.getElementById('job-progress');
             return p !== null && p.textContent.includes({})",
            json!(note)
        );
        browser.wait_js_within(LIVE, &format!("#job-progress showing {note:?}"), &script).await;
    }
    dash.wait_job(&stepped, "succeeded", |j| j["status"] == "succeeded").await;
    browser
        .wait_js_within(LIVE, "the job's page showing it succeeded", &present(section("succeeded")))
        .await;
    let status = text_of(browser, "#job-status").await;
    assert!(status.contains("succeeded"), "#job-status reads {status:?}");
    assert_not_reloaded(browser, "while the job's page followed it").await;
    assert_no_console_errors(browser, "while following jobs live").await;
}

async fn the_cancel_button_stops_a_running_job(browser: &Browser, dash: &Dashboard) {
    let id = dash.submit(json!({"kind": "sleep", "payload": {"ms": 600_000}})).await;
    dash.wait_job(&id, "running", |j| j["status"] == "running").await;
    let section = format!(r#"section#job[data-job-id="{id}"][data-status="running"]"#);
    open_view(browser, dash, "job", &format!("jobs/{id}"), &section).await;
    accept_confirmations(browser).await;
    browser.click(r#"#job [data-action="cancel"]"#).await;
    let cancelled = format!(r#"section#job[data-job-id="{id}"][data-status="cancelled"]"#);
    wait_view(browser, "job", &cancelled).await;
    let job = dash.wait_job(&id, "cancelled", is_terminal).await;
    assert_eq!(job["status"], "cancelled", "the API's record: {job}");
    let shown = visible_actions(browser, r#"#job [data-action="cancel"]"#).await;
    assert_eq!(shown, 0, "a cancel button still shown on the cancelled job");
    assert_no_console_errors(browser, "around a cancel").await;
}

async fn the_retry_button_runs_a_failed_job_again(browser: &Browser, dash: &Dashboard) {
    let id = dash
        .submit(json!({"kind": "fail", "payload": {"message": "retry me"}, "max_attempts": 1}))
        .await;
    let failed = dash.wait_job(&id, "failed", |j| j["status"] == "failed").await;
    assert_eq!(failed["history"].as_array().map(Vec::len), Some(1), "{failed}");
    let section = format!(r#"section#job[data-job-id="{id}"][data-status="failed"]"#);
    open_view(browser, dash, "job", &format!("jobs/{id}"), &section).await;
    accept_confirmations(browser).await;
    browser.click(r#"#job [data-action="retry"]"#).await;
    // It runs again and fails again: a second failed attempt in its record and on the page.
    let again = dash
        .wait_job(&id, "failed a second time", |j| {
            j["status"] == "failed" && j["history"].as_array().is_some_and(|h| h.len() == 2)
        })
        .await;
    assert_eq!(again["error"], "retry me", "{again}");
    browser
        .wait_js(
            "two failed attempts listed on the job's page",
            "return document.querySelectorAll('ol#job-attempts li').length === 2",
        )
        .await;
    wait_view(browser, "job", &section).await;
    assert_no_console_errors(browser, "around a retry").await;
}

async fn job_data_is_text(browser: &Browser, dash: &Dashboard) {
    let spec =
        json!({"kind": "fail", "payload": {"message": XSS, "retryable": false}, "max_attempts": 1});
    let id = dash.submit(spec).await;
    dash.wait_job(&id, "failed", |j| j["status"] == "failed").await;
    let section = format!(r#"section#job[data-job-id="{id}"][data-status="failed"]"#);
    open_view(browser, dash, "job", &format!("jobs/{id}"), &section).await;
    // The payload is JSON text, where the string's quotes are escaped; the error is the string.
    let payload = browser
        .execute("return document.querySelector('pre#job-payload')?.textContent", vec![])
        .await;
    let in_json = json!(XSS).to_string();
    let in_json = &in_json[1..in_json.len() - 1];
    assert!(payload.as_str().is_some_and(|p| p.contains(in_json)), "#job-payload reads {payload}");
    let error = browser
        .execute("return document.querySelector('pre#job-error')?.textContent", vec![])
        .await;
    assert!(error.as_str().is_some_and(|e| e.contains(XSS)), "#job-error reads {error}");
    assert_no_markup_from_job(browser, "on the job's page").await;
    // The list shows the job too (with its kind and queue): still no markup from it.
    open_view(browser, dash, "jobs", "jobs?kind=fail", &format!(r#"tr[data-job-id="{id}"]"#)).await;
    assert_no_markup_from_job(browser, "in the jobs list").await;
}

/// Nothing a job carried became an element or ran.
async fn assert_no_markup_from_job(browser: &Browser, when: &str) {
    let found = browser
        .execute(
            "return {
                 xss: typeof window.__xss,
                 img: document.querySelectorAll('#view img[src=\"x\"], [onerror]').length,
             }",
            vec![],
        )
        .await;
    assert_eq!(found, json!({"xss": "undefined", "img": 0}), "job data became markup {when}");
}

async fn views_fit_a_phone(browser: &Browser, dash: &Dashboard) {
    browser.set_viewport(375, 800).await;
    for (view, shows) in [VIEWS[0], VIEWS[1]] {
        open_view(browser, dash, view, view, shows).await;
        let widths =
            browser.execute("return [document.body.scrollWidth, window.innerWidth]", vec![]).await;
        let (body, inner) =
            (widths[0].as_u64().unwrap_or(u64::MAX), widths[1].as_u64().unwrap_or(0));
        assert!(
            body <= inner,
            "#/{view} at 375 px wide: the body is {body} px wide (viewport {inner})"
        );
        assert_no_console_errors(browser, &format!("on #/{view} at a phone's width")).await;
    }
    browser.set_viewport(1280, 800).await;
}

/// Answers yes to the page's confirmation dialogs, as a user clicking OK would.
async fn accept_confirmations(browser: &Browser) {
    browser.execute("window.confirm = () => true", vec![]).await;
}

/// How many elements matching `css` are shown (laid out and not hidden).
async fn visible_actions(browser: &Browser, css: &str) -> u64 {
    let script = format!(
        "return Array.from(document.querySelectorAll({})).filter((el) =>
             el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden').length",
        json!(css)
    );
    browser.execute(&script, vec![]).await.as_u64().unwrap_or(0)
}

#[actix_web::test]
async fn with_a_token_the_page_shows_nothing_until_it_is_given() {
    let browser = Browser::start().await;
    let dash = Dashboard::start(&[("JOBYARD_API_TOKEN", "ui-secret-token")]).await;
    let id = dash.submit(json!({"kind": "noop", "payload": {"secret": "data"}})).await;
    dash.wait_job(&id, "succeeded", |j| j["status"] == "succeeded").await;

    browser.goto(&dash.page("jobs")).await;
    browser
        .wait_js(
            "#view unauthorized",
            "return document.getElementById('view')?.dataset.state === 'unauthorized'",
        )
        .await;
    let leaked = browser
        .execute(
            "return {rows: document.querySelectorAll('tr[data-job-id]').length,
                     text: (document.getElementById('view')?.textContent || '').includes('secret')}",
            vec![],
        )
        .await;
    assert_eq!(leaked, json!({"rows": 0, "text": false}), "data shown without the token");
    assert!(visible_actions(&browser, "form#token-form").await == 1, "the token form is not shown");

    browser.type_into("input#token-input", "ui-secret-token").await;
    browser.click(r#"form#token-form [type="submit"], form#token-form button"#).await;
    wait_view(&browser, "jobs", &format!(r#"#jobs-table tr[data-job-id="{id}"]"#)).await;
    let stored = browser.execute("return sessionStorage.getItem('jobyard.token')", vec![]).await;
    assert_eq!(stored, "ui-secret-token", "the token kept for this tab");
    assert_eq!(visible_actions(&browser, "form#token-form").await, 0, "the token form still shown");
}

#[actix_web::test]
async fn read_only_the_page_shows_no_action() {
    let browser = Browser::start().await;
    let dash = Dashboard::start(&[("JOBYARD_UI", "read-only")]).await;
    let _upstream = dash.seed().await;
    let running = dash.submit(json!({"kind": "sleep", "payload": {"ms": 600_000}})).await;
    dash.wait_job(&running, "running", |j| j["status"] == "running").await;
    let failed = dash.call("GET", "/v1/jobs?status=failed", None).await;
    let failed = failed.body["jobs"][0]["id"].as_str().expect("a failed job").to_owned();

    let mut pages: Vec<(&str, String, String)> =
        VIEWS.iter().map(|(view, shows)| (*view, view.to_string(), shows.to_string())).collect();
    for id in [&running, &failed] {
        pages.push(("job", format!("jobs/{id}"), format!(r#"section#job[data-job-id="{id}"]"#)));
    }
    for (view, route, shows) in &pages {
        open_view(&browser, &dash, view, route, shows).await;
        let shown = visible_actions(&browser, "[data-action]").await;
        assert_eq!(shown, 0, "#/{route} shows {shown} action button(s) in read-only mode");
    }
    // Not a page that shows nothing: the default server shows these buttons (checked in the
    // main test); here the same data is on the page without them.
    let job = dash.job(&running).await;
    assert_eq!(job["status"], "running", "nothing cancelled it");
}
