//! `/v1/jobs`: submit (one or a batch), read (with `ETag`/`Last-Modified` and 304), long-poll
//! wait, list, cancel, and the jobs waiting on a job; the operator's actions (retry, run now,
//! delete) are in `job_ops`.

use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::conditional::{not_modified, validators};
use super::error::ErrorBody;
use super::extract::JsonBody;
use super::ApiError;
use crate::cache::etag_of;
use crate::job::trace::{SpanId, TraceContext};
use crate::job::{JobId, JobRecord, JobSpec, JobStatus};
use crate::queue::{CancelOutcome, ListQuery, Page};
use crate::runtime::Client;
use crate::telemetry::spans::{self, FinishedSpan, SpanKind};

/// Longest long poll.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Long poll used when `timeout_ms` is not given.
const DEFAULT_WAIT_MS: u64 = 30_000;
/// Most jobs in one listing page.
const MAX_LIMIT: usize = 1_000;

/// The body of `POST /v1/jobs/batch`: jobs submitted together, all or none.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 jobs; an entry's `ref` names it for the `depends_on` of the others.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<JobSpec>,
}

/// Jobs, as a batch submit answers them (in request order).
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobRecord>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// How long to wait for the job to end, in milliseconds: 0 to 60000 (30000 when left out).
    pub timeout_ms: Option<u64>,
}

/// The listing's query; an empty value (`?status=&limit=`) means the parameter is absent.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state.
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs of this group.
    pub group: Option<String>,
    /// Jobs per page: 1 to 1000 (100 when left out).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Where the page starts: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub(super) fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid("id", format!("'{raw}' is not a job id (a UUID)")))
}

/// A draining instance takes no new jobs: the client retries after `Retry-After`, by when a
/// load balancer that reads `/ready` sends it to another instance.
pub(super) fn refuse_while_draining(client: &Client) -> Result<(), ApiError> {
    if client.draining() {
        return Err(ApiError::draining());
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "submit_job",
    tag = "jobs",
    request_body = JobSpec,
    responses(
        (status = 201, description = "Created; `Location` names it", body = JobRecord,
         headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "The job already holding this `idempotency_key`", body = JobRecord),
        (status = 400, description = "A field is invalid (`invalid_request`), or `unknown_kind`, `unknown_dependency`, `unknown_limit`", body = ErrorBody),
        (status = 413, description = "The body is larger than `JOBYARD_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 429, description = "`queue_full`: the queue holds `JOBYARD_MAX_QUEUED` jobs waiting", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    operation_id = "submit_batch",
    tag = "jobs",
    request_body = BatchRequest,
    responses(
        (status = 201, description = "Every job, in request order", body = JobList),
        (status = 400, description = "An entry is invalid (its field named `jobs[i].field`), or `dependency_cycle`", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 429, description = "`queue_full`", body = ErrorBody),
    )
)]
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
        .json(JobList { jobs }))
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

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id")),
    responses(
        (status = 200, description = "The job, with `ETag` and `Last-Modified`", body = JobRecord),
        (status = 304, description = "Unchanged since `If-None-Match` / `If-Modified-Since`"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/wait",
    operation_id = "wait_for_job",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id"), WaitQuery),
    responses(
        (status = 200, description = "The job once it ended, or as it is when the wait ran out", body = JobRecord),
        (status = 400, description = "The id or `timeout_ms` is invalid", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = Page),
        (status = 400, description = "A parameter is invalid (named in `field`)", body = ErrorBody),
    )
)]
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
            group: given(params.group),
            limit,
            cursor: given(params.cursor),
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancel_job",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled, or (running) `cancel_requested`", body = JobRecord),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`already_finished`", body = ErrorBody),
    )
)]
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

/// A job waiting on another, in `/v1/jobs/{id}/dependents`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Dependent {
    id: JobId,
    kind: String,
    queue: String,
    status: JobStatus,
}

/// The answer of `/v1/jobs/{id}/dependents`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DependentList {
    /// At most 1000, oldest first.
    jobs: Vec<Dependent>,
}

/// The jobs waiting on this one: what the store keeps to release them once it succeeds (or
/// cancel them when it does not), so a job that ended has none left once they are settled.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/dependents",
    operation_id = "job_dependents",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id")),
    responses(
        (status = 200, description = "The jobs waiting on it (at most 1000)", body = DependentList),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn dependents(
    client: web::Data<Client>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let jobs = client.dependents(id).await?.into_iter().map(|job| Dependent {
        id: job.id,
        kind: job.kind.to_string(),
        queue: job.queue.to_string(),
        status: job.status,
    });
    Ok(HttpResponse::Ok().json(DependentList { jobs: jobs.collect() }))
}
