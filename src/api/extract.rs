//! Request extractors that answer bad input with the API's error body: a JSON body
//! (media type, size limit, syntax, unknown fields and types, each naming the field at fault)
//! and the configuration of query and path errors.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::limits::body_timeout;
use super::ApiSettings;

/// A JSON request body decoded as `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = content_type(req).is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
        let body = RawBody::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::unsupported_media_type());
            }
            let RawBody(body) = body.await?;
            // Every body of this API is an object; serde would otherwise read a struct from an
            // array by position and report a confusing "[0]" field.
            if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
                return Err(ApiError::invalid("body", "request body must be a JSON object"));
            }
            decode(&body).map(JsonBody)
        })
    }
}

/// The request's media type, lowercased, without parameters.
pub fn content_type(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// A request body of any type, held to `JOBYARD_MAX_BODY_BYTES` (413 beyond) and to the time
/// [`body_timeout`] gives it (408 beyond).
pub struct RawBody(pub web::Bytes);

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<web::Data<ApiSettings>>().map_or(1 << 20, |s| s.max_body_bytes);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        let start = tokio::time::Instant::now();
        Box::pin(async move {
            if declared.is_some_and(|len| len > limit) {
                return Err(ApiError::payload_too_large(limit));
            }
            let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
            loop {
                // The body gets the time its length needs at the slowest rate we wait for: the
                // declared length, or what has come so far when none was declared (chunked).
                let deadline = start + body_timeout(declared.unwrap_or(0).max(body.len()));
                let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(_) => return Err(ApiError::request_timeout()),
                };
                let chunk = chunk.map_err(|err| {
                    ApiError::invalid("body", format!("could not read the body: {err}"))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::payload_too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(RawBody(body.freeze()))
        })
    }
}

/// Decodes `bytes` as `T`, naming the field at fault in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid("body", format!("invalid JSON: {inner}"));
        }
        let message = inner.to_string();
        // An unknown field's path already ends with its name; a missing one's is its parent.
        let field = match missing_field(&message) {
            Some(name) if path == "." => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None if path == "." => "body".to_owned(),
            None => path,
        };
        let said = crate::wording::field_error(&field, &message);
        ApiError::invalid(field, said)
    })?;
    de.end().map_err(|err| ApiError::invalid("body", format!("invalid JSON: {err}")))?;
    Ok(value)
}

/// The name in serde's "missing field `name`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Answers query-string errors with the error body, naming the parameter at fault.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, req| query_error(&err.to_string(), req).into())
}

/// The query parameters that take a whole number.
const NUMERIC_PARAMETERS: [&str; 4] = ["timeout_ms", "wait_ms", "limit", "ttl_secs"];

/// The error of a query string the handler's type refused with `message`: a numeric parameter
/// that is not a number is named; otherwise serde's words, rewritten.
fn query_error(message: &str, req: &HttpRequest) -> ApiError {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string());
    let pairs = pairs.map(web::Query::into_inner).unwrap_or_default();
    let not_a_number = pairs.iter().find(|(name, value)| {
        NUMERIC_PARAMETERS.contains(&name.as_str()) && value.parse::<u64>().is_err()
    });
    if let Some((name, value)) = not_a_number {
        let message = format!("{name} must be a whole number (0 or more); got '{value}'");
        return ApiError::invalid(name.as_str(), message);
    }
    let message = message.strip_prefix("Query deserialize error: ").unwrap_or(message);
    let field = message.split('`').nth(1).filter(|_| message.contains("field")).unwrap_or("query");
    ApiError::invalid(field, crate::wording::field_error(field, message))
}

/// Answers path errors with the error body.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _| ApiError::invalid("path", err.to_string()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    fn field_of(json: &str) -> Option<String> {
        let err = decode::<JobSpec>(json.as_bytes()).err()?;
        assert_eq!(actix_web::ResponseError::status_code(&err), 400);
        err.field().map(str::to_owned)
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"kind": "noop", "priority": "high"}"#).as_deref(),
            Some("priority")
        );
        assert_eq!(field_of(r#"{"kind": "noop", "bogus": 1}"#).as_deref(), Some("bogus"));
        assert_eq!(
            field_of(r#"{"kind": "noop", "backoff": {"jitter": 3}}"#).as_deref(),
            Some("backoff.jitter")
        );
        assert_eq!(field_of(r#"{"kind": "#).as_deref(), Some("body"));
        assert_eq!(field_of(r#"{"kind": "noop"} trailing"#).as_deref(), Some("body"));
        assert_eq!(field_of(r#"{"priority": 1}"#).as_deref(), Some("kind"));
    }
}
