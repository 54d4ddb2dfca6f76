//! The Redis backends end to end, against a private `redis-server`: compression, corrupt
//! bytes, coherence between two instances, Redis killed and restarted under requests, a
//! server restart keeping entries, and the warming job.

use jobyard::config::{CacheBackendKind, Config};
use serde_json::{json, Value};

use crate::cache_backends::redis_url;
use crate::helpers::*;
use crate::redis_support::TestRedis;

/// A server using `redis` for its cache under `prefix`, with memory queues.
async fn spawn_with_redis(
    redis: &TestRedis,
    prefix: &str,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let url = redis.url();
    spawn_app_with(|c| {
        c.redis_url = Some(redis_url(&url));
        c.redis_prefix = prefix.to_owned();
        c.cache_backend = CacheBackendKind::Hybrid;
        adjust(c);
    })
    .await
}

fn value_key(prefix: &str, key: &str) -> Vec<u8> {
    format!("{prefix}:cache:v:{key}").into_bytes()
}

/// A JSON document of `size` bytes or so, like an upstream API's answer.
fn json_body(size: usize) -> Vec<u8> {
    let item = r#"{"id":12345,"title":"Fix the flaky build","state":"open","labels":["bug","ci"],"author":"octocat"},"#;
    let mut body = b"[".to_vec();
    while body.len() + item.len() < size {
        body.extend_from_slice(item.as_bytes());
    }
    body.extend_from_slice(b"{}]");
    body
}

async fn put(app: &TestApp, key: &str, body: &[u8]) {
    let resp = app.put_raw(&format!("/v1/cache/{key}"), "application/json", body).await;
    assert_eq!(resp.status, 204, "PUT {key}: {}", resp.body);
}

#[actix_web::test]
async fn compressed_values_round_trip_and_are_smaller_in_redis() {
    let redis = TestRedis::start();
    let writer = spawn_with_redis(&redis, "cmp", |_| {}).await;
    let body = json_body(64 * 1024);
    put(&writer, "pulls", &body).await;
    let stored =
        String::from_utf8(redis.command(&[b"STRLEN", &value_key("cmp", "pulls")])).unwrap();
    let stored: usize = stored.trim_start_matches(':').trim().parse().unwrap();
    assert!(stored < body.len() / 4, "stored {stored} bytes for {}", body.len());
    // A second instance has nothing in its L1: it reads (and inflates) what Redis holds.
    let reader = spawn_with_redis(&redis, "cmp", |_| {}).await;
    let raw = reader.http.get(format!("{}/v1/cache/pulls", reader.base)).send().await;
    let bytes = raw.unwrap().body().limit(1 << 20).await.unwrap();
    assert_eq!(&bytes[..], &body[..]);
}

#[actix_web::test]
async fn tag_indexes_hold_only_live_keys() {
    let redis = TestRedis::start();
    let app = spawn_with_redis(&redis, "tags", |_| {}).await;
    for i in 0..10 {
        let resp = app
            .put_raw(&format!("/v1/cache/short{i}?ttl_secs=1&tags=t"), "application/json", b"1")
            .await;
        assert_eq!(resp.status, 204);
    }
    let expired =
        poll(|| async { (app.get("/v1/cache/short9").await.status == 404).then_some(()) }).await;
    assert!(expired.is_some());
    app.put_raw("/v1/cache/long?ttl_secs=600&tags=t", "application/json", b"1").await;
    assert_eq!(
        redis.command(&[b"ZCARD", b"tags:cache:t:t"]),
        b":1\r\n",
        "expired members were trimmed"
    );
}

#[actix_web::test]
async fn corrupt_bytes_under_a_key_read_as_a_miss() {
    let redis = TestRedis::start();
    let app = spawn_with_redis(&redis, "bad", |_| {}).await;
    redis.command(&[b"SET", &value_key("bad", "garbage"), b"not a jobyard value"]);
    redis.command(&[b"SET", &value_key("bad", "truncated"), b"JY\x01\x01\xff\xff\xff\x7f{"]);
    redis.command(&[b"SET", &value_key("bad", "future"), b"JY\x09\x00\x02\x00\x00\x00{}"]);
    redis.command(&[b"RPUSH", &value_key("bad", "list"), b"1"]);
    // Garbage on the invalidation channel is ignored, not a crash.
    redis.command(&[b"PUBLISH", b"bad:cache:events", b"{not an event"]);
    for key in ["garbage", "truncated", "future", "list"] {
        let resp = app.get(&format!("/v1/cache/{key}")).await;
        assert_eq!(resp.status, 404, "{key}");
    }
    let stats = app.get("/v1/stats").await;
    assert_eq!(stats.body["cache"]["redis"]["corrupt"], 4);
    assert_eq!(app.get("/health").await.status, 200);
}

