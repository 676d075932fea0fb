//! Images in upstream Glance's tables: `images`, `image_properties`, `image_tags` and
//! `image_locations`. Rows are soft-deleted (`deleted`, `deleted_at`) as upstream does,
//! so a deleted image's ID is never reused. Every write that touches more than one row is
//! one transaction, and every status move is a conditional update.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row, Transaction};

use super::url::Backend;

use super::query::Value;
use super::{Db, DbError, Image, ListQuery, Location, db_time, db_time_ago, now};
use crate::cache::ImageId;

/// The property that holds the lease of an upload in progress (see [`Db::claim_upload`]).
pub const UPLOAD_LEASE: &str = "os_glance_upload_lease";

/// The property that holds an import's task id while it runs (upstream's import lock).
pub const IMPORT_LOCK: &str = "os_glance_import_task";

/// The property that lists the stores an import is writing to; it is emptied with the
/// lock once the data is in.
pub const IMPORTING_TO_STORES: &str = "os_glance_importing_to_stores";

/// A claim on an image while its data is written: the property that holds the claimant's
/// token (renewed while it works, so that a dead claimant's claim expires), and the
/// status the image has meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    property: &'static str,
    working: &'static str,
}

impl Claim {
    /// An upload through PUT /file: `saving` under [`UPLOAD_LEASE`].
    pub const UPLOAD: Claim = Claim {
        property: UPLOAD_LEASE,
        working: "saving",
    };
    /// An import: `importing` under [`IMPORT_LOCK`], whose value is the task's id.
    pub const IMPORT: Claim = Claim {
        property: IMPORT_LOCK,
        working: "importing",
    };
    /// A copy of an active image's data into more stores: the image stays active under
    /// [`IMPORT_LOCK`].
    pub const COPY: Claim = Claim {
        property: IMPORT_LOCK,
        working: "active",
    };
}

/// An edit of one image in progress ([`Db::edit`]): the row is locked until it is saved
/// ([`Db::save`]) or dropped (nothing written).
pub struct ImageEdit {
    tx: Transaction<'static, Any>,
    /// The image as it was when the edit began.
    pub image: Image,
}

/// What an upload leaves behind: the data's size and digests, and where it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// Bytes.
    pub size: i64,
    /// MD5, hex.
    pub checksum: String,
    /// SHA-512, hex.
    pub os_hash_value: String,
    /// The location URL, e.g. `file:///var/lib/glance/images/<id>`.
    pub location: String,
    /// The store's name in `enabled_backends`.
    pub store: String,
    /// The virtual size the format inspection found (`crate::format`); None leaves the
    /// column as it is, as upstream does when the size is unknown.
    pub virtual_size: Option<i64>,
    /// More copies of the same data in other stores: (location URL, store name).
    pub also: Vec<(String, String)>,
}

type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

/// The child rows of an image that [`Db::add_rows`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Tags,
    Properties,
}

/// A statement. Its text is built from fixed fragments only; every value is bound.
pub(super) fn statement<'q>(sql: String) -> AnyQuery<'q> {
    sqlx::query(AssertSqlSafe(sql))
}

/// `q` with `values` bound in order.
pub(super) fn bind_all<'q>(mut q: AnyQuery<'q>, values: &'q [Value]) -> AnyQuery<'q> {
    for v in values {
        q = match v {
            Value::Text(s) => q.bind(s.as_str()),
            Value::Int(i) => q.bind(*i),
            Value::Bool(b) => q.bind(*b),
            Value::Null => q.bind(None::<String>),
        };
    }
    q
}

impl Db {
    /// Begins a transaction holding the write lock of the row of `table` whose `key` is
    /// `value`, and tells whether there is such a row: on SQLite the database's write lock,
    /// taken at once; elsewhere the row, locked for update. `column` is any column of it.
    pub(super) async fn begin_locked(
        &self,
        table: &str,
        column: &str,
        key: &str,
        value: Value,
    ) -> Result<(Transaction<'static, Any>, bool), DbError> {
        let d = self.dialect();
        let sqlite = self.backend() == Backend::Sqlite;
        let mut tx = self.begin_with(sqlite.then_some("BEGIN IMMEDIATE")).await?;
        let values = [value];
        let locked = if sqlite {
            let sql = format!("UPDATE {table} SET {column} = {column} WHERE {key} = ?");
            bind_all(statement(d.sql(&sql)), &values)
                .execute(&mut *tx)
                .await
                .map(|r| r.rows_affected() > 0)
        } else {
            let sql = format!("SELECT {column} FROM {table} WHERE {key} = ? FOR UPDATE");
            bind_all(statement(d.sql(&sql)), &values)
                .fetch_optional(&mut *tx)
                .await
                .map(|r| r.is_some())
        }
        .map_err(|e| self.error(e))?;
        Ok((tx, locked))
    }

    fn image_columns(&self) -> String {
        let d = self.dialect();
        format!(
            "images.id, images.name, images.status, {}, {}, {}, images.disk_format, images.container_format, images.min_disk, images.min_ram, images.size, images.virtual_size, images.checksum, images.os_hash_algo, images.os_hash_value, images.owner, {}, {}",
            d.read_text("images.visibility"),
            d.read_bool("images.protected"),
            d.read_bool("images.os_hidden"),
            d.read_ts("images.created_at"),
            d.read_ts("images.updated_at"),
        )
    }

    /// One image that is not deleted, with its tags, properties and stores.
    pub async fn get(&self, id: &ImageId) -> Result<Option<Image>, DbError> {
        self.fetch(id, true).await
    }

    /// One image that is not deleted, its row only (no tags, properties or stores): one
    /// query, for downloads, upload claims and status checks.
    pub async fn get_row(&self, id: &ImageId) -> Result<Option<Image>, DbError> {
        self.fetch(id, false).await
    }

