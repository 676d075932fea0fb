//! Upstream Glance's schema at alembic revision [`HEAD`]: created on an empty database,
//! recognised on one that upstream's `glance-manage db_sync` created, and reached from
//! the SQLite catalogue of glance-api 0.1.0 (one `images` table with JSON columns).
//!
//! The DDL in `schema/*.sql` is what upstream's migrations leave on each server, so a
//! database created here is one upstream finds current, and the reverse.

use sqlx::{AssertSqlSafe, Row};
use tracing::info;

use super::url::Backend;
use super::{Db, DbError};
use crate::store::FileStore;

/// The alembic revision of upstream Glance 2024.1 and later (Glance 33 included).
pub const HEAD: &str = "2024_1_contract01";

/// `PRAGMA user_version` of a SQLite catalogue in upstream's schema, so that glance-api
/// 0.1.0 (which wrote 1) refuses it rather than misreading it.
const SQLITE_USER_VERSION: i64 = 2;

fn ddl(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => include_str!("schema/sqlite.sql"),
        Backend::MySql => include_str!("schema/mysql.sql"),
        Backend::Postgres => include_str!("schema/postgresql.sql"),
    }
}

/// The statements of a DDL file: each ends with `;` at the end of a line; `--` lines
/// are comments.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") || (current.is_empty() && line.trim().is_empty()) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').to_owned();
            out.push(stmt);
            current.clear();
        }
    }
    out
}

/// Where a database stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No Glance tables at all.
    Empty,
    /// glance-api 0.1.0's SQLite catalogue.
    Legacy,
    /// Under alembic control at this revision.
    Revision(String),
    /// Glance tables without an alembic revision (a database from before alembic).
    Unversioned,
}

async fn table_exists(db: &Db, table: &str) -> Result<bool, DbError> {
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
        Backend::MySql => {
            "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?"
        }
        Backend::Postgres => {
            "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
        }
    };
    let row = sqlx::query(AssertSqlSafe(db.dialect().sql(sql)))
        .bind(table)
        .fetch_optional(db.pool())
        .await
        .map_err(|e| db.error(e))?;
    Ok(row.is_some())
}

/// Reads where the database stands.
pub async fn state(db: &Db) -> Result<State, DbError> {
    if table_exists(db, "alembic_version").await? {
        let row = sqlx::query("SELECT version_num FROM alembic_version")
            .fetch_optional(db.pool())
            .await
            .map_err(|e| db.error(e))?;
        if let Some(row) = row {
            let version: String = row.try_get(0).map_err(|e| db.error(e))?;
            return Ok(State::Revision(version));
        }
    }
    if !table_exists(db, "images").await? {
        return Ok(State::Empty);
    }
    if db.backend() == Backend::Sqlite && is_legacy(db).await? {
        return Ok(State::Legacy);
    }
    Ok(State::Unversioned)
}

async fn is_legacy(db: &Db) -> Result<bool, DbError> {
    let rows = sqlx::query("SELECT name FROM pragma_table_info('images')")
        .fetch_all(db.pool())
        .await
        .map_err(|e| db.error(e))?;
    let mut columns = Vec::new();
    for row in rows {
        columns.push(row.try_get::<String, _>(0).map_err(|e| db.error(e))?);
    }
    Ok(columns.iter().any(|c| c == "properties") && columns.iter().any(|c| c == "tags"))
}

/// What `db_sync` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The schema was already at [`HEAD`].
    UpToDate,
    /// The schema was created.
    Created,
    /// glance-api 0.1.0's catalogue was moved into upstream's schema.
    Upgraded,
}

/// Brings the database to [`HEAD`]: creates the schema on an empty database, upgrades
/// glance-api 0.1.0's SQLite catalogue (its images' data in `store`), and leaves a
/// current one alone. A database at another revision is refused, with what to run.
pub async fn sync(db: &Db, store: &FileStore) -> Result<Synced, DbError> {
    let synced = migrate(db, store).await?;
    let rewritten = absolute_locations(db).await?;
    if rewritten > 0 {
        info!(
            database = db.location(),
            locations = rewritten,
            "relative file locations made absolute"
        );
    }
    Ok(synced)
}

