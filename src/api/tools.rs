//! `/v1/tools`: tools (upstream sources kept fresh in the cache), their data served from the
//! cache with validators and RFC 5861 freshness (`stale-while-revalidate`, stale-if-error),
//! and forced refreshes. What the serving headers mean is in `docs/http-api.md`.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::conditional::{not_modified, validators};
use super::extract::JsonBody;
use super::ApiError;
use crate::cache::Entry;
use crate::documents::DocumentError;
use crate::runtime::{Client, RuntimeError};
use crate::tools::freshness::Freshness;
use crate::tools::state::Served;
use crate::tools::{data_key, Tool, ToolError, ToolSpec};

/// How long a read of a tool with nothing cached waits for its refresh by default.
const DEFAULT_WAIT_MS: u64 = 5_000;
/// The longest it may be asked to wait.
const MAX_WAIT_MS: u64 = 60_000;

impl From<ToolError> for ApiError {
    fn from(err: ToolError) -> Self {
        match err {
            ToolError::Invalid { field, message } => ApiError::invalid(field, message),
            ToolError::NotFound(_) => ApiError::not_found(err.to_string()),
            ToolError::Store(err) => err.into(),
            ToolError::Runtime(err) => err.into(),
        }
    }
}

impl From<DocumentError> for ApiError {
    fn from(err: DocumentError) -> Self {
        match err {
            DocumentError::Metadata(crate::metadata::MetadataError::InvalidName(_)) => {
                ApiError::invalid("name", "names are 1 to 64 of [a-z0-9_-]")
            }
            #[cfg(feature = "redis")]
            DocumentError::Redis(err) => {
                tracing::warn!("document store: {err}");
                ApiError::unavailable("the document store is unavailable; retry shortly")
            }
            other => ApiError::internal(&other),
        }
    }
}

pub async fn put(
    client: web::Data<Client>,
    name: web::Path<String>,
    JsonBody(spec): JsonBody<ToolSpec>,
) -> Result<HttpResponse, ApiError> {
    let tools = client.tools();
    let (tool, created) = tools.put(&client, &name, spec).await?;
    let view = tools.view(&client, tool).await?;
    let mut response = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(response.json(view))
}

pub async fn get(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tools = client.tools();
    let tool = tools.require(&name).await?;
    Ok(HttpResponse::Ok().json(tools.view(&client, tool).await?))
}

pub async fn list(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    let tools = client.tools();
    let mut views = Vec::new();
    for tool in tools.list().await? {
        views.push(tools.view(&client, tool).await?);
    }
    Ok(HttpResponse::Ok().json(json!({ "tools": views })))
}

pub async fn delete(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.tools().delete(&client, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn refresh(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tools = client.tools();
    let tool = tools.require(&name).await?;
    let state = tools.state(&name).await?;
    let job = tools.trigger(&client, &tool, &state).await?.record;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/jobs/{}", job.id)))
        .json(job))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataParams {
    pub wait_ms: Option<String>,
}

pub async fn data(
    req: HttpRequest,
    client: web::Data<Client>,
    name: web::Path<String>,
    params: web::Query<DataParams>,
) -> Result<HttpResponse, ApiError> {
    let wait = match params.wait_ms.as_deref().filter(|v| !v.is_empty()) {
        None => DEFAULT_WAIT_MS,
        Some(raw) => raw.parse::<u64>().ok().filter(|ms| *ms <= MAX_WAIT_MS).ok_or_else(|| {
            ApiError::invalid("wait_ms", format!("wait_ms must be 0 to {MAX_WAIT_MS}"))
        })?,
    };
    let tools = client.tools();
    let tool = tools.require(&name).await?;
    let key = data_key(&tool.name);
    if let Some(entry) = client.cache().get(&key).await {
        return serve(&req, &client, &tool, &entry, None).await;
    }
    // Nothing cached: every concurrent reader shares one refresh (its idempotency key).
    let state = tools.state(&tool.name).await?;
    let job = tools.trigger(&client, &tool, &state).await?.record;
    if wait > 0 {
        match client.wait(job.id, Duration::from_millis(wait)).await {
            Ok(_) | Err(RuntimeError::WaitTimeout { .. } | RuntimeError::JobFailed { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    if let Some(entry) = client.cache().get(&key).await {
        return serve(&req, &client, &tool, &entry, Some(Served::Miss)).await;
    }
    let job = client.status(job.id).await.unwrap_or(job);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/jobs/{}", job.id)))
        .json(json!({ "job": job })))
}

/// Answers with the cached data; stale data triggers a refresh, which the answer does not
/// wait for.
async fn serve(
    req: &HttpRequest,
    client: &Client,
    tool: &Tool,
    entry: &Entry,
    served: Option<Served>,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let freshness = Freshness::of(tool, entry, now);
    let unchanged = not_modified(req, &entry.etag, entry.stored_at);
    let mut response = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    validators(&mut response, &entry.etag, entry.stored_at);
    response.insert_header((header::AGE, freshness.age_secs.to_string())).insert_header((
        header::CACHE_CONTROL,
        format!("max-age={}, stale-while-revalidate={}", freshness.fresh_for_secs, tool.stale_secs),
    ));
    let served = served.unwrap_or(if freshness.stale { Served::Stale } else { Served::Fresh });
    if freshness.stale {
        let stale_for = freshness.age_secs.saturating_sub(tool.ttl_secs);
        response
            .insert_header((header::WARNING, "110 - \"Response is Stale\""))
            .insert_header(("x-jobyard-stale-secs", stale_for.to_string()));
        // Stale data at hand is served whatever happens to the state and the trigger.
        match client.tools().state(&tool.name).await {
            Ok(state) => {
                // The last refresh failed after these data were confirmed: stale-if-error.
                let confirmed = now - chrono::Duration::seconds(freshness.age_secs as i64);
                if state.last_error_at.is_some_and(|at| at >= confirmed) {
                    response.append_header((header::WARNING, "111 - \"Revalidation Failed\""));
                }
                let (client, tool) = (client.clone(), tool.clone());
                actix_rt::spawn(async move {
                    if let Err(err) = client.tools().trigger(&client, &tool, &state).await {
                        tracing::warn!(tool = %tool.name, "stale data could not trigger a refresh: {err}");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(tool = %tool.name, "stale data served without a refresh: {err}")
            }
        }
    }
    client.tools().served().count(&tool.name, served, unchanged);
    if unchanged {
        return Ok(response.finish());
    }
    let media = header::HeaderValue::from_str(&entry.content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    Ok(response.insert_header((header::CONTENT_TYPE, media)).body(entry.value.to_vec()))
}
