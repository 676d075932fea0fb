//! The reconciler: controller wiring, the reconcile pipeline, apply, status and metrics.

pub mod apply;
pub mod context;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod run;
pub mod status;
