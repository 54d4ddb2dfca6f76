//! `/health` (liveness), `/ready` (readiness of the backends) and `/v1/stats`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiError;
use crate::cache::CacheHealth;
use crate::runtime::Client;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 while the queue answers: `ready`, or `degraded` when the cache fell back to memory;
/// 503 naming the queue when it does not answer, and 503 `draining` while the instance shuts
/// down (so a load balancer stops sending it work while its running jobs finish).
pub async fn ready(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    if client.draining() {
        return Err(ApiError::draining());
    }
    let readiness = client.readiness().await;
    if let Err(err) = readiness.queue {
        // The cause goes to the log, not to the answer (as for every other route).
        if crate::telemetry::repeated::admit("readiness probes answered 503") {
            tracing::warn!("not ready: queue backend: {}", crate::telemetry::Escaped(&err));
        }
        return Err(ApiError::unavailable("not ready: the queue backend does not answer"));
    }
    let (status, cache) = match readiness.cache {
        CacheHealth::Ok => ("ready", "ok".to_owned()),
        CacheHealth::Degraded(why) => ("degraded", format!("degraded: {why}")),
    };
    Ok(HttpResponse::Ok().json(json!({
        "status": status,
        "components": {"queue": "ok", "cache": cache, "redis": client.backends().redis},
    })))
}

pub async fn stats(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.stats().await?))
}
