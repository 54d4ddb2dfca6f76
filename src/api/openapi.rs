//! `GET /openapi.json`: the OpenAPI 3 document of this API, generated (utoipa) from the
//! handlers' `#[utoipa::path]` annotations and the types they read and write, so it changes
//! with them. A test checks that every route served is in it and that example requests
//! validate against its schemas (`tests/api/openapi.rs`).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::{
    cache, events, flow, health, instances, job_ops, jobs, metadata, metrics, schedules, stats,
    tools,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jobyard",
        description = "Background jobs, cron schedules, flow control and a cache over HTTP. \
            Every GET route also answers HEAD; another method gets 405 with `Allow`, an unknown \
            path 404. Every 4xx and 5xx answer, those of the HTTP layer included (408, 413, \
            431), carries the `Error` body.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    paths(
        health::health,
        health::ready,
        serve,
        stats::stats,
        stats::history,
        stats::cache,
        instances::list,
        jobs::submit,
        jobs::list,
        jobs::submit_batch,
        jobs::get,
        jobs::wait,
        jobs::cancel,
        events::stream_all,
        events::stream_job,
        job_ops::retry,
        job_ops::retry_matching,
        job_ops::run_now,
        job_ops::delete,
        jobs::dependents,
        schedules::list,
        schedules::put,
        schedules::get,
        schedules::delete,
        cache::invalidate,
        cache::put,
        cache::get,
        cache::delete,
        flow::list_limits,
        flow::put_limit,
        flow::get_limit,
        flow::delete_limit,
        flow::limit_jobs,
        flow::list_queues,
        flow::pause,
        flow::resume,
        flow::list_groups,
        flow::put_group,
        flow::delete_group,
        tools::list,
        tools::put,
        tools::get,
        tools::delete,
        tools::data,
        tools::refresh,
        metadata::put,
        metadata::get,
        metadata::delete,
        metrics::metrics,
    ),
    // Every operation requires the token unless it says otherwise (the probes and this document
    // say `security(())`).
    security(("bearer" = [])),
    modifiers(&Common),
    tags(
        (name = "jobs", description = "Submit, read, wait for, list, cancel, retry, run now and delete jobs"),
        (name = "schedules", description = "Cron schedules"),
        (name = "flow control", description = "Limits, paused queues, group weights"),
        (name = "cache", description = "Raw bodies with validators, invalidation by prefix or tag"),
        (name = "instances", description = "The instances sharing the backend, and stats"),
        (name = "tools", description = "Upstream sources kept fresh in the cache, and their data"),
        (name = "metadata", description = "Small JSON documents shared by every instance"),
        (name = "probes", description = "Liveness, readiness, metrics, and this document"),
    )
)]
struct ApiDoc;

/// What every operation shares, added here rather than repeated on each handler: the bearer
/// scheme, and the error answers any route may give.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <JOBYARD_API_TOKEN>`, on `/v1/...` when the \
                         token is set",
                    ))
                    .build(),
            ),
        );
        let error = |description: &str| {
            let schema = Ref::from_schema_name(<ErrorBody as utoipa::ToSchema>::name());
            let content = ContentBuilder::new().schema(Some(schema)).build();
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", content)
                    .build(),
            )
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let guarded = path.starts_with("/v1/");
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                if guarded {
                    responses.entry("401".into()).or_insert_with(|| {
                        error("`unauthorized`: the bearer token is missing or wrong")
                    });
                    responses.entry("503".into()).or_insert_with(|| {
                        error("`backend_unavailable` or `draining`; retry after `Retry-After`")
                    });
                }
                responses
                    .entry("500".into())
                    .or_insert_with(|| error("`internal`: logged, not detailed"));
            }
        }
    }
}

/// The operations of a path item.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.head]
        .into_iter()
        .filter_map(Option::as_mut)
}

/// The document, serialized once: it only changes with the code.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        for_clients(&mut doc);
        doc.to_string()
    })
}

/// Rewrites the descriptions, which utoipa takes from the doc comments, for readers of the
/// HTTP API: the Rust examples go, intra-doc links lose their brackets and `None` is `null`.
fn for_clients(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = describe(text);
                    }
                    _ => for_clients(value),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(for_clients),
        _ => {}
    }
}

fn describe(text: &str) -> String {
    let prose = text.split("```").next().unwrap_or(text).trim_end();
    prose.replace("[`", "`").replace("`]", "`").replace("`None`", "`null`")
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "probes",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3)", content_type = "application/json"))
)]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::job::spec::{MAX_COST, MAX_DELAY_MS, MAX_LIST_LEN, MAX_TIMEOUT_MS};
    use crate::queue::flow::{MAX_CONCURRENCY, MAX_TOKENS, MAX_WEIGHT, MAX_WINDOW_MS};

    /// The schemas' bounds are literals (utoipa takes no constants): they must be the ones the
    /// server enforces.
    #[test]
    fn bounds_are_the_constants_the_server_checks() {
        let doc: Value = serde_json::from_str(super::document()).unwrap();
        let schema = |name: &str, field: &str| {
            doc["components"]["schemas"][name]["properties"][field].clone()
        };
        let bounds = |name: &str, field: &str| {
            let field = schema(name, field);
            (field["minimum"].as_f64(), field["maximum"].as_f64())
        };
        assert_eq!(bounds("JobSpec", "priority"), (Some(-1000.0), Some(1000.0)));
        assert_eq!(bounds("JobSpec", "max_attempts"), (Some(1.0), Some(100.0)));
        assert_eq!(bounds("JobSpec", "timeout_ms"), (Some(1.0), Some(MAX_TIMEOUT_MS as f64)));
        assert_eq!(bounds("JobSpec", "delay_ms").1, Some(MAX_DELAY_MS as f64));
        assert_eq!(bounds("JobSpec", "cost"), (Some(1.0), Some(f64::from(MAX_COST))));
        assert_eq!(bounds("Rate", "tokens"), (Some(1.0), Some(MAX_TOKENS as f64)));
        assert_eq!(bounds("Rate", "per_ms"), (Some(1.0), Some(MAX_WINDOW_MS as f64)));
        assert_eq!(bounds("LimitSpec", "concurrency"), (Some(1.0), Some(MAX_CONCURRENCY as f64)));
        assert_eq!(bounds("WeightBody", "weight"), (Some(1.0), Some(f64::from(MAX_WEIGHT))));
        assert_eq!(schema("BatchRequest", "jobs")["maxItems"], MAX_LIST_LEN);
    }

    #[test]
    fn descriptions_are_for_http_clients() {
        let doc = super::document();
        assert!(!doc.contains("```"), "no Rust examples");
        assert!(!doc.contains("`None`"));
    }
}
