//! HTTP API tests against a real server bound to port 0, one binary for all of them.

#[macro_use]
mod helpers;

mod cache_backends;
mod cache_http;
mod cache_redis;
mod cli;
mod dashboard_backends;
mod dashboard_data;
mod embedding;
mod errors;
mod events;
mod fake_upstream;
mod flow_control;
mod flow_http;
mod flow_instances;
mod handler_threads;
mod hostile;
mod http_kind;
mod instances;
mod job_ops;
mod jobs;
mod lifecycle;
mod openapi;
mod queue_backends;
mod queue_ops;
mod queue_outage;
mod redis_support;
mod registry_backends;
mod registry_http;
mod schedules;
mod tools;
mod ui;
mod ui_browser;
#[path = "../support/webdriver.rs"]
mod webdriver;
