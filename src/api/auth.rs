//! Bearer-token authentication of `/v1/...` (when `JOBYARD_API_TOKEN` is set), compared in
//! constant time so the token cannot be guessed byte by byte from response times.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;
use subtle::ConstantTimeEq;

use super::{ApiError, ApiSettings};

pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let expected = req.app_data::<web::Data<ApiSettings>>().and_then(|s| s.api_token.clone());
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        let matches: bool = given.as_bytes().ct_eq(expected.expose().as_bytes()).into();
        if !matches {
            return Err(ApiError::unauthorized().into());
        }
    }
    next.call(req).await
}
