//! `/v1/limits`, `/v1/queues` and `/v1/groups`: flow control (limits jobs run under, paused
//! queues, group weights).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::extract::JsonBody;
use super::ApiError;
use crate::queue::flow::{GroupWeight, LimitSpec, QueueInfo};
use crate::runtime::Client;

pub async fn put_limit(
    client: web::Data<Client>,
    name: web::Path<String>,
    JsonBody(spec): JsonBody<LimitSpec>,
) -> Result<HttpResponse, ApiError> {
    let (limit, created) = client.put_limit(&name, spec).await?;
    let mut response = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(response.json(limit))
}

pub async fn get_limit(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.limit(&name).await?))
}

pub async fn list_limits(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"limits": client.limits().await?})))
}

pub async fn delete_limit(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.delete_limit(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn list_queues(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"queues": client.queues().await?})))
}

pub async fn pause(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.pause_queue(&name).await?;
    queue(&client, &name).await
}

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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightBody {
    weight: u32,
}

pub async fn put_group(
    client: web::Data<Client>,
    name: web::Path<String>,
    JsonBody(body): JsonBody<WeightBody>,
) -> Result<HttpResponse, ApiError> {
    client.set_group_weight(&name, body.weight).await?;
    Ok(HttpResponse::Ok().json(GroupWeight { name: name.into_inner(), weight: body.weight }))
}

pub async fn list_groups(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"groups": client.group_weights().await?})))
}

pub async fn delete_group(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.reset_group_weight(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
