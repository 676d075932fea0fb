//! Kubernetes operator for OpenStack Glance's local image cache.
pub mod quantity;
