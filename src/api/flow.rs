//! `/v1/limits`, `/v1/queues` and `/v1/groups`: flow control (limits jobs run under and the
//! jobs they hold back, paused queues, group weights).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use super::extract::JsonBody;
use super::jobs::JobList;
use super::ApiError;
use crate::queue::flow::{GroupWeight, Limit, LimitSpec, QueueInfo};
use crate::queue::MOST_LISTED;
use crate::runtime::Client;

/// Every limit.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitList {
    pub limits: Vec<Limit>,
}

/// Every queue that holds jobs or is paused.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// Every group given a weight.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupWeight>,
}

#[utoipa::path(
    put,
    path = "/v1/limits/{name}",
    operation_id = "put_limit",
    tag = "flow control",
    params(("name" = String, Path, description = "The limit's name: 1 to 128 ASCII letters, digits or `_ . : @ / -`")),
    request_body = LimitSpec,
    responses(
        (status = 201, description = "Created", body = Limit),
        (status = 200, description = "Replaced", body = Limit),
        (status = 400, description = "The name or a bound is invalid", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    )
)]
pub async fn put_limit(
    client: web::Data<Client>,
    name: web::Path<String>,
    JsonBody(spec): JsonBody<LimitSpec>,
) -> Result<HttpResponse, ApiError> {
    let (limit, created) = client.put_limit(&name, spec).await?;
    let mut response = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(response.json(limit))
}

#[utoipa::path(
    get,
    path = "/v1/limits/{name}",
    operation_id = "get_limit",
    tag = "flow control",
    params(("name" = String, Path, description = "The limit's name: 1 to 128 ASCII letters, digits or `_ . : @ / -`")),
    responses(
        (status = 200, description = "The limit and where it stands", body = Limit),
        (status = 404, description = "No such limit", body = ErrorBody),
    )
)]
pub async fn get_limit(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.limit(&name).await?))
}

#[utoipa::path(
    get,
    path = "/v1/limits",
    operation_id = "list_limits",
    tag = "flow control",
    responses((status = 200, description = "Every limit", body = LimitList))
)]
pub async fn list_limits(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(LimitList { limits: client.limits().await? }))
}

/// The query of `/v1/limits/{name}/jobs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LimitJobsParams {
    /// Jobs answered at most: 1 to 1000 (50 when left out).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Jobs answered by `/v1/limits/{name}/jobs` when `limit` is left out.
const DEFAULT_LIMIT_JOBS: usize = 50;

/// The queued jobs naming this limit that it holds back now, highest priority first, then
/// oldest.
#[utoipa::path(
    get,
    path = "/v1/limits/{name}/jobs",
    operation_id = "limit_jobs",
    tag = "flow control",
    params(("name" = String, Path, description = "The limit's name"), LimitJobsParams),
    responses(
        (status = 200, description = "The jobs it holds back", body = JobList),
        (status = 400, description = "`limit` is invalid", body = ErrorBody),
        (status = 404, description = "No such limit", body = ErrorBody),
    )
)]
pub async fn limit_jobs(
    client: web::Data<Client>,
    name: web::Path<String>,
    params: web::Query<LimitJobsParams>,
) -> Result<HttpResponse, ApiError> {
    let most = match params.limit.as_deref().filter(|raw| !raw.is_empty()) {
        None => DEFAULT_LIMIT_JOBS,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MOST_LISTED).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "limit must be between 1 and 1000"))?,
    };
    let jobs = client.limit_jobs(&name, most).await?;
    Ok(HttpResponse::Ok().json(JobList { jobs }))
}

#[utoipa::path(
    delete,
    path = "/v1/limits/{name}",
    operation_id = "delete_limit",
    tag = "flow control",
    params(("name" = String, Path, description = "The limit's name: 1 to 128 ASCII letters, digits or `_ . : @ / -`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such limit", body = ErrorBody),
    )
)]
pub async fn delete_limit(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.delete_limit(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/v1/queues",
    operation_id = "list_queues",
    tag = "flow control",
    responses((status = 200, description = "Every queue, its counts and whether it is paused", body = QueueList))
)]
pub async fn list_queues(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(QueueList { queues: client.queues().await? }))
}

#[utoipa::path(
    post,
    path = "/v1/queues/{name}/pause",
    operation_id = "pause_queue",
    tag = "flow control",
    params(("name" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue, paused: it accepts submits and starts nothing", body = QueueInfo),
        (status = 400, description = "The name is invalid", body = ErrorBody),
    )
)]
pub async fn pause(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.pause_queue(&name).await?;
    queue(&client, &name).await
}

#[utoipa::path(
    post,
    path = "/v1/queues/{name}/resume",
    operation_id = "resume_queue",
    tag = "flow control",
    params(("name" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue, running again", body = QueueInfo),
        (status = 400, description = "The name is invalid", body = ErrorBody),
    )
)]
pub async fn resume(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.resume_queue(&name).await?;
    queue(&client, &name).await
}

/// The queue as it is now (empty counts for a queue that never held a job).
async fn queue(client: &Client, name: &str) -> Result<HttpResponse, ApiError> {
    let queues = client.queues().await?;
    let queue = queues.into_iter().find(|q| q.name == name);
    let queue =
        queue.unwrap_or_else(|| QueueInfo { name: name.to_owned(), ..QueueInfo::default() });
    Ok(HttpResponse::Ok().json(queue))
}

/// The body of `PUT /v1/groups/{name}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightBody {
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    weight: u32,
}

#[utoipa::path(
    put,
    path = "/v1/groups/{name}",
    operation_id = "put_group_weight",
    tag = "flow control",
    params(("name" = String, Path, description = "The group's name: 1 to 128 ASCII letters, digits or `_ . : @ / -`")),
    request_body = WeightBody,
    responses(
        (status = 200, description = "The group's weight", body = GroupWeight),
        (status = 400, description = "The name or weight is invalid", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    )
)]
pub async fn put_group(
    client: web::Data<Client>,
    name: web::Path<String>,
    JsonBody(body): JsonBody<WeightBody>,
) -> Result<HttpResponse, ApiError> {
    client.set_group_weight(&name, body.weight).await?;
    Ok(HttpResponse::Ok().json(GroupWeight { name: name.into_inner(), weight: body.weight }))
}

#[utoipa::path(
    get,
    path = "/v1/groups",
    operation_id = "list_groups",
    tag = "flow control",
    responses((status = 200, description = "Every group given a weight", body = GroupList))
)]
pub async fn list_groups(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(GroupList { groups: client.group_weights().await? }))
}

#[utoipa::path(
    delete,
    path = "/v1/groups/{name}",
    operation_id = "delete_group_weight",
    tag = "flow control",
    params(("name" = String, Path, description = "The group's name: 1 to 128 ASCII letters, digits or `_ . : @ / -`")),
    responses(
        (status = 204, description = "Its weight is back to 1"),
        (status = 400, description = "The name is invalid", body = ErrorBody),
    )
)]
pub async fn delete_group(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.reset_group_weight(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
