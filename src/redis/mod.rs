//! Redis: the connection layer ([`RedisClient`]) and every key jobyard uses ([`Keys`]).
//!
//! The extern crate is always written `::redis` in this crate, since this module shares its
//! name.

mod client;
mod keys;

pub use client::{Probe, RedisClient, RedisError, RedisSettings, RedisStats};
pub use keys::{lane_member, Keys, QueueKeys, SLICE_MS};
