//! Tools as dashboards use them: cached tool data over HTTP, the upstream requests that many
//! dashboards polling cost, and how soon a fresh instance serves data Redis holds.
//!
//! ```text
//! cargo run --release --example tool_serving -- read --body-bytes 1024
//! cargo run --release --example tool_serving -- read --body-bytes 102400
//! cargo run --release --example tool_serving -- read --body-bytes 1024 --rate 5000
//! cargo run --release --example tool_serving -- dashboards --secs 60
//! cargo build --release && REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example tool_serving -- cold-start
//! ```
//! `read`: a server on loopback with one tool whose data is cached (a fake upstream serves
//! it), and one cache entry holding the same bytes; `--connections` clients, each on its own
//! connection, read the tool's data for `--secs` seconds, then the cache entry as long. Prints
//! p50, p99 and reads per second of each (the clients run in this process, on the same cores).
//! Without `--rate` every client reads again as soon as it is answered: the most reads per
//! second, with latencies that are queueing (64 reads always waiting on 2 cores); with
//! `--rate N` the clients read N times a second in all, evenly: latency under that load.
//!
//! `dashboards`: `--tools` tools refreshed by cron every `--refresh-secs` seconds (their data
//! fresh for two periods, so the schedule renews it before anyone reads it stale), and `--dashboards` dashboards each reading every
//! tool every `--poll-secs` seconds, for `--secs` seconds. Prints the upstream requests made,
//! the scheduled refreshes in that time, and both per hour; with `--etag` the upstream answers
//! 304 to a refresh of unchanged data.
//!
//! `cold-start`: stores a tool and its data through one `jobyard serve` process on `REDIS_URL`
//! (under a fresh prefix), stops it (SIGTERM; SIGKILL with `--crash`, so that the next one
//! restarts under the name of a run that did not leave), starts another and times from its
//! spawn to the first answer of the tool's data, and counts the upstream requests made
//! meanwhile (none expected).
//! Needs the release binary (`cargo build --release`).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::{Parser, Subcommand};
use jobyard::startup::Server;
use jobyard::Config;
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Latency and throughput of cached tool data, next to the cache endpoint.
    Read {
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Reads per second, all clients together, each client at an even pace (0: as fast as
        /// each answer allows, which measures the most reads per second, not latency).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Upstream requests for tools polled by many dashboards.
    Dashboards {
        #[arg(long, default_value_t = 10)]
        tools: usize,
        #[arg(long, default_value_t = 100)]
        dashboards: usize,
        #[arg(long, default_value_t = 5)]
        poll_secs: u64,
        #[arg(long, default_value_t = 5)]
        refresh_secs: u64,
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// The upstream answers 304 to a refresh whose data has not changed.
        #[arg(long)]
        etag: bool,
    },
    /// Time from a process's start to its first answer of tool data Redis holds.
    ColdStart {
        /// SIGKILL the first process instead of stopping it: the second restarts after a crash
        /// under the same name.
        #[arg(long)]
        crash: bool,
    },
}

/// A fake upstream: `GET /data` answers `body` with an ETag (and 304 to a matching
/// `If-None-Match` when `etag` is set), counting requests.
async fn upstream(body: Vec<u8>, etag: bool) -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let (body, seen) = (web::Bytes::from(body), count.clone());
    let server = HttpServer::new(move || {
        let (body, seen) = (body.clone(), seen.clone());
        App::new().route(
            "/data",
            web::get().to(move |req: HttpRequest| {
                seen.fetch_add(1, Ordering::Relaxed);
                let matches = req.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"");
                let answer = if etag && matches {
                    HttpResponse::NotModified().finish()
                } else {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .insert_header(("etag", "\"v1\""))
                        .body(body.clone())
                };
                async move { answer }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("a free port");
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}/data"), count)
}

/// A JSON body of about `bytes` bytes.
fn body_of(bytes: usize) -> Vec<u8> {
    let filler = "x".repeat(bytes.saturating_sub(16));
    serde_json::to_vec(&json!({ "data": filler })).expect("JSON")
}

async fn server(adjust: impl FnOnce(&mut Config)) -> Result<String, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("jobyard-tool-serving-{}", std::process::id()));
    let mut config = Config { addr: "127.0.0.1:0".into(), data_dir: dir, ..Config::default() };
    adjust(&mut config);
    let server = Server::build(config).await?;
    let base = format!("http://127.0.0.1:{}", server.port());
    actix_rt::spawn(server.run_until_stopped());
    Ok(base)
}

async fn put(http: &awc::Client, url: &str, body: Value) -> Result<(), Box<dyn std::error::Error>> {
    let answer = http.put(url).send_json(&body).await?;
    if !answer.status().is_success() {
        return Err(format!("PUT {url} answered {}", answer.status()).into());
    }
    Ok(())
}

/// Reads `url` from `connections` clients for `secs`, at `rate` reads per second in all (0:
/// each client reads again as soon as it has its answer); the latencies of every read.
async fn load(url: &str, connections: usize, secs: u64, rate: u64) -> Vec<Duration> {
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let every = (rate > 0).then(|| Duration::from_secs_f64(connections as f64 / rate as f64));
    let clients = (0..connections).map(|c| {
        let url = url.to_owned();
        async move {
            // One connection per client: each reads after its previous answer, as a browser tab.
            let connector = awc::Connector::new().limit(1);
            let http = awc::Client::builder().connector(connector).finish();
            let mut latencies = Vec::new();
            // Clients start spread over one interval, so reads arrive evenly.
            let mut next =
                start + every.map_or(Duration::ZERO, |e| e.mul_f64(c as f64 / connections as f64));
            while Instant::now() < until {
                if let Some(every) = every {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                }
                let started = Instant::now();
                let Ok(mut answer) = http.get(&url).send().await else { continue };
                let _ = answer.body().limit(16 << 20).await;
                latencies.push(started.elapsed());
            }
            latencies
        }
    });
    futures_util::future::join_all(clients).await.into_iter().flatten().collect()
}

fn report(what: &str, mut latencies: Vec<Duration>, secs: u64) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{what}: {} reads/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len() as u64 / secs,
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
}

