//! `GET /v1/instances`: every live instance sharing this backend, as its latest heartbeat
//! described it.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiError;
use crate::runtime::Client;

pub async fn list(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"instances": client.instances().await?})))
}
