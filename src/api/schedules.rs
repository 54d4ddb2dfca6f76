//! `/v1/schedules`: cron schedules.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::extract::JsonBody;
use super::ApiError;
use crate::runtime::Client;
use crate::schedule::ScheduleSpec;

pub async fn put(
    client: web::Data<Client>,
    name: web::Path<String>,
    JsonBody(spec): JsonBody<ScheduleSpec>,
) -> Result<HttpResponse, ApiError> {
    let (schedule, created) = client.put_schedule(&name, spec).await?;
    let mut response = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(response.json(schedule))
}

pub async fn get(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.get_schedule(&name).await?))
}

pub async fn list(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"schedules": client.schedules().await?})))
}

pub async fn delete(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.delete_schedule(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
