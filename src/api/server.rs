//! glance-api: state, routes, the background prefetch worker, and graceful shutdown.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, get, post, put};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::cache_api::{self, CacheApi};
use super::error::ApiError;
use super::fill::Fills;
use super::settings::ApiSettings;
use super::state::{AppState, DbCatalog};
use super::{
    access, connection, data, discovery, image_actions, image_list, images, import, location_api,
    members, tasks,
};
use crate::cache::{Cache, CacheError, CentralDb, DriverKind, ImageId};
use crate::conf::{CacheOptions, ConfError};
use crate::db::{Db, DbError};
use crate::keystone::AuthToken;
use crate::store::{Span, StoreError, Stores};
use crate::tools::prefetch::{ImageSource, Lookup, prefetch};

/// Why glance-api could not start or stopped.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// An image store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cache.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// An option the cache needs (worker_self_reference_url with centralized_db).
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// Opening the cache panicked.
    #[error("opening the image cache: {0}")]
    CacheTask(String),
    /// The store directory or the listening socket.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Opens the store, the database (retrying as `[database]` says) and the cache named by
/// `settings`.
pub async fn build_state(settings: ApiSettings) -> Result<Arc<AppState>, ServeError> {
    let stores = Stores::start(&settings.stores, &tokio::runtime::Handle::current())?;
    let db = Arc::new(Db::open(&settings.database, &settings.stores.legacy_store()).await?);
    let cache = match &settings.cache {
        Some(options) => {
            let cache = open_cache(options, &db).await?;
            Some(Arc::new(CacheApi {
                cache,
                max_size: options.image_cache_max_size,
                stall_time: Duration::from_secs(options.image_cache_stall_time),
                catalog: Arc::new(DbCatalog {
                    db: db.clone(),
                    runtime: tokio::runtime::Handle::current(),
                }),
                queued: Arc::default(),
            }))
        }
        None => None,
    };
    let auth = match &settings.keystone {
        Some(options) => Some(Arc::new(AuthToken::new(options.clone())?)),
        None => None,
    };
    let policy = settings.policy.clone();
    Ok(Arc::new(AppState {
        db,
        stores,
        cache,
        settings,
        auth,
        policy,
        fills: Fills::default(),
    }))
}

/// Opens the cache of `options`. With the centralized_db driver its rows go to `db`
/// under this node's worker_self_reference_url (recorded here; a cache.db of the sqlite
/// driver is migrated), which must be set.
async fn open_cache(options: &CacheOptions, db: &Arc<Db>) -> Result<Cache, ServeError> {
    let dir = options.image_cache_dir.clone().unwrap_or_default();
    let db_name = options.image_cache_sqlite_db.clone();
    let driver = options.image_cache_driver;
    let central = match driver {
        DriverKind::CentralizedDb => Some((
            options.node_url()?.to_owned(),
            db.clone(),
            tokio::runtime::Handle::current(),
        )),
        _ => None,
    };
    // The centralized_db driver blocks on the database: off the async threads.
    tokio::task::spawn_blocking(move || match central {
        Some((node, db, runtime)) => {
            Cache::open_central(&dir, CentralDb::register(db, &node, runtime)?, &db_name)
        }
        None => Cache::open(&dir, driver, &db_name),
    })
    .await
    .map_err(|e| ServeError::CacheTask(e.to_string()))?
    .map_err(ServeError::from)
}

