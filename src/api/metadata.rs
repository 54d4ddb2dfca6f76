//! `/v1/metadata/{name}`: small JSON documents (preferences, dashboard layouts) shared by every
//! instance: in Redis when configured, in the file store under `JOBYARD_DATA_DIR` otherwise,
//! where `Runtime::metadata()` reads them too.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::extract::{content_type, RawBody};
use super::ApiError;
use crate::documents::Namespace;
use crate::runtime::Client;

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

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
