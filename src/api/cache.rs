//! `/v1/cache`: store raw bodies with their content type, read them back with validators
//! (`ETag`, `Last-Modified`, `Age`; 304 on `If-None-Match` / `If-Modified-Since`), delete, and
//! invalidate by prefix or tag.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::conditional::{not_modified, validators};
use super::error::ErrorBody;
use super::extract::{JsonBody, RawBody};
use super::{ApiError, ApiSettings};
use crate::cache::{validate_key, validate_tag, CacheError, Entry, MAX_TAGS};
use crate::job::non_null;
use crate::runtime::Client;

/// Longest accepted `ttl_secs`: a year.
const MAX_TTL_SECS: u64 = 31_536_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutParams {
    /// Seconds the entry lives: 1 to 31536000 (`JOBYARD_CACHE_TTL_SECS` when left out).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 31536000)]
    pub ttl_secs: Option<String>,
    /// Comma-separated tags (at most 32), for invalidation by tag.
    pub tags: Option<String>,
}

/// The body of `POST /v1/cache/invalidate`: a prefix, tags, or both.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// Removes every entry whose key starts with it.
    #[serde(default, deserialize_with = "non_null::deserialize")]
    #[schema(nullable = false)]
    pub prefix: Option<String>,
    /// Removes every entry holding one of them (1 to 32 tags).
    #[serde(default, deserialize_with = "non_null::deserialize")]
    #[schema(nullable = false)]
    pub tags: Option<Vec<String>>,
}

/// What an invalidation removed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Invalidated {
    /// Entries removed.
    pub removed: u64,
}

/// The cache key: any path tail, slashes included (`/v1/cache/pages/home`).
const KEY: &str = "The entry's key (1 to 512 bytes; may contain `/`)";

impl From<CacheError> for ApiError {
    fn from(err: CacheError) -> Self {
        let field = match err {
            CacheError::InvalidKey(_) => "key",
            CacheError::InvalidTag(_) => "tags",
            _ => "body",
        };
        ApiError::invalid(field, err.to_string())
    }
}

#[utoipa::path(
    put,
    path = "/v1/cache/{key}",
    operation_id = "put_cache_entry",
    tag = "cache",
    params(("key" = String, Path, description = KEY), PutParams),
    request_body(
        content(("*/*")),
        description = "Any bytes; its `Content-Type` is kept and answered back (`application/octet-stream` when none)"
    ),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "The key, `ttl_secs` or a tag is invalid", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    )
)]
pub async fn put(
    req: HttpRequest,
    client: web::Data<Client>,
    settings: web::Data<ApiSettings>,
    key: web::Path<String>,
    params: web::Query<PutParams>,
    RawBody(body): RawBody,
) -> Result<HttpResponse, ApiError> {
    validate_key(&key)?;
    let ttl = match params.ttl_secs.as_deref().filter(|v| !v.is_empty()) {
        None => settings.cache_ttl,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_TTL_SECS).contains(n))
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ApiError::invalid(
                    "ttl_secs",
                    format!("ttl_secs must be between 1 and {MAX_TTL_SECS}"),
                )
            })?,
    };
    let tags: Vec<String> = params
        .tags
        .as_deref()
        .map(|t| t.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    tags.iter().try_for_each(|t| validate_tag(t))?;
    // Kept as sent, parameters included (`text/plain; charset=iso-8859-1`).
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("application/octet-stream")
        .to_owned();
    client.cache().set(&key, Entry::new(body.to_vec(), media, ttl, tags)).await;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/v1/cache/{key}",
    operation_id = "get_cache_entry",
    tag = "cache",
    params(("key" = String, Path, description = KEY)),
    responses(
        (status = 200, description = "The bytes stored, with their `Content-Type`, `ETag`, `Last-Modified`, `Age` and `Cache-Control: max-age`",
         content(("*/*"))),
        (status = 304, description = "Unchanged since `If-None-Match` / `If-Modified-Since`"),
        (status = 400, description = "The key is invalid", body = ErrorBody),
        (status = 404, description = "No such entry (or it expired)", body = ErrorBody),
    )
)]
pub async fn get(
    req: HttpRequest,
    client: web::Data<Client>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    validate_key(&key)?;
    let entry = client
        .cache()
        .get(&key)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no cache entry '{key}'")))?;
    let now = Utc::now();
    let age = (now - entry.stored_at).num_seconds().max(0);
    let max_age = entry.remaining(now).as_secs();
    let unchanged = not_modified(&req, &entry.etag, entry.stored_at);
    let mut response = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    validators(&mut response, &entry.etag, entry.stored_at);
    super::conditional::foreign_content(&mut response);
    response
        .insert_header((header::AGE, age.to_string()))
        .insert_header((header::CACHE_CONTROL, format!("max-age={max_age}")));
    if unchanged {
        return Ok(response.finish());
    }
    Ok(super::conditional::entry_body(response, &entry))
}

#[utoipa::path(
    delete,
    path = "/v1/cache/{key}",
    operation_id = "delete_cache_entry",
    tag = "cache",
    params(("key" = String, Path, description = KEY)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The key is invalid", body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody),
    )
)]
pub async fn delete(
    client: web::Data<Client>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    validate_key(&key)?;
    if client.cache().delete(&key).await {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!("no cache entry '{key}'")))
    }
}

#[utoipa::path(
    post,
    path = "/v1/cache/invalidate",
    operation_id = "invalidate_cache",
    tag = "cache",
    request_body = InvalidateRequest,
    responses(
        (status = 200, description = "How many entries were removed", body = Invalidated),
        (status = 400, description = "Neither prefix nor tags, or one is invalid", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    )
)]
pub async fn invalidate(
    client: web::Data<Client>,
    JsonBody(request): JsonBody<InvalidateRequest>,
) -> Result<HttpResponse, ApiError> {
    if request.prefix.is_none() && request.tags.is_none() {
        return Err(ApiError::invalid("body", "give a prefix, tags, or both"));
    }
    let mut removed = 0;
    if let Some(prefix) = &request.prefix {
        if prefix.is_empty() {
            return Err(ApiError::invalid("prefix", "prefix must not be empty"));
        }
        validate_key(prefix)
            .map_err(|_| ApiError::invalid("prefix", "prefix must be a valid key start"))?;
    }
    if let Some(tags) = &request.tags {
        if tags.is_empty() || tags.len() > MAX_TAGS {
            return Err(ApiError::invalid("tags", format!("give 1 to {MAX_TAGS} tags")));
        }
        tags.iter().try_for_each(|t| validate_tag(t))?;
    }
    if let Some(prefix) = &request.prefix {
        removed += client.cache().invalidate_prefix(prefix).await;
    }
    if let Some(tags) = &request.tags {
        removed += client.cache().invalidate_tags(tags).await;
    }
    Ok(HttpResponse::Ok().json(Invalidated { removed }))
}
