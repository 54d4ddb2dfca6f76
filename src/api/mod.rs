//! The HTTP API (actix-web; `docs/http-api.md` describes every route): routes, the shared
//! state of handlers, and the fallbacks that keep every error answer in the error body. The
//! dashboard's page at `/ui/` is served beside it (`ui.rs`) unless `JOBYARD_UI=off`.

mod auth;
mod cache;
mod conditional;
pub(crate) mod conn;
mod error;
mod events;
mod extract;
mod flow;
mod health;
mod instances;
mod job_ops;
mod jobs;
pub(crate) mod limits;
mod metadata;
mod metrics;
mod openapi;
mod schedules;
mod sse;
mod stats;
mod tools;
mod ui;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::{
    guard, middleware, web, FromRequest, Handler, HttpRequest, HttpResponse, Responder,
};

use crate::config::{Secret, UiMode};
use crate::runtime::Client;

pub use error::ApiError;

/// What handlers need besides the client.
///
/// ```
/// use jobyard::api::ApiSettings;
/// use jobyard::config::Secret;
/// use jobyard::Config;
///
/// let config = Config::builder().api_token("s3cret").build()?;
/// let settings = ApiSettings::from(&config);
/// assert_eq!(settings.api_token.as_ref().map(Secret::expose), Some("s3cret"));
/// // Changed before `configure`: bodies of up to 10 MiB for this app.
/// let settings = ApiSettings { max_body_bytes: 10 << 20, ..settings };
/// # Ok::<(), jobyard::config::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ApiSettings {
    /// Largest request body accepted, in bytes (`JOBYARD_MAX_BODY_BYTES`); a larger one is answered
    /// 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// TTL of cache entries stored without one.
    pub cache_ttl: std::time::Duration,
    /// When set, `/v1/...` requires it as a bearer token.
    pub api_token: Option<Secret>,
    /// Connections one peer (IP address) may hold at once.
    pub max_connections_per_peer: usize,
    /// Whether the dashboard is served at `/ui/`, and whether it may write.
    pub ui: UiMode,
}

impl From<&crate::config::Config> for ApiSettings {
    fn from(config: &crate::config::Config) -> Self {
        ApiSettings {
            max_body_bytes: config.max_body_bytes,
            cache_ttl: config.cache_ttl,
            api_token: config.api_token.clone(),
            max_connections_per_peer: config.max_connections_per_peer,
            ui: config.ui,
        }
    }
}

/// Registers every route on an actix-web app.
///
/// ```no_run
/// use actix_web::{web, App, HttpServer};
/// use jobyard::api::{configure, ApiSettings};
/// use jobyard::{Config, Runtime};
///
/// #[actix_web::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let config = Config::from_env()?;
///     let runtime = Runtime::from_config(config.clone()).with_builtin_kinds().connect().await?;
///     let (client, settings) = (runtime.client().clone(), ApiSettings::from(&config));
///     HttpServer::new(move || {
///         App::new()
///             .route("/hello", web::get().to(|| async { "hello" }))
///             .configure(configure(client.clone(), settings.clone()))
///     })
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await?;
///     runtime.shutdown().await;
///     Ok(())
/// }
/// ```
pub fn configure(client: Client, settings: ApiSettings) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        if settings.ui != UiMode::Off {
            cfg.service(ui::service());
        }
        cfg.app_data(web::Data::new(client))
            .app_data(web::Data::new(settings))
            .app_data(extract::query_config())
            .app_data(extract::path_config())
            .service(open_routes())
            .service(
                web::scope("/v1")
                    // The token is checked first (the outer layer): a request without it is
                    // a 401 whoever sends it.
                    .wrap(middleware::from_fn(ui::refuse_dashboard_writes))
                    .wrap(middleware::from_fn(auth::require_token))
                    .service(v1_routes())
                    .default_service(web::to(not_found)),
            )
            .default_service(web::to(not_found));
    }
}

/// The routes open to anyone (the probes, and the document describing the API).
fn open_routes() -> Vec<Routes> {
    vec![
        Routes::new("/health").get(health::health),
        Routes::new("/ready").get(health::ready),
        Routes::new("/openapi.json").get(openapi::serve),
        Routes::new("/metrics").get(metrics::metrics),
    ]
}

