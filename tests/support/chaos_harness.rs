//! The soak and chaos harness, shared by `examples/chaos.rs` (long runs, figures in
//! `docs/reliability.md`) and `tests/chaos.rs` (a short run in `cargo test`).
//!
//! It starts real `jobyard serve` processes (and, for the Redis backend, its own durable
//! `redis-server`), drives a steady load of `http` jobs at a counting HTTP server of its own,
//! injects faults on a schedule, and then checks every job it was told about: each job's URL
//! names it (`/hit/{n}`), and the counting server records every execution, so "ran exactly
//! once" is measured. Everything listens on loopback only. Every process it starts is owned by a
//! guard that SIGKILLs and reaps it on drop (also when the run is dropped half way, as on
//! Ctrl-C, or unwinds from a panic).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::redis_support::TestRedis;

/// The queue of the steady load (and of the recovery probes).
pub const LOAD_QUEUE: &str = "chaos";
/// The queue the fill fault fills to its bound.
pub const FILL_QUEUE: &str = "chaos-fill";
/// Most submit requests of the rate-driven load in flight at once; past it a unit is shed.
const MAX_IN_FLIGHT: usize = 64;
/// A request without an answer after this long is counted as hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

/// The faults, injected in rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of one `jobyard serve` (in turn), restarted at once.
    KillInstance,
    /// SIGKILL of `redis-server`, restarted after `redis_down` on its append-only file.
    KillRedis,
    /// SIGSTOP of `redis-server` for `freeze`, then SIGCONT.
    FreezeRedis,
    /// A queue filled to its bound (`JOBYARD_MAX_QUEUED`) with delayed jobs, until 429.
    FillQueue,
}

impl Fault {
    pub const ALL: [Fault; 4] =
        [Fault::KillInstance, Fault::KillRedis, Fault::FreezeRedis, Fault::FillQueue];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillInstance => "kill-instance",
            Fault::KillRedis => "kill-redis",
            Fault::FreezeRedis => "freeze-redis",
            Fault::FillQueue => "fill-queue",
        }
    }

    pub fn parse(name: &str) -> Result<Fault, String> {
        Fault::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
            format!("unknown fault '{name}' (one of: {})", names.join(", "))
        })
    }
}

/// How the steady load is driven.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// About this many jobs per second, whatever the answers (open loop).
    Rate(f64),
    /// This many submitters, each sending its next submit when the previous one was answered
    /// (100 ms later when it was not a 201).
    Submitters(usize),
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The `jobyard` binary.
    pub binary: PathBuf,
    pub backend: Backend,
    pub instances: usize,
    /// How long the load runs (faults stop with it).
    pub duration: Duration,
    pub load: Load,
    /// Share of submits that are batches of 2 to 5 jobs (the others are single jobs).
    pub batch_share: f64,
    pub fault_every: Duration,
    pub faults: Vec<Fault>,
    /// Keep the load and faults going past `duration` until every fault of `faults` ran once.
    pub complete_rotation: bool,
    /// How long `freeze-redis` keeps Redis stopped.
    pub freeze: Duration,
    /// How long `kill-redis` keeps Redis down before restarting it.
    pub redis_down: Duration,
    /// How long the counting server holds each request (the job's running time).
    pub job_ms: u64,
    /// `JOBYARD_LEASE_MS` of the instances.
    pub lease_ms: u64,
    /// `JOBYARD_CONCURRENCY` of the instances.
    pub concurrency: usize,
    /// `JOBYARD_MAX_QUEUED` of the instances (per queue, so the load queue too).
    pub max_queued: usize,
    /// The delay of the jobs that fill the queue (they run once due: the queue drains itself).
    pub fill_delay: Duration,
    /// `JOBYARD_QUEUE_TIMEOUT_MS` of the instances.
    pub queue_timeout_ms: u64,
    /// How long the end waits for every job to finish.
    pub drain_timeout: Duration,
    /// How long a fault may take to recover before it is reported as not recovered.
    pub recovery_timeout: Duration,
    /// Where logs, events and the report go (created).
    pub out_dir: PathBuf,
    /// Print events and a progress line every 10 s.
    pub progress: bool,
}