    async fn fetch(&self, id: &ImageId, children: bool) -> Result<Option<Image>, DbError> {
        let mut conn = self.conn().await?;
        self.fetch_on(&mut conn, id, children).await
    }

    /// [`Db::fetch`] on `conn` (a transaction's, for one).
    async fn fetch_on(
        &self,
        conn: &mut AnyConnection,
        id: &ImageId,
        children: bool,
    ) -> Result<Option<Image>, DbError> {
        let sql = self.dialect().sql(&format!(
            "SELECT {} FROM images WHERE images.id = ? AND images.deleted = false",
            self.image_columns()
        ));
        let row = statement(sql)
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        let Some(row) = row else { return Ok(None) };
        let mut images = vec![image_of(&row)?];
        if children {
            self.attach(conn, &mut images).await?;
        }
        Ok(images.pop())
    }

    /// Fills in the tags, properties and stores of `images` (two or three queries for
    /// the whole page, not per image).
    async fn attach(&self, conn: &mut AnyConnection, images: &mut [Image]) -> Result<(), DbError> {
        if images.is_empty() {
            return Ok(());
        }
        let marks = vec!["?"; images.len()].join(", ");
        let ids: Vec<Value> = images
            .iter()
            .map(|i| Value::Text(i.id.to_string()))
            .collect();
        let index: HashMap<String, usize> = images
            .iter()
            .enumerate()
            .map(|(n, i)| (i.id.to_string(), n))
            .collect();
        let d = self.dialect();
        let tags_sql = d.sql(&format!(
            "SELECT image_id, value FROM image_tags WHERE deleted = false AND image_id IN ({marks})"
        ));
        for row in bind_all(statement(tags_sql), &ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.error(e))?
        {
            let (image, value): (String, String) = (text(&row, 0)?, text(&row, 1)?);
            if let Some(&n) = index.get(&image) {
                images[n].tags.insert(value);
            }
        }
        let props_sql = d.sql(&format!(
            "SELECT image_id, name, value FROM image_properties WHERE deleted = false AND image_id IN ({marks})"
        ));
        for row in bind_all(statement(props_sql), &ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.error(e))?
        {
            let image = text(&row, 0)?;
            if let Some(&n) = index.get(&image) {
                let value = opt_text(&row, 2)?.unwrap_or_default();
                images[n].properties.insert(text(&row, 1)?, value);
            }
        }
        let locations_sql = d.sql(&format!(
            "SELECT image_id, value, meta_data FROM image_locations WHERE deleted = false AND status = 'active' AND image_id IN ({marks}) ORDER BY id"
        ));
        for row in bind_all(statement(locations_sql), &ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.error(e))?
        {
            let Some(&n) = index.get(&text(&row, 0)?) else {
                continue;
            };
            let meta = opt_text(&row, 2)?.unwrap_or_default();
            let metadata = serde_json::from_str::<serde_json::Value>(&meta)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            if let Some(store) = metadata.get("store").and_then(|s| s.as_str())
                && !images[n].stores.iter().any(|s| s == store)
            {
                images[n].stores.push(store.to_owned());
            }
            images[n].locations.push(Location {
                url: opt_text(&row, 1)?.unwrap_or_default(),
                metadata,
            });
        }
        Ok(())
    }

