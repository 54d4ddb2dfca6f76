//! `GET /openapi.json`: the document covers every route the server registers (and nothing it
//! does not serve), and real request bodies validate against its schemas, are accepted by the
//! server, and get answers that validate too; a wrong field fails validation.

mod schema;

use jobyard::config::Secret;
use serde_json::{json, Value};

use crate::helpers::*;

const TOKEN: &str = "s3cret";

async fn spawn() -> TestApp {
    spawn_app_with(|c| c.api_token = Some(Secret::new(TOKEN))).await
}

/// The document, read as any client would: without the token (it stays open, as the probes).
async fn document(app: &TestApp) -> Value {
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(resp.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", resp.body);
    resp.body
}

/// `/v1/cache/{key:.+}` (actix's tail pattern) is `/v1/cache/{key}` in OpenAPI.
fn openapi_path(template: &str) -> String {
    let mut out = String::new();
    let mut in_name = false;
    let mut skipping = false;
    for c in template.chars() {
        match c {
            '{' => (in_name, skipping) = (true, false),
            '}' => (in_name, skipping) = (false, false),
            ':' if in_name => skipping = true,
            _ => {}
        }
        if !skipping {
            out.push(c);
        }
    }
    out
}

#[test]
fn tail_patterns_become_plain_parameters() {
    assert_eq!(openapi_path("/v1/cache/{key:.+}"), "/v1/cache/{key}");
    assert_eq!(openapi_path("/v1/jobs/{id}/wait"), "/v1/jobs/{id}/wait");
}

#[actix_web::test]
async fn every_route_served_is_documented_and_nothing_else() {
    let app = spawn().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");

    let served = jobyard::api::served_routes();
    assert!(served.len() > 30, "the route table is read from the app: {served:?}");
    let mut missing = Vec::new();
    for (method, template) in &served {
        // HEAD is answered for every GET, which the document says once in its description
        // rather than as a second operation on each path.
        let method = if *method == "HEAD" { "get" } else { &method.to_ascii_lowercase() };
        let path = openapi_path(template);
        let Some(operation) = paths.get(&path).and_then(|item| item.get(method)) else {
            missing.push(format!("{method} {path}"));
            continue;
        };
        // Open routes say so; every /v1 route needs the bearer token (the document's default).
        let security = operation.get("security").unwrap_or(&doc["security"]);
        let open = !path.starts_with("/v1/");
        assert_eq!(security == &json!([{}]), open, "{method} {path}: security {security}");
    }
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    // Operation ids name one operation each (clients generate function names from them).
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|operation| operation["operationId"].as_str().expect("an operationId"))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids repeat");

    // And the other way: every documented operation is served.
    let served: Vec<(String, String)> =
        served.iter().map(|(m, p)| (m.to_ascii_lowercase(), openapi_path(p))).collect();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let known = served.iter().any(|(m, p)| m == method && p == path);
            assert!(known, "documented but not served: {method} {path}");
        }
    }
}

#[actix_web::test]
async fn every_error_answer_is_documented_with_the_error_body() {
    let app = spawn().await;
    let doc = document(&app).await;
    let error = json!({"$ref": "#/components/schemas/Error"});
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert_eq!(schema, &error, "{method} {path} {status}");
                }
            }
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("401"), "{method} {path} documents no 401");
            }
        }
    }
    // The body the server sends does validate against it.
    let resp = app.get("/v1/jobs/not-a-uuid").await;
    assert_eq!(resp.status, 401);
    assert_valid(&doc, &error, &resp.body, "a 401's body");
}

/// The JSON schema of the request body of `method path` in the document.
fn request_schema<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &doc["paths"][path][method];
    let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} documents no JSON request body");
    schema
}

/// The JSON schema of the `status` answer of `method path`.
fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(response.is_object(), "{method} {path} documents no {status}");
    &response["content"]["application/json"]["schema"]
}

fn assert_valid(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let errors = schema::errors(doc, schema, value);
    assert!(errors.is_empty(), "{what} does not validate: {errors:?}\n{value}");
}

