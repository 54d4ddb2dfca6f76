//! A fake upstream API on a free loopback port for the tools tests: it records every request
//! (when it came, its conditional and authorization headers) and answers as the test sets it:
//! a body with an ETag (304 on a matching `If-None-Match`), extra headers (rate limits), a
//! forced status (429, 500), a delay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::{DateTime, Utc};

/// One request the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: DateTime<Utc>,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
}

/// How the upstream answers; change it at any time.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub body: String,
    /// Extra headers on every answer. `{reset+N}` in a value is replaced by the epoch seconds
    /// N seconds after the answer.
    pub headers: Vec<(String, String)>,
    /// Answer this status (with the extra headers) instead of the body.
    pub status: Option<u16>,
    pub delay: Duration,
}

impl Behaviour {
    fn etag(&self) -> String {
        format!(
            "\"up-{}\"",
            self.body.len() * 31 + self.body.bytes().map(usize::from).sum::<usize>()
        )
    }
}

#[derive(Clone)]
pub struct FakeUpstream {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl FakeUpstream {
    pub async fn start(body: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            body: body.to_owned(),
            headers: Vec::new(),
            status: None,
            delay: Duration::ZERO,
        }));
        let (s, b) = (seen.clone(), behaviour.clone());
        let server = HttpServer::new(move || {
            let (seen, behaviour) = (s.clone(), b.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (seen, behaviour) = (seen.clone(), behaviour.clone());
                async move { answer(req, &seen, &behaviour).await }
            }))
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .expect("bind the fake upstream");
        let url = format!("http://{}/data", server.addrs()[0]);
        actix_rt::spawn(server.run());
        FakeUpstream { url, seen, behaviour }
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().unwrap());
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    req: HttpRequest,
    seen: &Mutex<Vec<Seen>>,
    behaviour: &Mutex<Behaviour>,
) -> HttpResponse {
    let header =
        |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // The behaviour is taken before the request is counted: a test that changes it once it
    // sees a request changes the answers of later requests only, never that one's.
    let now_behaviour = behaviour.lock().unwrap().clone();
    seen.lock().unwrap().push(Seen {
        at: Utc::now(),
        if_none_match: header("if-none-match"),
        authorization: header("authorization"),
    });
    if !now_behaviour.delay.is_zero() {
        tokio::time::sleep(now_behaviour.delay).await;
    }
    let etag = now_behaviour.etag();
    let status = match now_behaviour.status {
        Some(status) => status,
        None if header("if-none-match").as_deref() == Some(etag.as_str()) => 304,
        None => 200,
    };
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a status"));
    for (name, value) in &now_behaviour.headers {
        let value = match value.strip_prefix("{reset+").and_then(|v| v.strip_suffix('}')) {
            Some(secs) => (Utc::now().timestamp() + secs.parse::<i64>().unwrap()).to_string(),
            None => value.clone(),
        };
        response.insert_header((name.as_str(), value));
    }
    match status {
        200 => response
            .insert_header(("etag", etag))
            .content_type("application/json")
            .body(now_behaviour.body),
        304 => response.insert_header(("etag", etag)).finish(),
        _ => response.finish(),
    }
}