/// `file://` locations with a relative path, which glance-api recorded from a relative
/// `filesystem_store_datadir` before it made those absolute, become absolute `file:///`
/// ones, the path taken from the working directory (as they were written and are read,
/// see [`FileStore::parse_location`]). Returns how many were rewritten.
pub async fn absolute_locations(db: &Db) -> Result<usize, DbError> {
    let d = db.dialect();
    let rows = sqlx::query(AssertSqlSafe(d.sql(
        "SELECT id, value FROM image_locations WHERE value LIKE 'file://%' AND value NOT LIKE 'file:///%'",
    )))
    .fetch_all(db.pool())
    .await
    .map_err(|e| db.error(e))?;
    let mut rewritten = 0;
    for row in &rows {
        let id: i64 = row.try_get(0).map_err(|e| DbError::Sql(e.to_string()))?;
        let value: String = row.try_get(1).map_err(|e| DbError::Sql(e.to_string()))?;
        let Some(path) = FileStore::parse_location(&value) else {
            continue;
        };
        sqlx::query(AssertSqlSafe(
            d.sql("UPDATE image_locations SET value = ? WHERE id = ?"),
        ))
        .bind(format!("file://{}", path.display()))
        .bind(id)
        .execute(db.pool())
        .await
        .map_err(|e| db.error(e))?;
        rewritten += 1;
    }
    Ok(rewritten)
}

async fn migrate(db: &Db, store: &FileStore) -> Result<Synced, DbError> {
    match state(db).await? {
        State::Revision(v) if v == HEAD => Ok(Synced::UpToDate),
        State::Empty => {
            create(db).await?;
            info!(
                database = db.location(),
                revision = HEAD,
                "created the schema"
            );
            Ok(Synced::Created)
        }
        State::Legacy => {
            upgrade_legacy(db, store).await?;
            info!(
                database = db.location(),
                revision = HEAD,
                "moved the glance-api 0.1.0 catalogue into upstream Glance's schema"
            );
            Ok(Synced::Upgraded)
        }
        other => Err(unknown(db, &other)),
    }
}

fn unknown(db: &Db, state: &State) -> DbError {
    let problem = match state {
        State::Revision(v) => format!(
            "schema at alembic revision {v}, but this glance-api reads {HEAD}: bring it to {HEAD} with upstream Glance's glance-manage db_sync"
        ),
        _ => format!(
            "Glance tables without an alembic revision: bring them to {HEAD} with upstream Glance's glance-manage db_sync"
        ),
    };
    DbError::Schema {
        location: db.location().to_owned(),
        problem,
    }
}

/// Fails unless the schema is at [`HEAD`], saying what to run.
pub async fn check_current(db: &Db) -> Result<(), DbError> {
    match state(db).await? {
        State::Revision(v) if v == HEAD => Ok(()),
        State::Empty | State::Legacy => Err(DbError::Schema {
            location: db.location().to_owned(),
            problem: format!(
                "the schema is not at {HEAD}: run glance-manage db_sync before starting glance-api"
            ),
        }),
        other => Err(unknown(db, &other)),
    }
}

/// Creates every table at [`HEAD`] and records the revision. On PostgreSQL and SQLite
/// this is one transaction; MySQL commits each CREATE on its own.
async fn create(db: &Db) -> Result<(), DbError> {
    let mut tx = db.pool().begin().await.map_err(|e| db.error(e))?;
    for stmt in statements(ddl(db.backend())) {
        sqlx::raw_sql(AssertSqlSafe(stmt))
            .execute(&mut *tx)
            .await
            .map_err(|e| db.error(e))?;
    }
    record_head(db, &mut tx).await?;
    tx.commit().await.map_err(|e| db.error(e))
}

async fn record_head(db: &Db, conn: &mut sqlx::AnyConnection) -> Result<(), DbError> {
    // As alembic creates it: no charset of its own on MySQL (the server's default).
    let table = "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))";
    sqlx::raw_sql(table)
        .execute(&mut *conn)
        .await
        .map_err(|e| db.error(e))?;
    sqlx::query(AssertSqlSafe(
        db.dialect()
            .sql("INSERT INTO alembic_version (version_num) VALUES (?)"),
    ))
    .bind(HEAD)
    .execute(&mut *conn)
    .await
    .map_err(|e| db.error(e))?;
    if db.backend() == Backend::Sqlite {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "PRAGMA user_version = {SQLITE_USER_VERSION}"
        )))
        .execute(&mut *conn)
        .await
        .map_err(|e| db.error(e))?;
    }
    Ok(())
}

