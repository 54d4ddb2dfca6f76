//! `/v1/jobs`: submit (one or a batch), read (with `ETag`/`Last-Modified` and 304), long-poll
//! wait, list and cancel.

use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::conditional::{not_modified, validators};
use super::extract::JsonBody;
use super::ApiError;
use crate::cache::etag_of;
use crate::job::trace::{SpanId, TraceContext};
use crate::job::{JobId, JobRecord, JobSpec, JobStatus};
use crate::queue::{CancelOutcome, ListQuery};
use crate::runtime::Client;
use crate::telemetry::spans::{self, FinishedSpan, SpanKind};

/// Longest long poll.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Long poll used when `timeout_ms` is not given.
const DEFAULT_WAIT_MS: u64 = 30_000;
/// Most jobs in one listing page.
const MAX_LIMIT: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub jobs: Vec<JobSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    pub timeout_ms: Option<u64>,
}

/// The listing's query; an empty value (`?status=&limit=`) means the parameter is absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid("id", format!("'{raw}' is not a job id (a UUID)")))
}

/// A draining instance takes no new jobs: the client retries after `Retry-After`, by when a
/// load balancer that reads `/ready` sends it to another instance.
fn refuse_while_draining(client: &Client) -> Result<(), ApiError> {
    if client.draining() {
        return Err(ApiError::draining());
    }
    Ok(())
}

pub async fn submit(
    req: HttpRequest,
    client: web::Data<Client>,
    JsonBody(mut spec): JsonBody<JobSpec>,
) -> Result<HttpResponse, ApiError> {
    refuse_while_draining(&client)?;
    let span = SubmitSpan::begin(&req, "POST /v1/jobs");
    spec.trace = Some(span.trace);
    let submitted = client.submit_spec(spec).await.map_err(ApiError::from);
    let submitted = span.end(submitted)?;
    let record = submitted.record;
    let mut answer = if submitted.created {
        let mut created = HttpResponse::Created();
        created.insert_header((header::LOCATION, format!("/v1/jobs/{}", record.id)));
        created
    } else {
        HttpResponse::Ok()
    };
    answer.insert_header(("traceparent", span.trace.traceparent()));
    Ok(answer.json(record))
}

pub async fn submit_batch(
    req: HttpRequest,
    client: web::Data<Client>,
    JsonBody(mut batch): JsonBody<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    refuse_while_draining(&client)?;
    let span = SubmitSpan::begin(&req, "POST /v1/jobs/batch");
    for spec in &mut batch.jobs {
        spec.trace = Some(span.trace);
    }
    let submitted = client.submit_batch(batch.jobs).await.map_err(ApiError::from);
    let jobs: Vec<JobRecord> = span.end(submitted)?.into_iter().map(|s| s.record).collect();
    Ok(HttpResponse::Created()
        .insert_header(("traceparent", span.trace.traceparent()))
        .json(json!({ "jobs": jobs })))
}

/// The span of a submit: it joins the caller's trace (`traceparent`) or starts one; the jobs
/// it creates keep its ids, and their attempts' spans are its children.
struct SubmitSpan {
    trace: TraceContext,
    parent: Option<SpanId>,
    name: &'static str,
    start: SystemTime,
}

impl SubmitSpan {
    fn begin(req: &HttpRequest, name: &'static str) -> Self {
        let incoming = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::from_traceparent);
        SubmitSpan {
            trace: incoming.map_or_else(TraceContext::new, |t| t.child()),
            parent: incoming.map(|t| t.span_id),
            name,
            start: SystemTime::now(),
        }
    }

    /// Exports the span (when an exporter runs) with how the submit ended.
    fn end<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        if spans::exporting() {
            spans::record(FinishedSpan {
                trace_id: self.trace.trace_id,
                span_id: self.trace.span_id,
                parent: self.parent,
                name: self.name.to_owned(),
                kind: SpanKind::Server,
                start: self.start,
                end: SystemTime::now(),
                attributes: Vec::new(),
                error: result.as_ref().err().map(ToString::to_string),
            });
        }
        result
    }
}

pub async fn get(
    req: HttpRequest,
    client: web::Data<Client>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let record = client.status(id).await?;
    conditional(&req, &record)
}

/// Answers a job with its validators, or 304 when the client's copy is current.
fn conditional(req: &HttpRequest, record: &JobRecord) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(record).map_err(|err| ApiError::internal(&err))?;
    let etag = etag_of(&body);
    let unchanged = not_modified(req, &etag, record.updated_at);
    let mut response = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    validators(&mut response, &etag, record.updated_at);
    response.insert_header((header::CACHE_CONTROL, "no-cache"));
    if unchanged {
        Ok(response.finish())
    } else {
        Ok(response.content_type("application/json").body(body))
    }
}

pub async fn wait(
    client: web::Data<Client>,
    id: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let timeout_ms = query.timeout_ms.unwrap_or(DEFAULT_WAIT_MS);
    if timeout_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid(
            "timeout_ms",
            format!("timeout_ms must be at most {MAX_WAIT_MS}"),
        ));
    }
    let record = client.wait(id, Duration::from_millis(timeout_ms)).await?;
    Ok(HttpResponse::Ok().json(record))
}

pub async fn list(
    client: web::Data<Client>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let given = |value: Option<String>| value.filter(|v| !v.is_empty());
    let status = given(params.status)
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|err| ApiError::invalid("status", err))?;
    let limit = match given(params.limit) {
        None => ListQuery::DEFAULT_LIMIT,
        Some(raw) => {
            raw.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                ApiError::invalid("limit", format!("limit must be between 1 and {MAX_LIMIT}"))
            })?
        }
    };
    let page = client
        .list(ListQuery {
            status,
            kind: given(params.kind),
            queue: given(params.queue),
            limit,
            cursor: given(params.cursor),
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

pub async fn cancel(
    client: web::Data<Client>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let outcome = client.cancel(id).await?;
    let record = match outcome {
        CancelOutcome::Cancelled(record) | CancelOutcome::Requested(record) => record,
    };
    Ok(HttpResponse::Ok().json(record))
}
