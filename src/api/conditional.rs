//! Conditional requests (RFC 9110 section 13): the validators an answer carries, and whether a
//! client's copy is still current. `If-None-Match` wins over `If-Modified-Since`.

use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, HttpDate};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use chrono::{DateTime, Utc};

use crate::cache::Entry;

/// True when the request's validators match: answer 304.
pub fn not_modified(req: &HttpRequest, etag: &str, modified: DateTime<Utc>) -> bool {
    let modified = last_modified(modified);
    let headers = req.headers();
    if let Some(tags) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return tags
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<HttpDate>().ok())
        .is_some_and(|since| {
            // HTTP dates have whole seconds: compare at that precision.
            let since: SystemTime = since.into();
            let since =
                since.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            modified.timestamp() <= since
        })
}

/// The `Last-Modified` to announce for `modified`: never later than now (RFC 9110 section
/// 8.8.2.1). Besides being what the RFC asks, this keeps a stored time that HTTP dates cannot
/// express (past year 9999, from foreign data under our keys) out of the header.
fn last_modified(modified: DateTime<Utc>) -> DateTime<Utc> {
    modified.min(Utc::now())
}

/// Adds `ETag` and `Last-Modified` to an answer.
pub fn validators(response: &mut HttpResponseBuilder, etag: &str, modified: DateTime<Utc>) {
    let seconds = Duration::from_secs(last_modified(modified).timestamp().max(0) as u64);
    let modified = HttpDate::from(SystemTime::UNIX_EPOCH + seconds);
    response
        .insert_header((header::ETAG, etag.to_owned()))
        .insert_header((header::LAST_MODIFIED, modified));
}

/// Headers of an answer whose bytes someone else supplied (a cache entry, an upstream's body):
/// a browser must neither guess another type for them nor run them as this origin's page, so
/// an upstream's `text/html` cannot script the API's origin.
pub fn foreign_content(response: &mut HttpResponseBuilder) {
    response
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"));
}

/// The answer carrying a cache entry's bytes with its content type. A type read back from
/// Redis that is not a valid header (foreign data under our keys) is not passed on.
pub fn entry_body(mut response: HttpResponseBuilder, entry: &Entry) -> HttpResponse {
    let media = header::HeaderValue::from_str(&entry.content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    response.insert_header((header::CONTENT_TYPE, media)).body(entry.value.to_vec())
}
