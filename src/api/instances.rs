//! `GET /v1/instances`: every live instance sharing this backend, as its latest heartbeat
//! described it.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::ApiError;
use crate::queue::instances::InstanceInfo;
use crate::runtime::Client;

/// Every live instance.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InstanceList {
    pub instances: Vec<InstanceInfo>,
}

#[utoipa::path(
    get,
    path = "/v1/instances",
    operation_id = "list_instances",
    tag = "instances",
    responses((status = 200, description = "Every live instance sharing this backend", body = InstanceList))
)]

pub async fn list(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(InstanceList { instances: client.instances().await? }))
}
