//! `/v1/stats` and what a dashboard reads beside it: `/v1/stats/history` (jobs finished per
//! 10 seconds over the last hour) and `/v1/stats/cache` (each cache layer's hits and misses,
//! and the keys read most). Under `/v1/stats/...`, apart from `/v1/cache/{key}`, whose path
//! takes any key.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::ApiError;
use crate::cache::CacheStats;
use crate::queue::history::History;
use crate::runtime::{Client, Stats};

/// Hot keys in `/v1/stats/cache`.
const HOT_KEYS: usize = 20;

/// The answer of `/v1/stats/cache`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CacheReport {
    /// `memory`, `redis` or `hybrid`.
    #[schema(example = "hybrid")]
    backend: &'static str,
    /// The layers reads go through, in order: `memory` (the memory backend, or the hybrid's
    /// L1), then `redis`.
    layers: Vec<CacheLayer>,
    /// The keys read most on this instance, hottest first (at most 20).
    hot_keys: Vec<HotKey>,
}

/// One layer's reads since the instance started.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CacheLayer {
    /// `memory` or `redis`.
    #[schema(example = "memory")]
    layer: &'static str,
    /// Reads this layer answered.
    hits: u64,
    /// Reads it could not answer (a hybrid's L1 miss goes on to Redis).
    misses: u64,
    /// `hits / (hits + misses)`, from 0 to 1; `null` before the first read.
    hit_ratio: Option<f64>,
}

impl CacheLayer {
    fn new(layer: &'static str, hits: u64, misses: u64) -> Self {
        let reads = hits + misses;
        let hit_ratio = (reads > 0).then(|| hits as f64 / reads as f64);
        CacheLayer { layer, hits, misses, hit_ratio }
    }
}

/// A key read often.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HotKey {
    #[schema(example = "tool:github")]
    key: String,
    /// An estimate: one read in 8 is counted (sampling keeps reads cheap), times 8.
    reads: u64,
}

/// The layers of a cache: the memory layer unless the backend is Redis alone (whose memory
/// only serves while Redis is away), Redis when there is one.
fn layers(stats: &CacheStats) -> Vec<CacheLayer> {
    let mut layers = Vec::with_capacity(2);
    if stats.backend != "redis" {
        layers.push(CacheLayer::new("memory", stats.memory.hits, stats.memory.misses));
    }
    #[cfg(feature = "redis")]
    if let Some(redis) = &stats.redis {
        layers.push(CacheLayer::new("redis", redis.hits, redis.misses));
    }
    layers
}

#[utoipa::path(
    get,
    path = "/v1/stats",
    operation_id = "stats",
    tag = "instances",
    responses((status = 200, description = "Counts per queue and kind, workers, cache, backends", body = Stats))
)]
pub async fn stats(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.stats().await?))
}

/// Jobs that reached `succeeded` or `failed` per 10-second bucket over the last hour, oldest
/// first, every bucket present (zeros where none finished); on the Redis queue, those of every
/// instance.
#[utoipa::path(
    get,
    path = "/v1/stats/history",
    operation_id = "stats_history",
    tag = "instances",
    responses((status = 200, description = "360 points, oldest first", body = History))
)]
pub async fn history(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(client.history().await?))
}

/// This instance's cache: each layer's hits and misses, and the keys read most.
#[utoipa::path(
    get,
    path = "/v1/stats/cache",
    operation_id = "stats_cache",
    tag = "cache",
    responses((status = 200, description = "Layers and hot keys", body = CacheReport))
)]
pub async fn cache(client: web::Data<Client>) -> HttpResponse {
    let cache = client.cache();
    let stats = cache.stats();
    let hot_keys = cache.hot_keys(HOT_KEYS).into_iter().map(|(key, reads)| HotKey { key, reads });
    HttpResponse::Ok().json(CacheReport {
        backend: stats.backend,
        layers: layers(&stats),
        hot_keys: hot_keys.collect(),
    })
}
