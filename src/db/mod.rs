//! Image metadata in SQLite, at the `[database] connection` URL.
//!
//! Core fields are columns; tags and extra properties are JSON columns, queried with
//! SQLite's JSON functions. The schema is versioned with `PRAGMA user_version`, and
//! [`MIGRATIONS`] brings an older database up to date on open.

mod query;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};
use thiserror::Error;

pub use query::{ListQuery, SortDir, SortKey};

use crate::cache::ImageId;

/// Schema migrations; entry n brings `user_version` n to n + 1.
pub const MIGRATIONS: &[&str] = &["CREATE TABLE images (
        id TEXT PRIMARY KEY,
        name TEXT,
        status TEXT NOT NULL,
        visibility TEXT NOT NULL,
        protected INTEGER NOT NULL DEFAULT 0,
        os_hidden INTEGER NOT NULL DEFAULT 0,
        disk_format TEXT,
        container_format TEXT,
        min_disk INTEGER NOT NULL DEFAULT 0,
        min_ram INTEGER NOT NULL DEFAULT 0,
        size INTEGER,
        virtual_size INTEGER,
        checksum TEXT,
        os_hash_algo TEXT,
        os_hash_value TEXT,
        owner TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]',
        properties TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX images_created_at ON images (created_at, id);"];

/// A database failure.
#[derive(Debug, Error)]
pub enum DbError {
    /// The connection URL is not one this server can use.
    #[error(
        "[database] connection = {0:?}: only sqlite URLs are supported (sqlite:////absolute/path.sqlite, sqlite:///relative.sqlite or sqlite://)"
    )]
    Url(String),
    /// The database file is newer than this server.
    #[error(
        "database {path}: schema version {found} is newer than this glance-api knows ({known})"
    )]
    TooNew {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON column is corrupt.
    #[error("database: corrupt {column} of image {id}: {source}")]
    Json {
        /// Column.
        column: &'static str,
        /// Image.
        id: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// An image record.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Its ID.
    pub id: ImageId,
    /// Name.
    pub name: Option<String>,
    /// queued, saving, active, killed, deleted, deactivated.
    pub status: String,
    /// public, private, shared, community.
    pub visibility: String,
    /// Refuses deletion while true.
    pub protected: bool,
    /// Hidden from default listings.
    pub os_hidden: bool,
    /// raw, qcow2, ...
    pub disk_format: Option<String>,
    /// bare, ovf, ...
    pub container_format: Option<String>,
    /// Minimum disk (GB).
    pub min_disk: i64,
    /// Minimum RAM (MB).
    pub min_ram: i64,
    /// Bytes of data.
    pub size: Option<i64>,
    /// Virtual size.
    pub virtual_size: Option<i64>,
    /// MD5 of the data, hex.
    pub checksum: Option<String>,
    /// Always sha512 once data is uploaded.
    pub os_hash_algo: Option<String>,
    /// Hex digest with os_hash_algo.
    pub os_hash_value: Option<String>,
    /// Owner (project).
    pub owner: Option<String>,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// RFC 3339, seconds.
    pub updated_at: String,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Extra properties.
    pub properties: BTreeMap<String, String>,
}

impl Image {
    /// A new queued image with defaults.
    pub fn new(id: ImageId, now: &str) -> Self {
        Self {
            id,
            name: None,
            status: "queued".to_owned(),
            visibility: "shared".to_owned(),
            protected: false,
            os_hidden: false,
            disk_format: None,
            container_format: None,
            min_disk: 0,
            min_ram: 0,
            size: None,
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            owner: None,
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            tags: BTreeSet::new(),
            properties: BTreeMap::new(),
        }
    }
}

/// Now, as Glance writes timestamps: RFC 3339 in UTC, whole seconds.
pub fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The path a `sqlite://` URL names; None for an in-memory database.
pub fn sqlite_path(url: &str) -> Result<Option<PathBuf>, DbError> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| DbError::Url(url.to_owned()))?;
    // Query parameters (e.g. ?check_same_thread=False) do not concern us.
    let rest = rest.split('?').next().unwrap_or("");
    match rest {
        "" => Ok(None),
        path => {
            // sqlite:///relative and sqlite:////absolute, as SQLAlchemy reads them.
            let path = path
                .strip_prefix('/')
                .ok_or_else(|| DbError::Url(url.to_owned()))?;
            if path.is_empty() {
                return Err(DbError::Url(url.to_owned()));
            }
            Ok(Some(PathBuf::from(path)))
        }
    }
}

