//! Several real `jobyard serve` processes sharing one private Redis under one prefix: they share
//! their jobs, and each is listed in the instance registry under a name of its own. Each test
//! starts its own processes and kills them on drop (their logs are printed when the test
//! fails). Unless a test says otherwise, each process gets a name of its own
//! (`JOBYARD_INSTANCE=inst-<n>`), so a job's `worker` tells which process ran it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::{is_terminal, within, Resp, DEADLINE};
use crate::redis_support::TestRedis;

/// Polls `check` until it yields a value; fails the test, saying `what`, after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let found = within(limit, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// A unique prefix, so tests sharing nothing never see each other's keys.
fn prefix(test: &str) -> String {
    format!("inst-{test}-{}", fastrand::u32(..))
}

/// The instance named by a job's `worker` (`<instance>/w<N>`).
fn worker_instance(job: &Value) -> Option<&str> {
    Some(job["worker"].as_str()?.split_once('/')?.0)
}

/// Names the instances of these tests, unique in the test process.
static NEXT_NAME: AtomicU32 = AtomicU32::new(0);

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_owned()
}

/// One `jobyard serve` process. Killed (SIGKILL) and reaped on drop.
struct Instance {
    child: Child,
    pid: u32,
    /// Its `JOBYARD_INSTANCE`; empty when it was started with the default name.
    name: String,
    base: String,
    http: awc::Client,
    /// stdout and stderr, as they came.
    log: Arc<Mutex<String>>,
    port: Arc<Mutex<Option<u16>>>,
    _dir: TempDir,
}

