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
use super::{Db, DbError, Image, ListQuery, db_time, now};
use crate::cache::ImageId;

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
        let begun = if sqlite {
            self.pool().begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool().begin().await
        };
        let mut tx = begun.map_err(|e| self.error(e))?;
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
        let sql = self.dialect().sql(&format!(
            "SELECT {} FROM images WHERE images.id = ? AND images.deleted = false",
            self.image_columns()
        ));
        let mut conn = self.pool().acquire().await.map_err(|e| self.error(e))?;
        let row = statement(sql)
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        let Some(row) = row else { return Ok(None) };
        let mut images = vec![image_of(&row)?];
        if children {
            self.attach(&mut conn, &mut images).await?;
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
        if images.iter().any(|i| i.status == "active") {
            let locations_sql = d.sql(&format!(
                "SELECT image_id, meta_data FROM image_locations WHERE deleted = false AND status = 'active' AND image_id IN ({marks}) ORDER BY id"
            ));
            for row in bind_all(statement(locations_sql), &ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| self.error(e))?
            {
                let image = text(&row, 0)?;
                let meta = opt_text(&row, 1)?.unwrap_or_default();
                let store = serde_json::from_str::<serde_json::Value>(&meta)
                    .ok()
                    .and_then(|m| m.get("store").and_then(|s| s.as_str()).map(str::to_owned));
                if let (Some(&n), Some(store)) = (index.get(&image), store)
                    && !images[n].stores.contains(&store)
                {
                    images[n].stores.push(store);
                }
            }
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
        let mut tx = self.pool().begin().await.map_err(|e| self.error(e))?;
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
            .bind(int4(image.min_disk))
            .bind(int4(image.min_ram))
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

    /// Writes what a user may change (name, visibility, protected, os_hidden, formats,
    /// min_disk, min_ram, owner, tags and properties) and `updated_at`; never the status
    /// or the data's fields, which only [`Db::transition`] and [`Db::activate`] move.
    /// False if the image does not exist or is deleted, or if it left queued (an upload
    /// took it, having read the formats it inspects against) while the formats written
    /// differ from the stored ones.
    pub async fn update(&self, image: &Image) -> Result<bool, DbError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "UPDATE images SET name = ?, visibility = {vis}, protected = ?, os_hidden = ?, disk_format = ?, container_format = ?, min_disk = ?, min_ram = ?, owner = ?, updated_at = {ts} WHERE id = ? AND deleted = false AND (status IN ('queued', 'importing') OR (COALESCE(disk_format, '') = COALESCE(?, '') AND COALESCE(container_format, '') = COALESCE(?, '')))",
            ts = d.ts(),
            vis = d.visibility()
        ));
        let updated = db_time(&image.updated_at);
        let mut tx = self.pool().begin().await.map_err(|e| self.error(e))?;
        let n = statement(sql)
            .bind(image.name.as_deref())
            .bind(image.visibility.as_str())
            .bind(image.protected)
            .bind(image.os_hidden)
            .bind(image.disk_format.as_deref())
            .bind(image.container_format.as_deref())
            .bind(int4(image.min_disk))
            .bind(int4(image.min_ram))
            .bind(image.owner.as_deref())
            .bind(updated.as_str())
            .bind(image.id.as_str())
            .bind(image.disk_format.as_deref())
            .bind(image.container_format.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        self.write_tags(&mut tx, &image.id, &image.tags, &updated)
            .await?;
        self.write_properties(&mut tx, &image.id, &image.properties, &updated)
            .await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Makes the live tags of `id` exactly `tags`: missing ones are inserted, others
    /// soft-deleted (upstream's image_tag_set_all).
    async fn write_tags(
        &self,
        conn: &mut AnyConnection,
        id: &ImageId,
        tags: &BTreeSet<String>,
        now: &str,
    ) -> Result<(), DbError> {
        let d = self.dialect();
        let existing: BTreeSet<String> =
            statement(d.sql("SELECT value FROM image_tags WHERE image_id = ? AND deleted = false"))
                .bind(id.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| self.error(e))?
                .iter()
                .map(|r| text(r, 0))
                .collect::<Result<_, _>>()?;
        for gone in existing.difference(tags) {
            statement(d.sql(&format!(
                "UPDATE image_tags SET deleted = true, deleted_at = {ts}, updated_at = {ts} WHERE image_id = ? AND value = ? AND deleted = false",
                ts = d.ts()
            )))
            .bind(now)
            .bind(now)
            .bind(id.as_str())
            .bind(gone.as_str())
            .execute(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        }
        let new: Vec<(&str, Option<&str>)> = tags
            .difference(&existing)
            .map(|t| (t.as_str(), None))
            .collect();
        self.add_rows(conn, Child::Tags, id, &new, now).await
    }

    /// Makes the live properties of `id` exactly `properties`. A name keeps its one row
    /// (unique per image): a removed property is soft-deleted and comes back to life when
    /// set again, as upstream does.
    async fn write_properties(
        &self,
        conn: &mut AnyConnection,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
        now: &str,
    ) -> Result<(), DbError> {
        let d = self.dialect();
        let rows = statement(d.sql(&format!(
            "SELECT name, value, {} FROM image_properties WHERE image_id = ?",
            d.read_bool("deleted")
        )))
        .bind(id.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.error(e))?;
        let mut existing: HashMap<String, (Option<String>, bool)> = HashMap::new();
        for row in &rows {
            existing.insert(text(row, 0)?, (opt_text(row, 1)?, int(row, 2)? != 0));
        }
        let mut added = Vec::new();
        for (name, value) in properties {
            match existing.get(name) {
                Some((old, false)) if old.as_deref() == Some(value.as_str()) => {}
                Some(_) => {
                    statement(d.sql(&format!(
                        "UPDATE image_properties SET value = ?, deleted = false, deleted_at = NULL, updated_at = {} WHERE image_id = ? AND name = ?",
                        d.ts()
                    )))
                    .bind(value.as_str())
                    .bind(now)
                    .bind(id.as_str())
                    .bind(name.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.error(e))?;
                }
                None => added.push((name.as_str(), Some(value.as_str()))),
            }
        }
        self.add_rows(conn, Child::Properties, id, &added, now)
            .await?;
        for (name, (_, deleted)) in &existing {
            if !deleted && !properties.contains_key(name) {
                statement(d.sql(&format!(
                    "UPDATE image_properties SET deleted = true, deleted_at = {ts}, updated_at = {ts} WHERE image_id = ? AND name = ?",
                    ts = d.ts()
                )))
                .bind(now)
                .bind(now)
                .bind(id.as_str())
                .bind(name.as_str())
                .execute(&mut *conn)
                .await
                .map_err(|e| self.error(e))?;
            }
        }
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
            .execute(self.pool())
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(n > 0)
    }

    /// saving -> active with the data's size, digests and location, in one transaction;
    /// false (and nothing written) if the image is no longer saving, e.g. deleted while
    /// the data was uploading.
    pub async fn activate(&self, id: &ImageId, data: &Activation) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.pool().begin().await.map_err(|e| self.error(e))?;
        // The virtual size is written only when known (no NULL parameter to type).
        let virtual_size = if data.virtual_size.is_some() {
            "virtual_size = ?, "
        } else {
            ""
        };
        let mut update = statement(d.sql(&format!(
            "UPDATE images SET status = 'active', size = ?, {virtual_size}checksum = ?, os_hash_algo = 'sha512', os_hash_value = ?, updated_at = {} WHERE id = ? AND deleted = false AND status = 'saving'",
            d.ts()
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
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        let meta = location_meta(&data.store);
        statement(d.sql(&format!(
            "INSERT INTO image_locations (image_id, value, created_at, updated_at, deleted, meta_data, status) VALUES (?, ?, {ts}, {ts}, false, ?, 'active')",
            ts = d.ts()
        )))
        .bind(id.as_str())
        .bind(data.location.as_str())
        .bind(now.as_str())
        .bind(now.as_str())
        .bind(meta.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Soft-deletes an image with its properties, tags and locations (status `deleted`,
    /// `deleted = true`), as upstream's image_destroy does; false if it was not live or
    /// is protected (checked in the same statement, so a concurrent PATCH cannot slip by).
    pub async fn delete(&self, id: &ImageId) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.pool().begin().await.map_err(|e| self.error(e))?;
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
        let mut conn = self.pool().acquire().await.map_err(|e| self.error(e))?;
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
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.error(e))?;
        for (n, row) in rows.iter().enumerate() {
            if text(row, 0)? == marker.as_str() {
                return Ok(Some(n + 1));
            }
        }
        Ok(None)
    }

    /// The live locations of an image: (URL, store).
    pub async fn locations(&self, id: &ImageId) -> Result<Vec<(String, Option<String>)>, DbError> {
        let rows = statement(self.dialect().sql(
            "SELECT value, meta_data FROM image_locations WHERE image_id = ? AND deleted = false AND status = 'active' ORDER BY id",
        ))
        .bind(id.as_str())
        .fetch_all(self.pool())
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

/// A location's `meta_data` as upstream writes it (Python's json.dumps): `{"store": "…"}`.
pub(crate) fn location_meta(store: &str) -> String {
    format!("{{\"store\": {}}}", serde_json::Value::from(store))
}

/// min_disk and min_ram are INTEGER columns.
fn int4(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
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
    })
}
