//! The one mapping from errors to HTTP answers: every 4xx and 5xx carries the API's error body
//! (`{"error": {"code", "message", "field"?}}`). Internal causes are logged here and never sent.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{mime, HttpResponse, ResponseError};
use serde::Serialize;

use crate::job::spec::{SpecError, SpecErrorKind};
use crate::queue::QueueError;
use crate::runtime::RuntimeError;
use crate::telemetry::Escaped;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u32 = 1;

/// The challenge of a 401 (RFC 6750).
const WWW_AUTHENTICATE: &str = "Bearer realm=\"jobyard\"";

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// The `Allow` header of a 405.
    allow: Option<String>,
}

/// The body of error answers, as the OpenAPI document names it.
pub(super) type ErrorBody = Body<'static>;

/// The body of every error answer (named `Error` in the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(super) struct Body<'a> {
    #[schema(inline)]
    error: Detail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Detail<'a> {
    /// Machine-readable: `invalid_request`, `not_found`, `unauthorized`, `draining`, ...
    code: &'a str,
    /// For people: what is wrong, and what is allowed.
    message: &'a str,
    /// The request field at fault (`priority`, `jobs[2].kind`, `ttl_secs`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An error answer with HTTP `status`, the machine-readable `code` (`error.code` in the body)
    /// and a `message` for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, allow: None }
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn with_field_opt(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    /// A 400 `invalid_request` naming `field` as the one at fault.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message).with_field(field)
    }

    /// A 404 `not_found`: no job, schedule, cache entry or route by that name.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A 401 `unauthorized`: the bearer token is missing or wrong. Answered with a
    /// `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
    }

    /// A 403 `read_only`: the dashboard, when `JOBYARD_UI=read-only`, asked to change
    /// something.
    pub fn read_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "the dashboard is read-only (JOBYARD_UI=read-only): it may not change anything",
        )
    }

    /// A 413 `payload_too_large`: the request body is larger than `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// A 415 `unsupported_media_type`: the request body is not declared as JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request body must be JSON (Content-Type: application/json)",
        )
    }

    /// A 405; `allow` lists the methods the path does answer (its `Allow` header).
    pub fn method_not_allowed(allow: impl Into<String>) -> Self {
        let mut err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        );
        err.allow = Some(allow.into());
        err
    }

    /// The request (its head or its body) did not arrive in time.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request was not received in time",
        )
    }

    /// A 503 `backend_unavailable`: a backend cannot be reached right now. Answered with a
    /// `Retry-After` header, since a retry may succeed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable", message)
    }

    /// A 503 `draining`: this instance is shutting down (running jobs finish, it takes no new
    /// work). Answered with a `Retry-After` header: another instance, or this one restarted,
    /// will take it.
    pub fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this instance is shutting down: its running jobs finish, new jobs go to another \
             instance; retry shortly",
        )
    }

    /// A failure of ours: logged with its cause, answered without it.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!("internal error: {}", Escaped(cause));
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// The machine-readable error code (`error.code` in the body), e.g. `not_found`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The request field at fault (`error.field` in the body), when one is named.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The error body, as sent.
    pub fn body(&self) -> Vec<u8> {
        let detail =
            Detail { code: self.code, message: &self.message, field: self.field.as_deref() };
        serde_json::to_vec(&Body { error: detail }).expect("an error body serializes")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, WWW_AUTHENTICATE));
        }
        if let Some(allow) = &self.allow {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        response.content_type(mime::APPLICATION_JSON).body(self.body())
    }
}

impl From<SpecError> for ApiError {
    fn from(err: SpecError) -> Self {
        let code = match err.kind {
            SpecErrorKind::Invalid => "invalid_request",
            SpecErrorKind::UnknownKind => "unknown_kind",
            SpecErrorKind::UnknownDependency => "unknown_dependency",
            SpecErrorKind::DependencyCycle => "dependency_cycle",
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, err.message).with_field_opt(err.field)
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match &err {
            QueueError::NotFound(_)
            | QueueError::ScheduleNotFound(_)
            | QueueError::LimitNotFound(_) => ApiError::not_found(err.to_string()),
            QueueError::UnknownLimit(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_limit", err.to_string())
                    .with_field("limits")
            }
            QueueError::CostOverLimit { .. } => ApiError::invalid("cost", err.to_string()),
            QueueError::AlreadyFinished { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_finished", err.to_string())
            }
            QueueError::UnknownDependency(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_dependency", err.to_string())
                    .with_field("depends_on")
            }
            QueueError::InvalidCursor(_) => ApiError::invalid("cursor", err.to_string()),
            QueueError::Internal(_) => ApiError::internal(&err),
            QueueError::Unavailable(_) => {
                let kind = "requests answered 503 while the queue backend is unavailable";
                if crate::telemetry::repeated::admit(kind) {
                    tracing::warn!("{}; answering 503", Escaped(&err));
                }
                ApiError::unavailable("the queue backend is unavailable; retry shortly")
            }
            QueueError::QueueFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", err.to_string())
                    .with_field("queue")
            }
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Spec(err) => err.into(),
            RuntimeError::Queue(err) => err.into(),
            other => ApiError::internal(&other),
        }
    }
}