/// The image metadata database.
pub struct Db {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, name, status, visibility, protected, os_hidden, disk_format, container_format, min_disk, min_ram, size, virtual_size, checksum, os_hash_algo, os_hash_value, owner, created_at, updated_at, tags, properties";

impl Db {
    /// Opens the database at a `[database] connection` URL, migrating it to the newest schema.
    pub fn open(url: &str) -> Result<Self, DbError> {
        let (conn, label) = match sqlite_path(url)? {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        DbError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
                    })?;
                }
                (Connection::open(&path)?, path.display().to_string())
            }
            None => (Connection::open_in_memory()?, ":memory:".to_owned()),
        };
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&conn, &label)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back a transaction interrupted by a panic; the connection stays usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a new image.
    pub fn insert(&self, image: &Image) -> Result<(), DbError> {
        self.conn().execute(
            &format!("INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
            rusqlite::params_from_iter(params_of(image)?),
        )?;
        Ok(())
    }

    /// Writes every field of `image` (matched by id); false if it does not exist.
    pub fn update(&self, image: &Image) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "UPDATE images SET name = ?2, status = ?3, visibility = ?4, protected = ?5, os_hidden = ?6, disk_format = ?7, container_format = ?8, min_disk = ?9, min_ram = ?10, size = ?11, virtual_size = ?12, checksum = ?13, os_hash_algo = ?14, os_hash_value = ?15, owner = ?16, created_at = ?17, updated_at = ?18, tags = ?19, properties = ?20 WHERE id = ?1",
            rusqlite::params_from_iter(params_of(image)?),
        )?;
        Ok(n > 0)
    }

    /// Moves an image from one status to another atomically; false if it was not in `from`.
    pub fn transition(&self, id: &ImageId, from: &[&str], to: &str) -> Result<bool, DbError> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!("?{}", i + 3)).collect();
        let sql = format!(
            "UPDATE images SET status = ?1, updated_at = ?2 WHERE id = ?{} AND status IN ({})",
            from.len() + 3,
            placeholders.join(", ")
        );
        let now = now();
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&to, &now];
        values.extend(from.iter().map(|s| s as &dyn rusqlite::ToSql));
        let id = id.as_str();
        values.push(&id);
        Ok(self.conn().execute(&sql, values.as_slice())? > 0)
    }

    /// One image.
    pub fn get(&self, id: &ImageId) -> Result<Option<Image>, DbError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
                params![id.as_str()],
                raw_row,
            )
            .optional()?;
        row.map(RawImage::parse).transpose()
    }

    /// Deletes an image record; false if it did not exist.
    pub fn delete(&self, id: &ImageId) -> Result<bool, DbError> {
        Ok(self
            .conn()
            .execute("DELETE FROM images WHERE id = ?1", params![id.as_str()])?
            > 0)
    }

    /// A page of images matching `query`, and whether more follow.
    pub fn list(&self, query: &ListQuery) -> Result<(Vec<Image>, bool), DbError> {
        let (sql, values) = query.to_sql(COLUMNS);
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let refs: Vec<&dyn rusqlite::ToSql> =
            values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
        let rows = stmt.query_map(refs.as_slice(), raw_row)?;
        let mut images = Vec::new();
        for row in rows {
            images.push(row?.parse()?);
        }
        let more = images.len() > query.limit;
        images.truncate(query.limit);
        Ok((images, more))
    }

    /// Where the image after `marker` sits in `query`'s order; None if the marker is not
    /// among the matching images.
    pub fn offset_after(
        &self,
        query: &ListQuery,
        marker: &ImageId,
    ) -> Result<Option<usize>, DbError> {
        let (sql, values) = query.ids_sql();
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let refs: Vec<&dyn rusqlite::ToSql> =
            values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
        let ids = stmt.query_map(refs.as_slice(), |r| r.get::<_, String>(0))?;
        for (n, id) in ids.enumerate() {
            if id? == marker.as_str() {
                return Ok(Some(n + 1));
            }
        }
        Ok(None)
    }
}