/// Every route of the Image API.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/", get(discovery::root))
        .route("/versions", get(discovery::list_versions))
        .route("/healthcheck", get(discovery::healthcheck))
        .route("/v2", any(discovery::v2_root))
        .route("/v2/schemas/image", get(discovery::schema_image))
        .route("/v2/schemas/images", get(discovery::schema_images))
        .route("/v2/schemas/member", get(discovery::schema_member))
        .route("/v2/schemas/members", get(discovery::schema_members))
        .route("/v2/info/stores", get(discovery::stores))
        .route("/v2/info/stores/detail", get(discovery::stores_detail))
        .route("/v2/info/usage", get(discovery::usage))
        .route("/v2/info/import", get(import::info))
        .route("/v2/images/{id}/stage", put(import::stage))
        .route("/v2/images/{id}/import", post(import::import))
        .route("/v2/images/{id}/tasks", get(tasks::of_image))
        .route(
            "/v2/images/{id}/locations",
            get(location_api::list).post(location_api::add),
        )
        .route("/v2/tasks", get(tasks::list).post(tasks::create))
        .route(
            "/v2/stores/{store}/{id}",
            axum::routing::delete(images::delete_from_store),
        )
        .route("/v2/tasks/{id}", get(tasks::show))
        .route("/v2/schemas/task", get(tasks::schema_task))
        .route(
            "/v2/schemas/metadefs/{name}",
            get(super::metadef_schemas::show),
        )
        .merge(metadef_routes())
        .route("/v2/schemas/tasks", get(tasks::schema_tasks))
        .route("/v2/images", get(image_list::list).post(images::create))
        .route(
            "/v2/images/{id}",
            get(images::show)
                .patch(images::update)
                .delete(images::delete),
        )
        .route(
            "/v2/images/{id}/file",
            get(data::download).put(data::upload),
        )
        .route(
            "/v2/images/{id}/actions/deactivate",
            post(image_actions::deactivate),
        )
        .route(
            "/v2/images/{id}/actions/reactivate",
            post(image_actions::reactivate),
        )
        .route(
            "/v2/images/{id}/tags/{tag}",
            put(images::add_tag).delete(images::remove_tag),
        )
        .with_state(state.clone())
        .merge(members::router(state.clone()));
    if state.settings.cache_management
        && let Some(cache) = &state.cache
    {
        router = router.merge(cache_api::router(cache.clone()).route_layer(
            axum::middleware::from_fn_with_state(state.clone(), access::cache_policy),
        ));
    }
    router
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "The resource could not be found.".to_owned(),
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state,
            access::authenticate,
        ))
        .layer(axum::middleware::from_fn(super::error::negotiate))
        .layer(axum::middleware::from_fn(super::request_id::layer))
}

/// The metadata definitions API (`super::metadefs`).
fn metadef_routes() -> Router<Arc<AppState>> {
    use super::metadefs as m;
    const NS: &str = "/v2/metadefs/namespaces/{namespace}";
    Router::new()
        .route("/v2/metadefs/resource_types", get(m::list_resource_types))
        .route(
            "/v2/metadefs/namespaces",
            get(m::list_namespaces).post(m::create_namespace),
        )
        .route(
            NS,
            get(m::show_namespace)
                .put(m::update_namespace)
                .delete(m::delete_namespace),
        )
        .route(
            &format!("{NS}/resource_types"),
            get(m::list_associations).post(m::associate),
        )
        .route(
            &format!("{NS}/resource_types/{{resource_type}}"),
            axum::routing::delete(m::dissociate),
        )
        .route(
            &format!("{NS}/objects"),
            get(m::list_objects)
                .post(m::create_object)
                .delete(m::delete_objects),
        )
        .route(
            &format!("{NS}/objects/{{name}}"),
            get(m::show_object)
                .put(m::update_object)
                .delete(m::delete_object),
        )
        .route(
            &format!("{NS}/properties"),
            get(m::list_properties)
                .post(m::create_property)
                .delete(m::delete_properties),
        )
        .route(
            &format!("{NS}/properties/{{name}}"),
            get(m::show_property)
                .put(m::update_property)
                .delete(m::delete_property),
        )
        .route(
            &format!("{NS}/tags"),
            get(m::list_tags)
                .post(m::create_tags)
                .delete(m::delete_tags),
        )
        .route(
            &format!("{NS}/tags/{{name}}"),
            get(m::show_tag)
                .post(m::create_tag)
                .put(m::update_tag)
                .delete(m::delete_tag),
        )
}

/// The local store as a prefetch source, used from a blocking thread.
struct LocalImages<'a>(&'a AppState, tokio::runtime::Handle);

