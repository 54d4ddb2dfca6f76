//! `GET /metrics` (Prometheus text format) and the HTTP request metrics: requests by route
//! template (never the raw path, whose ids would make a series per job), method and status,
//! with a latency histogram.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::error::ErrorBody;
use super::ApiError;
use crate::runtime::Client;

/// The route a request matched (`/v1/jobs/{id}`), or `unmatched`.
fn route_of(pattern: Option<String>) -> String {
    pattern.unwrap_or_else(|| "unmatched".to_owned())
}

/// The method as a label: the standard ones by name, any other `OTHER` (a client may send any
/// token as a method, and each would otherwise make series of its own, for good).
fn method_label(method: &actix_web::http::Method) -> String {
    const STANDARD: [&str; 9] =
        ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
    let name = method.as_str();
    if STANDARD.contains(&name) { name } else { "OTHER" }.to_owned()
}

/// Counts each request and times it, by route template, method and status.
pub async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let answered = next.call(req).await;
    let (route, status) = match &answered {
        Ok(res) => (route_of(res.request().match_pattern()), res.status()),
        // An error a middleware answered (a 401): its route is not known yet.
        Err(err) => ("unmatched".to_owned(), err.as_response_error().status_code()),
    };
    let elapsed = started.elapsed().as_secs_f64();
    let status = status.as_u16().to_string();
    metrics::counter!("jobyard_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("jobyard_http_request_duration_seconds", "route" => route, "method" => method)
        .record(elapsed);
    answered
}

/// Every tool with its state; none when the store does not answer (the scrape goes on).
async fn tool_views(client: &Client) -> Vec<crate::tools::manage::ToolView> {
    let tools = client.tools();
    let mut views = Vec::new();
    for tool in tools.list().await.unwrap_or_default() {
        if let Ok(view) = tools.view(client, tool).await {
            views.push(view);
        }
    }
    views
}

/// The metrics, in Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    security(()),
    responses(
        (status = 200, description = "Prometheus text format (0.0.4): jobs, queues, workers, cache, Redis and HTTP metrics", content_type = "text/plain"),
        (status = 404, description = "The embedding program installed its own metrics recorder", body = ErrorBody),
    )
)]
pub async fn metrics(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    let Some(handle) = crate::telemetry::prometheus::install() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this program installed its own metrics recorder: read the metrics there",
        ));
    };
    // A queue that does not answer still leaves the process's own metrics worth reading.
    let text = match client.stats().await {
        Ok(stats) => {
            let tools = tool_views(&client).await;
            crate::telemetry::prometheus::render(&handle, &stats, &tools)
        }
        Err(_) => handle.render(),
    };
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}
