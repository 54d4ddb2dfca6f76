//! Test harness: a real server on a free port (`spawn_app`), with typed request helpers and
//! polls that wait for a condition up to a deadline (never a bare sleep as synchronisation).

use std::future::Future;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use jobyard::config::{QueueBackendKind, RedisUrl};
use jobyard::runtime::RuntimeBuilder;
use jobyard::startup::{Server, ShutdownTrigger};
use jobyard::{Config, Runtime};
use serde_json::Value;

use crate::redis_support::TestRedis;

/// How long a poll waits for its condition before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A configuration for tests: any free port, everything else default. Never the process env.
pub fn test_config() -> Config {
    Config::from_lookup(|name| (name == "JOBYARD_ADDR").then(|| "127.0.0.1:0".to_owned()))
        .expect("valid test config")
}

/// The queue backend a test server runs on: tests of the job semantics run on both.
pub enum On {
    Memory,
    /// The Redis queue on a private server (each server spawned on it gets its own prefix, so
    /// they do not share jobs unless a test asks for it with [`On::spawn_shared`]).
    Redis(TestRedis),
}

impl On {
    pub fn redis() -> Self {
        On::Redis(TestRedis::start())
    }

    /// A server on this backend, with `adjust` applied to its configuration.
    pub async fn spawn(&self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        self.spawn_shared(&format!("t{}", fastrand::u32(..)), adjust).await
    }

    /// A server on this backend under `prefix`: servers with the same prefix share their jobs.
    pub async fn spawn_shared(&self, prefix: &str, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let runtime = Runtime::builder().with_builtin_kinds();
        self.spawn_runtime(prefix, adjust, runtime).await
    }

    /// A server on this backend under `prefix`, running `runtime` (with the test's own kinds).
    pub async fn spawn_runtime(
        &self,
        prefix: &str,
        adjust: impl FnOnce(&mut Config),
        runtime: RuntimeBuilder,
    ) -> TestApp {
        let mut config = test_config();
        if let On::Redis(redis) = self {
            config.redis_url = Some(RedisUrl::parse(&redis.url()).expect("test URL"));
            config.redis_prefix = prefix.to_owned();
            config.queue_backend = QueueBackendKind::Redis;
        }
        adjust(&mut config);
        spawn_app_from(config, runtime).await
    }
}

/// Runs each named `async fn(&On)` twice: on the memory queue and on the Redis queue.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[actix_web::test] async fn $name() {
                super::$name(&crate::helpers::On::Memory).await;
            } )*
        }
        mod redis {
            $( #[actix_web::test] async fn $name() {
                super::$name(&crate::helpers::On::redis()).await;
            } )*
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub http: awc::Client,
    pub runtime: Runtime,
    trigger: ShutdownTrigger,
    server: actix_rt::task::JoinHandle<std::io::Result<()>>,
}

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error body>")
    }

    pub fn field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config();
    adjust(&mut config);
    spawn_app_from(config, Runtime::builder().with_builtin_kinds()).await
}

pub async fn spawn_app_from(config: Config, runtime: RuntimeBuilder) -> TestApp {
    let server = Server::build_with(config, runtime).await.expect("server starts");
    let base = format!("http://127.0.0.1:{}", server.port());
    let runtime = server.runtime().clone();
    let trigger = server.shutdown_trigger();
    let server = actix_rt::spawn(server.run_until_stopped());
    TestApp {
        base,
        http: awc::Client::builder().timeout(Duration::from_secs(90)).finish(),
        runtime,
        trigger,
        server,
    }
}

impl TestApp {
    pub async fn send(&self, request: awc::ClientRequest, body: Option<(&str, Vec<u8>)>) -> Resp {
        let sent = match body {
            Some((content_type, bytes)) => {
                request.content_type(content_type).send_body(bytes).await
            }
            None => request.send().await,
        };
        let mut response = sent.expect("request reaches the server");
        let bytes = response.body().limit(64 << 20).await.expect("body readable");
        Resp {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(self.url(path)), None).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut request = self.http.get(self.url(path));
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        self.send(request, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.post_raw(path, "application/json", body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        self.send(self.http.post(self.url(path)), Some((content_type, body))).await
    }

    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(self.http.post(self.url(path)), None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        let bytes = body.to_string().into_bytes();
        self.send(self.http.put(self.url(path)), Some(("application/json", bytes))).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.http.delete(self.url(path)), None).await
    }

    /// Submits one job, expecting 201; returns the job.
    pub async fn submit(&self, spec: Value) -> Value {
        let resp = self.post("/v1/jobs", spec.clone()).await;
        assert_eq!(resp.status, 201, "submit of {spec} answered {}", resp.body);
        resp.body
    }

    /// Submits a batch, expecting 201; returns the jobs in request order.
    pub async fn submit_batch(&self, jobs: Value) -> Vec<Value> {
        let resp = self.post("/v1/jobs/batch", serde_json::json!({ "jobs": jobs })).await;
        assert_eq!(resp.status, 201, "batch answered {}", resp.body);
        resp.body["jobs"].as_array().expect("jobs array").clone()
    }

    /// Long-polls until the job is terminal, failing after [`DEADLINE`].
    pub async fn wait_terminal(&self, id: &str) -> Value {
        let job = within(DEADLINE, async {
            loop {
                let resp = self.get(&format!("/v1/jobs/{id}/wait?timeout_ms=5000")).await;
                assert_eq!(resp.status, 200, "wait on {id}: {}", resp.body);
                if is_terminal(&resp.body) {
                    return resp.body;
                }
            }
        })
        .await;
        job.unwrap_or_else(|| panic!("job {id} not terminal within {DEADLINE:?}"))
    }

    /// Polls the job until `pred` holds, failing after [`DEADLINE`].
    pub async fn wait_until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = poll(|| async {
            let resp = self.get(&format!("/v1/jobs/{id}")).await;
            (resp.status == 200 && pred(&resp.body)).then_some(resp.body)
        })
        .await;
        found.unwrap_or_else(|| panic!("job {id} never became {what} within {DEADLINE:?}"))
    }

    /// Stops the server as SIGTERM would and waits for the graceful shutdown to end.
    pub async fn shutdown(self) -> Runtime {
        self.trigger.trigger();
        let result = within(DEADLINE, self.server).await.expect("shutdown ends in time");
        result.expect("server task").expect("server exits cleanly");
        self.runtime
    }
}

pub fn is_terminal(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// Runs `fut` for at most `limit`.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

/// Calls `check` every few milliseconds until it yields a value or [`DEADLINE`] passes.
pub async fn poll<T, F, Fut>(check: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(DEADLINE, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