fn migrate(conn: &Connection, label: &str) -> Result<(), DbError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(DbError::TooNew {
            path: label.to_owned(),
            found: version,
            known,
        });
    }
    for (n, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

type Param = Box<dyn rusqlite::ToSql>;

fn params_of(i: &Image) -> Result<Vec<Param>, DbError> {
    let json = |column: &'static str, v: serde_json::Result<String>| {
        v.map_err(|source| DbError::Json {
            column,
            id: i.id.to_string(),
            source,
        })
    };
    Ok(vec![
        Box::new(i.id.to_string()),
        Box::new(i.name.clone()),
        Box::new(i.status.clone()),
        Box::new(i.visibility.clone()),
        Box::new(i.protected),
        Box::new(i.os_hidden),
        Box::new(i.disk_format.clone()),
        Box::new(i.container_format.clone()),
        Box::new(i.min_disk),
        Box::new(i.min_ram),
        Box::new(i.size),
        Box::new(i.virtual_size),
        Box::new(i.checksum.clone()),
        Box::new(i.os_hash_algo.clone()),
        Box::new(i.os_hash_value.clone()),
        Box::new(i.owner.clone()),
        Box::new(i.created_at.clone()),
        Box::new(i.updated_at.clone()),
        Box::new(json("tags", serde_json::to_string(&i.tags))?),
        Box::new(json("properties", serde_json::to_string(&i.properties))?),
    ])
}

/// A row before its JSON columns are decoded.
struct RawImage {
    image: Image,
    tags: String,
    properties: String,
}

impl RawImage {
    fn parse(self) -> Result<Image, DbError> {
        let id = self.image.id.to_string();
        let mut image = self.image;
        image.tags = serde_json::from_str(&self.tags).map_err(|source| DbError::Json {
            column: "tags",
            id: id.clone(),
            source,
        })?;
        image.properties =
            serde_json::from_str(&self.properties).map_err(|source| DbError::Json {
                column: "properties",
                id,
                source,
            })?;
        Ok(image)
    }
}

fn raw_row(r: &Row<'_>) -> rusqlite::Result<RawImage> {
    let id: String = r.get(0)?;
    let id = ImageId::parse(&id).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(RawImage {
        image: Image {
            id,
            name: r.get(1)?,
            status: r.get(2)?,
            visibility: r.get(3)?,
            protected: r.get(4)?,
            os_hidden: r.get(5)?,
            disk_format: r.get(6)?,
            container_format: r.get(7)?,
            min_disk: r.get(8)?,
            min_ram: r.get(9)?,
            size: r.get(10)?,
            virtual_size: r.get(11)?,
            checksum: r.get(12)?,
            os_hash_algo: r.get(13)?,
            os_hash_value: r.get(14)?,
            owner: r.get(15)?,
            created_at: r.get(16)?,
            updated_at: r.get(17)?,
            tags: BTreeSet::new(),
            properties: BTreeMap::new(),
        },
        tags: r.get(18)?,
        properties: r.get(19)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_as_sqlalchemy_reads_them() {
        assert_eq!(
            sqlite_path("sqlite:////var/lib/glance/glance.sqlite")
                .ok()
                .flatten(),
            Some(PathBuf::from("/var/lib/glance/glance.sqlite"))
        );
        assert_eq!(
            sqlite_path("sqlite:///glance.sqlite").ok().flatten(),
            Some(PathBuf::from("glance.sqlite"))
        );
        assert_eq!(
            sqlite_path("sqlite:///g.db?check_same_thread=False")
                .ok()
                .flatten(),
            Some(PathBuf::from("g.db"))
        );
        assert!(matches!(sqlite_path("sqlite://"), Ok(None)));
        for bad in [
            "mysql+pymysql://glance:pw@db/glance",
            "sqlite:/x",
            "sqlite:///",
        ] {
            let err = sqlite_path(bad).expect_err(bad).to_string();
            assert!(err.contains("only sqlite URLs are supported"), "{err}");
        }
    }

    #[test]
    fn migrations_run_once_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("g.sqlite");
        let url = format!("sqlite:///{}", path.display());
        let db = Db::open(&url).expect("create");
        let image = Image::new(ImageId::random(), &now());
        db.insert(&image).expect("insert");
        drop(db);
        let db = Db::open(&url).expect("reopen without migrating again");
        assert_eq!(db.get(&image.id).expect("get"), Some(image));
        let version: i64 = Connection::open(&path)
            .expect("open")
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(db);
        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        let err = Db::open(&url).err().expect("refused").to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
    }
}
