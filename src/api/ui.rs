//! The dashboard at `/ui/`: a page and its scripts, embedded in the binary (no build step, no
//! network beyond this server), and the guard that keeps a read-only dashboard from writing.
//!
//! The page holds no data: it reads everything from `/v1` with the user's token, so its routes
//! are open. They are not part of the JSON API and are left out of
//! [`served_routes`](super::served_routes) and of the OpenAPI document.
//!
//! What `JOBYARD_UI=read-only` protects is the dashboard's buttons, not the API: every request
//! the page makes says `X-Jobyard-Client: ui`, and a write carrying it is refused; anyone
//! holding the token can still write without that header, with any other client.

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::body::MessageBody;
use actix_web::dev::{HttpServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{ApiError, ApiSettings, Routes};
use crate::config::UiMode;

/// The header every request of the page carries, so the server knows a write comes from it.
pub const CLIENT_HEADER: &str = "x-jobyard-client";

/// The page may load only its own scripts and styles and talk only to this origin; nothing
/// it shows can run as script (it renders data as text, and no inline script is allowed).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Assets keep their names across versions (modules import each other by name), so a browser
/// must check its copy each time: a 304 on the ETag costs a round trip, never a stale script
/// after an upgrade.
const REVALIDATE: &str = "no-cache";

/// One embedded file.
struct Asset {
    /// Its path under `ui/` and under `/ui/assets/`.
    name: &'static str,
    bytes: &'static [u8],
}

/// Embeds files of `ui/` by their path there.
macro_rules! assets {
    ($($name:literal),* $(,)?) => {
        &[$(Asset {
            name: $name,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $name)),
        }),*]
    };
}

/// The page itself, served at `/ui/`.
const INDEX: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/index.html"));

/// Everything the page loads (a test checks this list against the files of `ui/`).
const ASSETS: &[Asset] = assets![
    "style.css",
    "app.js",
    "lib/api.js",
    "lib/chart.js",
    "lib/dom.js",
    "lib/live.js",
    "lib/sse.js",
    "views/cache.js",
    "views/job.js",
    "views/jobs.js",
    "views/limits.js",
    "views/overview.js",
    "views/schedules.js",
    "views/tools.js",
];

/// A file ready to serve: its bytes, type and validator.
struct Served {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: String,
}

impl Served {
    fn new(name: &str, bytes: &'static [u8]) -> Self {
        Served { bytes, content_type: content_type(name), etag: etag(bytes) }
    }
}

/// The assets by name, with their ETags computed once.
static SERVED: LazyLock<HashMap<&'static str, Served>> =
    LazyLock::new(|| ASSETS.iter().map(|a| (a.name, Served::new(a.name, a.bytes))).collect());

static SERVED_INDEX: LazyLock<Served> = LazyLock::new(|| Served::new("index.html", INDEX));

/// The `/ui` routes, for a mode other than [`UiMode::Off`].
pub(super) fn service() -> impl HttpServiceFactory {
    let routes = vec![
        Routes::new("").get(redirect),
        Routes::new("/").get(index),
        Routes::new("/config.json").get(config),
        Routes::new("/assets/{file:.+}").get(asset),
    ];
    web::scope("/ui")
        .wrap(
            DefaultHeaders::new()
                .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::REFERRER_POLICY, "no-referrer")),
        )
        .service(routes)
        .default_service(web::to(|| async { ApiError::not_found("no such page").into_response() }))
}

/// `/ui` → `/ui/`, where the page's relative links resolve. The target is relative so that it
/// holds behind a proxy serving the API under a path of its own.
async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "ui/")).finish()
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, &SERVED_INDEX)
}

async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let served = SERVED.get(file.as_str()).ok_or_else(|| ApiError::not_found("no such asset"))?;
    Ok(serve(&req, served))
}

fn serve(req: &HttpRequest, served: &Served) -> HttpResponse {
    let matches =
        req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(
            |tags| tags.split(',').any(|t| t.trim() == served.etag || t.trim() == "*"),
        );
    let mut response = if matches { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response
        .insert_header((header::ETAG, served.etag.clone()))
        .insert_header((header::CACHE_CONTROL, REVALIDATE));
    if matches {
        return response.finish();
    }
    response.insert_header((header::CONTENT_TYPE, served.content_type)).body(served.bytes)
}

/// What the page needs to know before its first API call, and nothing else (it is open).
#[derive(Serialize)]
struct PageConfig {
    /// `on` or `read-only`: in `read-only`, the page shows no buttons that change anything.
    mode: &'static str,
    /// Whether `/v1` asks for a bearer token.
    token_required: bool,
    /// This server's version.
    version: &'static str,
}

async fn config(settings: web::Data<ApiSettings>) -> HttpResponse {
    let body = PageConfig {
        mode: settings.ui.as_str(),
        token_required: settings.api_token.is_some(),
        version: env!("CARGO_PKG_VERSION"),
    };
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

/// Refuses, with 403 `read_only`, any write to `/v1` made by the dashboard while it is
/// read-only. Reads pass, and so do writes without the dashboard's header: this keeps the
/// page's buttons from acting, it does not make the API read-only for a token holder.
pub async fn refuse_dashboard_writes(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let read_only = req
        .app_data::<web::Data<ApiSettings>>()
        .is_some_and(|settings| settings.ui == UiMode::ReadOnly);
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    if read_only && write && from_dashboard(&req) {
        return Err(ApiError::read_only().into());
    }
    next.call(req).await
}

fn from_dashboard(req: &ServiceRequest) -> bool {
    req.headers()
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("ui"))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// A strong validator of `bytes`: their FNV-1a hash, which is stable across builds and
/// processes (every instance behind a load balancer gives the same ETag for the same file).
fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}