/// glance-api 0.1.0's `images` (tags and properties as JSON) becomes upstream's tables:
/// every image keeps its ID, fields and timestamps; tags and properties become rows;
/// an active image gets its file store location. One transaction: a failure leaves the
/// old catalogue as it was.
async fn upgrade_legacy(db: &Db, store: &FileStore) -> Result<(), DbError> {
    let ts = |col: &str| format!("replace(replace({col}, 'T', ' '), 'Z', '.000000')");
    let mut tx = db.pool().begin().await.map_err(|e| db.error(e))?;
    let run = |sql: String| sqlx::raw_sql(AssertSqlSafe(sql));
    run("ALTER TABLE images RENAME TO legacy_images".to_owned())
        .execute(&mut *tx)
        .await
        .map_err(|e| db.error(e))?;
    // The old index keeps its name on the renamed table; upstream's are all different.
    for stmt in statements(ddl(Backend::Sqlite)) {
        run(stmt).execute(&mut *tx).await.map_err(|e| db.error(e))?;
    }
    let copies = [
        format!(
            "INSERT INTO images (id, name, size, status, created_at, updated_at, deleted_at, deleted, disk_format, container_format, checksum, owner, min_disk, min_ram, protected, virtual_size, visibility, os_hidden, os_hash_algo, os_hash_value) SELECT id, name, size, status, {c}, {u}, NULL, 0, disk_format, container_format, checksum, owner, min_disk, min_ram, protected, virtual_size, visibility, os_hidden, os_hash_algo, os_hash_value FROM legacy_images",
            c = ts("created_at"),
            u = ts("updated_at")
        ),
        format!(
            "INSERT INTO image_tags (image_id, value, created_at, updated_at, deleted) SELECT l.id, j.value, {u}, {u}, 0 FROM legacy_images l, json_each(l.tags) j",
            u = ts("l.updated_at")
        ),
        format!(
            "INSERT INTO image_properties (image_id, name, value, created_at, updated_at, deleted) SELECT l.id, j.key, j.value, {u}, {u}, 0 FROM legacy_images l, json_each(l.properties) j",
            u = ts("l.updated_at")
        ),
    ];
    for sql in copies {
        run(sql).execute(&mut *tx).await.map_err(|e| db.error(e))?;
    }
    let active = sqlx::query("SELECT id, updated_at FROM legacy_images WHERE status = 'active'")
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db.error(e))?;
    let meta = super::records::location_meta(store.backend());
    for row in active {
        let id: String = row.try_get(0).map_err(|e| db.error(e))?;
        let updated: String = row.try_get(1).map_err(|e| db.error(e))?;
        let id = crate::cache::ImageId::parse(&id).map_err(|e| DbError::Sql(e.to_string()))?;
        sqlx::query(
            "INSERT INTO image_locations (image_id, value, created_at, updated_at, deleted, meta_data, status) VALUES (?, ?, ?, ?, 0, ?, 'active')",
        )
        .bind(id.as_str())
        .bind(store.location(&id))
        .bind(super::db_time(&updated))
        .bind(super::db_time(&updated))
        .bind(meta.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db.error(e))?;
    }
    sqlx::raw_sql("DROP TABLE legacy_images")
        .execute(&mut *tx)
        .await
        .map_err(|e| db.error(e))?;
    record_head(db, &mut tx).await?;
    tx.commit().await.map_err(|e| db.error(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_files_split_into_statements() {
        for backend in [Backend::Sqlite, Backend::MySql, Backend::Postgres] {
            let stmts = statements(ddl(backend));
            assert!(stmts.len() >= 15, "{backend}: {}", stmts.len());
            for table in [
                "images",
                "image_properties",
                "image_tags",
                "image_locations",
                "image_members",
                "tasks",
                "task_info",
                "metadef_namespaces",
                "metadef_resource_types",
                "metadef_namespace_resource_types",
                "metadef_objects",
                "metadef_properties",
                "metadef_tags",
                "node_reference",
                "cached_images",
            ] {
                assert!(
                    stmts
                        .iter()
                        .any(|s| s.starts_with(&format!("CREATE TABLE {table} "))
                            || s.starts_with(&format!("CREATE TABLE \"{table}\" "))
                            || s.starts_with(&format!("CREATE TABLE `{table}` "))
                            || s.starts_with(&format!("CREATE TABLE public.{table} "))),
                    "{backend}: no {table}"
                );
            }
            assert!(stmts.iter().all(|s| !s.ends_with(';')), "{backend}");
        }
    }
}
