//! glance-api's HTTP surface.

pub mod cache_api;
pub mod error;
