//! Hostile clients: slow and greedy connections, text that would forge log lines, requests the
//! HTTP layer refuses before any handler runs, and the headers a 405, a HEAD and a 401 owe.
//! Raw sockets on loopback where awc would not send what a hostile client sends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::rt::net::TcpStream;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::EnvFilter;

use crate::helpers::*;

/// How long a test waits for what the server bounds with its own timeouts (seconds each):
/// generous, a bound on a hang and never a measure.
const SLOW: Duration = Duration::from_secs(90);

/// An answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Value,
}

impl Raw {
    /// The answer at the start of `bytes`, once whole (by its `content-length`).
    fn parse(bytes: &[u8]) -> Option<Raw> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse::<usize>().expect("a numeric content-length"));
        let body = bytes.get(end + 4..end + 4 + length)?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Raw { status, head, body: serde_json::from_slice(body).unwrap_or(Value::Null) })
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error body>")
    }

    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}:");
        self.head.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim)
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.expect("connects")
}

/// Everything the server sends until it closes the connection (or resets it).
async fn read_to_close(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` on a new connection and returns the one answer before the server closes.
async fn one_shot(app: &TestApp, request: &[u8]) -> Raw {
    let mut stream = connect(app).await;
    stream.write_all(request).await.expect("request sent");
    let bytes = within(SLOW, read_to_close(&mut stream)).await.expect("the server closes");
    Raw::parse(&bytes)
        .unwrap_or_else(|| panic!("no whole answer: {:?}", String::from_utf8_lossy(&bytes)))
}

/// Reads one answer off a connection that stays open.
async fn read_answer(stream: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    let mut buf = [0; 4096];
    let answer = within(DEADLINE, async {
        loop {
            if let Some(answer) = Raw::parse(&bytes) {
                return answer;
            }
            let n = stream.read(&mut buf).await.expect("readable");
            assert!(n > 0, "closed mid-answer: {:?}", String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&buf[..n]);
        }
    });
    answer.await.expect("an answer in time")
}

/// Sends `start`, then one byte of `drip` a second, for as long as the server keeps the
/// connection open; returns what it sent back before closing.
async fn trickle(stream: TcpStream, start: &[u8], drip: u8) -> Vec<u8> {
    let (mut read, mut write) = stream.into_split();
    write.write_all(start).await.expect("start sent");
    let dripping = async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        while write.write_all(&[drip]).await.is_ok() {
            every.tick().await;
        }
        std::future::pending::<()>().await
    };
    let closed = within(SLOW, async {
        tokio::select! {
            bytes = read_to_close(&mut read) => bytes,
            _ = dripping => unreachable!(),
        }
    });
    closed.await.unwrap_or_else(|| panic!("the connection was still open after {SLOW:?}"))
}

#[actix_web::test]
async fn a_body_sent_a_byte_a_second_is_answered_408_and_the_connection_closed() {
    let app = spawn_app().await;
    let head = b"POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: 100000\r\n\r\n{\"kind\":\"noop\",\"payload\":\"";
    let bytes = trickle(connect(&app).await, head, b'x').await;
    let answer = Raw::parse(&bytes).expect("an answer before the close");
    assert_eq!((answer.status, answer.code()), (408, "request_timeout"), "{answer:?}");
    assert_eq!(app.get("/health").await.status, 200, "the server still serves");
}

#[actix_web::test]
async fn a_kept_alive_connection_trickling_its_next_head_is_closed() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 200);
    // actix-web bounds the first head only: this one used to keep the connection forever.
    let bytes = trickle(stream, b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ", b'a').await;
    if let Some(answer) = Raw::parse(&bytes) {
        assert_eq!((answer.status, answer.code()), (408, "request_timeout"), "{answer:?}");
    }
}

#[actix_web::test]
async fn a_peer_gets_no_more_than_its_share_of_connections() {
    const EXTRA: usize = 4;
    const SHARE: usize = 16;
    let app = spawn_app_with(|c| c.max_connections_per_peer = SHARE).await;
    // Idle connections: the server answers each it keeps 408 when its head does not come,
    // and closes those beyond the share without a word.
    let mut writers = Vec::new();
    let mut closed = FuturesUnordered::new();
    for i in 0..SHARE + EXTRA {
        let (mut read, write) = connect(&app).await.into_split();
        writers.push(Some(write));
        closed.push(async move { (i, within(SLOW, read_to_close(&mut read)).await) });
    }
    let mut refused = Vec::new();
    while refused.len() < EXTRA {
        let (i, bytes) = closed.next().await.expect("connections left");
        let bytes = bytes.unwrap_or_else(|| panic!("connection {i} still open after {SLOW:?}"));
        assert!(bytes.is_empty(), "a kept connection ended before the refused ones were seen");
        refused.push(i);
    }
    // A few kept connections close: a fresh connection is served again.
    let mut kept = (0..writers.len()).filter(|i| !refused.contains(i));
    for i in kept.by_ref().take(EXTRA) {
        writers[i] = None;
    }
    let served = poll(|| async {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        Raw::parse(&read_to_close(&mut stream).await).filter(|a| a.status == 200)
    });
    assert!(served.await.is_some(), "a fresh connection was never served again");
    // Every other kept connection was served: answered 408 with the error body.
    while let Some((i, bytes)) = closed.next().await {
        let bytes = bytes.unwrap_or_else(|| panic!("connection {i} still open after {SLOW:?}"));
        if let Some(answer) = Raw::parse(&bytes) {
            assert_eq!((answer.status, answer.code()), (408, "request_timeout"));
        } else {
            assert!(writers[i].is_none(), "connection {i} was refused beyond the share: {bytes:?}");
        }
    }
}

/// A buffer to log into.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The worker's log of a failed attempt, read by a plain tracing-subscriber (as an embedder
/// would install): the job's error stays on its line. The subscriber is this thread's only,
/// which is where the worker pool runs.
#[actix_web::test]
async fn a_job_error_cannot_forge_a_log_line() {
    let log = LogBuffer::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _scope = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    let forged = "boom\n2026-01-01T00:00:00Z ERROR forged\r\x1b[2K";
    let job = app
        .submit(json!({"kind": "fail", "payload": {"message": forged, "retryable": false}}))
        .await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!((done["status"].as_str(), done["error"].as_str()), (Some("failed"), Some(forged)));
    let text = log.text();
    assert!(
        text.contains(r"attempt failed: boom\n2026-01-01T00:00:00Z ERROR forged\r\u{1b}[2K"),
        "{text}"
    );
    assert!(!text.lines().any(|line| line.starts_with("2026-01-01")), "a forged line: {text}");
}

/// The server's own text log: every field escaped whatever the call site, and the dispatcher's
/// error about a client's malformed request dropped (its events, as actix-http 3 logs them).
#[test]
fn the_text_log_keeps_each_event_on_one_line_and_client_garbage_out_of_errors() {
    let log = LogBuffer::default();
    let writer = log.clone();
    let subscriber =
        jobyard::telemetry::text_subscriber(move || writer.clone(), EnvFilter::new("info"), false);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("job", kind = %"evil\nkind");
        let _entered = span.enter();
        tracing::warn!(schedule = %"a\r\nb", "attempt failed: {}", "c\nd\u{2028}e");
        tracing::error!(
            target: "actix_http::h1::dispatcher",
            "stream error: {}",
            "request parse error: invalid Header provided"
        );
        tracing::error!(target: "actix_http::h1::dispatcher", "Response payload stream error: x");
    });
    let text = log.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(r"attempt failed: c\nd\u{2028}e"), "{text}");
    assert!(lines[0].contains(r"schedule=a\r\nb") && lines[0].contains(r"evil\nkind"), "{text}");
    assert!(!text.contains("request parse error"), "{text}");
    assert!(lines[1].contains("Response payload stream error"), "{text}");
}

#[actix_web::test]
async fn answers_the_http_layer_makes_itself_carry_the_error_body() {
    let app = spawn_app().await;
    let many_headers: String = (0..120).map(|i| format!("x-{i}: a\r\n")).collect();
    let cases = [
        (b"GET /health HTTP/9.9\r\nhost: x\r\n\r\n".to_vec(), 400, "invalid_request"),
        (b"GET /he\x01lth HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(), 400, "invalid_request"),
        (b"GET /health HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_vec(), 400, "invalid_request"),
        (
            format!("GET /health HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "invalid_request",
        ),
    ];
    for (request, status, code) in cases {
        let answer = one_shot(&app, &request).await;
        let shown = String::from_utf8_lossy(&request[..20]);
        assert_eq!((answer.status, answer.code()), (status, code), "{shown}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"), "{shown}");
    }
    // A head that never ends: 408 once the server stops waiting.
    let slow = one_shot(&app, b"GET /health HTTP/1.1\r\nhost: x\r\n").await;
    assert_eq!((slow.status, slow.code()), (408, "request_timeout"), "{slow:?}");
    // Garbage after a request answered on the same connection.
    let mut stream = connect(&app).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 200);
    stream.write_all(b"\x00\x01 garbage\r\n\r\n").await.unwrap();
    let bytes = within(SLOW, read_to_close(&mut stream)).await.expect("the server closes");
    let answer = Raw::parse(&bytes).expect("an answer");
    assert_eq!((answer.status, answer.code()), (400, "invalid_request"), "{answer:?}");
}

fn methods(allow: Option<&str>) -> Vec<&str> {
    let mut methods: Vec<&str> = allow.unwrap_or("").split(',').map(str::trim).collect();
    methods.sort_unstable();
    methods
}

#[actix_web::test]
async fn a_405_says_what_is_allowed_and_head_is_get_without_the_body() {
    let app = spawn_app().await;
    let resp = app.delete("/health").await;
    assert_eq!((resp.status, resp.code()), (405, "method_not_allowed"));
    assert_eq!(methods(resp.header("allow")), ["GET", "HEAD"]);
    let resp = app.delete("/v1/jobs").await;
    assert_eq!(methods(resp.header("allow")), ["GET", "HEAD", "POST"]);
    let resp = app.get("/v1/jobs/batch").await;
    assert_eq!((resp.status, resp.header("allow")), (405, Some("POST")));
    let resp = app.send(app.http.patch(format!("{}/v1/cache/invalidate", app.base)), None).await;
    assert_eq!(methods(resp.header("allow")), ["DELETE", "GET", "HEAD", "POST", "PUT"]);

    let job = app.submit(json!({"kind": "noop"})).await;
    for path in ["/health".to_owned(), format!("/v1/jobs/{}", job["id"].as_str().unwrap())] {
        let get = app.get(&path).await;
        let head = app.send(app.http.head(format!("{}{path}", app.base)), None).await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert_eq!(head.body, Value::Null, "HEAD {path} has no body");
        assert_eq!(head.header("content-type"), Some("application/json"), "HEAD {path}");
        let length = get.body.to_string().len().to_string();
        assert_eq!(head.header("content-length"), Some(length.as_str()), "HEAD {path}");
    }
    let mut stream = connect(&app).await;
    stream.write_all(b"HEAD /v1/nothing HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let head = within(DEADLINE, async {
        let mut bytes = Vec::new();
        let mut buf = [0; 1024];
        while !bytes.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            bytes.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(bytes).unwrap()
    });
    let head = head.await.expect("a head");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[actix_web::test]
async fn a_401_names_the_bearer_scheme() {
    let app = spawn_app_with(|c| c.api_token = Some(jobyard::config::Secret::new("s3cret"))).await;
    let resp = app.get("/v1/stats").await;
    assert_eq!((resp.status, resp.code()), (401, "unauthorized"));
    let challenge = resp.header("www-authenticate").unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "WWW-Authenticate: {challenge:?}");
}
