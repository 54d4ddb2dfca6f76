//! `/v1/tools`: tools (upstream sources kept fresh in the cache), their data served from the
//! cache with validators and RFC 5861 freshness (`stale-while-revalidate`, stale-if-error),
//! and forced refreshes. What the serving headers mean is in `docs/http-api.md`.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::conditional::{not_modified, validators};
use super::error::ErrorBody;
use super::extract::JsonBody;
use super::ApiError;
use crate::cache::Entry;
use crate::documents::DocumentError;
use crate::job::JobRecord;
use crate::runtime::{Client, RuntimeError};
use crate::tools::freshness::Freshness;
use crate::tools::manage::ToolView;
use crate::tools::state::Served;
use crate::tools::{data_key, Tool, ToolError, ToolSpec};

/// The path parameter naming a tool, as the OpenAPI document describes it.
const NAME: &str = "The tool's name: 1 to 64 of `[a-z0-9_-]`";

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

/// Every tool, with its state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ToolList {
    pub tools: Vec<ToolView>,
}

/// A read of a tool with nothing cached that its refresh did not fill in time.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DataPending {
    /// The refresh job to follow.
    pub job: JobRecord,
}

#[utoipa::path(
    put,
    path = "/v1/tools/{name}",
    operation_id = "put_tool",
    tag = "tools",
    params(("name" = String, Path, description = NAME)),
    request_body = ToolSpec,
    responses(
        (status = 201, description = "Created, with its limit `tool:<name>` and its schedule", body = ToolView),
        (status = 200, description = "Replaced", body = ToolView),
        (status = 400, description = "A field is invalid, a header names a variable outside `JOBYARD_TOOL_SECRETS`, or the URL's host is not allowed", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/tools/{name}",
    operation_id = "get_tool",
    tag = "tools",
    params(("name" = String, Path, description = NAME)),
    responses(
        (status = 200, description = "The tool, its last and next refresh, the upstream's rate-limit budget, its last error", body = ToolView),
        (status = 404, description = "No such tool", body = ErrorBody),
    )
)]
pub async fn get(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tools = client.tools();
    let tool = tools.require(&name).await?;
    Ok(HttpResponse::Ok().json(tools.view(&client, tool).await?))
}

#[utoipa::path(
    get,
    path = "/v1/tools",
    operation_id = "list_tools",
    tag = "tools",
    responses((status = 200, description = "Every tool, with its state", body = ToolList))
)]
pub async fn list(client: web::Data<Client>) -> Result<HttpResponse, ApiError> {
    let tools = client.tools();
    let mut views = Vec::new();
    for tool in tools.list().await? {
        views.push(tools.view(&client, tool).await?);
    }
    Ok(HttpResponse::Ok().json(ToolList { tools: views }))
}

#[utoipa::path(
    delete,
    path = "/v1/tools/{name}",
    operation_id = "delete_tool",
    tag = "tools",
    params(("name" = String, Path, description = NAME)),
    responses(
        (status = 204, description = "Removed, with its cached data, schedule and limit"),
        (status = 404, description = "No such tool", body = ErrorBody),
    )
)]
pub async fn delete(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    client.tools().delete(&client, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/v1/tools/{name}/refresh",
    operation_id = "refresh_tool",
    tag = "tools",
    params(("name" = String, Path, description = NAME)),
    responses(
        (status = 202, description = "The refresh job (the one already in flight, if any), with `Location`", body = JobRecord),
        (status = 404, description = "No such tool", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DataParams {
    /// How long a read of a tool with nothing cached waits for its refresh, in milliseconds
    /// (0 to 60 000; default 5 000).
    #[param(value_type = Option<u64>, maximum = 60000)]
    pub wait_ms: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/tools/{name}/data",
    operation_id = "get_tool_data",
    tag = "tools",
    params(("name" = String, Path, description = NAME), DataParams),
    responses(
        (status = 200, description = "The cached upstream body with its `Content-Type`, `ETag`, `Last-Modified`, `Age` and `Cache-Control: max-age, stale-while-revalidate`; stale data is served at once while a refresh runs, and the last good data while the upstream fails (with a `Warning`)",
         content(("*/*"))),
        (status = 304, description = "Unchanged since `If-None-Match`"),
        (status = 202, description = "Nothing cached, and the refresh did not fill it within `wait_ms`", body = DataPending),
        (status = 400, description = "`wait_ms` is invalid", body = ErrorBody),
        (status = 404, description = "No such tool", body = ErrorBody),
    )
)]
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
    let tool = tools.for_read(&name).await?;
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
        .json(DataPending { job }))
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
    super::conditional::foreign_content(&mut response);
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
                if client.tools().stale_trigger_due(&tool.name) {
                    let (client, tool) = (client.clone(), tool.clone());
                    actix_rt::spawn(async move {
                        if let Err(err) = client.tools().trigger(&client, &tool, &state).await {
                            tracing::warn!(tool = %tool.name, "stale data could not trigger a refresh: {err}");
                        }
                    });
                }
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
    Ok(super::conditional::entry_body(response, entry))
}
