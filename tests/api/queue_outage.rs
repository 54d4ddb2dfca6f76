//! The Redis queue when Redis misbehaves: a frozen Redis makes submits answer 503 with
//! `Retry-After` (never a hang), readiness says so, and work resumes by itself when it answers
//! again; an attempt that ended meanwhile is recorded then, not run again. Also: a Redis that
//! may evict any key is refused at start.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use jobyard::config::{QueueBackendKind, RedisUrl};
use jobyard::startup::{Server, StartupError};
use serde_json::json;
use tokio::sync::{mpsc, Mutex, Notify};

use crate::helpers::*;
use crate::redis_support::TestRedis;

fn on_redis(redis: &TestRedis) -> impl FnOnce(&mut jobyard::Config) + '_ {
    move |c| {
        c.redis_url = Some(RedisUrl::parse(&redis.url()).unwrap());
        c.redis_prefix = format!("t{}", fastrand::u32(..));
        c.queue_backend = QueueBackendKind::Redis;
        c.queue_timeout = Duration::from_millis(300);
    }
}

#[actix_web::test]
async fn a_frozen_redis_answers_503_and_work_resumes_when_it_returns() {
    let redis = On::redis();
    let On::Redis(server) = &redis else { unreachable!() };
    let app = spawn_app_with(on_redis(server)).await;
    let before = app.submit(json!({"kind": "noop"})).await;
    app.wait_terminal(before["id"].as_str().unwrap()).await;

    server.pause();
    let refused = app.post("/v1/jobs", json!({"kind": "noop"})).await;
    assert_eq!((refused.status, refused.code()), (503, "backend_unavailable"), "{}", refused.body);
    assert!(refused.header("retry-after").is_some(), "503 says when to retry");
    let batch = app.post("/v1/jobs/batch", json!({"jobs": [{"kind": "noop"}]})).await;
    assert_eq!(batch.status, 503);
    let ready = app.get("/ready").await;
    assert_eq!((ready.status, ready.code()), (503, "backend_unavailable"));

    server.resume();
    let accepted = poll(|| async {
        let resp = app.post("/v1/jobs", json!({"kind": "noop"})).await;
        (resp.status == 201).then_some(resp.body)
    })
    .await
    .expect("submits are accepted again once Redis answers");
    let done = app.wait_terminal(accepted["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "workers resumed without a restart");
    assert_eq!(app.get("/ready").await.status, 200);
}

/// A loopback server whose `/hold` answers only when the test lets it, and tells the test when
/// a request arrived.
async fn holding_server() -> (String, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (arrived, arrivals) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let state = web::Data::new((Mutex::new(arrived), release.clone()));
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).route(
            "/hold",
            web::post().to(
                |state: web::Data<(Mutex<mpsc::UnboundedSender<()>>, Arc<Notify>)>| async move {
                    let released = state.1.notified();
                    let _ = state.0.lock().await.send(());
                    released.await;
                    HttpResponse::Ok().body("released")
                },
            ),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}/hold", server.addrs()[0]);
    actix_rt::spawn(server.run());
    (url, arrivals, release)
}

#[actix_web::test]
async fn an_attempt_that_ends_while_redis_is_frozen_is_recorded_when_it_returns() {
    let redis = On::redis();
    let On::Redis(server) = &redis else { unreachable!() };
    let app = spawn_app_with(on_redis(server)).await;
    let (url, mut arrivals, release) = holding_server().await;
    let job = app.submit(json!({"kind": "http", "payload": {"method": "POST", "url": url}})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    within(DEADLINE, arrivals.recv()).await.expect("the handler called the server");

    server.pause();
    release.notify_waiters();
    // The attempt ends while Redis is frozen: its slot frees, its completion cannot be stored.
    let idle = poll(|| async {
        let workers = app.runtime.workers().await.ok()?;
        (workers.busy == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "the attempt ended");
    server.resume();

    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 1, "recorded once Redis answered, not run again");
    assert!(arrivals.try_recv().is_err(), "the handler ran once");
}

#[actix_web::test]
async fn a_redis_that_may_evict_any_key_is_refused_for_the_queue() {
    let redis = TestRedis::start();
    let set = |policy: &str| {
        let reply = redis.command(&[b"CONFIG", b"SET", b"maxmemory-policy", policy.as_bytes()]);
        assert!(reply.starts_with(b"+OK"), "{}", String::from_utf8_lossy(&reply));
    };
    set("allkeys-lru");
    let mut config = test_config();
    on_redis(&redis)(&mut config);
    let builder = jobyard::Runtime::builder().with_builtin_kinds();
    let err = Server::build_with(config.clone(), builder).await.err().expect("refused");
    assert!(matches!(err, StartupError::Runtime(jobyard::RuntimeError::RedisQueue(_))), "{err}");
    let message = err.to_string();
    assert!(message.contains("allkeys-lru") && message.contains("volatile-"), "{message}");

    // A volatile-* policy evicts only keys with a TTL (cache entries): the queue may share it.
    set("volatile-lru");
    let builder = jobyard::Runtime::builder().with_builtin_kinds();
    let app = spawn_app_from(config, builder).await;
    let job = app.submit(json!({"kind": "noop"})).await;
    app.wait_terminal(job["id"].as_str().unwrap()).await;
}

/// A claim that Redis ran while its answer was lost (here: the call timed out on a frozen
/// Redis, which ran it once thawed) gives the instance jobs it does not know it holds. Its next
/// claim takes them back first, with no attempt counted, instead of leaving them to a lease that
/// nobody renews.
#[actix_web::test]
async fn jobs_of_a_claim_whose_answer_was_lost_are_taken_back() {
    use jobyard::queue::Claim;

    let redis = TestRedis::start();
    let queue = crate::queue_backends::redis_queue(&redis, "lost").await;
    let claim = Claim {
        workers: vec![Arc::from("lost-host-1/w0")],
        lease: Duration::from_secs(600),
        kinds: vec![Arc::from("noop")].into(),
    };
    // A first claim loads the script (a script Redis does not know yet is loaded on a second
    // round trip, which a lost answer would never make).
    assert!(queue.dequeue(claim.clone(), chrono::Utc::now()).await.unwrap().is_empty());
    let jobs =
        crate::queue_backends::plan_batch(vec![jobyard::JobSpec::new("noop")], chrono::Utc::now());
    let id = queue.submit(jobs, chrono::Utc::now()).await.unwrap().jobs[0].record.id;

    redis.pause();
    assert!(queue.dequeue(claim.clone(), chrono::Utc::now()).await.is_err(), "the claim times out");
    redis.resume();
    let stuck = poll(|| async {
        let record = queue.get(id).await.ok()??;
        (record.status == jobyard::JobStatus::Running).then_some(record)
    })
    .await
    .expect("Redis ran the claim once thawed");
    assert_eq!(stuck.worker.as_deref(), Some("lost-host-1/w0"));

    let claimed = queue.dequeue(claim, chrono::Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 1, "the job is claimed again at once, not after its lease");
    assert_eq!((claimed[0].record.id, claimed[0].record.attempts), (id, 1), "no attempt counted");
}
