//! What one client may hold of the HTTP server, in one place. These are constants rather than
//! configuration (but for the connections per peer, which a reverse proxy needs raised): they
//! bound abuse, not workloads, and no honest client comes near them.
//!
//! How long a request may take to arrive, by part:
//! - the head of a connection's first request: [`REQUEST_HEAD_TIMEOUT`], answered `408`;
//! - the head of every later request on a kept-alive connection: [`IDLE_CONNECTION_TIMEOUT`]
//!   from the end of the previous response, after which the connection is closed;
//! - the body, when a handler reads it: [`REQUEST_BODY_TIMEOUT`] plus the time to send the
//!   declared length at [`MIN_BODY_BYTES_PER_SEC`], answered `408`;
//! - a body no handler reads is discarded after the answer, within the same idle bound.

use std::time::Duration;

/// Time a new connection gets to deliver the head (request line and headers) of its first
/// request (actix-web's `client_request_timeout`).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Time an idle kept-alive connection stays open waiting for its next request.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Time a connection with no request in progress stays open in all, however it trickles bytes
/// (a head sent a byte at a time, a body the handler did not read): from the end of its last
/// response, or from its start. actix-web bounds only the first request's head.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Time to send a body, beyond what its length needs at [`MIN_BODY_BYTES_PER_SEC`]: a
/// 1 MiB body gets 10 s + 64 s.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The slowest average upload a body is given time for.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 16 * 1024;

/// Time to finish closing a connection (actix-web's `client_disconnect_timeout`).
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The time a body of `len` bytes gets to arrive.
pub fn body_timeout(len: usize) -> Duration {
    REQUEST_BODY_TIMEOUT + Duration::from_millis(len as u64 * 1000 / MIN_BODY_BYTES_PER_SEC)
}