/// The routes under `/v1`, behind the bearer token when one is set.
fn v1_routes() -> Vec<Routes> {
    vec![
        Routes::new("/stats").get(stats::stats),
        // Under `/stats/`: `/cache/{key:.+}` takes any path under `/cache/`.
        Routes::new("/stats/history").get(stats::history),
        Routes::new("/stats/cache").get(stats::cache),
        Routes::new("/instances").get(instances::list),
        Routes::new("/jobs").post(jobs::submit).get(jobs::list),
        Routes::new("/jobs/batch").post(jobs::submit_batch),
        Routes::new("/jobs/retry").post(job_ops::retry_matching),
        Routes::new("/jobs/{id}").get(jobs::get).delete(job_ops::delete),
        Routes::new("/jobs/{id}/wait").get(jobs::wait),
        Routes::new("/jobs/{id}/cancel").post(jobs::cancel),
        Routes::new("/jobs/{id}/events").get(events::stream_job),
        Routes::new("/events").get(events::stream_all),
        Routes::new("/jobs/{id}/retry").post(job_ops::retry),
        Routes::new("/jobs/{id}/run").post(job_ops::run_now),
        Routes::new("/jobs/{id}/dependents").get(jobs::dependents),
        Routes::new("/schedules").get(schedules::list),
        // Only a POST is the invalidation; other methods fall through to the key route (the
        // guard fails before this resource's 405), so `invalidate` stays usable as a cache key.
        Routes::new("/cache/invalidate").guard(guard::Post()).post(cache::invalidate),
        Routes::new("/cache/{key:.+}")
            .put(cache::put)
            .get(cache::get)
            .delete(cache::delete)
            .also_allow("POST", |req| req.match_info().get("key") == Some("invalidate")),
        Routes::new("/schedules/{name}")
            .put(schedules::put)
            .get(schedules::get)
            .delete(schedules::delete),
        Routes::new("/limits").get(flow::list_limits),
        Routes::new("/limits/{name}")
            .put(flow::put_limit)
            .get(flow::get_limit)
            .delete(flow::delete_limit),
        Routes::new("/limits/{name}/jobs").get(flow::limit_jobs),
        Routes::new("/tools").get(tools::list),
        Routes::new("/tools/{name}").put(tools::put).get(tools::get).delete(tools::delete),
        Routes::new("/tools/{name}/data").get(tools::data),
        Routes::new("/tools/{name}/refresh").post(tools::refresh),
        Routes::new("/metadata/{name}")
            .put(metadata::put)
            .get(metadata::get)
            .delete(metadata::delete),
        Routes::new("/queues").get(flow::list_queues),
        Routes::new("/queues/{name}/pause").post(flow::pause),
        Routes::new("/queues/{name}/resume").post(flow::resume),
        Routes::new("/groups").get(flow::list_groups),
        Routes::new("/groups/{name}").put(flow::put_group).delete(flow::delete_group),
    ]
}

/// Every (method, path template) the API serves, as registered (`/v1/cache/{key:.+}`): what
/// the test of the OpenAPI document checks it documents. HEAD is listed with each GET. The
/// dashboard's pages under `/ui/` are not part of the JSON API and are not listed.
pub fn served_routes() -> Vec<(&'static str, String)> {
    let open = open_routes().into_iter().map(|r| (String::new(), r));
    let v1 = v1_routes().into_iter().map(|r| ("/v1".to_owned(), r));
    open.chain(v1)
        .flat_map(|(prefix, r)| {
            let path = format!("{prefix}{}", r.path);
            r.allow.into_iter().map(move |method| (method, path.clone()))
        })
        .collect()
}

/// A resource that knows the methods it answers: a GET route answers HEAD too (as GET, without
/// the body: actix-http drops it), and any other method gets 405 with `Allow` and the error
/// body.
struct Routes {
    path: String,
    resource: actix_web::Resource,
    allow: Vec<&'static str>,
    also: Option<AlsoAllowed>,
}

/// A method answered on some of a resource's paths by another resource, and which paths.
type AlsoAllowed = (&'static str, fn(&HttpRequest) -> bool);

impl Routes {
    fn new(path: &str) -> Self {
        Routes {
            path: path.to_owned(),
            resource: web::resource(path),
            allow: Vec::new(),
            also: None,
        }
    }

    /// Matches only requests that pass `guard`; others go on to the next resource.
    fn guard(mut self, guard: impl guard::Guard + 'static) -> Self {
        self.resource = self.resource.guard(guard);
        self
    }

    fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let get_or_head = guard::Any(guard::Get()).or(guard::Head());
        self.route(&["GET", "HEAD"], web::route().guard(get_or_head).to(handler))
    }

    fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(&["POST"], web::post().to(handler))
    }

    fn put<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(&["PUT"], web::put().to(handler))
    }

    fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(&["DELETE"], web::delete().to(handler))
    }

    fn also_allow(mut self, method: &'static str, when: fn(&HttpRequest) -> bool) -> Self {
        self.also = Some((method, when));
        self
    }

    fn route(mut self, methods: &[&'static str], route: actix_web::Route) -> Self {
        self.resource = self.resource.route(route);
        self.allow.extend(methods);
        self
    }
}

impl HttpServiceFactory for Routes {
    fn register(self, config: &mut AppService) {
        let Routes { resource, allow, also, .. } = self;
        let not_allowed = move |req: HttpRequest| {
            let mut allow = allow.join(", ");
            if let Some((method, _)) = also.filter(|(_, when)| when(&req)) {
                allow = format!("{allow}, {method}");
            }
            async move { ApiError::method_not_allowed(allow).into_response() }
        };
        resource.default_service(web::to(not_allowed)).register(config)
    }
}

async fn not_found() -> HttpResponse {
    ApiError::not_found("no such route").into_response()
}

impl ApiError {
    fn into_response(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}