impl Instance {
    /// Launches `jobyard serve` on a free loopback port, sharing `redis` under `prefix`, with a
    /// clean environment plus `extra`, in a scratch directory (no `.env.local` is read). It is
    /// named `inst-<n>` unless `extra` names it (`JOBYARD_INSTANCE`; empty: the default name).
    fn launch(redis: &TestRedis, prefix: &str, extra: &[(&str, &str)]) -> Instance {
        let dir = tempfile::tempdir().expect("temporary directory");
        let name = match extra.iter().find(|(var, _)| *var == "JOBYARD_INSTANCE") {
            Some((_, name)) => name.to_string(),
            None => format!("inst-{}", NEXT_NAME.fetch_add(1, Ordering::SeqCst)),
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobyard"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REDIS_URL", redis.url())
            .env("JOBYARD_QUEUE_BACKEND", "redis")
            .env("JOBYARD_REDIS_PREFIX", prefix)
            .env("JOBYARD_ADDR", "127.0.0.1:0")
            .env("JOBYARD_DATA_DIR", dir.path().join("data"))
            .env("RUST_LOG", "info")
            // Generous: these tests run side by side on small machines, where a starved Redis
            // may take longer than the default 500 ms; a 503 then would be right, but is not
            // what the tests are about. (The outage test still sees 503s: a dead Redis refuses
            // connections at once.)
            .env("JOBYARD_QUEUE_TIMEOUT_MS", "5000")
            .env("JOBYARD_INSTANCE", &name);
        // Coverage runs collect the child's profile too.
        if let Ok(profile) = std::env::var("LLVM_PROFILE_FILE") {
            command.env("LLVM_PROFILE_FILE", profile);
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("jobyard serve starts");
        let pid = child.id();
        let log = Arc::new(Mutex::new(String::new()));
        let port = Arc::new(Mutex::new(None));
        // The server prints `jobyard listening on http://127.0.0.1:PORT` on stdout; its log
        // lines go to stderr.
        let stdout = child.stdout.take().expect("stdout piped");
        let (out_log, out_port) = (log.clone(), port.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.trim().strip_prefix("jobyard listening on http://") {
                    if let Some(p) = rest.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
                        *out_port.lock().unwrap() = Some(p);
                    }
                }
                let mut log = out_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stderr = child.stderr.take().expect("stderr piped");
        let err_log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err_log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Instance {
            child,
            pid,
            name,
            base: String::new(),
            http: awc::Client::builder().timeout(Duration::from_secs(10)).finish(),
            log,
            port,
            _dir: dir,
        }
    }

    /// Waits for the listening line, then for `/ready` to answer 200.
    async fn until_ready(&mut self) {
        let port = within(DEADLINE, async {
            loop {
                if let Some(port) = *self.port.lock().unwrap() {
                    return Ok(port);
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(status);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let port = match port {
            Some(Ok(port)) => port,
            Some(Err(status)) => panic!("instance {} exited ({status}) before listening", self.pid),
            None => panic!("instance {} never said where it listens", self.pid),
        };
        self.base = format!("http://127.0.0.1:{port}");
        let what = format!("instance {} ready", self.pid);
        eventually(DEADLINE, &what, || async {
            let ready = self.try_request(Method::GET, "/ready", None).await;
            ready.ok().filter(|r| r.status == 200).map(|_| ())
        })
        .await;
    }

    /// Starts `n` instances (launched together) and waits until each is ready.
    async fn start(
        redis: &TestRedis,
        prefix: &str,
        n: usize,
        extra: &[(&str, &str)],
    ) -> Vec<Instance> {
        let mut instances: Vec<Instance> =
            (0..n).map(|_| Instance::launch(redis, prefix, extra)).collect();
        for instance in &mut instances {
            instance.until_ready().await;
        }
        instances
    }

    /// One request; `Err` when no answer came (connection refused, or no answer within the
    /// client's 10 s timeout: a hang).
    async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let request = self.http.request(method.clone(), format!("{}{path}", self.base));
        let sent = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|err| format!("{method} {path}: {err}"))?;
        let bytes = response
            .body()
            .limit(64 << 20)
            .await
            .map_err(|err| format!("{method} {path}: body: {err}"))?;
        Ok(Resp {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        match self.try_request(method, path, body).await {
            Ok(resp) => resp,
            Err(err) => panic!("instance {} did not answer: {err}", self.pid),
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(&body)).await
    }

    async fn job(&self, id: &str) -> Value {
        let resp = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(resp.status, 200, "GET job {id}: {}", resp.body);
        resp.body
    }

    /// Submits a batch, expecting 201; returns the jobs in request order.
    async fn submit_batch(&self, jobs: Vec<Value>) -> Vec<Value> {
        let resp = self.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
        assert_eq!(resp.status, 201, "batch on {} answered {}", self.pid, resp.body);
        resp.body["jobs"].as_array().expect("jobs array").clone()
    }

    /// Submits a batch of jobs that all carry idempotency keys, sending it again while it is
    /// answered 503 (which the API allows under load; the keys make a repeat harmless).
    async fn submit_batch_retrying(&self, jobs: Vec<Value>) -> Vec<Value> {
        let body = json!({ "jobs": jobs });
        let what = format!("a batch accepted by {}", self.pid);
        eventually(DEADLINE, &what, || async {
            let resp = self.post("/v1/jobs/batch", body.clone()).await;
            match resp.status {
                201 => Some(resp.body["jobs"].as_array().expect("jobs array").clone()),
                503 => {
                    assert_eq!(resp.code(), "backend_unavailable", "{}", resp.body);
                    None
                }
                other => panic!("batch on {} answered {other}: {}", self.pid, resp.body),
            }
        })
        .await
    }

    /// The counts of one queue in `/v1/stats`.
    async fn counts(&self, queue: &str) -> Value {
        let resp = self.get("/v1/stats").await;
        assert_eq!(resp.status, 200, "stats: {}", resp.body);
        resp.body["queues"][queue].clone()
    }

    /// Every job matching `query` (e.g. `status=succeeded`), following the cursor.
    async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/jobs?limit=1000&{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let resp = self.get(&path).await;
            assert_eq!(resp.status, 200, "list {path}: {}", resp.body);
            jobs.extend(resp.body["jobs"].as_array().expect("jobs array").iter().cloned());
            match resp.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return jobs,
            }
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The live instances it lists (`GET /v1/instances`), by name.
    async fn instances(&self) -> Vec<Value> {
        let resp = self.get("/v1/instances").await;
        assert_eq!(resp.status, 200, "instances: {}", resp.body);
        resp.body["instances"].as_array().expect("instances array").clone()
    }

    async fn instance_names(&self) -> Vec<String> {
        let listed = self.instances().await;
        listed.iter().filter_map(|i| i["name"].as_str().map(str::to_owned)).collect()
    }

    /// What it printed so far (stdout and stderr).
    fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the process to exit on its own; its exit status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let what = format!("instance {} exits", self.pid);
        eventually(DEADLINE, &what, || {
            let exited = self.child.try_wait().expect("try_wait");
            async move { exited }
        })
        .await
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a graceful shutdown), and waits for the process to exit.
    async fn terminate(&mut self) {
        let pid = self.pid.to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        let exit = self.exited().await;
        assert!(exit.success(), "instance {pid} exited with {exit} after SIGTERM");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("--- jobyard instance {} ({}) log tail ---\n{tail}", self.pid, self.base);
        }
    }
}

/// A loopback HTTP server counting `GET /hit/{n}` per `n` (for `n < size`).
async fn counting_server(
    size: usize,
) -> (String, Arc<Vec<AtomicU32>>, actix_web::dev::ServerHandle) {
    let counts: Arc<Vec<AtomicU32>> = Arc::new((0..size).map(|_| AtomicU32::new(0)).collect());
    let shared = counts.clone();
    let server = HttpServer::new(move || {
        let counts = shared.clone();
        App::new().route(
            "/hit/{n}",
            web::get().to(move |n: web::Path<usize>| {
                let counts = counts.clone();
                async move {
                    match counts.get(n.into_inner()) {
                        Some(count) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            HttpResponse::Ok().body("counted")
                        }
                        None => HttpResponse::NotFound().finish(),
                    }
                }
            }),
        )
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind counting server");
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (base, counts, handle)
}

#[actix_web::test]
async fn jobs_run_exactly_once_spread_over_three_instances() {
    const JOBS: usize = 3_000;
    const BATCH: usize = 100;
    let redis = TestRedis::start();
    let (upstream, counts, upstream_handle) = counting_server(JOBS).await;
    let instances = Instance::start(&redis, &prefix("once"), 3, &[]).await;

    // Each job names itself in its URL and its idempotency key, so a batch answered 503 can be
    // sent again without creating a second job for anyone.
    let batches: Vec<Vec<Value>> = (0..JOBS)
        .map(|n| {
            json!({
                "kind": "http",
                "payload": {"url": format!("{upstream}/hit/{n}")},
                "idempotency_key": format!("hit-{n}"),
            })
        })
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[Value]>::to_vec)
        .collect();
    // One stream of batches per instance, the batches spread round-robin.
    let streams = instances.iter().enumerate().map(|(i, instance)| {
        let mine: Vec<Vec<Value>> =
            batches.iter().skip(i).step_by(instances.len()).cloned().collect();
        async move {
            let mut jobs = Vec::new();
            for batch in mine {
                jobs.extend(instance.submit_batch_retrying(batch).await);
            }
            jobs
        }
    });
    let submitted: Vec<Value> = futures_util::future::join_all(streams).await.concat();
    assert_eq!(submitted.len(), JOBS);
    let ids: HashSet<String> = submitted.iter().map(id_of).collect();
    assert_eq!(ids.len(), JOBS, "every job has its own id");

    let done = eventually(Duration::from_secs(60), "all jobs terminal", || async {
        let c = instances[0].counts("default").await;
        let terminal = ["succeeded", "failed", "cancelled"]
            .iter()
            .map(|s| c[*s].as_u64().unwrap_or(0))
            .sum::<u64>();
        (terminal == JOBS as u64).then_some(c)
    })
    .await;
    assert_eq!(done["succeeded"], JOBS as u64, "every job succeeded: {done}");

    let runs: Vec<u32> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let wrong: Vec<(usize, u32)> =
        runs.iter().enumerate().filter(|(_, n)| **n != 1).map(|(i, n)| (i, *n)).collect();
    assert!(
        wrong.is_empty(),
        "every job ran exactly once; {} did not (job index, runs): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );

    let listed = instances[1].list_all("status=succeeded").await;
    assert_eq!(listed.len(), JOBS, "the listing shows every job");
    let listed_ids: HashSet<String> = listed.iter().map(id_of).collect();
    assert_eq!(listed_ids, ids, "the listing shows exactly the submitted jobs");
    let names: HashSet<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    let mut per_instance: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &listed {
        let name = worker_instance(job).unwrap_or_else(|| panic!("no worker in {job}"));
        assert!(names.contains(name), "worker {} is none of our instances", job["worker"]);
        *per_instance.entry(name).or_default() += 1;
    }
    assert!(per_instance.len() > 1, "more than one instance ran jobs: {per_instance:?}");
    upstream_handle.stop(false).await;
}

#[actix_web::test]
async fn a_killed_instance_loses_no_job() {
    const JOBS: usize = 18;
    let redis = TestRedis::start();
    let env = [("JOBYARD_LEASE_MS", "1500"), ("JOBYARD_CONCURRENCY", "2")];
    let mut instances = Instance::start(&redis, &prefix("kill"), 3, &env).await;
    let victim = instances[0].name.clone();
    // Submitted on the victim, so its own pool hears of them first.
    let jobs: Vec<Value> =
        (0..JOBS).map(|_| json!({"kind": "sleep", "payload": {"ms": 500}})).collect();
    let submitted = instances[0].submit_batch(jobs).await;
    let ids: Vec<String> = submitted.iter().map(id_of).collect();

    let on_victim: Vec<String> = eventually(DEADLINE, "the victim runs jobs", || async {
        let running = instances[1].list_all("status=running").await;
        let mine: Vec<String> =
            running.iter().filter(|j| worker_instance(j) == Some(&victim)).map(id_of).collect();
        (!mine.is_empty()).then_some(mine)
    })
    .await;
    instances[0].kill();

    let survivor = &instances[1];
    let done = eventually(Duration::from_secs(30), "every job terminal", || async {
        let c = survivor.counts("default").await;
        let terminal = ["succeeded", "failed", "cancelled"]
            .iter()
            .map(|s| c[*s].as_u64().unwrap_or(0))
            .sum::<u64>();
        (terminal == JOBS as u64).then_some(c)
    })
    .await;
    assert_eq!(done["succeeded"], JOBS as u64, "no job lost or failed: {done}");
    for id in &ids {
        let job = survivor.job(id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    // A job the victim was running either finished there just before the kill, or was taken
    // over once its lease expired: a second attempt, elsewhere.
    let mut rerun = 0;
    for id in &on_victim {
        let job = survivor.job(id).await;
        let attempts = job["attempts"].as_u64().unwrap_or(0);
        if worker_instance(&job) == Some(&victim) {
            assert_eq!(attempts, 1, "finished on the victim before the kill: {job}");
        } else {
            assert!(attempts >= 2, "re-run after the victim died counts a new attempt: {job}");
            rerun += 1;
        }
    }
    assert!(rerun >= 1, "at least one of the victim's jobs {on_victim:?} was re-run");
}

#[actix_web::test]
async fn cron_fires_once_per_tick_with_three_instances() {
    const QUEUE: &str = "cron-once";
    let redis = TestRedis::start();
    let instances = Instance::start(&redis, &prefix("cron"), 3, &[]).await;
    let name = "every-second";
    let schedule = json!({"cron": "* * * * * *", "job": {"kind": "noop", "queue": QUEUE}});
    let path = format!("/v1/schedules/{name}");
    let put = instances[1].request(Method::PUT, &path, Some(&schedule)).await;
    assert_eq!(put.status, 201, "schedule created: {}", put.body);

    eventually(Duration::from_secs(20), "4 ticks fired", || async {
        let jobs = instances[2].list_all(&format!("queue={QUEUE}")).await;
        (jobs.len() >= 4).then_some(())
    })
    .await;
    let deleted = instances[0].request(Method::DELETE, &path, None).await;
    assert!(deleted.status < 300, "schedule deleted: {} {}", deleted.status, deleted.body);

    let jobs = instances[0].list_all(&format!("queue={QUEUE}")).await;
    let mut ticks: Vec<i64> = Vec::new();
    let mut keys = HashSet::new();
    for job in &jobs {
        let key = job["idempotency_key"].as_str().unwrap_or_else(|| panic!("no key: {job}"));
        assert!(keys.insert(key.to_owned()), "two jobs share the key {key}");
        let tick = key
            .strip_prefix(&format!("cron:{name}:"))
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("key {key} is not cron:{name}:<tick ms>"));
        assert_eq!(tick % 1000, 0, "a tick of an every-second schedule is a whole second: {key}");
        ticks.push(tick);
    }
    ticks.sort_unstable();
    for pair in ticks.windows(2) {
        assert!(pair[1] - pair[0] >= 1000, "one job per tick, ticks {} and {}", pair[0], pair[1]);
    }
    assert!(ticks.len() >= 4, "{ticks:?}");
}

#[actix_web::test]
async fn a_cancel_reaches_the_instance_running_the_job() {
    let redis = TestRedis::start();
    let instances = Instance::start(&redis, &prefix("cancel"), 2, &[]).await;
    let submitted =
        instances[0].post("/v1/jobs", json!({"kind": "sleep", "payload": {"ms": 60_000}})).await;
    assert_eq!(submitted.status, 201, "submit answered {}", submitted.body);
    let id = id_of(&submitted.body);

    let runner = eventually(DEADLINE, "the job runs", || async {
        let job = instances[0].job(&id).await;
        (job["status"] == "running").then(|| worker_instance(&job).map(str::to_owned)).flatten()
    })
    .await;
    let runs_on = instances.iter().position(|i| i.name == runner).expect("one of ours runs it");
    let other = &instances[1 - runs_on];

    let cancel = other.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(cancel.status, 200, "cancel answered {}", cancel.body);
    assert!(
        cancel.body["cancel_requested"] == true || cancel.body["status"] == "cancelled",
        "{}",
        cancel.body
    );
    let ended = eventually(Duration::from_secs(10), "the job ends cancelled", || async {
        let job = other.job(&id).await;
        (job["status"] != "running" && job["status"] != "queued").then_some(job)
    })
    .await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(worker_instance(&ended), Some(runner.as_str()), "the runner stopped it: {ended}");
    let seen_by_runner = instances[runs_on].job(&id).await;
    assert_eq!(seen_by_runner["status"], "cancelled", "{seen_by_runner}");
}

#[actix_web::test]
async fn a_delayed_job_survives_the_restart_of_every_instance() {
    let redis = TestRedis::start();
    let prefix = prefix("restart");
    let mut old = Instance::start(&redis, &prefix, 2, &[]).await;
    let job = old[0].submit_batch(vec![json!({"kind": "noop", "delay_ms": 3_000})]).await;
    let job = &job[0];
    let id = id_of(job);
    assert_eq!(job["status"], "scheduled", "{job}");
    let run_at: DateTime<Utc> = serde_json::from_value(job["run_at"].clone()).expect("run_at");

    for instance in &mut old {
        instance.terminate().await;
    }
    let old_names: Vec<String> = old.iter().map(|i| i.name.clone()).collect();
    let all_gone_before_due = Utc::now() < run_at;
    drop(old);

    let new = Instance::start(&redis, &prefix, 2, &[]).await;
    let done = eventually(DEADLINE, "the delayed job ends", || async {
        let job = new[1].job(&id).await;
        is_terminal(&job).then_some(job)
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let started: DateTime<Utc> =
        serde_json::from_value(done["started_at"].clone()).expect("started_at");
    assert!(started >= run_at, "started {started} before its run_at {run_at}");
    if all_gone_before_due {
        // Nobody but the new instances was alive when it fell due.
        let name = worker_instance(&done);
        assert!(
            name.is_some_and(|n| new.iter().any(|i| i.name == n)),
            "run by a new instance (old ones: {old_names:?}): {done}"
        );
    }
}

#[actix_web::test]
async fn redis_restart_with_aof_loses_no_acknowledged_job() {
    let mut redis = TestRedis::start_durable();
    // The default lease (30 s) outlasts the wait below: a claim Redis ran (and wrote to its AOF)
    // but whose answer died with it must be taken back by the instance's next claim, not left
    // to its lease.
    let env = [("JOBYARD_CONCURRENCY", "2")];
    let mut instances = Instance::start(&redis, &prefix("aof"), 2, &env).await;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut turn = 0usize;
    // One submit, answered 201 (recorded) or 503 `backend_unavailable` with Retry-After; any
    // other answer, or none, fails the test. Returns whether it was acknowledged.
    async fn submit_one(
        instance: &Instance,
        n: usize,
        acknowledged: &mut Vec<String>,
        unavailable: &mut usize,
    ) -> bool {
        // Jobs that take a moment, and every tenth delayed: the outage finds work in flight.
        let spec = if n.is_multiple_of(10) {
            json!({"kind": "noop", "payload": {"n": n}, "delay_ms": 2_000})
        } else {
            json!({"kind": "sleep", "payload": {"ms": 100}})
        };
        let resp = instance
            .try_request(Method::POST, "/v1/jobs", Some(&spec))
            .await
            .unwrap_or_else(|err| panic!("a submit must be answered: {err}"));
        match resp.status {
            201 => {
                acknowledged.push(id_of(&resp.body));
                true
            }
            503 => {
                assert_eq!(resp.code(), "backend_unavailable", "{}", resp.body);
                assert!(resp.header("retry-after").is_some(), "a 503 says when to retry");
                *unavailable += 1;
                false
            }
            other => panic!("submit answered {other}: {}", resp.body),
        }
    }

    let mut unavailable = 0;
    let up = within(DEADLINE, async {
        while acknowledged.len() < 40 {
            submit_one(&instances[turn % 2], turn, &mut acknowledged, &mut unavailable).await;
            turn += 1;
        }
    })
    .await;
    assert!(up.is_some(), "40 submits acknowledged while Redis is up");

    let before = instances[0].counts("default").await;
    let in_flight: u64 = ["waiting", "scheduled", "queued", "running"]
        .iter()
        .map(|s| before[*s].as_u64().unwrap_or(0))
        .sum();
    assert!(in_flight > 0, "the outage should find unfinished jobs: {before}");

    redis.stop();
    let mut ready_503 = 0;
    let mut down_submits = 0;
    let saw_503 = within(DEADLINE, async {
        while ready_503 == 0 {
            let instance = &instances[turn % 2];
            submit_one(instance, turn, &mut acknowledged, &mut unavailable).await;
            turn += 1;
            down_submits += 1;
            let ready = instance
                .try_request(Method::GET, "/ready", None)
                .await
                .unwrap_or_else(|err| panic!("/ready must answer: {err}"));
            match ready.status {
                200 => tokio::time::sleep(Duration::from_millis(20)).await,
                503 => {
                    assert_eq!(ready.code(), "backend_unavailable", "{}", ready.body);
                    ready_503 += 1;
                }
                other => panic!("/ready answered {other}: {}", ready.body),
            }
        }
    })
    .await;
    assert!(saw_503.is_some(), "/ready never answered 503 while Redis was down");
    // Keep submitting a moment longer, now that the instances know Redis is gone.
    for _ in 0..10 {
        submit_one(&instances[turn % 2], turn, &mut acknowledged, &mut unavailable).await;
        turn += 1;
        down_submits += 1;
    }
    assert!(unavailable > 0, "some submit met the missing Redis ({down_submits} tried)");

    redis.restart();
    let before_restart = acknowledged.len();
    let accepted = within(DEADLINE, async {
        loop {
            let instance = &instances[turn % 2];
            turn += 1;
            if submit_one(instance, turn, &mut acknowledged, &mut unavailable).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(accepted.is_some(), "submits are acknowledged again after Redis returned");
    assert!(acknowledged.len() > before_restart);

    let mut pending: Vec<String> = acknowledged.clone();
    let mut last_seen: HashMap<String, Value> = HashMap::new();
    let settled = within(Duration::from_secs(30), async {
        while !pending.is_empty() {
            let mut left = Vec::new();
            for id in pending.drain(..) {
                let resp = instances[0].get(&format!("/v1/jobs/{id}")).await;
                match resp.status {
                    200 if resp.body["status"] == "succeeded" => {}
                    200 if is_terminal(&resp.body) => {
                        panic!("acknowledged job ended {}: {}", resp.body["status"], resp.body)
                    }
                    // Still on its way, or the instance not reconnected yet.
                    200 | 503 => {
                        last_seen.insert(id.clone(), resp.body);
                        left.push(id)
                    }
                    404 => panic!("acknowledged job {id} is gone"),
                    other => panic!("GET job answered {other}: {}", resp.body),
                }
            }
            pending = left;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    assert!(
        settled.is_some(),
        "{} of {} acknowledged jobs not succeeded within 30 s; last seen: {:?}",
        pending.len(),
        acknowledged.len(),
        pending.iter().map(|id| last_seen.get(id).map(Value::to_string)).collect::<Vec<_>>()
    );
    for instance in &mut instances {
        assert!(instance.alive(), "instance {} still runs (never restarted)", instance.pid);
    }
}

/// Every instance heartbeats into the registry: each of three lists all three (the one that
/// runs no jobs with no kinds and no workers); a killed one is gone once it has missed 3
/// heartbeats, and not before.
#[actix_web::test]
async fn the_registry_lists_live_instances_and_forgets_a_killed_one() {
    let redis = TestRedis::start();
    let prefix = prefix("registry");
    let mut instances: Vec<Instance> = (0..2)
        .map(|_| Instance::launch(&redis, &prefix, &[]))
        .chain([Instance::launch(&redis, &prefix, &[("JOBYARD_CONCURRENCY", "0")])])
        .collect();
    for instance in &mut instances {
        instance.until_ready().await;
    }
    let names: BTreeSet<String> = instances.iter().map(|i| i.name.clone()).collect();
    let api_only = instances[2].name.clone();
    for instance in &instances {
        let listed = eventually(DEADLINE, "all three listed", || async {
            let listed = instance.instances().await;
            (listed.len() == 3).then_some(listed)
        })
        .await;
        let seen: BTreeSet<String> =
            listed.iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(seen, names, "as {} sees them", instance.name);
        for entry in &listed {
            assert_eq!(entry["version"], env!("CARGO_PKG_VERSION"), "{entry}");
            assert_eq!(entry["draining"], false, "{entry}");
            if entry["name"] == *api_only {
                assert_eq!(entry["kinds"], json!([]), "{entry}");
                assert_eq!(entry["workers"], json!({"busy": 0, "total": 0}), "{entry}");
            } else {
                let kinds = entry["kinds"].as_array().unwrap();
                assert!(kinds.contains(&json!("http")) && kinds.contains(&json!("sleep")));
                assert_eq!(entry["workers"]["total"], 16, "{entry}");
            }
        }
    }

    let gone = instances[0].name.clone();
    instances[0].kill();
    let killed = Instant::now();
    let left = eventually(Duration::from_secs(15), "the killed instance gone", || async {
        let listed = instances[1].instance_names().await;
        (!listed.contains(&gone)).then_some(listed)
    })
    .await;
    assert!(killed.elapsed() > Duration::from_secs(1), "listed until its heartbeats stopped");
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(instances[2].instance_names().await, left, "every instance sees the same");
}

/// Two instances on one host, both with the default name: one takes the host name, the other
/// `<host>-<pid>` and says so. A start with an explicit name a live instance holds stops with
/// one line naming the variable.
#[actix_web::test]
async fn instances_on_one_host_never_share_a_name() {
    let redis = TestRedis::start();
    let prefix = prefix("names");
    let instances = Instance::start(&redis, &prefix, 2, &[("JOBYARD_INSTANCE", "")]).await;
    let listed = eventually(DEADLINE, "both listed", || async {
        let listed = instances[0].instance_names().await;
        (listed.len() == 2).then_some(listed)
    })
    .await;
    let host = jobyard::instance::host_name();
    assert!(listed.contains(&host), "{listed:?}");
    let fell_back = instances
        .iter()
        .find(|i| listed.contains(&format!("{host}-{}", i.pid)))
        .unwrap_or_else(|| panic!("one of them is <host>-<pid>: {listed:?}"));
    assert!(
        fell_back.output().contains("another live instance holds the name"),
        "the fallback is logged: {}",
        fell_back.output()
    );

    let mut clash = Instance::launch(&redis, &prefix, &[("JOBYARD_INSTANCE", &host)]);
    let status = clash.exited().await;
    assert!(!status.success(), "a start under a live instance's name fails: {status}");
    let line = eventually(DEADLINE, "the error line", || async {
        let output = clash.output();
        let line = output.lines().find(|l| l.starts_with("error: JOBYARD_INSTANCE="));
        line.map(str::to_owned)
    })
    .await;
    assert!(line.contains(&format!("JOBYARD_INSTANCE={host} is taken")), "{line}");
}

/// A kind of a service's own: the binary has only the built-in kinds, so the instance that
/// registers this one is a server in the test process, on the same Redis and prefix.
#[derive(serde::Serialize, serde::Deserialize)]
struct Shout {
    text: String,
}

impl jobyard::Job for Shout {
    const KIND: &'static str = "instances.shout";
    type Output = String;
    async fn run(self, _: jobyard::JobContext) -> Result<String, jobyard::JobError> {
        Ok(self.text.to_uppercase())
    }
}

/// An instance that runs no jobs (`JOBYARD_CONCURRENCY=0`) accepts a kind only another live
/// instance registers, and that instance runs it; before it runs, the kind is unknown. A kind
/// in `JOBYARD_ACCEPT_KINDS` is accepted with no instance handling it.
#[actix_web::test]
async fn an_api_only_instance_accepts_a_kind_another_instance_handles() {
    let redis = TestRedis::start();
    let prefix = prefix("kinds");
    let env = [("JOBYARD_CONCURRENCY", "0"), ("JOBYARD_ACCEPT_KINDS", "later.kind")];
    let mut api = Instance::launch(&redis, &prefix, &env);
    api.until_ready().await;
    let spec = json!({"kind": "instances.shout", "payload": {"text": "hi"}});
    let refused = api.post("/v1/jobs", spec.clone()).await;
    assert_eq!((refused.status, refused.code()), (400, "unknown_kind"), "{}", refused.body);
    let later = api.post("/v1/jobs", json!({"kind": "later.kind", "payload": [1]})).await;
    assert_eq!((later.status, later.body["status"].as_str()), (201, Some("queued")));

    let mut config = crate::helpers::test_config();
    config.redis_url = Some(jobyard::config::RedisUrl::parse(&redis.url()).unwrap());
    config.queue_backend = jobyard::config::QueueBackendKind::Redis;
    config.redis_prefix = prefix.clone();
    config.instance = Some("embedded".into());
    let runtime = jobyard::Runtime::builder().with_builtin_kinds().register::<Shout>();
    let embedded = crate::helpers::spawn_app_from(config, runtime).await;

    let created = eventually(DEADLINE, "the kind accepted", || async {
        let resp = api.post("/v1/jobs", spec.clone()).await;
        (resp.status == 201).then_some(resp.body)
    })
    .await;
    let id = id_of(&created);
    let done = eventually(DEADLINE, "the job ends", || async {
        let job = api.job(&id).await;
        is_terminal(&job).then_some(job)
    })
    .await;
    assert_eq!((done["status"].as_str(), done["result"].as_str()), (Some("succeeded"), Some("HI")));
    assert_eq!(worker_instance(&done), Some("embedded"), "{done}");
    embedded.shutdown().await;
}

/// An instance killed (SIGKILL) with jobs running and restarted under its name takes them back
/// at once: they run again within seconds, not after their 30 s lease; each interrupted attempt
/// counts as failed ('instance <name> restarted'), is logged as a takeover and counted.
#[actix_web::test]
async fn a_killed_instance_restarted_under_its_name_runs_its_jobs_again_at_once() {
    let redis = TestRedis::start();
    let prefix = prefix("takeover");
    let victim_env = [("JOBYARD_INSTANCE", "victim"), ("JOBYARD_CONCURRENCY", "2")];
    let mut victim = Instance::launch(&redis, &prefix, &victim_env);
    let mut watcher = Instance::launch(&redis, &prefix, &[("JOBYARD_CONCURRENCY", "0")]);
    victim.until_ready().await;
    watcher.until_ready().await;
    let jobs = vec![json!({"kind": "sleep", "payload": {"ms": 3_000}}); 2];
    let ids: Vec<String> = watcher.submit_batch(jobs).await.iter().map(id_of).collect();
    eventually(DEADLINE, "both jobs run on the victim", || async {
        for id in &ids {
            let job = watcher.job(id).await;
            if job["status"] != "running" || worker_instance(&job) != Some("victim") {
                return None;
            }
        }
        Some(())
    })
    .await;
    victim.kill();
    let killed_at = Utc::now();
    let mut restarted = Instance::launch(&redis, &prefix, &victim_env);
    restarted.until_ready().await;

    for id in &ids {
        let done = eventually(Duration::from_secs(20), "the job ends", || async {
            let job = watcher.job(id).await;
            is_terminal(&job).then_some(job)
        })
        .await;
        assert_eq!(
            (done["status"].as_str(), done["attempts"].as_u64()),
            (Some("succeeded"), Some(2))
        );
        assert_eq!(done["history"][0]["error"], "instance victim restarted", "{done}");
        assert_eq!(worker_instance(&done), Some("victim"), "{done}");
        let started: DateTime<Utc> = serde_json::from_value(done["started_at"].clone()).unwrap();
        let after = (started - killed_at).to_std().unwrap_or_default();
        assert!(after < Duration::from_secs(15), "ran again {after:?} after the kill: {done}");
    }
    let log = restarted.output();
    for id in &ids {
        let warned = log
            .lines()
            .any(|l| l.contains("WARN") && l.contains("taken over") && l.contains(id.as_str()));
        assert!(warned, "the takeover of {id} is logged:\n{log}");
    }
    let stats = watcher.get("/v1/stats").await.body;
    assert_eq!(stats["takeovers"]["instance_restarted"], 2, "{}", stats["takeovers"]);
}

#[actix_web::test]
async fn a_second_signal_stops_at_once_and_hands_running_jobs_back() {
    let redis = TestRedis::start();
    let prefix = prefix("second-signal");
    // A grace period far longer than the test: only the second signal can end the process.
    let env = [("JOBYARD_SHUTDOWN_GRACE_MS", "3600000")];
    let mut server = Instance::launch(&redis, &prefix, &env);
    let mut watcher = Instance::launch(&redis, &prefix, &[("JOBYARD_CONCURRENCY", "0")]);
    server.until_ready().await;
    watcher.until_ready().await;
    let job = json!({"kind": "sleep", "payload": {"ms": 3_600_000}, "timeout_ms": 3_600_000});
    let id = id_of(&watcher.submit_batch(vec![job]).await[0]);
    eventually(DEADLINE, "the job runs", || async {
        (watcher.job(&id).await["status"] == "running").then_some(())
    })
    .await;
    let interrupt = |pid: u32| {
        let status = Command::new("kill").args(["-INT", &pid.to_string()]).status();
        assert!(status.expect("kill runs").success(), "kill -INT {pid} failed");
    };
    interrupt(server.pid);
    eventually(DEADLINE, "the pool drains", || {
        let draining = server.output().contains("draining worker pool");
        async move { draining.then_some(()) }
    })
    .await;
    interrupt(server.pid);
    let exit = server.exited().await;
    assert!(exit.success(), "exited with {exit}:\n{}", server.output());
    assert!(server.output().contains("received again"), "{}", server.output());
    let job = watcher.job(&id).await;
    assert_eq!(job["status"], "queued", "handed back, not left running: {job}");
}

#[actix_web::test]
async fn a_draining_instance_answers_draining_until_its_running_jobs_finish() {
    let redis = TestRedis::start();
    let prefix = prefix("draining");
    let mut server = Instance::launch(&redis, &prefix, &[("JOBYARD_SHUTDOWN_GRACE_MS", "60000")]);
    let mut watcher = Instance::launch(&redis, &prefix, &[("JOBYARD_CONCURRENCY", "0")]);
    server.until_ready().await;
    watcher.until_ready().await;
    let job = json!({"kind": "sleep", "payload": {"ms": 3_000}});
    let id = id_of(&watcher.submit_batch(vec![job]).await[0]);
    eventually(DEADLINE, "the job runs", || async {
        (watcher.job(&id).await["status"] == "running").then_some(())
    })
    .await;
    let pid = server.pid.to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(status.success());
    // Until the process is gone, every answer of /ready is 503 `draining`; while the job still
    // runs, the API answers: /health 200, a submit 503 with Retry-After.
    let mut drained_answers = 0;
    let mut checked_while_running = false;
    loop {
        let running = watcher.job(&id).await["status"] == "running";
        let Ok(ready) = server.try_request(Method::GET, "/ready", None).await else { break };
        if ready.status == 200 && drained_answers == 0 {
            continue; // the signal has not been handled yet
        }
        assert_eq!((ready.status, ready.code()), (503, "draining"), "{}", ready.body);
        drained_answers += 1;
        if running && !checked_while_running {
            let health = server.get("/health").await;
            assert_eq!(health.status, 200);
            let submit = server.post("/v1/jobs", json!({"kind": "noop"})).await;
            assert_eq!((submit.status, submit.code()), (503, "draining"), "{}", submit.body);
            assert!(submit.headers.contains_key("retry-after"));
            checked_while_running = true;
        }
        if !server.alive() {
            break;
        }
    }
    assert!(checked_while_running, "the API answered draining while the job ran");
    let exit = server.exited().await;
    assert!(exit.success(), "exited with {exit}");
    assert_eq!(watcher.job(&id).await["status"], "succeeded", "the running job finished");
}

#[actix_web::test]
async fn a_redis_outage_logs_each_kind_of_warning_once_then_counts_them() {
    let mut redis = TestRedis::start();
    let prefix = prefix("quiet-outage");
    let mut server = Instance::launch(&redis, &prefix, &[("JOBYARD_QUEUE_TIMEOUT_MS", "500")]);
    server.until_ready().await;
    let before = server.output().lines().count();
    redis.stop();
    let mut refused = 0;
    for _ in 0..200 {
        let submit = server.post("/v1/jobs", json!({"kind": "noop"})).await;
        assert_eq!(submit.status, 503, "{}", submit.body);
        refused += 1;
        let ready = server.get("/ready").await;
        assert_eq!(ready.status, 503, "{}", ready.body);
    }
    redis.restart();
    eventually(DEADLINE, "the counts are logged once Redis is back", || {
        let log = server.output();
        async move { log.contains("more while it was away").then_some(()) }
    })
    .await;
    let log = server.output();
    let during: Vec<&str> = log.lines().skip(before).filter(|l| l.contains("WARN")).collect();
    assert!(
        during.len() <= 12,
        "{} warnings for {refused} refused submits:\n{}",
        during.len(),
        during.join("\n")
    );
    assert!(
        during.iter().any(|l| l.contains("the queue answers submits and reads 503")),
        "the queue's link says what the queue does:\n{log}"
    );
    let counted: u64 = log
        .lines()
        .filter(|l| l.contains("requests answered 503") && l.contains("more while it was away"))
        .filter_map(|l| l.split("repeats=").nth(1)?.trim().parse::<u64>().ok())
        .sum();
    assert!(counted >= refused - 1, "{counted} counted of {refused} refused:\n{log}");
}

/// The samples of a Prometheus text scrape, by `name{labels}` as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[actix_web::test]
async fn metrics_count_what_the_instance_did() {
    let redis = TestRedis::start();
    let mut server = Instance::launch(&redis, &prefix("metrics"), &[("JOBYARD_CONCURRENCY", "4")]);
    server.until_ready().await;
    let mut jobs = vec![json!({"kind": "noop"}); 5];
    jobs.extend(vec![json!({"kind": "fail", "payload": {"retryable": false}}); 2]);
    jobs.push(json!({"kind": "fail", "payload": {"times": 1}, "backoff": {"initial_ms": 1, "jitter": false}}));
    let ids: Vec<String> = server.submit_batch(jobs).await.iter().map(id_of).collect();
    let delayed = server.post("/v1/jobs", json!({"kind": "noop", "delay_ms": 600000})).await;
    let cancel = server.post(&format!("/v1/jobs/{}/cancel", id_of(&delayed.body)), json!({})).await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    for id in &ids {
        eventually(DEADLINE, "the job ends", || async {
            is_terminal(&server.job(id).await).then_some(())
        })
        .await;
    }
    // Any token is a method to HTTP: the odd ones share one label, so no client can add series.
    for odd in ["FOO", "BAR"] {
        let method = Method::from_bytes(odd.as_bytes()).unwrap();
        let _ = server.http.request(method, format!("{}/v1/jobs", server.base)).send().await;
    }
    let mut scrape =
        server.http.get(format!("{}/metrics", server.base)).send().await.expect("scrape");
    assert_eq!(scrape.status().as_u16(), 200);
    let text = String::from_utf8(scrape.body().limit(1 << 20).await.unwrap().to_vec()).unwrap();
    let found = samples(&text);
    let value = |series: &str| {
        found.get(series).copied().unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    let noop = r#"{kind="noop",queue="default"}"#;
    let fail = r#"{kind="fail",queue="default"}"#;
    assert_eq!(
        value(&format!("jobyard_jobs_submitted_total{noop}")),
        6.0,
        "5 in the batch, 1 delayed"
    );
    assert_eq!(value(&format!("jobyard_jobs_submitted_total{fail}")), 3.0);
    assert_eq!(value(&format!("jobyard_jobs_started_total{noop}")), 5.0);
    assert_eq!(value(&format!("jobyard_jobs_succeeded_total{noop}")), 5.0);
    assert_eq!(value(&format!("jobyard_jobs_started_total{fail}")), 4.0, "one retried");
    assert_eq!(value(&format!("jobyard_jobs_failed_total{fail}")), 2.0);
    assert_eq!(value(&format!("jobyard_jobs_retried_total{fail}")), 1.0);
    assert_eq!(value(&format!("jobyard_jobs_succeeded_total{fail}")), 1.0);
    assert_eq!(value(&format!("jobyard_jobs_cancelled_total{noop}")), 1.0, "the delayed one");
    assert_eq!(value(r#"jobyard_job_run_seconds_count{kind="noop"}"#), 5.0);
    assert_eq!(value(r#"jobyard_job_queue_wait_seconds_count{kind="fail"}"#), 4.0);
    assert!(
        found.contains_key(r#"jobyard_job_run_seconds_bucket{kind="noop",le="0.001"}"#),
        "{text}"
    );
    assert_eq!(value(r#"jobyard_queue_jobs{queue="default",state="succeeded"}"#), 6.0);
    assert_eq!(value(r#"jobyard_queue_jobs{queue="default",state="failed"}"#), 2.0);
    assert_eq!(value(r#"jobyard_queue_jobs{queue="default",state="cancelled"}"#), 1.0);
    assert_eq!(value("jobyard_workers_total"), 4.0);
    assert_eq!(value("jobyard_redis_up"), 1.0);
    assert!(value(r#"jobyard_cache_hits_total{layer="redis"}"#) >= 0.0);
    let batches =
        r#"jobyard_http_requests_total{route="/v1/jobs/batch",method="POST",status="201"}"#;
    assert_eq!(value(batches), 1.0);
    let reads = r#"jobyard_http_requests_total{route="/v1/jobs/{id}",method="GET",status="200"}"#;
    assert!(value(reads) >= 8.0, "by route template, not by path");
    assert!(!text.contains("method=\"FOO\"") && text.contains("method=\"OTHER\""), "{text}");
    // Every family says what it is.
    for family in
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap())
    {
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP");
    }
}

/// A loopback OTLP/HTTP receiver keeping every span it is sent.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = spans.clone();
    let server = HttpServer::new(move || {
        let kept = kept.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Json<Value>| {
                let kept = kept.clone();
                async move {
                    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                            let spans = scope["spans"].as_array().cloned().unwrap_or_default();
                            kept.lock().unwrap().extend(spans);
                        }
                    }
                    HttpResponse::Ok().json(json!({}))
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("a free port");
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}"), spans)
}

#[actix_web::test]
async fn a_trace_goes_from_the_submit_to_every_attempt() {
    let redis = TestRedis::start();
    let (collector, spans) = otlp_receiver().await;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str())];
    let mut server = Instance::launch(&redis, &prefix("traces"), &env);
    server.until_ready().await;
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let job = json!({"kind": "fail", "payload": {"times": 1}, "backoff": {"initial_ms": 1, "jitter": false}});
    let mut answer = server
        .http
        .post(format!("{}/v1/jobs", server.base))
        .insert_header(("traceparent", format!("00-{trace_id}-{caller_span}-01")))
        .send_json(&job)
        .await
        .expect("submit");
    assert_eq!(answer.status().as_u16(), 201);
    let traceparent = answer.headers().get("traceparent").expect("traceparent answered");
    let traceparent = traceparent.to_str().unwrap().to_owned();
    let submitted: Value = answer.json().await.unwrap();
    assert_eq!(submitted["trace"]["trace_id"], trace_id, "{submitted}");
    let submit_span = submitted["trace"]["span_id"].as_str().unwrap().to_owned();
    assert_eq!(traceparent, format!("00-{trace_id}-{submit_span}-01"));
    let id = id_of(&submitted);
    eventually(DEADLINE, "the job ends", || async {
        is_terminal(&server.job(&id).await).then_some(())
    })
    .await;
    let exported = eventually(DEADLINE, "the submit and both attempts exported", || {
        let spans = spans.lock().unwrap().clone();
        async move { (spans.len() >= 3).then_some(spans) }
    })
    .await;
    assert!(exported.iter().all(|s| s["traceId"] == trace_id), "one trace: {exported:?}");
    let submit: Vec<&Value> = exported.iter().filter(|s| s["name"] == "POST /v1/jobs").collect();
    assert_eq!(submit.len(), 1, "{exported:?}");
    assert_eq!(
        (&submit[0]["spanId"], &submit[0]["parentSpanId"]),
        (&json!(submit_span), &json!(caller_span))
    );
    let attempts: Vec<&Value> = exported.iter().filter(|s| s["name"] == "job fail").collect();
    assert_eq!(attempts.len(), 2, "the attempt that failed and its retry: {exported:?}");
    for attempt in &attempts {
        assert_eq!(attempt["parentSpanId"], json!(submit_span), "children of the submit");
    }
    let statuses: BTreeSet<i64> =
        attempts.iter().filter_map(|a| a["status"]["code"].as_i64()).collect();
    assert_eq!(statuses, BTreeSet::from([1, 2]), "one failed, one succeeded");
}
