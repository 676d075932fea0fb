//! What every glance-api handler shares.

use std::sync::Arc;

use super::cache_api::{CacheApi, ImageCatalog};
use super::error::ApiError;
use super::settings::ApiSettings;
use crate::cache::ImageId;
use crate::db::Db;
use crate::store::FileStore;

/// Shared state of the server.
pub struct AppState {
    /// Image metadata.
    pub db: Arc<Db>,
    /// Image data.
    pub store: FileStore,
    /// The transparent cache and its API, when the cache is on.
    pub cache: Option<Arc<CacheApi>>,
    /// Settings.
    pub settings: ApiSettings,
}

/// The database as the cache API sees it. The cache API asks from its blocking threads,
/// which may wait on the runtime.
pub struct DbCatalog {
    /// The database.
    pub db: Arc<Db>,
    /// The runtime the database's connections live on.
    pub runtime: tokio::runtime::Handle,
}

impl ImageCatalog for DbCatalog {
    fn status(&self, id: &ImageId) -> Result<Option<String>, ApiError> {
        Ok(self
            .runtime
            .block_on(self.db.get_row(id))?
            .map(|i| i.status))
    }
}

/// Runs blocking work (SQLite, files) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}
