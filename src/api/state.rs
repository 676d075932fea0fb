//! What every glance-api handler shares.

use std::sync::Arc;

use super::cache_api::{CacheApi, ImageCatalog};
use super::error::ApiError;
use super::fill::Fills;
use super::settings::ApiSettings;
use crate::cache::ImageId;
use crate::db::Db;
use crate::keystone::AuthToken;
use crate::policy::Policy;
use crate::store::{Reader, Span, StoreError, Stores};

/// Shared state of the server.
pub struct AppState {
    /// Image metadata.
    pub db: Arc<Db>,
    /// Image data.
    pub stores: Stores,
    /// The transparent cache and its API, when the cache is on.
    pub cache: Option<Arc<CacheApi>>,
    /// Settings.
    pub settings: ApiSettings,
    /// Keystone's token validation, with a keystone flavor.
    pub auth: Option<Arc<AuthToken>>,
    /// Glance's policies (defaults and `[oslo_policy] policy_file`).
    pub policy: Policy,
    /// The cache fills in flight ([`super::fill`]).
    pub fills: Fills,
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

    fn live(&self, ids: &[ImageId]) -> Result<Vec<ImageId>, ApiError> {
        Ok(self.runtime.block_on(self.db.live(ids))?)
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

impl AppState {
    /// Opens `span` of image `id`'s data at its first location a configured store reads.
    /// Called from blocking threads: it waits on the runtime for the database.
    pub fn open_data(
        &self,
        runtime: &tokio::runtime::Handle,
        id: &ImageId,
        span: Span,
    ) -> Result<Reader, ApiError> {
        let locations = runtime.block_on(self.db.locations(id))?;
        let mut failure = None;
        for (url, store) in &locations {
            match self.stores.open(url, store.as_deref(), span) {
                Ok(reader) => return Ok(reader),
                Err(e @ StoreError::NoStore { .. }) => failure = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(match failure {
            Some(e) => e.into(),
            None => ApiError::internal(format!("image {id} is active but has no location")),
        })
    }
}
