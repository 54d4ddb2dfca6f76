//! The dashboard's cost in a real browser: the bytes of its first load, and how soon the jobs
//! view shows its first page of rows with a million jobs in the store.
//!
//! ```text
//! cargo run --release --example ui_load -- --jobs 1000000 --loads 7
//! ```
//! Starts a server in this process on the memory backend, pauses queue `bulk` and submits
//! `--jobs` `noop` jobs into it through the embedding API (batches of 1 000), so they stay
//! `queued`. Then drives headless Chromium through chromedriver (the browser tests' client,
//! `tests/support/webdriver.rs`; needs `apt-get install chromium chromium-driver`):
//!
//! - first load, with the browser's cache cleared: `/ui/#/jobs`, every response the page
//!   received as the browser's Performance API reports it (`transferSize`: bytes on the wire
//!   with headers; `decodedBodySize`: the body), split into the page itself (`/ui/...`: the
//!   index, its assets, its configuration) and the API data it read;
//! - `--loads` further loads of `/ui/#/jobs` (each from `about:blank`, so a whole page load;
//!   the assets may come from the browser's cache, as their cache headers allow): the time
//!   from the navigation's start until `#view` is the jobs view with `data-state="ready"`,
//!   recorded in the page by a MutationObserver installed before the page's own scripts (so
//!   the measure needs no cooperation from the page and misses no change); the median.
//!
//! The browser and the server share this machine's cores, as a dashboard on the same host
//! would.

#[path = "../tests/support/webdriver.rs"]
mod webdriver;

use std::time::{Duration, Instant};

use clap::Parser;
use jobyard::job::record::to_json;
use jobyard::startup::Server;
use jobyard::{Config, JobSpec};
use serde_json::{json, Value};

use webdriver::Browser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Jobs in the store while the jobs view loads (left queued in a paused queue).
    #[arg(long, default_value_t = 1_000_000)]
    jobs: usize,
    /// Timed loads of the jobs view after the first.
    #[arg(long, default_value_t = 7)]
    loads: usize,
}

/// Run in every new document before its own scripts: notes when `#view` first becomes ready
/// for each view (`performance.now()`, milliseconds since the navigation started) and how
/// many job rows the jobs table then holds.
const READY_OBSERVER: &str = r#"
(() => {
  const ready = {};
  window.__uiLoadReady = ready;
  const look = () => {
    const view = document.getElementById('view');
    if (!view || view.dataset.state !== 'ready' || view.dataset.view in ready) return;
    ready[view.dataset.view] = {
      at: performance.now(),
      rows: document.querySelectorAll('#jobs-table tr[data-job-id]').length,
    };
  };
  new MutationObserver(look).observe(document, {
    subtree: true, childList: true, attributes: true, attributeFilter: ['data-state', 'data-view'],
  });
})();
"#;