async fn read(
    body_bytes: usize,
    connections: usize,
    secs: u64,
    rate: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let body = body_of(body_bytes);
    let (source, _) = upstream(body.clone(), false).await;
    let base = server(|_| {}).await?;
    let http = awc::Client::default();
    put(&http, &format!("{base}/v1/tools/bench"), json!({"url": source, "ttl_secs": 86_400}))
        .await?;
    let mut first = http.get(format!("{base}/v1/tools/bench/data")).send().await?;
    if first.status() != 200 || first.body().limit(16 << 20).await?.len() != body.len() {
        return Err("the tool's data was not served".into());
    }
    let cached = http
        .put(format!("{base}/v1/cache/bench-entry?ttl_secs=86400"))
        .content_type("application/json")
        .send_body(body.clone())
        .await?;
    if !cached.status().is_success() {
        return Err("the cache entry was not stored".into());
    }
    let pace = if rate > 0 { format!("{rate} reads/s") } else { "as fast as answered".into() };
    println!("{} bytes, {connections} connections, {pace}, {secs} s each", body.len());
    let tool = load(&format!("{base}/v1/tools/bench/data"), connections, secs, rate).await;
    report("tool data  ", tool, secs);
    let entry = load(&format!("{base}/v1/cache/bench-entry"), connections, secs, rate).await;
    report("cache entry", entry, secs);
    Ok(())
}

