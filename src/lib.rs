//! Kubernetes operator for OpenStack Glance's local image cache.
pub mod api;
pub mod buffers;
pub mod cache;
pub mod conf;
pub mod crd;
pub mod db;
pub mod digest;
pub mod format;
pub mod keystone;
pub mod operator;
pub mod policy;
pub mod quantity;
pub mod resources;
pub mod store;
pub mod tools;
