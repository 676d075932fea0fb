//! Kubernetes operator for OpenStack Glance's local image cache.
pub mod cache;
pub mod crd;
pub mod operator;
pub mod quantity;
pub mod resources;
