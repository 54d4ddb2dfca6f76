//! The HTTP API of `api.md` (actix-web): routes, the shared state of handlers, and the
//! fallbacks that keep every error answer in the error body.

pub mod auth;
pub mod cache;
pub mod conditional;
pub mod error;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod schedules;

use actix_web::{guard, middleware, web, HttpResponse};

use crate::config::Secret;
use crate::runtime::Client;

pub use error::ApiError;

/// What handlers need besides the client.
#[derive(Clone)]
pub struct ApiSettings {
    pub max_body_bytes: usize,
    /// TTL of cache entries stored without one.
    pub cache_ttl: std::time::Duration,
    /// When set, `/v1/...` requires it as a bearer token.
    pub api_token: Option<Secret>,
}

/// Registers every route on an actix-web app.
pub fn configure(client: Client, settings: ApiSettings) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(client))
            .app_data(web::Data::new(settings))
            .app_data(extract::query_config())
            .app_data(extract::path_config())
            .service(resource("/health").route(web::get().to(health::health)))
            .service(resource("/ready").route(web::get().to(health::ready)))
            .service(
                web::scope("/v1")
                    .wrap(middleware::from_fn(auth::require_token))
                    .service(resource("/stats").route(web::get().to(health::stats)))
                    .service(
                        resource("/jobs")
                            .route(web::post().to(jobs::submit))
                            .route(web::get().to(jobs::list)),
                    )
                    .service(resource("/jobs/batch").route(web::post().to(jobs::submit_batch)))
                    .service(resource("/jobs/{id}").route(web::get().to(jobs::get)))
                    .service(resource("/jobs/{id}/wait").route(web::get().to(jobs::wait)))
                    .service(resource("/jobs/{id}/cancel").route(web::post().to(jobs::cancel)))
                    .service(resource("/schedules").route(web::get().to(schedules::list)))
                    // Only a POST is the invalidation; other methods fall through to the key
                    // route, so `invalidate` stays usable as a cache key.
                    .service(
                        web::resource("/cache/invalidate")
                            .guard(guard::Post())
                            .route(web::post().to(cache::invalidate)),
                    )
                    .service(
                        resource("/cache/{key:.+}")
                            .route(web::put().to(cache::put))
                            .route(web::get().to(cache::get))
                            .route(web::delete().to(cache::delete)),
                    )
                    .service(
                        resource("/schedules/{name}")
                            .route(web::put().to(schedules::put))
                            .route(web::get().to(schedules::get))
                            .route(web::delete().to(schedules::delete)),
                    )
                    .default_service(web::to(not_found)),
            )
            .default_service(web::to(not_found));
    }
}

/// A resource whose wrong methods get 405 with the error body.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path)
        .default_service(web::to(|| async { ApiError::method_not_allowed().into_response() }))
}

async fn not_found() -> HttpResponse {
    ApiError::not_found("no such route").into_response()
}

impl ApiError {
    fn into_response(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}
