//! `/v1/metadata/{name}`: small JSON documents (preferences, dashboard layouts) shared by every
//! instance: in Redis when configured, in the file store under `JOBYARD_DATA_DIR` otherwise,
//! where `Runtime::metadata()` reads them too.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::error::ErrorBody;
use super::extract::{content_type, RawBody};
use super::ApiError;
use crate::documents::Namespace;
use crate::runtime::Client;

/// The path parameter naming a document, as the OpenAPI document describes it.
const NAME: &str = "The document's name: 1 to 64 of `[a-z0-9_-]`";

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

#[utoipa::path(
    put,
    path = "/v1/metadata/{name}",
    operation_id = "put_metadata",
    tag = "metadata",
    params(("name" = String, Path, description = NAME)),
    request_body(content = serde_json::Value, description = "Any JSON document of at most 64 KiB", content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the document as stored", body = serde_json::Value),
        (status = 200, description = "Replaced; the document as stored", body = serde_json::Value),
        (status = 400, description = "The name is invalid or the body is not JSON", body = ErrorBody),
        (status = 413, description = "The document is larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
    )
)]
pub async fn put(
    req: HttpRequest,
    client: web::Data<Client>,
    name: web::Path<String>,
    RawBody(body): RawBody,
) -> Result<HttpResponse, ApiError> {
    let is_json = content_type(&req).is_some_and(|v| {
        v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
    });
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(ApiError::payload_too_large(MAX_DOCUMENT_BYTES));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::invalid("body", format!("the document is not JSON: {err}")))?;
    let docs = client.tools().documents();
    let created = docs.put_value(Namespace::Metadata, &name, &value).await?;
    let mut response = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(response.json(value))
}

#[utoipa::path(
    get,
    path = "/v1/metadata/{name}",
    operation_id = "get_metadata",
    tag = "metadata",
    params(("name" = String, Path, description = NAME)),
    responses(
        (status = 200, description = "The document", body = serde_json::Value),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
pub async fn get(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let docs = client.tools().documents();
    match docs.get_value(Namespace::Metadata, &name).await? {
        Some(value) => Ok(HttpResponse::Ok().json(value)),
        None => Err(ApiError::not_found(format!("no metadata document '{name}'"))),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/metadata/{name}",
    operation_id = "delete_metadata",
    tag = "metadata",
    params(("name" = String, Path, description = NAME)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
pub async fn delete(
    client: web::Data<Client>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let docs = client.tools().documents();
    if docs.delete(Namespace::Metadata, &name).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!("no metadata document '{name}'")))
    }
}