/// Foreign data under our keys may carry a time HTTP dates cannot express (past year 9999):
/// the value is served, with a `Last-Modified` no later than now.
#[actix_web::test]
async fn a_stored_time_past_year_9999_is_served_with_a_last_modified_of_now_at_most() {
    let redis = TestRedis::start();
    let app = spawn_with_redis(&redis, "far", |_| {}).await;
    // Year 11 476, both for when it was stored and when it expires.
    let meta = br#"{"ct":"application/json","etag":"\"x\"","at":300000000000000,"exp":300000000000000,"tags":[]}"#;
    let mut bytes = b"JY\x01\x00".to_vec();
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(meta);
    bytes.extend_from_slice(b"[1]");
    redis.command(&[b"SET", &value_key("far", "future"), &bytes]);
    let resp = app.get("/v1/cache/future").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body, json!([1]));
    let modified = resp.header("last-modified").expect("a Last-Modified header");
    let modified = chrono::DateTime::parse_from_rfc2822(modified).expect("an HTTP date");
    assert!(modified <= chrono::Utc::now(), "Last-Modified {modified} lies in the future");
}

#[actix_web::test]
async fn two_instances_share_values_and_invalidations() {
    let redis = TestRedis::start();
    let a = spawn_with_redis(&redis, "shared", |_| {}).await;
    let b = spawn_with_redis(&redis, "shared", |_| {}).await;
    put(&a, "k", b"1").await;
    assert_eq!(b.get("/v1/cache/k").await.body, json!(1), "B reads what A wrote");
    // Once B's subscription is live, its reads fill its L1; A's delete must then reach it.
    let in_l1 = poll(|| async {
        b.get("/v1/cache/k").await;
        (b.get("/v1/stats").await.body["cache"]["memory"]["entries"].as_u64() >= Some(1))
            .then_some(())
    })
    .await;
    assert!(in_l1.is_some(), "B never kept k in L1");
    assert_eq!(a.delete("/v1/cache/k").await.status, 204);
    let gone = poll(|| async { (b.get("/v1/cache/k").await.status == 404).then_some(()) }).await;
    assert!(gone.is_some(), "B still serves an entry A deleted");

    put(&a, "v", b"1").await;
    assert_eq!(b.get("/v1/cache/v").await.body, json!(1));
    put(&a, "v", b"2").await;
    let fresh =
        poll(|| async { (b.get("/v1/cache/v").await.body == json!(2)).then_some(()) }).await;
    assert!(fresh.is_some(), "B still serves the value A replaced");

    put(&a, "tool:x:1", b"1").await;
    let tagged = a.put_raw("/v1/cache/t1?tags=github", "application/json", b"1").await;
    assert_eq!(tagged.status, 204);
    assert_eq!(b.get("/v1/cache/tool:x:1").await.status, 200);
    assert_eq!(b.get("/v1/cache/t1").await.status, 200);
    let removed =
        a.post("/v1/cache/invalidate", json!({"prefix": "tool:x:", "tags": ["github"]})).await;
    assert_eq!(removed.body, json!({"removed": 2}));
    let gone = poll(|| async {
        let (x, t) = (b.get("/v1/cache/tool:x:1").await.status, b.get("/v1/cache/t1").await.status);
        (x == 404 && t == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "B still serves entries A invalidated");
}

async fn readiness(app: &TestApp) -> (u16, Value) {
    let resp = app.get("/ready").await;
    (resp.status, resp.body)
}

#[actix_web::test]
async fn a_redis_outage_degrades_to_memory_and_heals_by_itself() {
    let mut redis = TestRedis::start();
    let app = spawn_with_redis(&redis, "outage", |_| {}).await;
    let peer = spawn_with_redis(&redis, "outage", |_| {}).await;
    put(&app, "before", b"1").await;
    assert_eq!(app.get("/v1/cache/before").await.status, 200);
    redis.stop();

    // Every request still answers, and none with a 5xx.
    for round in 0..20 {
        let key = format!("during{round}");
        for resp in [
            app.get("/v1/cache/before").await,
            app.get("/v1/cache/missing").await,
            app.put_raw(&format!("/v1/cache/{key}"), "application/json", b"2").await,
            app.get(&format!("/v1/cache/{key}")).await,
            app.post("/v1/cache/invalidate", json!({"prefix": "nothing:", "tags": ["t"]})).await,
        ] {
            assert!(resp.status < 500, "round {round}: {} {}", resp.status, resp.body);
        }
        assert_eq!(app.get(&format!("/v1/cache/{key}")).await.body, json!(2), "served from memory");
    }
    let degraded = poll(|| async {
        let (status, body) = readiness(&app).await;
        (body["status"] == "degraded").then_some((status, body))
    })
    .await
    .expect("readiness reports degraded");
    assert_eq!(degraded.0, 200, "a degraded cache is still ready");
    assert_eq!(degraded.1["components"]["redis"], "down");
    assert_eq!(app.get("/v1/stats").await.body["backends"]["redis"], "down");

    redis.restart();
    let healed =
        poll(|| async { (readiness(&app).await.1["status"] == "ready").then_some(()) }).await;
    assert!(healed.is_some(), "the instance came back without a restart");
    // What was only in memory during the outage is dropped, not trusted.
    assert_eq!(app.get("/v1/cache/during0").await.status, 404);
    put(&app, "after", b"3").await;
    assert_eq!(
        redis.command(&[b"EXISTS", &value_key("outage", "after")]),
        b":1\r\n",
        "writes reach Redis again"
    );
    let stats = app.get("/v1/stats").await.body;
    assert!(stats["cache"]["redis"]["fallbacks"].as_u64().unwrap() > 0);
    assert!(stats["cache"]["redis"]["reconnects"].as_u64().unwrap() >= 1);
    // Coherence is back too: the subscription was re-established after the outage.
    let coherent = poll(|| async {
        // The peer reconnects on its own schedule; until then it reads from memory.
        if peer.get("/v1/cache/after").await.status != 200 {
            return None;
        }
        put(&app, "after", b"4").await;
        let seen = peer.get("/v1/cache/after").await.body == json!(4);
        put(&app, "after", b"3").await;
        seen.then_some(())
    })
    .await;
    assert!(coherent.is_some(), "the peer never heard the change after the outage");
}

#[actix_web::test]
async fn a_hung_redis_never_hangs_a_request() {
    let redis = TestRedis::start();
    let app = spawn_with_redis(&redis, "hung", |_| {}).await;
    // L1 takes entries once the invalidation subscription is live (within milliseconds).
    let in_l1 = poll(|| async {
        put(&app, "k", b"1").await;
        let stats = app.get("/v1/stats").await.body;
        (stats["cache"]["memory"]["entries"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    assert!(in_l1.is_some(), "k never entered L1");
    redis.pause();
    // Each request must end well within a deadline; a request waiting on the frozen Redis
    // without a timeout would not.
    for round in 0..10 {
        let answered = within(std::time::Duration::from_secs(5), async {
            let hit = app.get("/v1/cache/k").await;
            let miss = app.get(&format!("/v1/cache/missing{round}")).await;
            let write = app.put_raw(&format!("/v1/cache/w{round}"), "application/json", b"1").await;
            (hit.status, miss.status, write.status)
        })
        .await;
        assert_eq!(answered, Some((200, 404, 204)), "round {round}");
    }
    let degraded =
        poll(|| async { (readiness(&app).await.1["status"] == "degraded").then_some(()) }).await;
    assert!(degraded.is_some(), "a hung redis is noticed");
    redis.resume();
    let healed =
        poll(|| async { (readiness(&app).await.1["status"] == "ready").then_some(()) }).await;
    assert!(healed.is_some());
}

#[actix_web::test]
async fn instances_started_while_redis_was_down_recover_and_stay_coherent() {
    let mut redis = TestRedis::start();
    redis.stop();
    let a = spawn_with_redis(&redis, "late", |_| {}).await;
    let b = spawn_with_redis(&redis, "late", |_| {}).await;
    assert_eq!(readiness(&a).await.1["status"], "degraded");
    redis.restart();
    for app in [&a, &b] {
        let healed =
            poll(|| async { (readiness(app).await.1["status"] == "ready").then_some(()) }).await;
        assert!(healed.is_some(), "came back without a restart");
    }
    // The subscription comes up with the link; retry until B hears A's invalidations.
    let coherent = poll(|| async {
        put(&a, "k", b"1").await;
        if b.get("/v1/cache/k").await.status != 200 {
            return None;
        }
        a.delete("/v1/cache/k").await;
        for _ in 0..50 {
            if b.get("/v1/cache/k").await.status == 404 {
                return Some(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        None
    })
    .await;
    assert!(coherent.is_some(), "B never heard A's delete");
}

#[actix_web::test]
async fn warming_with_redis_down_loads_nothing_and_does_not_fail_the_start() {
    let mut redis = TestRedis::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let doc = json!({"saved_at": null, "keys": [{"key": "k1", "reads": 10}]});
    std::fs::write(dir.join("cache-warming.json"), doc.to_string()).unwrap();
    redis.stop();
    let app = spawn_with_redis(&redis, "warmdown", |c| c.data_dir = dir.clone()).await;
    let warmed = poll(|| async {
        let stats = app.get("/v1/stats").await.body;
        (stats["cache"]["redis"]["warmings"] == 1)
            .then(|| stats["cache"]["redis"]["warmed"].clone())
    })
    .await
    .expect("the warming pass ran");
    assert_eq!(warmed, 0);
    assert_eq!(app.get("/health").await.status, 200, "the server runs");
}

#[actix_web::test]
async fn the_redis_backend_serves_from_memory_only_while_redis_is_away() {
    let mut redis = TestRedis::start();
    let app = spawn_with_redis(&redis, "ro", |c| c.cache_backend = CacheBackendKind::Redis).await;
    put(&app, "k", b"1").await;
    assert_eq!(
        app.get("/v1/stats").await.body["cache"]["memory"]["entries"],
        0,
        "no memory copy while up"
    );
    redis.stop();
    put(&app, "k2", b"2").await;
    assert_eq!(app.get("/v1/cache/k2").await.body, json!(2));
    redis.restart();
    let healed =
        poll(|| async { (readiness(&app).await.1["status"] == "ready").then_some(()) }).await;
    assert!(healed.is_some());
    assert_eq!(app.get("/v1/cache/k2").await.status, 404, "the outage's memory layer was dropped");
}

#[actix_web::test]
async fn a_server_restart_keeps_redis_and_hybrid_entries() {
    let redis = TestRedis::start();
    for backend in [CacheBackendKind::Hybrid, CacheBackendKind::Redis] {
        let prefix = format!("keep-{}", backend.as_str());
        let first = spawn_with_redis(&redis, &prefix, |c| c.cache_backend = backend).await;
        put(&first, "k", b"\"kept\"").await;
        first.shutdown().await;
        let second = spawn_with_redis(&redis, &prefix, |c| c.cache_backend = backend).await;
        assert_eq!(second.get("/v1/cache/k").await.body, json!("kept"), "{backend:?}");
    }
}

#[actix_web::test]
async fn warming_fills_this_instances_l1_with_the_last_run_hottest_keys() {
    let redis = TestRedis::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let first = spawn_with_redis(&redis, "warm", |c| c.data_dir = dir.clone()).await;
    let keys: Vec<String> = (0..5).map(|i| format!("hot{i}")).collect();
    for key in &keys {
        put(&first, key, b"1").await;
    }
    for _ in 0..200 {
        for key in &keys {
            first.get(&format!("/v1/cache/{key}")).await;
        }
    }
    first.shutdown().await;
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(dir.join("cache-warming.json")).unwrap()).unwrap();
    assert_eq!(recorded["keys"].as_array().unwrap().len(), 5);

    let second = spawn_with_redis(&redis, "warm", |c| c.data_dir = dir.clone()).await;
    let warmed = poll(|| async {
        let stats = second.get("/v1/stats").await.body;
        (stats["cache"]["redis"]["warmings"] == 1)
            .then(|| stats["cache"]["redis"]["warmed"].clone())
    })
    .await
    .expect("a warming pass ran at start");
    assert_eq!(warmed, 5);
    let before = second.get("/v1/stats").await.body["cache"].clone();
    for key in &keys {
        assert_eq!(second.get(&format!("/v1/cache/{key}")).await.status, 200);
    }
    let after = second.get("/v1/stats").await.body["cache"].clone();
    let l1_hits =
        after["memory"]["hits"].as_u64().unwrap() - before["memory"]["hits"].as_u64().unwrap();
    assert_eq!(l1_hits, 5, "every hot key was already in L1");
    assert_eq!(after["redis"]["hits"], before["redis"]["hits"], "none was read from Redis");
}

/// A job's result is a key no instance holds yet: storing it tells no other instance to drop
/// anything (an ordinary write does).
#[actix_web::test]
async fn storing_a_new_key_publishes_no_invalidation() {
    use futures_util::StreamExt;
    use jobyard::cache::{self, Entry};

    let redis = TestRedis::start();
    let mut config = test_config();
    config.cache_backend = CacheBackendKind::Hybrid;
    let client = crate::cache_backends::redis_client(&mut config, &redis).await;
    let cache = cache::build(&config, Some(&client));
    let mut events = ::redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .expect("a subscriber connection");
    events.subscribe(format!("{}:cache:events", config.redis_prefix)).await.unwrap();
    let mut messages = events.into_on_message();

    let entry = || {
        Entry::new(b"1".to_vec(), "application/json", std::time::Duration::from_secs(60), vec![])
    };
    cache.insert_new("jobs:42:result", entry()).await;
    cache.set("ordinary", entry()).await;
    let first = within(DEADLINE, messages.next()).await.flatten().expect("the write's message");
    let payload = String::from_utf8(first.get_payload_bytes().to_vec()).unwrap();
    assert!(payload.contains("ordinary"), "the first message is the ordinary write's: {payload}");
    assert!(!payload.contains("jobs:42:result"));
    assert!(cache.get("jobs:42:result").await.is_some(), "the new key is stored all the same");
}
