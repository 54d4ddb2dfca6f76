//! `/health` (liveness), `/ready` (readiness of the backends) and `/v1/stats`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiError;
use crate::runtime::Client;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    match client.ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "components": {"queue": "ok", "cache": "ok"},
        }))),
        Err(err) => Err(ApiError::unavailable(format!("not ready: queue backend: {err}"))),
    }
}

pub async fn stats(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.stats().await?))
}