/// A request of the HTTP tests: its route (as documented), the path sent, its body, the answer
/// expected, and a change to the body that the schema must refuse.
struct Example {
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    wrong: (&'static str, Value),
}

fn examples() -> Vec<Example> {
    let run_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    vec![
        Example {
            method: "put",
            route: "/v1/limits/{name}",
            path: "/v1/limits/github:acme",
            body: json!({"rate": {"tokens": 5000, "per_ms": 3600000}, "concurrency": 4}),
            status: 201,
            wrong: ("concurrency", json!("four")),
        },
        Example {
            method: "put",
            route: "/v1/groups/{name}",
            path: "/v1/groups/tenant-a",
            body: json!({"weight": 3}),
            status: 200,
            wrong: ("weight", json!(-1)),
        },
        Example {
            method: "post",
            route: "/v1/jobs",
            path: "/v1/jobs",
            body: json!({
                "kind": "noop",
                "payload": {"x": 1, "tags": ["a"]},
                "queue": "emails",
                "priority": 7,
                "max_attempts": 5,
                "backoff": {"initial_ms": 200, "max_ms": 10000, "multiplier": 3.0, "jitter": false},
                "timeout_ms": 60000,
                "run_at": run_at,
                "idempotency_key": "order-42",
                "limits": ["github:acme"],
                "cost": 2,
                "group": "tenant-a",
            }),
            status: 201,
            wrong: ("priority", json!("high")),
        },
        Example {
            method: "post",
            route: "/v1/jobs/batch",
            path: "/v1/jobs/batch",
            body: json!({"jobs": [
                {"kind": "noop", "ref": "fetch", "payload": {"n": 1}},
                {"kind": "noop", "ref": "report", "depends_on": ["fetch"], "delay_ms": 0},
            ]}),
            status: 201,
            wrong: ("jobs", json!([{"kind": "noop", "queue": null}])),
        },
        Example {
            method: "put",
            route: "/v1/schedules/{name}",
            path: "/v1/schedules/hourly",
            body: json!({
                "cron": "0 0 * * * *",
                "timezone": "Europe/Paris",
                "job": {"kind": "noop", "payload": {"report": "hourly"}, "priority": 1},
                "catch_up": true,
            }),
            status: 201,
            wrong: ("catch_up", json!("yes")),
        },
        Example {
            method: "post",
            route: "/v1/cache/invalidate",
            path: "/v1/cache/invalidate",
            body: json!({"prefix": "page:", "tags": ["pages"]}),
            status: 200,
            wrong: ("tags", json!("pages")),
        },
    ]
}

/// Sends `body` as the example's request, with the token.
async fn send(app: &TestApp, example: &Example, body: &Value) -> Resp {
    let url = format!("{}{}", app.base, example.path);
    let request = match example.method {
        "post" => app.http.post(url),
        _ => app.http.put(url),
    };
    let bytes = body.to_string().into_bytes();
    app.send(request.bearer_auth(TOKEN), Some(("application/json", bytes))).await
}

#[actix_web::test]
async fn example_requests_validate_are_accepted_and_answered_as_documented() {
    let app = spawn().await;
    let doc = document(&app).await;
    for example in examples() {
        let what = format!("{} {}", example.method, example.path);
        let schema = request_schema(&doc, example.method, example.route);
        assert_valid(&doc, schema, &example.body, &what);

        // The same request with one field wrong, or unknown, must not validate: the schemas
        // constrain, so this test can fail.
        let (field, value) = &example.wrong;
        let mut wrong = example.body.clone();
        wrong[*field] = value.clone();
        assert!(!schema::errors(&doc, schema, &wrong).is_empty(), "{what} with {field}: {value}");
        let mut unknown = example.body.clone();
        unknown["prio"] = json!(1);
        assert!(!schema::errors(&doc, schema, &unknown).is_empty(), "{what} with a `prio`");

        // The server agrees: it refuses both, takes the example, and answers as documented.
        for refused in [&wrong, &unknown] {
            let resp = send(&app, &example, refused).await;
            assert_eq!(resp.status, 400, "{what} with {refused}: {}", resp.body);
        }
        let resp = send(&app, &example, &example.body).await;
        assert_eq!(resp.status, example.status, "{what}: {}", resp.body);
        let answer = response_schema(&doc, example.method, example.route, example.status);
        assert_valid(&doc, answer, &resp.body, &format!("the answer to {what}"));
    }
}

#[actix_web::test]
async fn answers_of_the_read_routes_validate() {
    let app = spawn().await;
    let doc = document(&app).await;
    let submitted = app
        .send(
            app.http.post(format!("{}/v1/jobs", app.base)).bearer_auth(TOKEN),
            Some(("application/json", br#"{"kind": "noop", "payload": [1]}"#.to_vec())),
        )
        .await;
    assert_eq!(submitted.status, 201, "{}", submitted.body);
    let id = submitted.body["id"].as_str().unwrap().to_owned();
    let wait = format!("/v1/jobs/{id}/wait?timeout_ms=5000");
    let job = format!("/v1/jobs/{id}");
    let dependents = format!("/v1/jobs/{id}/dependents");
    put_limit(&app, "openapi-test").await;
    let reads = [
        ("/health", "/health"),
        ("/ready", "/ready"),
        ("/v1/stats", "/v1/stats"),
        ("/v1/instances", "/v1/instances"),
        ("/v1/jobs", "/v1/jobs?limit=10"),
        ("/v1/jobs/{id}/wait", &wait),
        ("/v1/jobs/{id}", &job),
        ("/v1/schedules", "/v1/schedules"),
        ("/v1/limits", "/v1/limits"),
        ("/v1/queues", "/v1/queues"),
        ("/v1/groups", "/v1/groups"),
        ("/v1/stats/history", "/v1/stats/history"),
        ("/v1/stats/cache", "/v1/stats/cache"),
        ("/v1/jobs/{id}/dependents", &dependents),
        ("/v1/limits/{name}/jobs", "/v1/limits/openapi-test/jobs"),
    ];
    for (route, path) in reads {
        let request = app.http.get(format!("{}{path}", app.base)).bearer_auth(TOKEN);
        let resp = app.send(request, None).await;
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.body);
        let schema = response_schema(&doc, "get", route, 200);
        assert_valid(&doc, schema, &resp.body, &format!("GET {path}"));
    }
}

/// Creates limit `name` (a concurrency of 1).
async fn put_limit(app: &TestApp, name: &str) {
    let url = format!("{}/v1/limits/{name}", app.base);
    let body = br#"{"concurrency": 1}"#.to_vec();
    let resp =
        app.send(app.http.put(url).bearer_auth(TOKEN), Some(("application/json", body))).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
}

/// A value of `schema` for a query string: the first of an enum, the least integer allowed,
/// else empty (which every parameter of this API reads as absent).
fn query_value(doc: &Value, schema: &Value) -> String {
    let schema = match schema.get("$ref") {
        Some(reference) => schema::resolve(doc, reference),
        None => schema,
    };
    if let Some(first) = schema["enum"].get(0) {
        return first.as_str().unwrap().to_owned();
    }
    match schema["type"].as_str() {
        Some("integer") => schema["minimum"].as_u64().unwrap_or(0).to_string(),
        _ => String::new(),
    }
}

/// The documented query parameters are the ones the server reads: it refuses any other
/// (its query types deny unknown fields), so a request naming every documented one is taken.
#[actix_web::test]
async fn documented_query_parameters_are_accepted() {
    let app = spawn().await;
    let doc = document(&app).await;
    let job = app
        .send(
            app.http.post(format!("{}/v1/jobs", app.base)).bearer_auth(TOKEN),
            Some(("application/json", br#"{"kind": "noop"}"#.to_vec())),
        )
        .await;
    let id = job.body["id"].as_str().expect("a job id").to_owned();
    put_limit(&app, "openapi-test").await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let query: Vec<String> = parameters
                .iter()
                .filter(|p| p["in"] == "query")
                .map(|p| {
                    format!("{}={}", p["name"].as_str().unwrap(), query_value(&doc, &p["schema"]))
                })
                .collect();
            if query.is_empty() {
                continue;
            }
            let path = path.replace("{id}", &id).replace("{key}", "openapi-test");
            let path = path.replace("{name}", "openapi-test");
            let url = format!("{}{path}?{}", app.base, query.join("&"));
            let (request, body) = match method.as_str() {
                "get" => (app.http.get(url), None),
                "put" => (app.http.put(url), Some(("text/plain", b"hello".to_vec()))),
                other => panic!("no request made for {other} {path}"),
            };
            if operation["responses"]["200"]["content"].get("text/event-stream").is_some() {
                // A stream never ends: its answer's status is all there is to check.
                let response = request.bearer_auth(TOKEN).send().await.expect("stream opens");
                assert_eq!(response.status().as_u16(), 200, "{method} {path}");
                checked += 1;
                continue;
            }
            let resp = app.send(request.bearer_auth(TOKEN), body).await;
            assert!(
                resp.status < 300,
                "{method} {path}?{}: {} {}",
                query.join("&"),
                resp.status,
                resp.body
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 5,
        "the listing, the long poll, the event stream, the cache's put and a limit's jobs take a \
         query"
    );
}