async fn dashboards(
    tools: usize,
    dashboards: usize,
    poll: u64,
    refresh: u64,
    secs: u64,
    etag: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let (source, upstream_requests) = upstream(body_of(1024), etag).await;
    let base = server(|_| {}).await?;
    let http = awc::Client::default();
    for t in 0..tools {
        let tool = json!({
            "url": source,
            "refresh": format!("*/{refresh} * * * * *"),
            // Fresh for two periods: the scheduled refresh renews it before a read finds it
            // stale (a read of stale data would trigger a refresh of its own).
            "ttl_secs": 2 * refresh,
            "stale_secs": refresh,
        });
        put(&http, &format!("{base}/v1/tools/t{t}"), tool).await?;
        // The first read fetches the data (nothing was cached): not counted below.
        let mut first = http.get(format!("{base}/v1/tools/t{t}/data")).send().await?;
        first.body().limit(1 << 20).await?;
    }
    let before = upstream_requests.load(Ordering::Relaxed);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let reads = Arc::new(AtomicU64::new(0));
    let readers = (0..dashboards).map(|d| {
        let (base, reads) = (base.clone(), reads.clone());
        async move {
            let http = awc::Client::default();
            // Dashboards open spread over one poll period, as people do.
            let offset = Duration::from_millis(poll * 1000 * d as u64 / dashboards as u64);
            tokio::time::sleep(offset).await;
            while Instant::now() < until {
                let round = Instant::now();
                for t in 0..tools {
                    if let Ok(mut answer) =
                        http.get(format!("{base}/v1/tools/t{t}/data")).send().await
                    {
                        let _ = answer.body().limit(1 << 20).await;
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_secs(poll).saturating_sub(round.elapsed())).await;
            }
        }
    });
    futures_util::future::join_all(readers).await;
    let elapsed = started.elapsed().as_secs_f64();
    let made = upstream_requests.load(Ordering::Relaxed) - before;
    let scheduled = (tools as f64 * elapsed / refresh as f64).round();
    println!(
        "{tools} tools, {dashboards} dashboards every {poll} s, refresh every {refresh} s, {elapsed:.0} s: \
         {} reads, {made} upstream requests ({:.0}/h), {scheduled} scheduled refreshes ({:.0}/h){}",
        reads.load(Ordering::Relaxed),
        made as f64 * 3600.0 / elapsed,
        scheduled * 3600.0 / elapsed,
        if etag { ", upstream answering 304 to unchanged data" } else { "" }
    );
    Ok(())
}

/// `jobyard serve` from the release build, on `redis` under `prefix`.
fn spawn_serve(
    redis: &str,
    prefix: &str,
    dir: &std::path::Path,
    addr: &str,
) -> Result<Child, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|release| release.join("jobyard"))
        .filter(|path| path.exists())
        .ok_or("build the binary first: cargo build --release")?;
    Ok(Command::new(binary)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis)
        .env("JOBYARD_REDIS_PREFIX", prefix)
        .env("JOBYARD_ADDR", addr)
        .env("JOBYARD_DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

async fn cold_start(crash: bool) -> Result<(), Box<dyn std::error::Error>> {
    let redis = std::env::var("REDIS_URL").map_err(|_| "cold-start needs REDIS_URL")?;
    let (source, upstream_requests) = upstream(body_of(1024), false).await;
    let prefix = format!("coldstart{}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    let http = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
    let data = format!("{base}/v1/tools/cold/data");
    let mut first = spawn_serve(&redis, &prefix, &dir, &addr)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/ready")).send().await.map_or(true, |r| r.status() != 200) {
        if Instant::now() > deadline {
            return Err("the first server did not get ready".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put(&http, &format!("{base}/v1/tools/cold"), json!({"url": source, "ttl_secs": 86_400}))
        .await?;
    let answer = http.get(&data).send().await?;
    if answer.status() != 200 {
        return Err(format!("the first server answered {}", answer.status()).into());
    }
    if crash {
        first.kill()?;
    } else {
        // Stopped as a deployment stops it (SIGTERM): the next one starts as a fresh instance.
        Command::new("kill").args(["-TERM", &first.id().to_string()]).status()?;
    }
    first.wait()?;
    let before = upstream_requests.load(Ordering::Relaxed);
    let spawned = Instant::now();
    let mut second = spawn_serve(&redis, &prefix, &dir, &addr)?;
    let served = loop {
        if let Ok(answer) = http.get(&data).send().await {
            if answer.status() == 200 {
                break spawned.elapsed();
            }
        }
        if spawned.elapsed() > Duration::from_secs(20) {
            let _ = second.kill();
            return Err("the second server never served the data".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let upstream_since = upstream_requests.load(Ordering::Relaxed) - before;
    second.kill()?;
    second.wait()?;
    println!(
        "from spawn to the first tool data answer: {:.0} ms; upstream requests meanwhile: {upstream_since}",
        served.as_secs_f64() * 1e3
    );
    Ok(())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Args::parse().mode {
        Mode::Read { body_bytes, connections, secs, rate } => {
            read(body_bytes, connections, secs, rate).await
        }
        Mode::Dashboards { tools, dashboards: n, poll_secs, refresh_secs, secs, etag } => {
            dashboards(tools, n, poll_secs, refresh_secs, secs, etag).await
        }
        Mode::ColdStart { crash } => cold_start(crash).await,
    }
}