impl Options {
    /// Refuses combinations the harness cannot run meaningfully.
    pub fn validate(&self) -> Result<(), String> {
        if self.instances == 0 || self.instances > 3 {
            return Err(format!("--instances must be 1 to 3, not {}", self.instances));
        }
        if self.backend == Backend::Memory {
            if self.instances != 1 {
                return Err("the memory backend runs one instance (instances share nothing)".into());
            }
            if let Some(f) = self.faults.iter().find(|f| **f != Fault::FillQueue) {
                return Err(format!(
                    "fault {} needs --backend redis: on the memory backend a killed instance \
                     loses its jobs by design and there is no Redis to kill or freeze",
                    f.name()
                ));
            }
        }
        if let Load::Rate(rate) = self.load {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(format!("--rate must be positive, not {rate}"));
            }
        }
        if let Load::Submitters(0) = self.load {
            return Err("--submitters must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.batch_share) {
            return Err("--batch-share must be between 0 and 1".into());
        }
        if self.max_queued < 10 {
            return Err("--max-queued must be at least 10".into());
        }
        if !self.binary.is_file() {
            return Err(format!(
                "no jobyard binary at {} (build it first: cargo build --release --bin jobyard)",
                self.binary.display()
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The counting server.

/// Every execution of every job, by job number: when it arrived (since the run's start).
struct Hits {
    start: Instant,
    seen: Mutex<HashMap<u64, Vec<Duration>>>,
    /// Requests being held right now.
    in_flight: AtomicUsize,
}

impl Hits {
    fn count(&self, n: u64) -> usize {
        self.seen.lock().unwrap().get(&n).map_or(0, Vec::len)
    }

    fn times(&self, n: u64) -> Vec<Duration> {
        self.seen.lock().unwrap().get(&n).cloned().unwrap_or_default()
    }
}

/// A loopback server answering `GET /hit/{n}` with 200 after `job_ms`, counting each request.
async fn counting_server(
    start: Instant,
    job_ms: u64,
) -> Result<(String, Arc<Hits>, actix_web::dev::ServerHandle), String> {
    let hits =
        Arc::new(Hits { start, seen: Mutex::new(HashMap::new()), in_flight: AtomicUsize::new(0) });
    let shared = hits.clone();
    let server = HttpServer::new(move || {
        let hits = shared.clone();
        App::new().route(
            "/hit/{n}",
            web::get().to(move |n: web::Path<u64>| {
                let hits = hits.clone();
                async move {
                    let at = hits.start.elapsed();
                    hits.seen.lock().unwrap().entry(n.into_inner()).or_default().push(at);
                    hits.in_flight.fetch_add(1, Ordering::SeqCst);
                    actix_rt::time::sleep(Duration::from_millis(job_ms)).await;
                    hits.in_flight.fetch_sub(1, Ordering::SeqCst);
                    HttpResponse::Ok().body("counted")
                }
            }),
        )
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .map_err(|err| format!("counting server: {err}"))?;
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((base, hits, handle))
}

// ---------------------------------------------------------------------------------------------
// The jobyard processes.

/// One `jobyard serve`. SIGKILLed and reaped on drop.
struct Instance {
    slot: usize,
    generation: usize,
    child: Child,
    pid: u32,
    /// Its `JOBYARD_INSTANCE`: the slot's (`chaos-<slot>`), so a restarted slot takes its
    /// victim's jobs back at once; with one instance, the generation's too, since the running
    /// set of a killed sole instance can only be read after its restart.
    name: String,
    port: Arc<Mutex<Option<u16>>>,
    base: String,
    log: PathBuf,
}

impl Instance {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `VmHWM` (peak resident set) of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS` (resident set now) of a live process, in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Turns on Redis's latency monitor (events of 100 ms or more); it lives until a restart.
fn watch_redis_latency(redis: &TestRedis) {
    redis.command(&[b"CONFIG", b"SET", b"latency-monitor-threshold", b"100"]);
}

/// `LATENCY LATEST`, one line per event (`name time latest-ms max-ms`), from its RESP reply.
fn redis_latency_latest(redis: &TestRedis) -> Vec<String> {
    let reply = redis.command(&[b"LATENCY", b"LATEST"]);
    let text = String::from_utf8_lossy(&reply);
    // An array of arrays of four: a bulk string, then three integers.
    let mut lines = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut parts = text.split("\r\n");
    while let Some(part) = parts.next() {
        if part.starts_with('$') {
            if let Some(name) = parts.next() {
                fields.push(name.to_owned());
            }
        } else if let Some(number) = part.strip_prefix(':') {
            fields.push(number.to_owned());
        }
        if fields.len() == 4 {
            lines.push(fields.join(" "));
            fields.clear();
        }
    }
    lines
}

/// The instance named by a job's `worker` (`<instance>/w<N>`).
fn worker_instance(job: &Value) -> Option<&str> {
    Some(job["worker"].as_str()?.split_once('/')?.0)
}

/// The job number of a record (the `n` of its URL).
fn job_number(job: &Value) -> Option<u64> {
    job["payload"]["url"].as_str()?.rsplit_once("/hit/")?.1.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// What the harness knows about every job it submitted.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Load,
    Probe,
    Fill,
}

#[derive(Clone, Debug)]
enum Answer {
    Pending,
    Created(String),
    Refused { status: u16, code: String },
    Unanswered(&'static str),
}

struct JobEntry {
    role: Role,
    answer: Answer,
    /// When its submit was sent, since the run's start.
    sent: Duration,
}

/// One submit request, as answered.
struct Submitted {
    first: u64,
    status: Option<u16>,
    code: String,
    retry_after: bool,
}

/// Counters and samples the load and the faults update.
#[derive(Default)]
struct State {
    jobs: Vec<JobEntry>,
    /// Answers to submits, by label (`201`, `503 backend_unavailable`, `no answer (timeout)`).
    answers: BTreeMap<String, u64>,
    /// 429 answers by queue.
    refused_by_queue: BTreeMap<&'static str, u64>,
    /// 429 or 503 answers without `Retry-After`.
    missing_retry_after: u64,
    /// Latency of answered submits of the load.
    latencies: Vec<Duration>,
    /// The same, for submits sent while no fault was in progress (from a fault's start until
    /// its recovery was measured).
    steady_latencies: Vec<Duration>,
    fault_in_progress: bool,
    /// Latency of answered load submits by the minute (since the start) they were sent in.
    by_minute: BTreeMap<u64, Vec<Duration>>,
    /// What Redis's latency monitor saw (`LATENCY LATEST`), read before each kill and at the
    /// end: one line per event.
    redis_latency: Vec<String>,
    in_flight: usize,
    /// VmRSS samples (every 10 s) by process label: (seconds since start, KiB).
    rss_samples: BTreeMap<String, Vec<RssSample>>,
    shed_units: u64,
    shed_jobs: u64,
    rr: usize,
}

/// One injected fault and how the system came back.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub number: usize,
    pub fault: Fault,
    pub target: String,
    /// Seconds since the run's start.
    pub at: f64,
    /// How long the fault itself lasted (until the process was back, Redis resumed, or the
    /// queue was found full), seconds.
    pub lasted: f64,
    /// From the fault until every targeted instance acknowledged a submit again, seconds.
    pub acked_again: Option<f64>,
    /// From the fault until a job submitted after it ran on every targeted instance's
    /// submit, seconds.
    pub probe_ran: Option<f64>,
    pub notes: Vec<String>,
    /// For a kill: the jobs the victim was running when it died (`None`: not known).
    pub running_at_kill: Option<Vec<String>>,
    pub victim_pid: Option<u32>,
}

impl FaultRecord {
    fn new(number: usize, fault: Fault, target: String, at: f64) -> Self {
        FaultRecord {
            number,
            fault,
            target,
            at,
            lasted: 0.0,
            acked_again: None,
            probe_ran: None,
            notes: Vec::new(),
            running_at_kill: None,
            victim_pid: None,
        }
    }
}

/// A job that broke a rule, with what shows it.
#[derive(Clone, Debug)]
pub struct Problem {
    pub n: u64,
    pub category: &'static str,
    pub detail: String,
}

/// A resident-memory sample: (seconds since the start, KiB).
pub type RssSample = (f64, u64);

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub summary: String,
    pub load_seconds: f64,
    pub submitted: BTreeMap<String, u64>,
    pub acknowledged: BTreeMap<String, u64>,
    pub succeeded_once: u64,
    /// Acknowledged jobs missing, or not finished when the drain ended.
    pub lost: Vec<Problem>,
    /// Acknowledged jobs that ended `failed` or `cancelled`.
    pub failed: Vec<Problem>,
    /// Jobs that succeeded with no execution seen.
    pub phantom: Vec<Problem>,
    pub duplicates_explained: Vec<Problem>,
    pub duplicates_unexplained: Vec<Problem>,
    /// Submits answered 429 whose jobs exist anyway, or one submitted spec stored twice.
    pub wrongly_stored: Vec<Problem>,
    /// Jobs stored and run although their submit was answered 503 or not at all.
    pub applied_unacknowledged: u64,
    /// The same, by the answer their submit got and the fault last injected before it.
    pub applied_unacknowledged_by: BTreeMap<String, u64>,
    /// Jobs stored although unacknowledged, still not finished at the end.
    pub unacknowledged_unfinished: Vec<Problem>,
    pub answers: BTreeMap<String, u64>,
    pub refused_by_queue: BTreeMap<String, u64>,
    pub missing_retry_after: u64,
    pub other_5xx: u64,
    pub hung: u64,
    pub latency_ms: Option<(f64, f64, f64)>,
    pub latency_samples: usize,
    /// The same for submits sent and answered while no fault was in progress.
    pub steady_latency_ms: Option<(f64, f64, f64)>,
    pub steady_latency_samples: usize,
    /// (minute, samples, p50, p99, max in ms) of the load's submits, by the minute sent.
    pub latency_by_minute: Vec<(u64, usize, f64, f64, f64)>,
    /// Redis's own latency events of at least 100 ms (`LATENCY LATEST`: event, when, latest ms,
    /// max ms), gathered before each kill and at the end.
    pub redis_latency: Vec<String>,
    pub shed_units: u64,
    pub shed_jobs: u64,
    /// Peak RSS (VmHWM, KiB) of every jobyard process: (slot, pid, KiB).
    pub rss: Vec<(usize, u32, u64)>,
    pub redis_rss_kib: Option<u64>,
    /// VmRSS of each process: (label, first sample, last sample), with the samples' times.
    pub rss_trend: Vec<(String, RssSample, RssSample)>,
    pub faults: Vec<FaultRecord>,
    pub drained_in: Option<f64>,
    pub out_dir: PathBuf,
}

impl Report {
    /// No job lost, failed or phantom, no unexplained duplicate, nothing stored that was
    /// refused, no 5xx other than 503, no hung request, every fault recovered.
    pub fn ok(&self) -> bool {
        self.failures().is_empty()
    }

    /// What makes the run fail, one line each.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut list = |what: &str, problems: &[Problem]| {
            if !problems.is_empty() {
                let ns: Vec<String> = problems.iter().take(10).map(|p| p.n.to_string()).collect();
                out.push(format!("{} {what} (jobs {} …)", problems.len(), ns.join(", ")));
            }
        };
        list("acknowledged jobs lost", &self.lost);
        list("acknowledged jobs failed", &self.failed);
        list("jobs succeeded without running", &self.phantom);
        list("unexplained duplicate executions", &self.duplicates_unexplained);
        list("jobs stored though refused, or stored twice", &self.wrongly_stored);
        if self.other_5xx > 0 {
            out.push(format!("{} answers were a 5xx other than 503", self.other_5xx));
        }
        if self.hung > 0 {
            out.push(format!(
                "{} requests got no answer within {CLIENT_TIMEOUT:?} (hung)",
                self.hung
            ));
        }
        for f in &self.faults {
            if f.probe_ran.is_none() {
                out.push(format!("fault #{} ({}) never recovered", f.number, f.fault.name()));
            }
        }
        if self.drained_in.is_none() {
            out.push("work did not drain before the deadline".into());
        }
        out
    }

    /// The figures as Markdown tables.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let sum = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        let parts = |m: &BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(t, "{}\n", self.summary);
        let _ = writeln!(t, "| figure | value |\n| --- | --- |");
        let _ = writeln!(
            t,
            "| jobs submitted | {} ({}) over {:.0} s of load |",
            sum(&self.submitted),
            parts(&self.submitted),
            self.load_seconds
        );
        let _ = writeln!(
            t,
            "| acknowledged (201) | {} ({}) |",
            sum(&self.acknowledged),
            parts(&self.acknowledged)
        );
        let _ = writeln!(t, "| succeeded, executed exactly once | {} |", self.succeeded_once);
        let _ = writeln!(t, "| lost (acknowledged; missing or unfinished) | {} |", self.lost.len());
        let _ =
            writeln!(t, "| acknowledged but ended failed / cancelled | {} |", self.failed.len());
        let _ = writeln!(t, "| succeeded without an execution | {} |", self.phantom.len());
        let _ = writeln!(
            t,
            "| duplicated: explained by a kill / unexplained | {} / {} |",
            self.duplicates_explained.len(),
            self.duplicates_unexplained.len()
        );
        let _ = writeln!(
            t,
            "| stored though refused (429), or stored twice | {} |",
            self.wrongly_stored.len()
        );
        let _ = writeln!(
            t,
            "| stored and run though answered 503 or not at all | {} ({}{} unfinished) |",
            self.applied_unacknowledged,
            self.applied_unacknowledged_by
                .iter()
                .map(|(k, v)| format!("{v}: {k}; "))
                .collect::<String>(),
            self.unacknowledged_unfinished.len()
        );
        let fives: BTreeMap<String, u64> = self
            .answers
            .iter()
            .filter(|(k, _)| k.starts_with('5'))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let _ = writeln!(
            t,
            "| 5xx answers | {} |",
            if fives.is_empty() { "0".into() } else { parts(&fives) }
        );
        let _ = writeln!(
            t,
            "| 429 answers | {} ({}) |",
            sum(&self.refused_by_queue),
            if self.refused_by_queue.is_empty() {
                "none".into()
            } else {
                self.refused_by_queue
                    .iter()
                    .map(|(q, v)| format!("queue {q}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let _ = writeln!(t, "| 429/503 without Retry-After | {} |", self.missing_retry_after);
        let others: BTreeMap<String, u64> = self
            .answers
            .iter()
            .filter(|(k, _)| !k.starts_with('5') && !k.starts_with("429") && k.as_str() != "201")
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let _ = writeln!(
            t,
            "| other outcomes of submits | {} |",
            if others.is_empty() { "none".into() } else { parts(&others) }
        );
        for (what, figures, samples) in [
            ("all answered load submits", self.latency_ms, self.latency_samples),
            ("no fault in progress", self.steady_latency_ms, self.steady_latency_samples),
        ] {
            match figures {
                Some((p50, p99, max)) => {
                    let _ = writeln!(
                        t,
                        "| submit latency p50 / p99 / max ({what}: {samples}) | {p50:.2} / \
                         {p99:.2} / {max:.1} ms |"
                    );
                }
                None => {
                    let _ = writeln!(t, "| submit latency ({what}) | no sample |");
                }
            }
        }
        let _ = writeln!(
            t,
            "| load shed (submitters saturated) | {} submits, {} jobs |",
            self.shed_units, self.shed_jobs
        );
        let peak = self.rss.iter().map(|r| r.2).max().unwrap_or(0);
        let per: Vec<String> = self
            .rss
            .iter()
            .map(|(slot, pid, kib)| format!("#{slot} pid {pid}: {:.1}", *kib as f64 / 1024.0))
            .collect();
        let _ = writeln!(
            t,
            "| peak RSS (VmHWM) of the jobyard processes, read before a kill or after the drain | \
             max {:.1} MiB ({} MiB) |",
            peak as f64 / 1024.0,
            per.join("; ")
        );
        if let Some(kib) = self.redis_rss_kib {
            let _ = writeln!(
                t,
                "| peak RSS (VmHWM) of redis-server, its last process, after the drain | {:.1} MiB |",
                kib as f64 / 1024.0
            );
        }
        if !self.rss_trend.is_empty() {
            let trend: Vec<String> = self
                .rss_trend
                .iter()
                .map(|(label, (t0, first), (t1, last))| {
                    format!(
                        "{label}: {:.1} MiB at {t0:.0} s → {:.1} MiB at {t1:.0} s",
                        *first as f64 / 1024.0,
                        *last as f64 / 1024.0
                    )
                })
                .collect();
            let _ = writeln!(t, "| VmRSS, first and last 10 s sample | {} |", trend.join("; "));
        }
        let _ = writeln!(
            t,
            "| drain after the load stopped | {} |",
            self.drained_in.map_or("did not drain".into(), |s| format!("{s:.1} s"))
        );
        if !self.faults.is_empty() {
            let _ = writeln!(
                t,
                "\n| # | at (s) | fault | target | lasted (s) | acked again (s) | fresh job ran \
                 (s) | notes |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
            );
            let opt = |v: Option<f64>| v.map_or("never".to_owned(), |s| format!("{s:.2}"));
            for f in &self.faults {
                let _ = writeln!(
                    t,
                    "| {} | {:.1} | {} | {} | {:.2} | {} | {} | {} |",
                    f.number,
                    f.at,
                    f.fault.name(),
                    f.target,
                    f.lasted,
                    opt(f.acked_again),
                    opt(f.probe_ran),
                    f.notes.join("; ")
                );
            }
        }
        if self.latency_by_minute.len() > 1 {
            let _ = writeln!(
                t,
                "\n| minute | load submits answered | p50 (ms) | p99 (ms) | max (ms) |\n| --- | --- \
                 | --- | --- | --- |"
            );
            for (minute, n, p50, p99, max) in &self.latency_by_minute {
                let _ = writeln!(t, "| {minute} | {n} | {p50:.2} | {p99:.1} | {max:.1} |");
            }
        }
        if !self.redis_latency.is_empty() {
            let _ = writeln!(
                t,
                "\nRedis latency monitor (events of 100 ms or more; event, unix time, latest ms, \
                 max ms):"
            );
            for line in &self.redis_latency {
                let _ = writeln!(t, "- {line}");
            }
        }
        let failures = self.failures();
        if failures.is_empty() {
            let _ = writeln!(t, "\nverdict: PASS");
        } else {
            let _ = writeln!(t, "\nverdict: FAIL");
            for f in failures {
                let _ = writeln!(t, "- {f}");
            }
        }
        t
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Everything the load, the faults and the checks share (one thread: actix's).
struct Ctx {
    opts: Options,
    start: Instant,
    http: awc::Client,
    hits: Arc<Hits>,
    hit_base: String,
    /// The base URL of each slot's current process.
    bases: RefCell<Vec<String>>,
    /// The pid of each slot's current process, and of redis-server (for sampling RSS).
    pids: RefCell<Vec<u32>>,
    redis_pid: Cell<Option<u32>>,
    state: RefCell<State>,
    stop_load: Cell<bool>,
    events: RefCell<File>,
    prefix: String,
    redis_url: Option<String>,
}

impl Ctx {
    fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.start).as_secs_f64()
    }

    fn event(&self, text: impl AsRef<str>) {
        let line = format!("[{:8.3}] {}", self.start.elapsed().as_secs_f64(), text.as_ref());
        let _ = writeln!(self.events.borrow_mut(), "{line}");
        if self.opts.progress {
            println!("{line}");
        }
    }

    fn base(&self, slot: usize) -> String {
        self.bases.borrow()[slot].clone()
    }

    fn spec(&self, n: u64, queue: &str, delay: Option<Duration>) -> Value {
        let mut spec = json!({
            "kind": "http",
            "queue": queue,
            "payload": {"url": format!("{}/hit/{n}", self.hit_base)},
        });
        if let Some(delay) = delay {
            spec["delay_ms"] = json!(delay.as_millis() as u64);
        }
        spec
    }

    /// Submits `count` new jobs to `slot` (`batch`: through `/v1/jobs/batch`), recording them
    /// and the answer.
    async fn submit(
        &self,
        slot: usize,
        role: Role,
        queue: &'static str,
        count: usize,
        batch: bool,
        delay: Option<Duration>,
    ) -> Submitted {
        let first = {
            let mut state = self.state.borrow_mut();
            let first = state.jobs.len() as u64;
            let sent = self.start.elapsed();
            for _ in 0..count {
                state.jobs.push(JobEntry { role, answer: Answer::Pending, sent });
            }
            first
        };
        let specs: Vec<Value> =
            (first..first + count as u64).map(|n| self.spec(n, queue, delay)).collect();
        let (path, body) = if batch {
            ("/v1/jobs/batch", json!({ "jobs": specs }))
        } else {
            ("/v1/jobs", specs[0].clone())
        };
        let url = format!("{}{path}", self.base(slot));
        let began = Instant::now();
        let steady = !self.state.borrow().fault_in_progress;
        let outcome: Result<(u16, bool, Value), &'static str> = async {
            let mut response = self.http.post(url).send_json(&body).await.map_err(|err| {
                use awc::error::{ConnectError as C, SendRequestError as E};
                match err {
                    E::Timeout => "timeout",
                    E::Connect(C::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        "connection refused"
                    }
                    // awc's name for a connection closed after the request was sent and
                    // before the answer's head (the server died with the request in hand).
                    E::Connect(C::Disconnected) => "connection closed before the answer",
                    E::Connect(_) => "connect error",
                    _ => "connection broken",
                }
            })?;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let bytes = response.body().limit(64 << 20).await.map_err(|err| match err {
                awc::error::PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    "timeout"
                }
                _ => "connection broken",
            })?;
            Ok((status, retry_after, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
        }
        .await;
        let latency = began.elapsed();
        let mut state = self.state.borrow_mut();
        let mut result = Submitted { first, status: None, code: String::new(), retry_after: false };
        let label = match outcome {
            Ok((status, retry_after, body)) => {
                result.status = Some(status);
                result.retry_after = retry_after;
                if role == Role::Load {
                    state.latencies.push(latency);
                    let minute = began.duration_since(self.start).as_secs() / 60;
                    state.by_minute.entry(minute).or_default().push(latency);
                    // Steady only when no fault began while it was in flight either.
                    if steady && !state.fault_in_progress {
                        state.steady_latencies.push(latency);
                    }
                }
                if status == 201 {
                    let ids: Vec<String> = if batch {
                        body["jobs"]
                            .as_array()
                            .map(|jobs| {
                                jobs.iter()
                                    .map(|j| j["id"].as_str().unwrap_or_default().to_owned())
                                    .collect()
                            })
                            .unwrap_or_default()
                    } else {
                        vec![body["id"].as_str().unwrap_or_default().to_owned()]
                    };
                    for (i, id) in ids.into_iter().enumerate().take(count) {
                        state.jobs[first as usize + i].answer = Answer::Created(id);
                    }
                    "201".to_owned()
                } else {
                    let code = body["error"]["code"].as_str().unwrap_or("no error body").to_owned();
                    if (status == 429 || status == 503) && !retry_after {
                        state.missing_retry_after += 1;
                    }
                    if status == 429 {
                        *state.refused_by_queue.entry(queue).or_default() += 1;
                    }
                    for i in 0..count {
                        state.jobs[first as usize + i].answer =
                            Answer::Refused { status, code: code.clone() };
                    }
                    result.code = code.clone();
                    format!("{status} {code}")
                }
            }
            Err(why) => {
                for i in 0..count {
                    state.jobs[first as usize + i].answer = Answer::Unanswered(why);
                }
                result.code = why.to_owned();
                format!("no answer ({why})")
            }
        };
        if label.starts_with('5') && !label.starts_with("503") {
            drop(state);
            self.event(format!("ANOMALY: a submit to slot {slot} answered {label}"));
            state = self.state.borrow_mut();
        }
        *state.answers.entry(label).or_default() += 1;
        result
    }

    /// One GET returning (status, body); `None` when no answer came.
    async fn get(&self, slot: usize, path: &str) -> Option<(u16, Value)> {
        let url = format!("{}{path}", self.base(slot));
        let mut response = self.http.get(url).send().await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.body().limit(256 << 20).await.ok()?;
        Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Every job matching `query`, following the cursor; `None` when a page failed.
    async fn list_all(&self, slot: usize, query: &str) -> Option<Vec<Value>> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/jobs?limit=1000&{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, body) = self.get(slot, &path).await?;
            if status != 200 {
                return None;
            }
            jobs.extend(body["jobs"].as_array()?.iter().cloned());
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Some(jobs),
            }
        }
    }

    /// The ids of the jobs instance `name` is running, as the store says (tries for up to 5 s).
    async fn running_on(&self, slot: usize, name: &str) -> Option<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(jobs) = self.list_all(slot, "status=running").await {
                return Some(
                    jobs.iter()
                        .filter(|j| worker_instance(j) == Some(name))
                        .filter_map(|j| j["id"].as_str().map(str::to_owned))
                        .collect(),
                );
            }
            if Instant::now() > deadline {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the process of `slot` (its `generation`-th), not waiting for it.
    fn launch(&self, slot: usize, generation: usize) -> Result<Instance, String> {
        let data = self.opts.out_dir.join(format!("data-{slot}"));
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let log = self.opts.out_dir.join(format!("instance-{slot}.{generation}.log"));
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let name = match self.opts.instances {
            1 => format!("chaos-{slot}-{generation}"),
            _ => format!("chaos-{slot}"),
        };
        let mut command = Command::new(&self.opts.binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JOBYARD_INSTANCE", &name)
            .env("JOBYARD_ADDR", "127.0.0.1:0")
            .env("JOBYARD_DATA_DIR", &data)
            .env("JOBYARD_LEASE_MS", self.opts.lease_ms.to_string())
            .env("JOBYARD_CONCURRENCY", self.opts.concurrency.to_string())
            .env("JOBYARD_MAX_QUEUED", self.opts.max_queued.to_string())
            .env("JOBYARD_QUEUE_TIMEOUT_MS", self.opts.queue_timeout_ms.to_string())
            .env("RUST_LOG", "info");
        match &self.redis_url {
            Some(url) => {
                command
                    .env("REDIS_URL", url)
                    .env("JOBYARD_QUEUE_BACKEND", "redis")
                    .env("JOBYARD_REDIS_PREFIX", &self.prefix);
            }
            None => {
                command.env("JOBYARD_QUEUE_BACKEND", "memory");
            }
        }
        // Coverage runs collect the child's profile too.
        if let Ok(profile) = std::env::var("LLVM_PROFILE_FILE") {
            command.env("LLVM_PROFILE_FILE", profile);
        }
        let stderr = file.try_clone().map_err(|e| e.to_string())?;
        command
            .current_dir(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.opts.binary.display()))?;
        let pid = child.id();
        let port = Arc::new(Mutex::new(None));
        // `jobyard listening on http://127.0.0.1:PORT` comes on stdout; copied to the log.
        let stdout = child.stdout.take().expect("stdout piped");
        let (found, mut out) = (port.clone(), file);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.trim().strip_prefix("jobyard listening on http://") {
                    if let Some(p) = rest.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
                        *found.lock().unwrap() = Some(p);
                    }
                }
                let _ = writeln!(out, "{line}");
            }
        });
        self.pids.borrow_mut()[slot] = pid;
        self.event(format!("slot {slot}: started jobyard pid {pid} (log {})", log.display()));
        Ok(Instance { slot, generation, child, pid, name, port, base: String::new(), log })
    }

    /// Waits until `instance` said where it listens and `/ready` answers 200.
    async fn until_ready(&self, instance: &mut Instance) -> Result<(), String> {
        let deadline = Instant::now() + self.opts.recovery_timeout;
        let port = loop {
            if let Some(port) = *instance.port.lock().unwrap() {
                break port;
            }
            if let Some(status) = instance.exited() {
                return Err(format!(
                    "jobyard pid {} exited ({status}) before listening; see {}",
                    instance.pid,
                    instance.log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("jobyard pid {} never said where it listens", instance.pid));
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        };
        instance.base = format!("http://127.0.0.1:{port}");
        self.bases.borrow_mut()[instance.slot] = instance.base.clone();
        loop {
            if let Some((200, _)) = self.get(instance.slot, "/ready").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("jobyard pid {} never became ready", instance.pid));
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Submits a fresh job to `slot` (into `queue`) until one is acknowledged, then waits for it
    /// to run. Returns when the acknowledgement came and when the job ran.
    async fn probe(&self, slot: usize, queue: &'static str, deadline: Instant) -> ProbeTimes {
        loop {
            if Instant::now() > deadline {
                return (None, None);
            }
            let submitted = self.submit(slot, Role::Probe, queue, 1, false, None).await;
            if submitted.status == Some(201) {
                let acked = Instant::now();
                loop {
                    let times = self.hits.times(submitted.first);
                    if let Some(first) = times.first() {
                        return (Some(acked), Some(self.hits.start + *first));
                    }
                    if Instant::now() > deadline {
                        return (Some(acked), None);
                    }
                    actix_rt::time::sleep(Duration::from_millis(5)).await;
                }
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Probes every slot of `slots` at once; fills in the record's recovery figures.
    async fn recover(
        &self,
        record: &mut FaultRecord,
        t0: Instant,
        slots: &[usize],
        queue: &'static str,
    ) {
        let deadline = Instant::now() + self.opts.recovery_timeout;
        let per = join_all(slots.iter().map(|&slot| self.probe(slot, queue, deadline))).await;
        let latest = |pick: fn(&ProbeTimes) -> Option<Instant>| {
            per.iter()
                .map(pick)
                .collect::<Option<Vec<Instant>>>()
                .and_then(|v| v.into_iter().max())
                .map(|t| t.duration_since(t0).as_secs_f64())
        };
        record.acked_again = latest(|p| p.0);
        record.probe_ran = latest(|p| p.1);
        self.event(format!(
            "fault #{} {}: acknowledged again after {}, a fresh job ran after {}",
            record.number,
            record.fault.name(),
            record.acked_again.map_or("never".into(), |s| format!("{s:.2} s")),
            record.probe_ran.map_or("never".into(), |s| format!("{s:.2} s")),
        ));
    }
}

/// When a probe was acknowledged, and when it ran.
type ProbeTimes = (Option<Instant>, Option<Instant>);

/// Runs the load (until `stop_load`), by rate or by submitters.
async fn run_load(ctx: Rc<Ctx>) {
    let unit = || {
        if fastrand::f64() < ctx.opts.batch_share {
            (fastrand::usize(2..=5), true)
        } else {
            (1, false)
        }
    };
    let next_slot = |ctx: &Ctx| {
        let mut state = ctx.state.borrow_mut();
        state.rr += 1;
        state.rr % ctx.opts.instances
    };
    match ctx.opts.load {
        Load::Rate(rate) => {
            let mut next = Instant::now();
            while !ctx.stop_load.get() {
                let (count, batch) = unit();
                next += Duration::from_secs_f64(count as f64 / rate);
                let now = Instant::now();
                if next > now {
                    actix_rt::time::sleep(next - now).await;
                } else if now - next > Duration::from_secs(1) {
                    // Far behind (the thread was busy): do not catch up in a burst.
                    next = now;
                }
                {
                    let mut state = ctx.state.borrow_mut();
                    if state.in_flight >= MAX_IN_FLIGHT {
                        state.shed_units += 1;
                        state.shed_jobs += count as u64;
                        continue;
                    }
                    state.in_flight += 1;
                }
                let slot = next_slot(&ctx);
                let task = ctx.clone();
                actix_rt::spawn(async move {
                    task.submit(slot, Role::Load, LOAD_QUEUE, count, batch, None).await;
                    task.state.borrow_mut().in_flight -= 1;
                });
            }
        }
        Load::Submitters(n) => {
            let submitters = (0..n).map(|_| {
                let ctx = ctx.clone();
                async move {
                    while !ctx.stop_load.get() {
                        let (count, batch) = unit();
                        let slot = next_slot(&ctx);
                        ctx.state.borrow_mut().in_flight += 1;
                        let s = ctx.submit(slot, Role::Load, LOAD_QUEUE, count, batch, None).await;
                        ctx.state.borrow_mut().in_flight -= 1;
                        if s.status != Some(201) {
                            actix_rt::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            join_all(submitters).await;
        }
    }
    while ctx.state.borrow().in_flight > 0 {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything the run started: dropped (and so killed) when the run ends, however it ends.
struct Processes {
    instances: Vec<Instance>,
    redis: Option<TestRedis>,
    hit_server: Option<actix_web::dev::ServerHandle>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Instances and Redis kill themselves on drop; say where the evidence is.
        self.instances.clear();
        self.redis = None;
        if let Some(server) = self.hit_server.take() {
            drop(server.stop(false));
        }
    }
}

/// Runs the whole thing: start, load and faults, drain, checks. `Err` when the harness itself
/// could not do its job (a process that would not start, the counting server not binding).
pub async fn run(mut opts: Options) -> Result<Report, String> {
    opts.validate()?;
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| format!("{}: {e}", opts.out_dir.display()))?;
    // The processes run in directories of their own: absolute paths only.
    let absolute =
        |path: &Path| std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()));
    opts.binary = absolute(&opts.binary)?;
    opts.out_dir = absolute(&opts.out_dir)?;
    let start = Instant::now();
    let events = File::create(opts.out_dir.join("events.log")).map_err(|e| e.to_string())?;
    let mut procs = Processes { instances: Vec::new(), redis: None, hit_server: None };
    let (hit_base, hits, hit_server) = counting_server(start, opts.job_ms).await?;
    procs.hit_server = Some(hit_server);
    if opts.backend == Backend::Redis {
        // AOF with `appendfsync always`: a write is on disk before Redis answers it, so what
        // an instance was told (a job stored, an attempt recorded) survives a SIGKILL.
        let redis = actix_rt::task::spawn_blocking(TestRedis::start_durable)
            .await
            .map_err(|e| format!("redis-server did not start: {e}"))?;
        watch_redis_latency(&redis);
        procs.redis = Some(redis);
    }
    let redis_url = procs.redis.as_ref().map(TestRedis::url);
    let prefix = format!("chaos-{}", fastrand::u32(..));
    let summary = format!(
        "{} backend, {} instance(s), {:?} of load ({}), batches {:.0} % of submits, faults {} \
         every {:?}, job {} ms, lease {} ms, concurrency {}, max queued {}, queue timeout {} ms",
        match opts.backend {
            Backend::Memory => "memory",
            Backend::Redis => "redis (AOF, appendfsync always)",
        },
        opts.instances,
        opts.duration,
        match opts.load {
            Load::Rate(r) => format!("{r} jobs/s"),
            Load::Submitters(n) => format!("{n} submitters"),
        },
        opts.batch_share * 100.0,
        if opts.faults.is_empty() {
            "none".to_owned()
        } else {
            opts.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        },
        opts.fault_every,
        opts.job_ms,
        opts.lease_ms,
        opts.concurrency,
        opts.max_queued,
        opts.queue_timeout_ms,
    );
    let ctx = Rc::new(Ctx {
        http: awc::Client::builder().timeout(CLIENT_TIMEOUT).finish(),
        hits,
        hit_base,
        bases: RefCell::new(vec![String::new(); opts.instances]),
        pids: RefCell::new(vec![0; opts.instances]),
        redis_pid: Cell::new(procs.redis.as_ref().and_then(TestRedis::pid)),
        state: RefCell::new(State::default()),
        stop_load: Cell::new(false),
        events: RefCell::new(events),
        prefix,
        redis_url,
        start,
        opts,
    });
    ctx.event(format!("run: {summary}"));
    if let Some(redis) = &procs.redis {
        ctx.event(format!("redis-server pid {:?} at {}", redis.pid(), redis.url()));
    }
    for slot in 0..ctx.opts.instances {
        let instance = ctx.launch(slot, 0)?;
        procs.instances.push(instance);
    }
    for instance in &mut procs.instances {
        ctx.until_ready(instance).await?;
    }
    let mut rss: Vec<(usize, u32, u64)> = Vec::new();
    let mut redis_rss: Option<u64> = None;

    // Load, progress and faults.
    let load_started = Instant::now();
    let load = actix_rt::spawn(run_load(ctx.clone()));
    // Every 10 s: the resident memory of every process (a leak shows as a trend), and a
    // progress line.
    let sampler = {
        let ctx = ctx.clone();
        actix_rt::spawn(async move {
            loop {
                actix_rt::time::sleep(Duration::from_secs(10)).await;
                let at = ctx.start.elapsed().as_secs_f64();
                let mut processes: Vec<(String, u32)> = ctx
                    .pids
                    .borrow()
                    .iter()
                    .enumerate()
                    .map(|(slot, pid)| (format!("jobyard #{slot} pid {pid}"), *pid))
                    .collect();
                if let Some(pid) = ctx.redis_pid.get() {
                    processes.push((format!("redis-server pid {pid}"), pid));
                }
                let mut line = Vec::new();
                for (label, pid) in processes {
                    if let Some(kib) = vm_rss_kib(pid).filter(|kib| *kib > 0) {
                        let peak = vm_hwm_kib(pid).unwrap_or(0);
                        line.push(format!(
                            "{label} {:.1} MiB (peak {:.1})",
                            kib as f64 / 1024.0,
                            peak as f64 / 1024.0
                        ));
                        ctx.state
                            .borrow_mut()
                            .rss_samples
                            .entry(label)
                            .or_default()
                            .push((at, kib));
                    }
                }
                let _ = writeln!(ctx.events.borrow_mut(), "[{at:8.3}] rss: {}", line.join(", "));
                if ctx.opts.progress {
                    let state = ctx.state.borrow();
                    let answers: Vec<String> =
                        state.answers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    println!(
                        "[{at:8.3}] progress: {} jobs submitted; answers {}",
                        state.jobs.len(),
                        answers.join(", ")
                    );
                }
            }
        })
    };
    let mut faults: Vec<FaultRecord> = Vec::new();
    let end = load_started + ctx.opts.duration;
    let mut next_fault = load_started + ctx.opts.fault_every;
    loop {
        let pending_rotation = ctx.opts.complete_rotation && faults.len() < ctx.opts.faults.len();
        if ctx.opts.faults.is_empty() || (next_fault >= end && !pending_rotation) {
            let now = Instant::now();
            if end > now {
                actix_rt::time::sleep(end - now).await;
            }
            break;
        }
        let now = Instant::now();
        if next_fault > now {
            actix_rt::time::sleep(next_fault - now).await;
        }
        let fault = ctx.opts.faults[faults.len() % ctx.opts.faults.len()];
        let number = faults.len() + 1;
        let kills = faults.iter().filter(|f| f.fault == Fault::KillInstance).count();
        ctx.state.borrow_mut().fault_in_progress = true;
        let record =
            inject(&ctx, &mut procs, fault, number, kills, &mut rss, &mut redis_rss).await?;
        ctx.state.borrow_mut().fault_in_progress = false;
        faults.push(record);
        next_fault = (next_fault + ctx.opts.fault_every).max(Instant::now());
    }
    ctx.stop_load.set(true);
    let _ = load.await;
    let load_seconds = load_started.elapsed().as_secs_f64();
    ctx.event("load stopped; draining");

    // Drain: every job of both queues finished (as the store counts them).
    let drain_started = Instant::now();
    let drain_deadline = drain_started + ctx.opts.drain_timeout;
    let mut drained_in = None;
    while Instant::now() < drain_deadline {
        if let Some((200, stats)) = ctx.get(0, "/v1/stats").await {
            let unfinished: u64 = [LOAD_QUEUE, FILL_QUEUE]
                .iter()
                .flat_map(|q| {
                    ["waiting", "scheduled", "queued", "running"]
                        .iter()
                        .map(|s| stats["queues"][*q][*s].as_u64().unwrap_or(0))
                        .collect::<Vec<_>>()
                })
                .sum();
            if unfinished == 0 {
                drained_in = Some(drain_started.elapsed().as_secs_f64());
                break;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.event(match drained_in {
        Some(s) => format!("drained in {s:.1} s"),
        None => "work did not drain before the deadline".to_owned(),
    });
    // No execution still on its way to the counting server.
    let quiet_deadline = Instant::now() + Duration::from_secs(30);
    while ctx.hits.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < quiet_deadline {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }

    // Peaks before the checks: their listing of every job is work of its own for the instance
    // that answers it.
    for instance in &procs.instances {
        if let Some(kib) = vm_hwm_kib(instance.pid) {
            rss.push((instance.slot, instance.pid, kib));
        }
    }
    rss.sort();
    if let Some(redis) = &procs.redis {
        if let Some(pid) = redis.pid() {
            redis_rss = vm_hwm_kib(pid).or(redis_rss);
        }
        let seen = redis_latency_latest(redis);
        ctx.state.borrow_mut().redis_latency.extend(seen);
        let info = redis.command(&[b"INFO", b"all"]);
        let _ = std::fs::write(ctx.opts.out_dir.join("redis-info.txt"), info);
    }
    let mut report = check(&ctx, &faults).await?;
    report.summary = summary;
    report.load_seconds = load_seconds;
    report.drained_in = drained_in;
    report.faults = faults;
    report.rss = rss;
    report.redis_rss_kib = redis_rss;
    report.rss_trend = ctx
        .state
        .borrow()
        .rss_samples
        .iter()
        .filter_map(|(label, samples)| Some((label.clone(), *samples.first()?, *samples.last()?)))
        .collect();
    report.out_dir = ctx.opts.out_dir.clone();
    let table = report.table();
    let _ = std::fs::write(ctx.opts.out_dir.join("report.md"), &table);
    if let Some(redis) = &procs.redis {
        let _ = std::fs::copy(redis.dir().join("redis.log"), ctx.opts.out_dir.join("redis.log"));
    }
    ctx.event("done");
    sampler.abort();
    drop(procs);
    Ok(report)
}

/// Injects one fault and measures the recovery.
async fn inject(
    ctx: &Ctx,
    procs: &mut Processes,
    fault: Fault,
    number: usize,
    kills_before: usize,
    rss: &mut Vec<(usize, u32, u64)>,
    redis_rss: &mut Option<u64>,
) -> Result<FaultRecord, String> {
    let all: Vec<usize> = (0..ctx.opts.instances).collect();
    let t0 = Instant::now();
    let at = ctx.secs(t0);
    match fault {
        Fault::KillInstance => {
            let slot = kills_before % ctx.opts.instances;
            let victim = &mut procs.instances[slot];
            let (pid, name) = (victim.pid, victim.name.clone());
            let mut record = FaultRecord::new(number, fault, format!("#{slot} pid {pid}"), at);
            record.victim_pid = Some(pid);
            if let Some(kib) = vm_hwm_kib(pid) {
                rss.push((slot, pid, kib));
            }
            let t0 = Instant::now();
            record.at = ctx.secs(t0);
            victim.kill();
            ctx.event(format!("fault #{number}: SIGKILL jobyard #{slot} pid {pid}"));
            // What it was running when it died is still in the store (as running, under its
            // worker name) until its leases expire, or until it restarts under its name: read it
            // from a survivor at once, or (a sole instance, restarted under a new name) from the
            // restarted process.
            let mut running = None;
            if ctx.opts.instances > 1 {
                running = ctx.running_on((slot + 1) % ctx.opts.instances, &name).await;
            }
            let generation = procs.instances[slot].generation + 1;
            let mut fresh = ctx.launch(slot, generation)?;
            ctx.until_ready(&mut fresh).await?;
            procs.instances[slot] = fresh;
            record.lasted = t0.elapsed().as_secs_f64();
            if running.is_none() {
                running = ctx.running_on(slot, &name).await;
            }
            let lease = Duration::from_millis(ctx.opts.lease_ms);
            if t0.elapsed() > lease / 2 {
                record.notes.push("running set read late: may miss jobs".into());
            }
            match &running {
                Some(ids) => {
                    record.notes.push(format!("{} jobs running on the victim", ids.len()));
                    ctx.event(format!("fault #{number}: pid {pid} was running {ids:?}"));
                }
                None => record.notes.push("running set unknown (listing failed)".into()),
            }
            record.running_at_kill = running;
            ctx.recover(&mut record, t0, &[slot], LOAD_QUEUE).await;
            Ok(record)
        }
        Fault::KillRedis => {
            let mut record = FaultRecord::new(number, fault, "redis-server".into(), at);
            let mut redis = procs.redis.take().ok_or("no redis-server to kill")?;
            let seen = redis_latency_latest(&redis);
            ctx.state.borrow_mut().redis_latency.extend(seen);
            if let Some(kib) = redis.pid().and_then(vm_hwm_kib) {
                *redis_rss = Some(redis_rss.unwrap_or(0).max(kib));
            }
            let t0 = Instant::now();
            redis.stop();
            ctx.event(format!("fault #{number}: SIGKILL redis-server"));
            actix_rt::time::sleep(ctx.opts.redis_down).await;
            // Restarting waits for the append-only file to load: off the harness's thread.
            let redis = actix_rt::task::spawn_blocking(move || {
                redis.restart();
                redis
            })
            .await
            .map_err(|e| format!("redis-server did not restart: {e}"))?;
            ctx.event(format!("fault #{number}: redis-server restarted, pid {:?}", redis.pid()));
            ctx.redis_pid.set(redis.pid());
            watch_redis_latency(&redis);
            procs.redis = Some(redis);
            record.lasted = t0.elapsed().as_secs_f64();
            record.notes.push(format!("down {:?}, then restarted on its AOF", ctx.opts.redis_down));
            ctx.recover(&mut record, t0, &all, LOAD_QUEUE).await;
            Ok(record)
        }
        Fault::FreezeRedis => {
            let mut record = FaultRecord::new(number, fault, "redis-server".into(), at);
            let redis = procs.redis.as_ref().ok_or("no redis-server to freeze")?;
            let t0 = Instant::now();
            redis.pause();
            ctx.event(format!("fault #{number}: SIGSTOP redis-server"));
            actix_rt::time::sleep(ctx.opts.freeze).await;
            redis.resume();
            ctx.event(format!("fault #{number}: SIGCONT redis-server"));
            record.lasted = t0.elapsed().as_secs_f64();
            record.notes.push(format!("stopped {:?}", ctx.opts.freeze));
            ctx.recover(&mut record, t0, &all, LOAD_QUEUE).await;
            Ok(record)
        }
        Fault::FillQueue => {
            let slot = number % ctx.opts.instances;
            let mut record = FaultRecord::new(number, fault, format!("queue {FILL_QUEUE}"), at);
            let chunk = (ctx.opts.max_queued / 5).clamp(1, 500);
            let delay = Some(ctx.opts.fill_delay);
            ctx.event(format!("fault #{number}: filling {FILL_QUEUE} in batches of {chunk}"));
            let mut refused: Option<Submitted> = None;
            let mut accepted = 0usize;
            let limit = Instant::now() + ctx.opts.recovery_timeout;
            // Batches until one is refused, then single jobs until one is refused.
            for batch in [true, false] {
                while Instant::now() < limit {
                    let count = if batch { chunk } else { 1 };
                    let s = ctx.submit(slot, Role::Fill, FILL_QUEUE, count, batch, delay).await;
                    match s.status {
                        Some(201) => accepted += count,
                        Some(429) => {
                            refused = Some(s);
                            break;
                        }
                        _ => actix_rt::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            record.lasted = t0.elapsed().as_secs_f64();
            match &refused {
                Some(s) => {
                    record.notes.push(format!(
                        "{accepted} delayed jobs accepted, then 429 {}{}",
                        s.code,
                        if s.retry_after { " with Retry-After" } else { " WITHOUT Retry-After" }
                    ));
                    if s.code != "queue_full" {
                        record.notes.push(format!("unexpected 429 code {}", s.code));
                    }
                }
                None => record.notes.push(format!("never refused ({accepted} accepted)")),
            }
            if let Some((200, stats)) = ctx.get(slot, "/v1/stats").await {
                let full = stats["full_queues"]
                    .as_array()
                    .is_some_and(|q| q.iter().any(|q| q == FILL_QUEUE));
                record.notes.push(format!(
                    "stats full_queues {} it",
                    if full { "named" } else { "did NOT name" }
                ));
            }
            ctx.event(format!("fault #{number}: {}", record.notes.join("; ")));
            // The queue drains itself as its delayed jobs come due and run.
            ctx.recover(&mut record, t0, &[slot], FILL_QUEUE).await;
            Ok(record)
        }
    }
}

/// Reads every job back and holds it against what was acknowledged and what ran.
async fn check(ctx: &Ctx, faults: &[FaultRecord]) -> Result<Report, String> {
    let mut report = Report::default();
    // Every job of both queues, by its number.
    let mut by_n: HashMap<u64, Vec<Value>> = HashMap::new();
    for queue in [LOAD_QUEUE, FILL_QUEUE] {
        let mut listed = None;
        for slot in 0..ctx.opts.instances {
            listed = ctx.list_all(slot, &format!("queue={queue}")).await;
            if listed.is_some() {
                break;
            }
        }
        let listed = listed.ok_or_else(|| format!("could not list the jobs of queue {queue}"))?;
        for job in listed {
            match job_number(&job) {
                Some(n) => by_n.entry(n).or_default().push(job),
                None => ctx.event(format!("ANOMALY: a job that is none of ours: {job}")),
            }
        }
    }
    // Kill explanations: job id -> the kills (number, when) that found it running on their
    // victim.
    let mut killed_running: HashMap<&str, Vec<(usize, f64)>> = HashMap::new();
    for f in faults {
        for id in f.running_at_kill.iter().flatten() {
            killed_running.entry(id.as_str()).or_default().push((f.number, f.at));
        }
    }
    let entries: Vec<(Role, Answer, Duration)> =
        ctx.state.borrow().jobs.iter().map(|j| (j.role, j.answer.clone(), j.sent)).collect();
    // The fault last injected before a moment.
    let fault_before = |sent: Duration| {
        faults
            .iter()
            .rev()
            .find(|f| f.at <= sent.as_secs_f64())
            .map_or("before any fault".to_owned(), |f| {
                format!("after fault #{} {}", f.number, f.fault.name())
            })
    };
    let role_name = |r: Role| match r {
        Role::Load => "load",
        Role::Probe => "probes",
        Role::Fill => "fill",
    };
    let mut problems_json: Vec<Value> = Vec::new();
    for (n, (role, answer, sent)) in entries.into_iter().enumerate() {
        let n = n as u64;
        *report.submitted.entry(role_name(role).to_owned()).or_default() += 1;
        let hits = ctx.hits.times(n);
        let records = by_n.remove(&n).unwrap_or_default();
        let records_json = Value::Array(records.clone());
        let mut problem = |report: &mut Report, category: &'static str, detail: String| {
            problems_json.push(json!({
                "n": n,
                "category": category,
                "detail": detail,
                "answer": format!("{answer:?}"),
                "executions_at_s": hits.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                "records": records_json.clone(),
            }));
            let p = Problem { n, category, detail };
            match category {
                "lost" => report.lost.push(p),
                "failed" => report.failed.push(p),
                "phantom" => report.phantom.push(p),
                "duplicate (explained)" => report.duplicates_explained.push(p),
                "duplicate (unexplained)" => report.duplicates_unexplained.push(p),
                "unacknowledged, unfinished" => report.unacknowledged_unfinished.push(p),
                _ => report.wrongly_stored.push(p),
            }
        };
        if records.len() > 1 {
            problem(&mut report, "stored twice", format!("{} jobs for one spec", records.len()));
            continue;
        }
        let mut record = records.into_iter().next();
        match &answer {
            Answer::Created(id) => {
                *report.acknowledged.entry(role_name(role).to_owned()).or_default() += 1;
                if record.as_ref().is_none_or(|r| r["id"] != id.as_str()) {
                    // Not in the listing: ask for it by id.
                    record = match ctx.get(0, &format!("/v1/jobs/{id}")).await {
                        Some((200, job)) => Some(job),
                        _ => None,
                    };
                }
            }
            Answer::Refused { status: 429, .. } => {
                if record.is_some() {
                    problem(&mut report, "stored though refused", "answered 429".into());
                }
                if !hits.is_empty() {
                    problem(&mut report, "run though refused", format!("{} runs", hits.len()));
                }
                continue;
            }
            Answer::Pending => {
                ctx.event(format!("ANOMALY: job {n} never answered"));
            }
            Answer::Refused { .. } | Answer::Unanswered(_) => {
                if record.is_none() {
                    if !hits.is_empty() {
                        problem(&mut report, "run but not stored", format!("{} runs", hits.len()));
                    }
                    continue;
                }
            }
        }
        let acknowledged = matches!(answer, Answer::Created(_));
        let Some(job) = record else {
            problem(&mut report, "lost", "acknowledged, but the store does not have it".into());
            continue;
        };
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        let status = job["status"].as_str().unwrap_or_default();
        let attempts = job["attempts"].as_u64().unwrap_or(0);
        match status {
            "succeeded" => {}
            "failed" | "cancelled" if acknowledged => {
                problem(&mut report, "failed", format!("{id} ended {status}: {}", job["error"]));
                continue;
            }
            _ if acknowledged => {
                problem(&mut report, "lost", format!("{id} still {status} after the drain"));
                continue;
            }
            _ => {
                problem(&mut report, "unacknowledged, unfinished", format!("{id} is {status}"));
                continue;
            }
        }
        if !acknowledged {
            report.applied_unacknowledged += 1;
            let answered = match &answer {
                Answer::Refused { status, code } => format!("{status} {code}"),
                Answer::Unanswered(why) => format!("no answer ({why})"),
                _ => "never answered".to_owned(),
            };
            let key = format!("{answered}, {}", fault_before(sent));
            *report.applied_unacknowledged_by.entry(key).or_default() += 1;
        }
        match hits.len() {
            0 => problem(&mut report, "phantom", format!("{id} succeeded, never executed")),
            1 => {
                if acknowledged {
                    report.succeeded_once += 1;
                }
            }
            runs => {
                let kills = killed_running.get(id.as_str());
                let detail = format!(
                    "{id}: {runs} executions at {:?} s, {attempts} attempts, last worker {}, \
                     running at kill(s) {kills:?}",
                    hits.iter()
                        .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
                        .collect::<Vec<_>>(),
                    job["worker"]
                );
                // Explained: the job was running on a killed instance (so it ran again, taken
                // back by the instance restarted under its name, or after its lease), it was
                // executed before that kill, and each execution is an attempt the store
                // counted.
                let first = hits[0].as_secs_f64();
                let before_a_kill =
                    kills.is_some_and(|k| k.iter().any(|(_, killed_at)| first <= *killed_at));
                if before_a_kill && attempts as usize >= runs {
                    problem(&mut report, "duplicate (explained)", detail);
                } else {
                    problem(&mut report, "duplicate (unexplained)", detail);
                }
            }
        }
    }
    // Stored jobs that none of our submits made.
    for (n, jobs) in by_n {
        problems_json.push(json!({"n": n, "category": "unknown job", "records": jobs}));
        report.wrongly_stored.push(Problem {
            n,
            category: "unknown job",
            detail: "a job with a number the harness never submitted".into(),
        });
    }
    let _ = std::fs::write(
        ctx.opts.out_dir.join("problems.json"),
        serde_json::to_string_pretty(&problems_json).unwrap_or_default(),
    );
    let state = ctx.state.borrow();
    report.answers = state.answers.clone();
    report.refused_by_queue =
        state.refused_by_queue.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    report.missing_retry_after = state.missing_retry_after;
    report.other_5xx = state
        .answers
        .iter()
        .filter(|(k, _)| k.starts_with('5') && !k.starts_with("503"))
        .map(|(_, v)| v)
        .sum();
    report.hung = state.answers.get("no answer (timeout)").copied().unwrap_or(0);
    let summary = |samples: &[Duration]| {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let figures = (!sorted.is_empty()).then(|| {
            (
                ms(percentile(&sorted, 0.5)),
                ms(percentile(&sorted, 0.99)),
                ms(*sorted.last().unwrap()),
            )
        });
        (figures, sorted.len())
    };
    (report.latency_ms, report.latency_samples) = summary(&state.latencies);
    report.latency_by_minute = state
        .by_minute
        .iter()
        .filter_map(|(minute, samples)| {
            let ((p50, p99, max), n) = match summary(samples) {
                (Some(figures), n) => (figures, n),
                (None, _) => return None,
            };
            Some((*minute, n, p50, p99, max))
        })
        .collect();
    report.redis_latency = state.redis_latency.clone();
    (report.steady_latency_ms, report.steady_latency_samples) = summary(&state.steady_latencies);
    report.shed_units = state.shed_units;
    report.shed_jobs = state.shed_jobs;
    Ok(report)
}

/// Parses `600s`, `10m`, `500ms`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("'{text}' is not a duration"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{text}': unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A directory for a run's logs: `target/chaos/<unix seconds>`.
pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Path::new("target").join("chaos").join(secs.to_string())
}