    /// Inserts a new image with its tags and properties; false when the ID is taken,
    /// also by a deleted image.
    pub async fn insert(&self, image: &Image) -> Result<bool, DbError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "INSERT INTO images (id, name, size, status, created_at, updated_at, deleted_at, deleted, disk_format, container_format, checksum, owner, min_disk, min_ram, protected, virtual_size, visibility, os_hidden, os_hash_algo, os_hash_value) VALUES (?, ?, ?, ?, {ts}, {ts}, NULL, false, ?, ?, ?, ?, ?, ?, ?, ?, {vis}, ?, ?, ?)",
            ts = d.ts(),
            vis = d.visibility()
        ));
        let created = db_time(&image.created_at);
        let updated = db_time(&image.updated_at);
        let mut tx = self.begin().await?;
        let inserted = statement(sql)
            .bind(image.id.as_str())
            .bind(image.name.as_deref())
            .bind(image.size)
            .bind(image.status.as_str())
            .bind(created.as_str())
            .bind(updated.as_str())
            .bind(image.disk_format.as_deref())
            .bind(image.container_format.as_deref())
            .bind(image.checksum.as_deref())
            .bind(image.owner.as_deref())
            .bind(int4(image.min_disk)?)
            .bind(int4(image.min_ram)?)
            .bind(image.protected)
            .bind(image.virtual_size)
            .bind(image.visibility.as_str())
            .bind(image.os_hidden)
            .bind(image.os_hash_algo.as_deref())
            .bind(image.os_hash_value.as_deref())
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(false),
            Err(e) => return Err(self.error(e)),
        }
        // A new image has no child rows yet: no need to read them first.
        let tags: Vec<(&str, Option<&str>)> =
            image.tags.iter().map(|t| (t.as_str(), None)).collect();
        self.add_rows(&mut tx, Child::Tags, &image.id, &tags, &updated)
            .await?;
        let properties: Vec<(&str, Option<&str>)> = image
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        self.add_rows(&mut tx, Child::Properties, &image.id, &properties, &updated)
            .await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Inserts tag rows (`(value, None)`) or property rows (`(name, Some(value))`) of
    /// image `id` in one statement.
    async fn add_rows(
        &self,
        conn: &mut AnyConnection,
        child: Child,
        id: &ImageId,
        rows: &[(&str, Option<&str>)],
        now: &str,
    ) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let d = self.dialect();
        let (table, columns, row) = match child {
            Child::Tags => (
                "image_tags",
                "image_id, value",
                format!("(?, ?, {ts}, {ts}, false)", ts = d.ts()),
            ),
            Child::Properties => (
                "image_properties",
                "image_id, name, value",
                format!("(?, ?, ?, {ts}, {ts}, false)", ts = d.ts()),
            ),
        };
        let sql = d.sql(&format!(
            "INSERT INTO {table} ({columns}, created_at, updated_at, deleted) VALUES {}",
            vec![row; rows.len()].join(", ")
        ));
        let mut q = statement(sql);
        for (key, value) in rows {
            q = q.bind(id.as_str()).bind(*key);
            if child == Child::Properties {
                q = q.bind(*value);
            }
            q = q.bind(now).bind(now);
        }
        q.execute(&mut *conn).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Begins an edit of image `id`: a transaction that holds the image's row lock (see
    /// [`Db::begin_locked`]) and the image as it is now, with its tags and properties;
    /// None (and no lock kept) when it is not live. Edits of one image, on any replica,
    /// thus run one after the other, each on what the one before it wrote: none is lost.
    pub async fn edit(&self, id: &ImageId) -> Result<Option<ImageEdit>, DbError> {
        let (mut tx, exists) = self
            .begin_locked("images", "id", "id", Value::Text(id.to_string()))
            .await?;
        if !exists {
            return Ok(None);
        }
        let Some(image) = self.fetch_on(&mut tx, id, true).await? else {
            return Ok(None);
        };
        Ok(Some(ImageEdit { tx, image }))
    }

    /// Ends an edit: writes only what differs between the image read and `new` (the
    /// changed columns of the image row and `updated_at`; an added tag or property is
    /// inserted, or its old row revived; a removed one soft-deleted), then commits. The
    /// status and the data's fields are never written here: only [`Db::transition`] and
    /// [`Db::activate`] move them. Nor are the formats of an image that left queued (an
    /// upload inspects against them): false, and nothing written, for such a change.
    pub async fn save(&self, edit: ImageEdit, new: &Image) -> Result<bool, DbError> {
        let ImageEdit { mut tx, image: old } = edit;
        let relabels =
            old.disk_format != new.disk_format || old.container_format != new.container_format;
        if relabels && !matches!(old.status.as_str(), "queued" | "importing") {
            return Ok(false);
        }
        let d = self.dialect();
        let now = db_time(&new.updated_at);
        let mut sets = Vec::new();
        let mut values = Vec::new();
        let mut text = |column: &'static str, old: &Option<String>, new: &Option<String>| {
            if old != new {
                sets.push(format!("{column} = ?"));
                values.push(new.clone().map_or(Value::Null, Value::Text));
            }
        };
        text("name", &old.name, &new.name);
        text("disk_format", &old.disk_format, &new.disk_format);
        text(
            "container_format",
            &old.container_format,
            &new.container_format,
        );
        text("owner", &old.owner, &new.owner);
        // What a location with validation data fills in on a queued image.
        text("checksum", &old.checksum, &new.checksum);
        text("os_hash_algo", &old.os_hash_algo, &new.os_hash_algo);
        text("os_hash_value", &old.os_hash_value, &new.os_hash_value);
        if old.status != new.status {
            sets.push("status = ?".to_owned());
            values.push(Value::Text(new.status.clone()));
        }
        if old.size != new.size {
            sets.push("size = ?".to_owned());
            values.push(new.size.map_or(Value::Null, Value::Int));
        }
        if old.visibility != new.visibility {
            sets.push(format!("visibility = {}", d.visibility()));
            values.push(Value::Text(new.visibility.clone()));
        }
        for (column, old, new) in [
            ("protected", old.protected, new.protected),
            ("os_hidden", old.os_hidden, new.os_hidden),
        ] {
            if old != new {
                sets.push(format!("{column} = ?"));
                values.push(Value::Bool(new));
            }
        }
        for (column, old, new) in [
            ("min_disk", old.min_disk, new.min_disk),
            ("min_ram", old.min_ram, new.min_ram),
        ] {
            if old != new {
                sets.push(format!("{column} = ?"));
                values.push(Value::Int(i64::from(int4(new)?)));
            }
        }
        sets.push(format!("updated_at = {}", d.ts()));
        values.push(Value::Text(now.clone()));
        values.push(Value::Text(new.id.to_string()));
        let sql = d.sql(&format!(
            "UPDATE images SET {} WHERE id = ?",
            sets.join(", ")
        ));
        bind_all(statement(sql), &values)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;

        let removed_tags: Vec<&str> = old.tags.difference(&new.tags).map(String::as_str).collect();
        self.soft_delete(&mut tx, Child::Tags, &new.id, &removed_tags, &now)
            .await?;
        let added_tags: Vec<(&str, Option<&str>)> = new
            .tags
            .difference(&old.tags)
            .map(|t| (t.as_str(), None))
            .collect();
        self.add_rows(&mut tx, Child::Tags, &new.id, &added_tags, &now)
            .await?;

        let removed: Vec<&str> = old
            .properties
            .keys()
            .filter(|k| !new.properties.contains_key(*k))
            .map(String::as_str)
            .collect();
        self.soft_delete(&mut tx, Child::Properties, &new.id, &removed, &now)
            .await?;
        let mut added = Vec::new();
        for (name, value) in &new.properties {
            if old.properties.get(name) == Some(value) {
                continue;
            }
            // A name keeps its one row (unique per image): a changed property, or one
            // removed before and set again, has its row rewritten and revived (its
            // deleted_at left as it was, as upstream's _image_property_update leaves it).
            let n = statement(d.sql(&format!(
                "UPDATE image_properties SET value = ?, deleted = false, updated_at = {} WHERE image_id = ? AND name = ?",
                d.ts()
            )))
            .bind(value.as_str())
            .bind(now.as_str())
            .bind(new.id.as_str())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
            if n == 0 {
                added.push((name.as_str(), Some(value.as_str())));
            }
        }
        self.add_rows(&mut tx, Child::Properties, &new.id, &added, &now)
            .await?;
        self.save_locations(&mut tx, &old, new, &now).await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Writes what changed in an image's locations, by URL: rows of removed URLs
    /// soft-deleted, new ones inserted, and changed metadata rewritten.
    async fn save_locations(
        &self,
        conn: &mut AnyConnection,
        old: &Image,
        new: &Image,
        now: &str,
    ) -> Result<(), DbError> {
        let d = self.dialect();
        for gone in old
            .locations
            .iter()
            .filter(|o| !new.locations.iter().any(|n| n.url == o.url))
        {
            statement(d.sql(&format!(
                "UPDATE image_locations SET deleted = true, deleted_at = {ts}, updated_at = {ts}, status = 'deleted' WHERE image_id = ? AND value = ? AND deleted = false",
                ts = d.ts()
            )))
            .bind(now)
            .bind(now)
            .bind(new.id.as_str())
            .bind(gone.url.as_str())
            .execute(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        }
        for location in &new.locations {
            let meta = location.metadata.to_string();
            match old.locations.iter().find(|o| o.url == location.url) {
                Some(o) if o.metadata == location.metadata => {}
                Some(_) => {
                    statement(d.sql(&format!(
                        "UPDATE image_locations SET meta_data = ?, updated_at = {} WHERE image_id = ? AND value = ? AND deleted = false",
                        d.ts()
                    )))
                    .bind(meta.as_str())
                    .bind(now)
                    .bind(new.id.as_str())
                    .bind(location.url.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.error(e))?;
                }
                None => {
                    self.insert_location_meta(conn, &new.id, &location.url, &meta, now)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Soft-deletes the live tag rows (`Child::Tags`, by value) or property rows (by
    /// name) of image `id` named in `keys`, in one statement.
    async fn soft_delete(
        &self,
        conn: &mut AnyConnection,
        child: Child,
        id: &ImageId,
        keys: &[&str],
        now: &str,
    ) -> Result<(), DbError> {
        if keys.is_empty() {
            return Ok(());
        }
        let d = self.dialect();
        let (table, column) = match child {
            Child::Tags => ("image_tags", "value"),
            Child::Properties => ("image_properties", "name"),
        };
        let sql = d.sql(&format!(
            "UPDATE {table} SET deleted = true, deleted_at = {ts}, updated_at = {ts} WHERE image_id = ? AND deleted = false AND {column} IN ({marks})",
            ts = d.ts(),
            marks = vec!["?"; keys.len()].join(", ")
        ));
        let mut q = statement(sql).bind(now).bind(now).bind(id.as_str());
        for key in keys {
            q = q.bind(*key);
        }
        q.execute(&mut *conn).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Moves a live image from one of `from` to `to` in one conditional update; false if
    /// it was not in `from` (another replica moved it first, or it was deleted).
    pub async fn transition(&self, id: &ImageId, from: &[&str], to: &str) -> Result<bool, DbError> {
        let d = self.dialect();
        let marks = vec!["?"; from.len()].join(", ");
        let sql = d.sql(&format!(
            "UPDATE images SET status = ?, updated_at = {} WHERE id = ? AND deleted = false AND status IN ({marks})",
            d.ts()
        ));
        let now = db_time(&now());
        let mut q = statement(sql).bind(to).bind(now.as_str()).bind(id.as_str());
        for status in from {
            q = q.bind(*status);
        }
        let n = q
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(n > 0)
    }

    /// Records the size of the data staged for image `id` while it is uploading (staged
    /// for an import); false if it no longer is.
    pub async fn set_staged_size(&self, id: &ImageId, size: i64) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let n = statement(d.sql(&format!(
            "UPDATE images SET size = ?, updated_at = {} WHERE id = ? AND deleted = false AND status = 'uploading'",
            d.ts()
        )))
        .bind(size)
        .bind(now.as_str())
        .bind(id.as_str())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(n > 0)
    }

    /// Claims image `id` for an upload: queued -> saving in one conditional update (one
    /// replica wins), and the upload's lease, the property [`UPLOAD_LEASE`] holding
    /// `token`, in the same transaction. False if the image was not queued.
    ///
    /// The lease is renewed ([`Db::renew_upload`]) while the upload runs; its row's
    /// `updated_at` is the last renewal. A lease not renewed for a while means that its
    /// uploader died: [`Db::expired_uploads`] finds it and [`Db::reclaim_upload`] moves
    /// the image back to queued. An upload whose image has no lease (upstream Glance's)
    /// is never touched.
    pub async fn claim_upload(&self, id: &ImageId, token: &str) -> Result<bool, DbError> {
        self.claim(Claim::UPLOAD, id, "queued", token).await
    }

    /// Claims image `id` for an import, task `task`: `from` -> importing and the import
    /// lock ([`IMPORT_LOCK`]) in one transaction, as [`Db::claim_upload`] does.
    pub async fn claim_import(
        &self,
        id: &ImageId,
        from: &str,
        task: &str,
    ) -> Result<bool, DbError> {
        self.claim(Claim::IMPORT, id, from, task).await
    }

    async fn claim(
        &self,
        claim: Claim,
        id: &ImageId,
        from: &str,
        token: &str,
    ) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.begin().await?;
        let n = statement(d.sql(&format!(
            "UPDATE images SET status = ?, updated_at = {} WHERE id = ? AND deleted = false AND status = ?",
            d.ts()
        )))
        .bind(claim.working)
        .bind(now.as_str())
        .bind(id.as_str())
        .bind(from)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        self.put_claim(&mut tx, claim, id, token, &now).await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Writes the claim's property holding `token`: its old row revived, else a new one.
    async fn put_claim(
        &self,
        conn: &mut AnyConnection,
        claim: Claim,
        id: &ImageId,
        token: &str,
        now: &str,
    ) -> Result<(), DbError> {
        let d = self.dialect();
        let n = statement(d.sql(&format!(
            "UPDATE image_properties SET value = ?, deleted = false, deleted_at = NULL, updated_at = {} WHERE image_id = ? AND name = ?",
            d.ts()
        )))
        .bind(token)
        .bind(now)
        .bind(id.as_str())
        .bind(claim.property)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        if n == 0 {
            self.add_rows(
                conn,
                Child::Properties,
                id,
                &[(claim.property, Some(token))],
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// Locks active image `id` for copy `task` (the import lock, the image staying
    /// active), under the image's row lock; false if it is not active or another
    /// operation holds the lock.
    pub async fn lock_copy(&self, id: &ImageId, task: &str) -> Result<bool, DbError> {
        let (mut tx, exists) = self
            .begin_locked("images", "id", "id", Value::Text(id.to_string()))
            .await?;
        if !exists {
            return Ok(false);
        }
        let d = self.dialect();
        let free = statement(d.sql(
            "SELECT 1 FROM images i WHERE i.id = ? AND i.deleted = false AND i.status = 'active' AND NOT EXISTS (SELECT 1 FROM image_properties p WHERE p.image_id = i.id AND p.name = ? AND p.deleted = false)",
        ))
        .bind(id.as_str())
        .bind(IMPORT_LOCK)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        if free.is_none() {
            return Ok(false);
        }
        let now = db_time(&now());
        self.put_claim(&mut tx, Claim::COPY, id, task, &now).await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Records the copies of active image `id` that copy `task` made, (location URL,
    /// store name) each, and drops its lock, in one transaction; false (nothing written)
    /// if the task no longer holds the lock.
    pub async fn add_copies(
        &self,
        id: &ImageId,
        task: &str,
        copies: &[(String, String)],
    ) -> Result<bool, DbError> {
        let d = self.dialect();
        let mut tx = self.begin().await?;
        let n = statement(d.sql(
            "DELETE FROM image_properties WHERE image_id = ? AND name = ? AND value = ? AND deleted = false AND EXISTS (SELECT 1 FROM images WHERE id = ? AND deleted = false AND status = 'active')",
        ))
        .bind(id.as_str())
        .bind(IMPORT_LOCK)
        .bind(task)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        self.empty_property(&mut tx, id, IMPORTING_TO_STORES)
            .await?;
        let now = db_time(&now());
        for (url, store) in copies {
            self.insert_location(&mut tx, id, url, store, &now).await?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Drops the import lock of `id` if `task` holds it (and, with `stale_for`, has not
    /// renewed it for that many seconds); whether it did.
    pub async fn drop_import_lock(
        &self,
        id: &ImageId,
        task: &str,
        stale_for: Option<i64>,
    ) -> Result<bool, DbError> {
        let d = self.dialect();
        let stale = match stale_for {
            Some(_) => format!(" AND updated_at < {}", d.ts()),
            None => String::new(),
        };
        let mut q = statement(d.sql(&format!(
            "DELETE FROM image_properties WHERE image_id = ? AND name = ? AND value = ?{stale}"
        )))
        .bind(id.as_str())
        .bind(IMPORT_LOCK)
        .bind(task);
        let cutoff = stale_for.map(db_time_ago);
        if let Some(cutoff) = &cutoff {
            q = q.bind(cutoff.as_str());
        }
        let n = q
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(n > 0)
    }

    /// The copies whose lock was last renewed more than `ttl_secs` ago: (image, task).
    pub async fn expired_copies(&self, ttl_secs: i64) -> Result<Vec<(ImageId, String)>, DbError> {
        self.expired(Claim::COPY, ttl_secs).await
    }

    /// One location row of image `id`.
    async fn insert_location(
        &self,
        conn: &mut AnyConnection,
        id: &ImageId,
        url: &str,
        store: &str,
        now: &str,
    ) -> Result<(), DbError> {
        self.insert_location_meta(conn, id, url, &location_meta(store), now)
            .await
    }

    /// One location row of image `id` with the metadata `meta` (JSON text).
    async fn insert_location_meta(
        &self,
        conn: &mut AnyConnection,
        id: &ImageId,
        url: &str,
        meta: &str,
        now: &str,
    ) -> Result<(), DbError> {
        let d = self.dialect();
        statement(d.sql(&format!(
            "INSERT INTO image_locations (image_id, value, created_at, updated_at, deleted, meta_data, status) VALUES (?, ?, {ts}, {ts}, false, ?, 'active')",
            ts = d.ts()
        )))
        .bind(id.as_str())
        .bind(url)
        .bind(now)
        .bind(now)
        .bind(meta)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Renews the lease `token` of an upload of `id`; false if the lease is gone (it
    /// expired and was reclaimed, or the image was deleted): the upload must stop.
    pub async fn renew_upload(&self, id: &ImageId, token: &str) -> Result<bool, DbError> {
        self.renew(Claim::UPLOAD, id, token).await
    }

    /// Renews the import lock of task `task` on `id` ([`Db::renew_upload`]'s rules).
    pub async fn renew_import(&self, id: &ImageId, task: &str) -> Result<bool, DbError> {
        self.renew(Claim::IMPORT, id, task).await
    }

    async fn renew(&self, claim: Claim, id: &ImageId, token: &str) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let n = statement(d.sql(&format!(
            "UPDATE image_properties SET updated_at = {} WHERE image_id = ? AND name = ? AND value = ? AND deleted = false",
            d.ts()
        )))
        .bind(now.as_str())
        .bind(id.as_str())
        .bind(claim.property)
        .bind(token)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        if n > 0 {
            return Ok(true);
        }
        // MySQL counts changed rows only: a renewal within the same second changes none.
        let held = statement(d.sql(
            "SELECT 1 FROM image_properties WHERE image_id = ? AND name = ? AND value = ? AND deleted = false",
        ))
        .bind(id.as_str())
        .bind(claim.property)
        .bind(token)
        .fetch_optional(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?;
        Ok(held.is_some())
    }

    /// Ends the upload `token` of `id` without data: saving -> queued and the lease
    /// dropped, if the lease is still this upload's.
    pub async fn release_upload(&self, id: &ImageId, token: &str) -> Result<bool, DbError> {
        self.end_lease(Claim::UPLOAD, id, token, None, "queued")
            .await
    }

    /// Ends import `task` of `id` without data: importing -> `back_to` and the lock
    /// dropped, if the lock is still the task's.
    pub async fn release_import(
        &self,
        id: &ImageId,
        task: &str,
        back_to: &str,
    ) -> Result<bool, DbError> {
        self.end_lease(Claim::IMPORT, id, task, None, back_to).await
    }

    /// The uploads whose lease was last renewed more than `ttl_secs` ago: (image, token).
    pub async fn expired_uploads(&self, ttl_secs: i64) -> Result<Vec<(ImageId, String)>, DbError> {
        self.expired(Claim::UPLOAD, ttl_secs).await
    }

    /// The imports whose lock was last renewed more than `ttl_secs` ago: (image, task).
    pub async fn expired_imports(&self, ttl_secs: i64) -> Result<Vec<(ImageId, String)>, DbError> {
        self.expired(Claim::IMPORT, ttl_secs).await
    }

    async fn expired(
        &self,
        claim: Claim,
        ttl_secs: i64,
    ) -> Result<Vec<(ImageId, String)>, DbError> {
        let d = self.dialect();
        let cutoff = db_time_ago(ttl_secs);
        let rows = statement(d.sql(&format!(
            "SELECT p.image_id, p.value FROM image_properties p JOIN images i ON i.id = p.image_id WHERE p.name = ? AND p.deleted = false AND i.deleted = false AND i.status = ? AND p.updated_at < {}",
            d.ts()
        )))
        .bind(claim.property)
        .bind(claim.working)
        .bind(cutoff.as_str())
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?;
        let mut expired = Vec::new();
        for row in &rows {
            let raw = text(row, 0)?;
            if let (Ok(id), Some(token)) = (ImageId::parse(&raw), opt_text(row, 1)?) {
                expired.push((id, token));
            }
        }
        Ok(expired)
    }

    /// Moves image `id` back to queued if its upload's lease is still `token` and still
    /// not renewed for `ttl_secs`: a conditional update, so that an uploader that renewed
    /// meanwhile keeps its upload and two replicas never both reclaim one.
    pub async fn reclaim_upload(
        &self,
        id: &ImageId,
        token: &str,
        ttl_secs: i64,
    ) -> Result<bool, DbError> {
        self.end_lease(Claim::UPLOAD, id, token, Some(ttl_secs), "queued")
            .await
    }

    /// Moves image `id` back to `back_to` if import `task` still holds its lock, not
    /// renewed for `ttl_secs` ([`Db::reclaim_upload`]'s rules).
    pub async fn reclaim_import(
        &self,
        id: &ImageId,
        task: &str,
        ttl_secs: i64,
        back_to: &str,
    ) -> Result<bool, DbError> {
        self.end_lease(Claim::IMPORT, id, task, Some(ttl_secs), back_to)
            .await
    }

    /// saving -> queued, and the lease soft-deleted, in one transaction, if the lease of
    /// `id` is `token` (and, with `expired_for`, not renewed for that many seconds).
    async fn end_lease(
        &self,
        claim: Claim,
        id: &ImageId,
        token: &str,
        expired_for: Option<i64>,
        back_to: &str,
    ) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.begin().await?;
        let stale = match expired_for {
            Some(_) => format!(" AND updated_at < {}", d.ts()),
            None => String::new(),
        };
        let mut update = statement(d.sql(&format!(
            "UPDATE images SET status = ?, updated_at = {} WHERE id = ? AND deleted = false AND status = ? AND EXISTS (SELECT 1 FROM image_properties WHERE image_id = ? AND name = ? AND value = ? AND deleted = false{stale})",
            d.ts()
        )))
        .bind(back_to)
        .bind(now.as_str())
        .bind(id.as_str())
        .bind(claim.working)
        .bind(id.as_str())
        .bind(claim.property)
        .bind(token);
        let cutoff = expired_for.map(db_time_ago);
        if let Some(cutoff) = &cutoff {
            update = update.bind(cutoff.as_str());
        }
        let n = update
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        self.drop_lease(&mut tx, claim, id).await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Removes the upload lease of `id`: its row goes (not soft-deleted), so that the
    /// image's rows are upstream's own once the upload ends.
    async fn drop_lease(
        &self,
        conn: &mut AnyConnection,
        claim: Claim,
        id: &ImageId,
    ) -> Result<(), DbError> {
        self.delete_property(conn, id, claim.property).await
    }

    /// Empties property `name` of image `id`, if it has it (upstream leaves an import's
    /// `os_glance_importing_to_stores` empty, not removed, when the import is done).
    async fn empty_property(
        &self,
        conn: &mut AnyConnection,
        id: &ImageId,
        name: &str,
    ) -> Result<(), DbError> {
        statement(self.dialect().sql(
            "UPDATE image_properties SET value = '' WHERE image_id = ? AND name = ? AND deleted = false",
        ))
        .bind(id.as_str())
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Deletes property `name` of image `id` (its row goes, as the import's own rows).
    async fn delete_property(
        &self,
        conn: &mut AnyConnection,
        id: &ImageId,
        name: &str,
    ) -> Result<(), DbError> {
        statement(
            self.dialect()
                .sql("DELETE FROM image_properties WHERE image_id = ? AND name = ?"),
        )
        .bind(id.as_str())
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// saving -> active with the data's size, digests and location, and the upload's
    /// lease `token` dropped, in one transaction; false (and nothing written) if the
    /// image is no longer saving under that lease, e.g. deleted while the data was
    /// uploading, or reclaimed after the lease expired.
    pub async fn activate(
        &self,
        id: &ImageId,
        token: &str,
        data: &Activation,
    ) -> Result<bool, DbError> {
        self.activate_claimed(Claim::UPLOAD, id, token, data).await
    }

    /// importing -> active with the data, for import `task` while it holds the lock
    /// ([`Db::activate`]'s rules); the lock is dropped.
    pub async fn activate_import(
        &self,
        id: &ImageId,
        task: &str,
        data: &Activation,
    ) -> Result<bool, DbError> {
        self.activate_claimed(Claim::IMPORT, id, task, data).await
    }

    async fn activate_claimed(
        &self,
        claim: Claim,
        id: &ImageId,
        token: &str,
        data: &Activation,
    ) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.begin().await?;
        // The virtual size is written only when known (no NULL parameter to type).
        let virtual_size = if data.virtual_size.is_some() {
            "virtual_size = ?, "
        } else {
            ""
        };
        let mut update = statement(d.sql(&format!(
            "UPDATE images SET status = 'active', size = ?, {virtual_size}checksum = ?, os_hash_algo = 'sha512', os_hash_value = ?, updated_at = {} WHERE id = ? AND deleted = false AND status = '{working}' AND EXISTS (SELECT 1 FROM image_properties WHERE image_id = ? AND name = ? AND value = ? AND deleted = false)",
            d.ts(),
            working = claim.working,
        )))
        .bind(data.size);
        if let Some(v) = data.virtual_size {
            update = update.bind(v);
        }
        let n = update
            .bind(data.checksum.as_str())
            .bind(data.os_hash_value.as_str())
            .bind(now.as_str())
            .bind(id.as_str())
            .bind(id.as_str())
            .bind(claim.property)
            .bind(token)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        self.drop_lease(&mut tx, claim, id).await?;
        if claim.property == IMPORT_LOCK {
            self.empty_property(&mut tx, id, IMPORTING_TO_STORES)
                .await?;
        }
        self.insert_location(&mut tx, id, &data.location, &data.store, &now)
            .await?;
        for (url, store) in &data.also {
            self.insert_location(&mut tx, id, url, store, &now).await?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Soft-deletes an image with its properties, tags and locations (status `deleted`,
    /// `deleted = true`), as upstream's image_destroy does; false if it was not live or
    /// is protected (checked in the same statement, so a concurrent PATCH cannot slip by).
    pub async fn delete(&self, id: &ImageId) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.begin().await?;
        let n = statement(d.sql(&format!(
            "UPDATE images SET status = 'deleted', deleted = true, deleted_at = {ts}, updated_at = {ts} WHERE id = ? AND deleted = false AND protected = false",
            ts = d.ts()
        )))
        .bind(now.as_str())
        .bind(now.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        for (table, extra) in [
            ("image_properties", ""),
            ("image_tags", ""),
            ("image_locations", ", status = 'deleted'"),
            ("image_members", ""),
        ] {
            statement(d.sql(&format!(
                "UPDATE {table} SET deleted = true, deleted_at = {ts}, updated_at = {ts}{extra} WHERE image_id = ? AND deleted = false",
                ts = d.ts()
            )))
            .bind(now.as_str())
            .bind(now.as_str())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// A page of images matching `query`, and whether more follow.
    pub async fn list(&self, query: &ListQuery) -> Result<(Vec<Image>, bool), DbError> {
        let (sql, values) = query.to_sql(self.dialect(), &self.image_columns());
        let mut conn = self.conn().await?;
        let rows = bind_all(statement(sql), &values)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        let mut images = rows.iter().map(image_of).collect::<Result<Vec<_>, _>>()?;
        let more = images.len() > query.limit;
        images.truncate(query.limit);
        self.attach(&mut conn, &mut images).await?;
        Ok((images, more))
    }

    /// Where the image after `marker` sits in `query`'s order; None if the marker is not
    /// among the matching images.
    pub async fn offset_after(
        &self,
        query: &ListQuery,
        marker: &ImageId,
    ) -> Result<Option<usize>, DbError> {
        let (sql, values) = query.ids_sql(self.dialect());
        let rows = bind_all(statement(sql), &values)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        for (n, row) in rows.iter().enumerate() {
            if text(row, 0)? == marker.as_str() {
                return Ok(Some(n + 1));
            }
        }
        Ok(None)
    }

    /// Which of `ids` are live images (not deleted, nor gone).
    pub async fn live(&self, ids: &[ImageId]) -> Result<Vec<ImageId>, DbError> {
        let mut live = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = self.dialect().sql(&format!(
                "SELECT id FROM images WHERE deleted = false AND id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            ));
            let mut q = statement(sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q
                .fetch_all(&mut *self.conn().await?)
                .await
                .map_err(|e| self.error(e))?
            {
                let raw = text(&row, 0)?;
                if let Ok(id) = ImageId::parse(&raw) {
                    live.push(id);
                }
            }
        }
        Ok(live)
    }

    /// Removes the first location of active image `id` in `store`, under the image's row
    /// lock, unless it is the image's only one (upstream's delete_from_store).
    pub async fn remove_store_location(
        &self,
        id: &ImageId,
        store: &str,
    ) -> Result<StoreRemoval, DbError> {
        let (mut tx, exists) = self
            .begin_locked("images", "id", "id", Value::Text(id.to_string()))
            .await?;
        if !exists {
            return Ok(StoreRemoval::Gone);
        }
        let d = self.dialect();
        let status = statement(d.sql("SELECT status FROM images WHERE id = ? AND deleted = false"))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        match status.as_ref().map(|r| text(r, 0)).transpose()? {
            None => return Ok(StoreRemoval::Gone),
            Some(s) if s != "active" => return Ok(StoreRemoval::NotActive),
            Some(_) => {}
        }
        let rows = statement(d.sql(
            "SELECT value, meta_data FROM image_locations WHERE image_id = ? AND deleted = false AND status = 'active' ORDER BY id",
        ))
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        let mut found = None;
        for row in &rows {
            let in_store = opt_text(row, 1)?
                .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
                .is_some_and(|m| m.get("store").and_then(|s| s.as_str()) == Some(store));
            if in_store {
                found = Some(text(row, 0)?);
                break;
            }
        }
        let Some(url) = found else {
            return Ok(StoreRemoval::NotInStore);
        };
        if rows.len() == 1 {
            return Ok(StoreRemoval::OnlyOne);
        }
        let now = db_time(&now());
        statement(d.sql(&format!(
            "UPDATE image_locations SET deleted = true, deleted_at = {ts}, updated_at = {ts}, status = 'deleted' WHERE image_id = ? AND value = ? AND deleted = false",
            ts = d.ts()
        )))
        .bind(now.as_str())
        .bind(now.as_str())
        .bind(id.as_str())
        .bind(url.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(StoreRemoval::Removed(url))
    }

    /// The live locations of an image: (URL, store).
    pub async fn locations(&self, id: &ImageId) -> Result<Vec<(String, Option<String>)>, DbError> {
        let rows = statement(self.dialect().sql(
            "SELECT value, meta_data FROM image_locations WHERE image_id = ? AND deleted = false AND status = 'active' ORDER BY id",
        ))
        .bind(id.as_str())
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| {
                let store = opt_text(r, 1)?
                    .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
                    .and_then(|m| m.get("store").and_then(|s| s.as_str()).map(str::to_owned));
                Ok((text(r, 0)?, store))
            })
            .collect()
    }
}

/// What removing an image's data from one store came to ([`Db::remove_store_location`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRemoval {
    /// The location is gone from the catalogue: its data at this URL is to be deleted.
    Removed(String),
    /// The image is not active.
    NotActive,
    /// The image has no other location.
    OnlyOne,
    /// The image has no location in that store.
    NotInStore,
    /// No such image.
    Gone,
}

/// A location's `meta_data` as upstream writes it (Python's json.dumps): `{"store": "…"}`.
pub(crate) fn location_meta(store: &str) -> String {
    format!("{{\"store\": {}}}", serde_json::Value::from(store))
}

/// min_disk and min_ram are INTEGER columns: a larger value is refused, never clipped
/// (the API refuses it first, naming the field).
fn int4(v: i64) -> Result<i32, DbError> {
    i32::try_from(v).map_err(|_| DbError::Invalid(format!("{v} does not fit an INTEGER column")))
}

fn column_error(i: usize, e: sqlx::Error) -> DbError {
    DbError::Sql(format!("column {i}: {e}"))
}

fn text(row: &AnyRow, i: usize) -> Result<String, DbError> {
    row.try_get::<String, _>(i).map_err(|e| column_error(i, e))
}

fn opt_text(row: &AnyRow, i: usize) -> Result<Option<String>, DbError> {
    row.try_get::<Option<String>, _>(i)
        .map_err(|e| column_error(i, e))
}

fn int(row: &AnyRow, i: usize) -> Result<i64, DbError> {
    row.try_get::<i64, _>(i).map_err(|e| column_error(i, e))
}

fn opt_int(row: &AnyRow, i: usize) -> Result<Option<i64>, DbError> {
    row.try_get::<Option<i64>, _>(i)
        .map_err(|e| column_error(i, e))
}

/// An image row in [`Db::image_columns`]' order, before its tags and properties.
fn image_of(row: &AnyRow) -> Result<Image, DbError> {
    let raw = text(row, 0)?;
    let id = ImageId::parse(&raw)
        .map_err(|e| DbError::Sql(format!("image id {raw:?} is not a UUID: {e}")))?;
    Ok(Image {
        id,
        name: opt_text(row, 1)?,
        status: text(row, 2)?,
        visibility: opt_text(row, 3)?.unwrap_or_else(|| "shared".to_owned()),
        protected: int(row, 4)? != 0,
        os_hidden: int(row, 5)? != 0,
        disk_format: opt_text(row, 6)?,
        container_format: opt_text(row, 7)?,
        min_disk: opt_int(row, 8)?.unwrap_or(0),
        min_ram: opt_int(row, 9)?.unwrap_or(0),
        size: opt_int(row, 10)?,
        virtual_size: opt_int(row, 11)?,
        checksum: opt_text(row, 12)?,
        os_hash_algo: opt_text(row, 13)?,
        os_hash_value: opt_text(row, 14)?,
        owner: opt_text(row, 15)?,
        created_at: opt_text(row, 16)?.unwrap_or_default(),
        updated_at: opt_text(row, 17)?.unwrap_or_default(),
        tags: BTreeSet::new(),
        properties: BTreeMap::new(),
        stores: Vec::new(),
        locations: Vec::new(),
    })
}
