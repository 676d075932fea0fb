//! oslo.db's `[database]` options, and connecting with them.

use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection};
use tracing::{info, warn};

use super::url::{Backend, DbUrl};
use super::{DbError, classify};
use crate::conf::Config;

/// The `[database]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DbOptions {
    /// `connection`.
    pub url: DbUrl,
    /// `max_pool_size` (default 5): connections kept open.
    pub max_pool_size: u32,
    /// `max_overflow` (default 50): connections opened beyond the pool under load, and
    /// closed again once idle.
    pub max_overflow: u32,
    /// `pool_timeout` (default 30 s): how long a request waits for a connection.
    pub pool_timeout: Duration,
    /// `connection_recycle_time` (default 3600 s): connections older than this are
    /// replaced.
    pub connection_recycle_time: Duration,
    /// `max_retries` (default 10; -1 retries forever): attempts to connect at start-up.
    pub max_retries: Option<u32>,
    /// `retry_interval` (default 10 s): the pause between those attempts.
    pub retry_interval: Duration,
}

const SECTION: &str = "database";

impl DbOptions {
    /// The options for `url` with oslo.db's defaults.
    pub fn new(url: DbUrl) -> Self {
        Self {
            url,
            max_pool_size: 5,
            max_overflow: 50,
            pool_timeout: Duration::from_secs(30),
            connection_recycle_time: Duration::from_secs(3600),
            max_retries: Some(10),
            retry_interval: Duration::from_secs(10),
        }
    }

