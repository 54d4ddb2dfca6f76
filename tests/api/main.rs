//! HTTP API tests against a real server bound to port 0, one binary for all of them.

mod cache_backends;
mod cache_http;
mod cache_redis;
mod cli;
mod errors;
mod helpers;
mod http_kind;
mod jobs;
mod lifecycle;
mod queue_backends;
mod redis_support;
mod schedules;
