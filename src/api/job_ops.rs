//! The operator's actions on existing jobs: `POST /v1/jobs/{id}/retry`, `POST /v1/jobs/retry`
//! (every job a filter selects), `POST /v1/jobs/{id}/run` and `DELETE /v1/jobs/{id}`. A job in
//! a state an action does not apply to is answered 409 `invalid_state`, naming its state.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use super::extract::JsonBody;
use super::jobs::{parse_id, refuse_while_draining};
use super::ApiError;
use crate::job::{JobRecord, JobStatus};
use crate::runtime::{Client, RetryFilter};

/// The body of `POST /v1/jobs/retry`: which jobs to retry (each field left out matches any).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// `failed` or `cancelled` (both when left out).
    #[schema(value_type = Option<String>, example = "failed")]
    pub status: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
}

/// How many jobs `POST /v1/jobs/retry` retried.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Retried {
    /// The jobs put back to run (those that changed meanwhile are not counted).
    pub retried: u64,
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    operation_id = "retry_job",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id")),
    responses(
        (status = 200, description = "Back to `queued` with a fresh set of attempts (`waiting` when a dependency has not succeeded); its history kept", body = JobRecord),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the job is not `failed` or `cancelled`, or a dependency it would wait for no longer exists", body = ErrorBody),
    )
)]
pub async fn retry(
    client: web::Data<Client>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    refuse_while_draining(&client)?;
    let record = client.retry(parse_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(record))
}

#[utoipa::path(
    post,
    path = "/v1/jobs/retry",
    operation_id = "retry_jobs",
    tag = "jobs",
    request_body = RetryRequest,
    responses(
        (status = 200, description = "How many jobs were retried", body = Retried),
        (status = 400, description = "`status` is not `failed` or `cancelled`, or the body is invalid", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    )
)]
pub async fn retry_matching(
    client: web::Data<Client>,
    JsonBody(request): JsonBody<RetryRequest>,
) -> Result<HttpResponse, ApiError> {
    refuse_while_draining(&client)?;
    let given = |value: Option<String>| value.filter(|v| !v.is_empty());
    let status = match given(request.status).as_deref().map(str::parse::<JobStatus>) {
        None => None,
        Some(Ok(status @ (JobStatus::Failed | JobStatus::Cancelled))) => Some(status),
        Some(_) => {
            return Err(ApiError::invalid("status", "status must be `failed` or `cancelled`"))
        }
    };
    let filter = RetryFilter { status, kind: given(request.kind), queue: given(request.queue) };
    let retried = client.retry_matching(filter).await?;
    Ok(HttpResponse::Ok().json(Retried { retried }))
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/run",
    operation_id = "run_job_now",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id")),
    responses(
        (status = 200, description = "Due now: `queued` (its limits and paused queue still apply)", body = JobRecord),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the job is not `scheduled`", body = ErrorBody),
    )
)]
pub async fn run_now(
    client: web::Data<Client>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    refuse_while_draining(&client)?;
    let record = client.run_now(parse_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(record))
}

#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    operation_id = "delete_job",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id")),
    responses(
        (status = 204, description = "Removed, with its result and idempotency key"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the job has not ended (cancel it first)", body = ErrorBody),
    )
)]
pub async fn delete(
    client: web::Data<Client>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.delete(parse_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
