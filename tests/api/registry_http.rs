//! Instances over HTTP, in one process: `GET /v1/instances`, the names runtimes take when
//! they share a backend, an instance that runs no jobs (`JOBYARD_CONCURRENCY=0`), and the
//! kinds a submit accepts (registered here, handled by a live instance, or configured).
//! Real `jobyard serve` processes are in `instances.rs`.

use jobyard::instance::{host_name, host_pid, NameError};
use jobyard::runtime::RuntimeError;
use jobyard::startup::{Server, StartupError};
use jobyard::{Job, JobContext, JobError, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::helpers::{poll, test_config, On, TestApp};

/// A kind only the runtimes of these tests register.
#[derive(Serialize, Deserialize)]
struct Shout {
    text: String,
}

impl Job for Shout {
    const KIND: &'static str = "registry.shout";
    type Output = String;
    async fn run(self, _: JobContext) -> Result<String, JobError> {
        Ok(self.text.to_uppercase())
    }
}

/// The instances `app` lists, once `pred` holds for them.
async fn instances_when(app: &TestApp, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let found = poll(|| async {
        let resp = app.get("/v1/instances").await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        let listed = resp.body["instances"].as_array().expect("instances array").clone();
        pred(&listed).then_some(listed)
    })
    .await;
    found.unwrap_or_else(|| panic!("/v1/instances never showed {what}"))
}

fn names(instances: &[Value]) -> Vec<&str> {
    instances.iter().filter_map(|i| i["name"].as_str()).collect()
}

/// An instance lists itself: its name (the host name by default), version, kinds, workers.
async fn an_instance_lists_itself(on: &On) {
    let app = on.spawn(|_| {}).await;
    let listed = instances_when(&app, "this instance", |l| l.len() == 1).await;
    let me = &listed[0];
    assert_eq!(me["name"], host_name(), "{me}");
    // The registry lists the name as soon as it is claimed; the runtime takes it once what a
    // dead run of that name left running was taken back.
    let named = poll(|| async { app.runtime.instance() }).await;
    assert_eq!(named.as_deref(), Some(host_name().as_str()));
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    let kinds: Vec<&str> =
        me["kinds"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for kind in ["noop", "sleep", "fail", "http"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_eq!(
        (me["workers"]["total"].as_u64(), me["draining"].as_bool()),
        (Some(16), Some(false))
    );
    assert!(
        me["run_id"].is_string() && me["started_at"].is_string() && me["last_seen"].is_string()
    );
    // Its jobs run on its workers, named after it.
    let job = app.submit(json!({"kind": "noop"})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    let worker = done["worker"].as_str().unwrap();
    assert!(worker.starts_with(&format!("{}/w", host_name())), "{worker}");
    let stats = app.get("/v1/stats").await.body;
    assert_eq!(stats["takeovers"], json!({"lease_expired": 0, "instance_restarted": 0}));
    app.shutdown().await;
}

/// An instance with `JOBYARD_CONCURRENCY=0` takes submits and runs nothing: 0 of 0 workers,
/// no kinds in its entry.
async fn an_instance_without_workers_takes_submits_and_runs_nothing(on: &On) {
    let app = on.spawn(|c| c.concurrency = 0).await;
    let job = app.submit(json!({"kind": "noop"})).await;
    let listed = instances_when(&app, "this instance", |l| l.len() == 1).await;
    assert_eq!(listed[0]["workers"], json!({"busy": 0, "total": 0}));
    assert_eq!(listed[0]["kinds"], json!([]));
    let stats = app.get("/v1/stats").await.body;
    assert_eq!(
        (stats["workers"]["busy"].as_u64(), stats["workers"]["total"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(stats["kinds"]["noop"]["handled_here"], false, "it runs none of its kinds");
    let id = job["id"].as_str().unwrap();
    let later = app.get(&format!("/v1/jobs/{id}/wait?timeout_ms=300")).await;
    assert_eq!(later.body["status"], "queued", "nobody runs it: {}", later.body);
    app.shutdown().await;
}

/// `JOBYARD_ACCEPT_KINDS` lets submits of kinds nobody handles in (unchecked, waiting); any
/// other unknown kind is still `unknown_kind`.
async fn configured_kinds_are_accepted_without_a_handler(on: &On) {
    let app = on.spawn(|c| c.accept_kinds = vec!["later.kind".into()]).await;
    let job = app.submit(json!({"kind": "later.kind", "payload": {"any": ["shape"]}})).await;
    assert_eq!(job["status"], "queued");
    let resp = app.post("/v1/jobs", json!({"kind": "nobody.kind"})).await;
    assert_eq!((resp.status, resp.code(), resp.field()), (400, "unknown_kind", Some("kind")));
    app.shutdown().await;
}

on_both_backends!(
    an_instance_lists_itself,
    an_instance_without_workers_takes_submits_and_runs_nothing,
    configured_kinds_are_accepted_without_a_handler,
);

#[actix_web::test]
async fn instances_need_the_api_token() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.api_token = Some(jobyard::config::Secret::new("s3cret"))
    })
    .await;
    let resp = app.get("/v1/instances").await;
    assert_eq!((resp.status, resp.code()), (401, "unauthorized"));
    let resp = app.get_with("/v1/instances", &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
}

/// Runtimes sharing a backend under the default name take the host name and `<host>-<pid>`,
/// `<host>-<pid>-2`: never one name twice. A runtime given a name a live one holds does not
/// start, and says which variable.
#[actix_web::test]
async fn runtimes_sharing_a_backend_never_share_a_name() {
    let on = On::redis();
    let prefix = format!("names{}", fastrand::u32(..));
    let first = on.spawn_shared(&prefix, |_| {}).await;
    let second = on.spawn_shared(&prefix, |_| {}).await;
    let third = on.spawn_shared(&prefix, |_| {}).await;
    let expected = [host_name(), host_pid(), format!("{}-2", host_pid())];
    let listed = instances_when(&third, "three instances", |l| l.len() == 3).await;
    let mut seen: Vec<&str> = names(&listed);
    seen.sort();
    let mut wanted: Vec<&str> = expected.iter().map(String::as_str).collect();
    wanted.sort();
    assert_eq!(seen, wanted);
    let all_named = || async {
        let names: Vec<String> =
            [&first, &second, &third].iter().filter_map(|a| a.runtime.instance()).collect();
        (names.len() == 3).then_some(names)
    };
    let mut taken = poll(all_named).await.expect("every runtime takes its name");
    taken.sort();
    assert_eq!(taken.iter().map(String::as_str).collect::<Vec<_>>(), wanted);

    let mut config = test_config();
    if let On::Redis(redis) = &on {
        config.redis_url = Some(jobyard::config::RedisUrl::parse(&redis.url()).unwrap());
        config.queue_backend = jobyard::config::QueueBackendKind::Redis;
    }
    config.redis_prefix = prefix.clone();
    config.instance = Some(host_name());
    let refused = Server::build_with(config, Runtime::builder().with_builtin_kinds()).await;
    let Err(StartupError::Runtime(RuntimeError::Instance(err))) = refused else {
        panic!("a taken name must stop the start")
    };
    assert!(matches!(&err, NameError::Taken { name, .. } if *name == host_name()), "{err}");
    let line = err.to_string();
    assert!(line.starts_with(&format!("JOBYARD_INSTANCE={} is taken", host_name())), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");

    // A clean shutdown leaves the registry at once.
    second.shutdown().await;
    instances_when(&first, "two instances", |l| l.len() == 2).await;
    first.shutdown().await;
    third.shutdown().await;
}

/// An instance accepts a kind only another live instance registers (its payload unchecked
/// here), and that instance runs it; once no live instance handles it, it is unknown again.
#[actix_web::test]
async fn a_kind_handled_by_another_instance_is_accepted() {
    let on = On::redis();
    let prefix = format!("kinds{}", fastrand::u32(..));
    let api_only = on.spawn_shared(&prefix, |c| c.concurrency = 0).await;
    let spec = json!({"kind": "registry.shout", "payload": {"text": "hi"}});
    let resp = api_only.post("/v1/jobs", spec.clone()).await;
    assert_eq!((resp.status, resp.code()), (400, "unknown_kind"), "nobody handles it yet");

    let runtime = Runtime::builder().with_builtin_kinds().register::<Shout>();
    let worker = on.spawn_runtime(&prefix, |c| c.instance = Some("shouter".into()), runtime).await;
    let created = poll(|| async {
        let resp = api_only.post("/v1/jobs", spec.clone()).await;
        (resp.status == 201).then_some(resp.body)
    })
    .await
    .expect("accepted once the other instance heartbeats");
    let done = api_only.wait_terminal(created["id"].as_str().unwrap()).await;
    assert_eq!((done["status"].as_str(), done["result"].as_str()), (Some("succeeded"), Some("HI")));
    assert!(done["worker"].as_str().unwrap().starts_with("shouter/w"), "{done}");

    worker.shutdown().await;
    let gone = poll(|| async {
        let resp = api_only.post("/v1/jobs", spec.clone()).await;
        (resp.status == 400).then_some(resp.code().to_owned())
    })
    .await;
    assert_eq!(gone.as_deref(), Some("unknown_kind"), "its last handler left");
    api_only.shutdown().await;
}