impl ImageSource for LocalImages<'_> {
    fn lookup(&self, id: &ImageId) -> Result<Lookup, String> {
        Ok(
            match self
                .1
                .block_on(self.0.db.get_row(id))
                .map_err(|e| e.to_string())?
            {
                Some(image) => Lookup::Found {
                    status: image.status,
                    checksum: image.checksum,
                    size: image.size.and_then(|s| u64::try_from(s).ok()),
                },
                None => Lookup::Missing,
            },
        )
    }

    fn open(&self, id: &ImageId) -> Result<Box<dyn Read + '_>, String> {
        let size = self
            .1
            .block_on(self.0.db.get_row(id))
            .map_err(|e| e.to_string())?
            .and_then(|image| image.size)
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(0);
        let span = Span {
            start: 0,
            len: size,
        };
        let reader = self.0.open_data(&self.1, id, span).map_err(|e| e.message)?;
        Ok(reader)
    }
}

/// Prefetches queued images in the background, one image at a time, whenever one is
/// queued (and once at start for what an earlier run left queued).
async fn prefetch_worker(state: Arc<AppState>, cache: Arc<CacheApi>) {
    loop {
        let run_state = state.clone();
        let run_cache = cache.clone();
        let runtime = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || {
            prefetch(
                &run_cache.cache,
                &LocalImages(&run_state, runtime),
                1,
                run_cache.max_size,
            )
        })
        .await;
        match result {
            Ok(Ok(report)) if report.fetched + report.failed > 0 => {
                info!(?report, "background prefetch")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "background prefetch failed"),
            Err(e) => warn!(error = %e, "background prefetch panicked"),
        }
        cache.queued.notified().await;
    }
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let bind = state.settings.bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| ServeError::Io {
            action: format!("listening on {bind}"),
            source,
        })?;
    serve_on(listener, state, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let worker = state
        .cache
        .clone()
        .filter(|_| state.settings.cache_management)
        .map(|cache| tokio::spawn(prefetch_worker(state.clone(), cache)));
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        action: "reading the bound address".to_owned(),
        source,
    })?;
    let upkeep = tokio::spawn(super::upkeep::run(state.clone()));
    info!(%addr, cache = state.cache.is_some(), "glance-api listening");
    let result = accept_until(listener, state, shutdown).await;
    if let Some(worker) = worker {
        worker.abort();
    }
    upkeep.abort();
    result
}

/// Accepts connections until `shutdown` completes, then tells every connection to stop
/// (after the answer in flight, idle ones at once) and waits until they all have, for at
/// most `graceful_shutdown_timeout`. Connections still busy then are closed: their
/// answers are cut off, and a cache fill that such an answer fed is dropped, never
/// published (see `crate::cache::CacheWriter`).
async fn accept_until(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let router = router(state.clone());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Finished connections are reaped as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _)) => {
                // Answers are written whole, so Nagle's delay would only ever add latency.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(error = %e, "setting TCP_NODELAY");
                }
                let (state, router, stopping) = (state.clone(), router.clone(), stopping.clone());
                connections.spawn(connection::serve(stream, state, router, stopping));
            }
            Err(e) => {
                // Out of descriptors, most likely: let connections finish, then go on.
                warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    let busy = connections.len();
    if busy > 0 {
        info!(
            connections = busy,
            "stopping: letting the requests in flight finish"
        );
    }
    let all_closed = async { while connections.join_next().await.is_some() {} };
    let drained = match state.settings.graceful_shutdown_timeout {
        Some(limit) => tokio::time::timeout(limit, all_closed).await.is_ok(),
        None => {
            all_closed.await;
            true
        }
    };
    if !drained {
        warn!(
            connections = connections.len(),
            "connections still busy after graceful_shutdown_timeout ({} s) are closed",
            state
                .settings
                .graceful_shutdown_timeout
                .unwrap_or_default()
                .as_secs()
        );
        // Aborted: their answers are dropped, and a cache fill that one fed fails at its
        // next chunk and goes to invalid/ instead of being published.
        connections.shutdown().await;
    }
    // Fills still running stop too: a fill cut off by the stop is never published.
    state.fills.stop();
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    info!("shutting down: finishing requests in flight");
}