/// Every response of the page so far, as the Performance API reports it.
const RESPONSES: &str = r#"
return [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
  .map((e) => ({ url: e.name, transfer: e.transferSize, body: e.decodedBodySize }));
"#;

async fn server(
    dir: &std::path::Path,
) -> Result<(String, jobyard::Runtime), Box<dyn std::error::Error>> {
    let dir = dir.to_string_lossy().into_owned();
    let config = Config::from_lookup(|name| match name {
        "JOBYARD_ADDR" => Some("127.0.0.1:0".to_owned()),
        "JOBYARD_DATA_DIR" => Some(dir.clone()),
        _ => None,
    })?;
    let server = Server::build(config).await?;
    let base = format!("http://127.0.0.1:{}", server.port());
    let runtime = server.runtime().clone();
    actix_rt::spawn(server.run_until_stopped());
    Ok((base, runtime))
}

/// `jobs` queued `noop` jobs in the paused queue `bulk`.
async fn fill(runtime: &jobyard::Runtime, jobs: usize) -> Result<(), Box<dyn std::error::Error>> {
    runtime.pause_queue("bulk").await?;
    let started = Instant::now();
    let mut submitted = 0;
    while submitted < jobs {
        let batch = (submitted..jobs.min(submitted + 1000))
            .map(|n| {
                let payload = to_json(&json!({ "n": n })).expect("JSON");
                JobSpec {
                    queue: Some("bulk".into()),
                    payload: Some(payload),
                    ..JobSpec::new("noop")
                }
            })
            .collect::<Vec<_>>();
        submitted += batch.len();
        runtime.submit_batch(batch).await?;
    }
    println!("{jobs} jobs queued in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Where the time of a load went: the page's own `DOMContentLoaded` (index and scripts
/// loaded and run) and the slowest API answer it waited for (from its request to its end).
const SPLIT: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
const api = performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/v1/') && e.responseEnd > 0);
return { dom: nav ? nav.domContentLoadedEventEnd : null,
         api: Math.max(0, ...api.map((e) => e.responseEnd - e.startTime)) };
"#;

/// One load of the jobs view from `about:blank`.
struct Load {
    /// Milliseconds from the navigation's start to the ready jobs view.
    ready: f64,
    /// Job rows shown when it became ready.
    rows: u64,
    /// Milliseconds to `DOMContentLoaded`.
    dom: f64,
    /// Milliseconds of the slowest API answer of the load.
    api: f64,
}

async fn load_jobs_view(browser: &Browser, base: &str) -> Load {
    browser.goto("about:blank").await;
    browser.goto(&format!("{base}/ui/#/jobs")).await;
    let script = "return (window.__uiLoadReady || {}).jobs || null";
    let ready =
        browser.wait_js_within(Duration::from_secs(60), "the jobs view ready", script).await;
    let split = browser.execute(SPLIT, vec![]).await;
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    Load {
        ready: ms(&ready["at"]),
        rows: ready["rows"].as_u64().unwrap_or(0),
        dom: ms(&split["dom"]),
        api: ms(&split["api"]),
    }
}

/// Prints the first load's responses: the page's own and the API's, with their totals.
fn report_bytes(responses: &Value) {
    let mut totals = [(0u64, 0u64); 2];
    println!("first load (browser cache cleared), bytes on the wire / body:");
    for response in responses.as_array().into_iter().flatten() {
        let url = response["url"].as_str().unwrap_or("");
        let (transfer, body) =
            (response["transfer"].as_u64().unwrap_or(0), response["body"].as_u64().unwrap_or(0));
        let page = url.contains("/ui/") || url.ends_with("/ui");
        let total = &mut totals[usize::from(!page)];
        *total = (total.0 + transfer, total.1 + body);
        println!("  {transfer:>8} {body:>8}  {url}");
    }
    let kb = |bytes: u64| bytes as f64 / 1024.0;
    println!(
        "  page (index, assets, configuration): {:.1} KB on the wire, {:.1} KB of bodies",
        kb(totals[0].0),
        kb(totals[0].1)
    );
    println!(
        "  API data read by the first view:     {:.1} KB on the wire, {:.1} KB of bodies",
        kb(totals[1].0),
        kb(totals[1].1)
    );
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (base, runtime) = server(dir.path()).await?;
    fill(&runtime, args.jobs).await?;

    let browser = Browser::start().await;
    browser.set_viewport(1280, 800).await;
    browser.cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": READY_OBSERVER })).await;
    browser.cdp("Network.clearBrowserCache", json!({})).await;
    let first = load_jobs_view(&browser, &base).await;
    report_bytes(&browser.execute(RESPONSES, vec![]).await);
    println!(
        "first load: jobs view ready after {:.0} ms with {} rows (DOMContentLoaded {:.0} ms, \
         slowest API answer {:.0} ms)",
        first.ready, first.rows, first.dom, first.api
    );

    let mut loads = Vec::new();
    for _ in 0..args.loads {
        let load = load_jobs_view(&browser, &base).await;
        if load.rows == 0 {
            return Err("the jobs view was ready without a row".into());
        }
        loads.push(load);
    }
    let median = |pick: fn(&Load) -> f64| {
        let mut all: Vec<f64> = loads.iter().map(pick).collect();
        all.sort_by(f64::total_cmp);
        all.get(all.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let all = loads.iter().map(|l| format!("{:.0}", l.ready)).collect::<Vec<_>>().join(", ");
    println!(
        "jobs view ready, {} loads with {} jobs stored: median {:.0} ms ({all}); medians of \
         DOMContentLoaded {:.0} ms, of the slowest API answer {:.0} ms",
        loads.len(),
        args.jobs,
        median(|l| l.ready),
        median(|l| l.dom),
        median(|l| l.api),
    );
    Ok(())
}
