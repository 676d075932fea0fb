//! The catalogue database of a test: SQLite in the test's directory, or a fresh database
//! on the MariaDB or PostgreSQL server that `tests/db/servers.sh` started.
//!
//! `GLANCE_TEST_DATABASE` picks the backend: `sqlite` (the default), `mysql` or
//! `postgresql`; the servers' URLs come from `GLANCE_TEST_MYSQL_URL` and
//! `GLANCE_TEST_POSTGRES_URL`. A backend that is asked for but has no URL fails the test.

use std::path::Path;

use glance_operator::db::manage::{Command, run};
use glance_operator::db::{Backend, DbOptions, DbUrl};
use glance_operator::store::FileStore;
use sqlx::Connection;

/// The backend the tests run against.
pub fn backend() -> Backend {
    match std::env::var("GLANCE_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("mysql") => Backend::MySql,
        Ok("postgresql") => Backend::Postgres,
        Ok(other) => panic!("GLANCE_TEST_DATABASE={other}: use sqlite, mysql or postgresql"),
    }
}

/// The server URL for `backend` from the environment.
pub fn server_url(backend: Backend) -> String {
    let var = match backend {
        Backend::MySql => "GLANCE_TEST_MYSQL_URL",
        Backend::Postgres => "GLANCE_TEST_POSTGRES_URL",
        Backend::Sqlite => panic!("SQLite has no server"),
    };
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the servers with tests/db/servers.sh start DIR and source DIR/env")
    })
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (main, query) = url
        .split_once('?')
        .map_or((url, None), |(m, q)| (m, Some(q)));
    let (base, _) = main.rsplit_once('/').expect("URL has a database");
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Creates an empty database on the server of `backend` and returns its URL.
pub async fn create_database(backend: Backend) -> String {
    sqlx::any::install_default_drivers();
    let server = server_url(backend);
    let name = format!("glance_t_{}", uuid::Uuid::new_v4().simple());
    let admin = DbUrl::parse(&server).expect("server URL");
    let mut conn = sqlx::AnyConnection::connect(admin.sqlx_url())
        .await
        .expect("connect to the test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let _ = conn.close().await;
    with_database(&server, &name)
}

/// A catalogue URL for a test in `dir`: SQLite there, or a fresh database on the server,
/// with the schema created as `glance-manage db_sync` creates it.
pub async fn fresh_catalogue(dir: &Path) -> String {
    let backend = backend();
    if backend == Backend::Sqlite {
        return format!("sqlite:///{}/glance.sqlite", dir.display());
    }
    let url = create_database(backend).await;
    sync(&url, dir).await;
    url
}

/// Runs `glance-manage db_sync` on `url`.
pub async fn sync(url: &str, dir: &Path) {
    let options = DbOptions::new(DbUrl::parse(url).expect("url"));
    let store = FileStore::new(&dir.join("images"), "default_backend");
    let outcome = run(&Command::Sync(None), &options, &store)
        .await
        .expect("db_sync");
    assert_eq!(outcome.code, 0, "{}", outcome.stdout);
}

/// The host:port of a server URL.
pub fn server_addr(url: &str) -> std::net::SocketAddr {
    let after = url.split_once('@').expect("URL has user@host").1;
    let hostport = after.split(['/', '?']).next().expect("host");
    hostport.parse().expect("host is an IP address and port")
}

/// `url` with its host:port replaced by `addr`.
pub fn with_addr(url: &str, addr: std::net::SocketAddr) -> String {
    let old = server_addr(url).to_string();
    url.replacen(&old, &addr.to_string(), 1)
}