    /// Reads `[database]`; `default_url` is used when `connection` is not set.
    pub fn from_config(config: &Config, default_url: &str) -> Result<Self, DbError> {
        let url = DbUrl::parse(config.get_str(SECTION, "connection", default_url))?;
        let mut o = Self::new(url);
        let number = |option: &'static str, default: i64| -> Result<i64, DbError> {
            match config.get(SECTION, option) {
                None => Ok(default),
                Some(v) => v.trim().parse::<i64>().map_err(|_| DbError::Option {
                    option,
                    value: v.to_owned(),
                    expected: "expected an integer",
                }),
            }
        };
        let non_negative = |option: &'static str, default: i64| -> Result<u64, DbError> {
            let n = number(option, default)?;
            u64::try_from(n).map_err(|_| DbError::Option {
                option,
                value: n.to_string(),
                expected: "expected a number of at least 0",
            })
        };
        let count = |option: &'static str, default: i64| -> Result<u32, DbError> {
            u32::try_from(non_negative(option, default)?).map_err(|_| DbError::Option {
                option,
                value: number(option, default).unwrap_or(default).to_string(),
                expected: "expected a smaller number",
            })
        };
        o.max_pool_size = count("max_pool_size", 5)?;
        o.max_overflow = count("max_overflow", 50)?;
        o.pool_timeout = Duration::from_secs(non_negative("pool_timeout", 30)?);
        o.connection_recycle_time =
            Duration::from_secs(non_negative("connection_recycle_time", 3600)?);
        o.max_retries = match number("max_retries", 10)? {
            -1 => None,
            n => Some(u32::try_from(n).map_err(|_| DbError::Option {
                option: "max_retries",
                value: n.to_string(),
                expected: "expected -1 (retry forever) or a number of at least 0",
            })?),
        };
        o.retry_interval = Duration::from_secs(non_negative("retry_interval", 10)?);
        if o.max_pool_size + o.max_overflow == 0 {
            return Err(DbError::Option {
                option: "max_pool_size",
                value: "0".to_owned(),
                expected: "max_pool_size + max_overflow must allow at least one connection",
            });
        }
        Ok(o)
    }

    /// sqlx pool options: `max_pool_size + max_overflow` connections at most, the
    /// overflow closed after a minute idle.
    fn pool_options(&self) -> PoolOptions<sqlx::Any> {
        let options = PoolOptions::new()
            .acquire_timeout(self.pool_timeout)
            .test_before_acquire(true);
        if self.url.sqlite_file.is_none() && self.url.backend == Backend::Sqlite {
            // Each connection to `sqlite::memory:` is its own database: keep exactly one.
            return options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let options = if self.url.backend == Backend::Sqlite {
            // A write waits for SQLite's lock (another replica's, or another request's
            // transaction) as a request waits for a connection: up to pool_timeout,
            // rather than the driver's 5 s.
            let pragma = format!("PRAGMA busy_timeout = {}", self.pool_timeout.as_millis());
            options.after_connect(move |conn, _| {
                let pragma = pragma.clone();
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(pragma))
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
        } else {
            options
        };
        options
            .max_connections(self.max_pool_size + self.max_overflow)
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(60)))
            .max_lifetime(Some(self.connection_recycle_time).filter(|d| !d.is_zero()))
    }

    /// Connects, retrying an unavailable server `max_retries` times, `retry_interval`
    /// apart. Every message names the server, never the password.
    pub async fn connect(&self) -> Result<AnyPool, DbError> {
        sqlx::any::install_default_drivers();
        if let Some(dir) = self
            .url
            .sqlite_file
            .as_deref()
            .and_then(|f| f.parent())
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Unavailable {
                location: self.url.location.clone(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let mut attempt: u32 = 0;
        loop {
            // One plain connection per attempt: the pool itself would keep retrying
            // until pool_timeout.
            let error = match AnyConnection::connect(&self.url.sqlx).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    info!(database = %self.url, "connected to the database");
                    return self
                        .pool_options()
                        .connect_lazy(&self.url.sqlx)
                        .map_err(|e| classify(self.url.backend, &self.url.location, e));
                }
                Err(e) => classify(self.url.backend, &self.url.location, e),
            };
            if !error.is_unavailable() || self.max_retries.is_some_and(|max| attempt >= max) {
                return Err(match error {
                    DbError::Unavailable { location, reason } => DbError::Unavailable {
                        location,
                        reason: format!("{reason} (after {} attempts)", attempt + 1),
                    },
                    other => other,
                });
            }
            attempt += 1;
            warn!(database = %self.url, error = %error, attempt, "database unavailable; retrying");
            tokio::time::sleep(self.retry_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<DbOptions, DbError> {
        let config = Config::from_str("t.conf", text).expect("conf");
        DbOptions::from_config(&config, "sqlite://")
    }

    #[test]
    fn oslo_db_options_and_defaults() {
        let o = options("[database]\nconnection = mysql+pymysql://g:pw@db/glance\n").expect("ok");
        assert_eq!(
            (
                o.max_pool_size,
                o.max_overflow,
                o.pool_timeout,
                o.max_retries
            ),
            (5, 50, Duration::from_secs(30), Some(10))
        );
        let o = options(
            "[database]\nmax_pool_size = 2\nmax_overflow = 0\npool_timeout = 3\nconnection_recycle_time = 60\nmax_retries = -1\nretry_interval = 1\n",
        )
        .expect("ok");
        assert_eq!(o.url.backend, Backend::Sqlite);
        assert_eq!(
            (
                o.max_pool_size,
                o.max_overflow,
                o.pool_timeout,
                o.connection_recycle_time,
                o.max_retries,
                o.retry_interval
            ),
            (
                2,
                0,
                Duration::from_secs(3),
                Duration::from_secs(60),
                None,
                Duration::from_secs(1)
            )
        );
    }

    #[tokio::test]
    async fn the_pool_is_sized_and_timed_by_the_options() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = options(&format!(
            "[database]\nconnection = sqlite:///{}/g.sqlite\nmax_pool_size = 2\nmax_overflow = 1\npool_timeout = 7\nconnection_recycle_time = 90\n",
            dir.path().display()
        ))
        .expect("ok");
        let pool = o.connect().await.expect("connect");
        let set = pool.options();
        assert_eq!(set.get_max_connections(), 3);
        assert_eq!(set.get_acquire_timeout(), Duration::from_secs(7));
        assert_eq!(set.get_max_lifetime(), Some(Duration::from_secs(90)));
        // Three connections at once, and a fourth waits for one of them.
        let held = futures::future::try_join_all((0..3).map(|_| pool.acquire()))
            .await
            .expect("three");
        assert!(pool.try_acquire().is_none(), "no fourth connection");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), pool.acquire())
            .await
            .expect("a connection comes back")
            .expect("acquire");
    }

    #[test]
    fn bad_options_name_the_option() {
        for (text, needle) in [
            (
                "[database]\nmax_pool_size = many\n",
                "[database] max_pool_size = \"many\"",
            ),
            (
                "[database]\nmax_retries = -2\n",
                "[database] max_retries = \"-2\"",
            ),
            ("[database]\npool_timeout = -1\n", "[database] pool_timeout"),
            (
                "[database]\nmax_pool_size = 0\nmax_overflow = 0\n",
                "at least one connection",
            ),
        ] {
            let err = options(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
