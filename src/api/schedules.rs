//! `/v1/schedules`: cron schedules.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::error::ErrorBody;
use super::extract::JsonBody;
use super::ApiError;
use crate::runtime::Client;
use crate::schedule::{Schedule, ScheduleSpec};

/// Every schedule.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

#[utoipa::path(
    put,
    path = "/v1/schedules/{name}",
    operation_id = "put_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "1 to 128 ASCII letters, digits, `_`, `.`, `:` or `-`")),
    request_body = ScheduleSpec,
    responses(
        (status = 201, description = "Created", body = Schedule),
        (status = 200, description = "Replaced (its `created_at` and last run kept)", body = Schedule),
        (status = 400, description = "The name, cron expression, time zone or job is invalid", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    )
)]
pub async fn put(
    client: web::Data<Client>,
    name: web::Path<String>,
    JsonBody(spec): JsonBody<ScheduleSpec>,
) -> Result<HttpResponse, ApiError> {
    let (schedule, created) = client.put_schedule(&name, spec).await?;
    let mut response = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(response.json(schedule))
}

#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    operation_id = "get_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "The schedule", body = Schedule),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub async fn get(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.get_schedule(&name).await?))
}

#[utoipa::path(
    get,
    path = "/v1/schedules",
    operation_id = "list_schedules",
    tag = "schedules",
    responses((status = 200, description = "Every schedule", body = ScheduleList))
)]
pub async fn list(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ScheduleList { schedules: client.schedules().await? }))
}

#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    operation_id = "delete_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub async fn delete(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.delete_schedule(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
