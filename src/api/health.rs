//! `/health` (liveness) and `/ready` (readiness of the backends).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::error::ErrorBody;
use super::ApiError;
use crate::cache::CacheHealth;
use crate::runtime::Client;

/// The answer of `/health`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The answer of `/ready` when ready.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// `ready`, or `degraded` when the cache fell back to memory.
    #[schema(example = "ready")]
    status: &'static str,
    components: ReadyComponents,
}

/// How each backend answered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadyComponents {
    /// `ok` (a queue that does not answer makes `/ready` a 503).
    queue: &'static str,
    /// `ok`, or `degraded: <why>`.
    cache: String,
    /// `up`, `down` or `disabled` (no `REDIS_URL`).
    redis: &'static str,
}

#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "probes",
    security(()),
    responses((status = 200, description = "The process answers", body = Health))
)]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// 200 while the queue answers: `ready`, or `degraded` when the cache fell back to memory;
/// 503 naming the queue when it does not answer, and 503 `draining` while the instance shuts
/// down (so a load balancer stops sending it work while its running jobs finish).
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "probes",
    security(()),
    responses(
        (status = 200, description = "The queue answers", body = Ready),
        (status = 503, description = "`backend_unavailable` (the queue does not answer) or `draining`; with `Retry-After`", body = ErrorBody),
    )
)]
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
    let components = ReadyComponents { queue: "ok", cache, redis: client.backends().redis };
    Ok(HttpResponse::Ok().json(Ready { status, components }))
}
