//! Metadata definitions (metadefs) in upstream Glance's tables: `metadef_namespaces`,
//! their `metadef_objects`, `metadef_properties` and `metadef_tags`, the
//! `metadef_resource_types` and their associations with namespaces
//! (`metadef_namespace_resource_types`). Unlike images these rows are deleted, not
//! soft-deleted, as upstream does. A namespace's children go with it, in one transaction.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::records::statement;
use super::{Db, DbError, db_time, now};

/// One namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Its row id.
    pub id: i64,
    /// Its unique name.
    pub namespace: String,
    /// display_name.
    pub display_name: Option<String>,
    /// description.
    pub description: Option<String>,
    /// public or private.
    pub visibility: String,
    /// Not deletable while true.
    pub protected: bool,
    /// The project that owns it.
    pub owner: String,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// RFC 3339, seconds.
    pub updated_at: String,
}

/// One child of a namespace: an object, a property or a tag. `schema` is the JSON text
/// upstream keeps in `json_schema` (objects' properties, a property's definition);
/// `description` and `required` are objects' own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Its name, unique in its namespace.
    pub name: String,
    /// `json_schema` (objects and properties).
    pub schema: Option<String>,
    /// An object's description.
    pub description: Option<String>,
    /// An object's `required`, JSON text.
    pub required: Option<String>,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// RFC 3339, seconds.
    pub updated_at: String,
}

/// The kinds of children of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `metadef_objects`.
    Object,
    /// `metadef_properties`.
    Property,
    /// `metadef_tags`.
    Tag,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Self::Object => "metadef_objects",
            Self::Property => "metadef_properties",
            Self::Tag => "metadef_tags",
        }
    }
}

/// A resource type associated with a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    /// The resource type's name.
    pub name: String,
    /// `prefix`.
    pub prefix: Option<String>,
    /// `properties_target`.
    pub properties_target: Option<String>,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// RFC 3339, seconds.
    pub updated_at: String,
}

impl Db {
    fn namespace_columns(&self) -> String {
        let d = self.dialect();
        format!(
            "id, namespace, display_name, description, visibility, {}, owner, {}, {}",
            d.read_bool("protected"),
            d.read_ts("created_at"),
            d.read_ts("COALESCE(updated_at, created_at)")
        )
    }

    /// The namespaces `owner` may see (public ones and its own; every one for None),
    /// with `visibility` if given, newest first.
    pub async fn namespaces(
        &self,
        owner: Option<&str>,
        visibility: Option<&str>,
    ) -> Result<Vec<Namespace>, DbError> {
        let mut clauses = vec!["1 = 1".to_owned()];
        let mut values = Vec::new();
        if let Some(owner) = owner {
            clauses.push("(visibility = 'public' OR owner = ?)".to_owned());
            values.push(owner.to_owned());
        }
        if let Some(visibility) = visibility {
            clauses.push("visibility = ?".to_owned());
            values.push(visibility.to_owned());
        }
        let sql = self.dialect().sql(&format!(
            "SELECT {} FROM metadef_namespaces WHERE {} ORDER BY created_at DESC, id DESC",
            self.namespace_columns(),
            clauses.join(" AND ")
        ));
        let mut q = statement(sql);
        for v in &values {
            q = q.bind(v.as_str());
        }
        let rows = q
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(namespace_of).collect()
    }

    /// Namespace `name`.
    pub async fn namespace(&self, name: &str) -> Result<Option<Namespace>, DbError> {
        let sql = self.dialect().sql(&format!(
            "SELECT {} FROM metadef_namespaces WHERE namespace = ?",
            self.namespace_columns()
        ));
        let row = statement(sql)
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        row.as_ref().map(namespace_of).transpose()
    }

    /// Adds a namespace; false if one of that name exists.
    pub async fn insert_namespace(&self, ns: &Namespace) -> Result<bool, DbError> {
        if self.namespace(&ns.namespace).await?.is_some() {
            return Ok(false);
        }
        let d = self.dialect();
        let now = db_time(&now());
        let result = statement(d.sql(&format!(
            "INSERT INTO metadef_namespaces (namespace, display_name, description, visibility, protected, owner, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, {ts}, {ts})",
            ts = d.ts()
        )))
        .bind(ns.namespace.as_str())
        .bind(ns.display_name.as_deref())
        .bind(ns.description.as_deref())
        .bind(ns.visibility.as_str())
        .bind(ns.protected)
        .bind(ns.owner.as_str())
        .bind(now.as_str())
        .bind(now.as_str())
        .execute(&mut *self.conn().await?)
        .await;
        match result {
            Ok(_) => Ok(true),
            // Another request made it meanwhile (the name is unique).
            Err(e) if self.namespace(&ns.namespace).await?.is_some() => {
                tracing::debug!(error = %e, "namespace made concurrently");
                Ok(false)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Writes namespace `id`'s fields (its name included); false if the new name is
    /// taken by another namespace.
    pub async fn update_namespace(&self, ns: &Namespace) -> Result<bool, DbError> {
        if let Some(other) = self.namespace(&ns.namespace).await?
            && other.id != ns.id
        {
            return Ok(false);
        }
        let d = self.dialect();
        let now = db_time(&now());
        statement(d.sql(&format!(
            "UPDATE metadef_namespaces SET namespace = ?, display_name = ?, description = ?, visibility = ?, protected = ?, owner = ?, updated_at = {} WHERE id = ?",
            d.ts()
        )))
        .bind(ns.namespace.as_str())
        .bind(ns.display_name.as_deref())
        .bind(ns.description.as_deref())
        .bind(ns.visibility.as_str())
        .bind(ns.protected)
        .bind(ns.owner.as_str())
        .bind(now.as_str())
        .bind(ns.id)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Deletes namespace `id` with its objects, properties, tags and associations.
    pub async fn delete_namespace(&self, id: i64) -> Result<(), DbError> {
        let d = self.dialect();
        let mut tx = self.begin().await?;
        for table in [
            "metadef_objects",
            "metadef_properties",
            "metadef_tags",
            "metadef_namespace_resource_types",
            "metadef_namespaces",
        ] {
            let key = if table == "metadef_namespaces" {
                "id"
            } else {
                "namespace_id"
            };
            statement(d.sql(&format!("DELETE FROM {table} WHERE {key} = ?")))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(())
    }

    fn child_columns(&self, kind: Kind) -> String {
        let d = self.dialect();
        let (schema, description, required) = match kind {
            Kind::Object => ("json_schema", "description", "required"),
            Kind::Property => ("json_schema", "NULL", "NULL"),
            Kind::Tag => ("NULL", "NULL", "NULL"),
        };
        format!(
            "name, {}, {}, {}, {}, {}",
            d.read_text(schema),
            d.read_text(description),
            d.read_text(required),
            d.read_ts("created_at"),
            d.read_ts("COALESCE(updated_at, created_at)")
        )
    }

    /// The children of `kind` of namespace `id`, by name... as upstream lists them: in
    /// creation order.
    pub async fn children(&self, kind: Kind, id: i64) -> Result<Vec<Child>, DbError> {
        let sql = self.dialect().sql(&format!(
            "SELECT {} FROM {} WHERE namespace_id = ? ORDER BY created_at, id",
            self.child_columns(kind),
            kind.table()
        ));
        let rows = statement(sql)
            .bind(id)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(child_of).collect()
    }

    /// The child `name` of `kind` of namespace `id`.
    pub async fn child(&self, kind: Kind, id: i64, name: &str) -> Result<Option<Child>, DbError> {
        let sql = self.dialect().sql(&format!(
            "SELECT {} FROM {} WHERE namespace_id = ? AND name = ?",
            self.child_columns(kind),
            kind.table()
        ));
        let row = statement(sql)
            .bind(id)
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        row.as_ref().map(child_of).transpose()
    }

    /// Adds children of `kind` to namespace `id` in one transaction; false (none added)
    /// if a name is taken.
    pub async fn insert_children(
        &self,
        kind: Kind,
        id: i64,
        children: &[Child],
    ) -> Result<bool, DbError> {
        for child in children {
            if self.child(kind, id, &child.name).await?.is_some() {
                return Ok(false);
            }
        }
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.begin().await?;
        for child in children {
            let q = match kind {
                Kind::Object => statement(d.sql(&format!(
                    "INSERT INTO metadef_objects (namespace_id, name, description, required, json_schema, created_at, updated_at) VALUES (?, ?, ?, ?, ?, {ts}, {ts})",
                    ts = d.ts()
                )))
                .bind(id)
                .bind(child.name.as_str())
                .bind(child.description.as_deref())
                .bind(child.required.as_deref())
                .bind(child.schema.as_deref().unwrap_or("{}")),
                Kind::Property => statement(d.sql(&format!(
                    "INSERT INTO metadef_properties (namespace_id, name, json_schema, created_at, updated_at) VALUES (?, ?, ?, {ts}, {ts})",
                    ts = d.ts()
                )))
                .bind(id)
                .bind(child.name.as_str())
                .bind(child.schema.as_deref().unwrap_or("{}")),
                Kind::Tag => statement(d.sql(&format!(
                    "INSERT INTO metadef_tags (namespace_id, name, created_at, updated_at) VALUES (?, ?, {ts}, {ts})",
                    ts = d.ts()
                )))
                .bind(id)
                .bind(child.name.as_str()),
            };
            q.bind(now.as_str())
                .bind(now.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Replaces child `old` of `kind` of namespace `id` with `new` (its name may change);
    /// None if there is no `old`, Some(false) if the new name is taken.
    pub async fn update_child(
        &self,
        kind: Kind,
        id: i64,
        old: &str,
        new: &Child,
    ) -> Result<Option<bool>, DbError> {
        if self.child(kind, id, old).await?.is_none() {
            return Ok(None);
        }
        if new.name != old && self.child(kind, id, &new.name).await?.is_some() {
            return Ok(Some(false));
        }
        let d = self.dialect();
        let now = db_time(&now());
        let set = match kind {
            Kind::Object => "name = ?, description = ?, required = ?, json_schema = ?",
            Kind::Property => "name = ?, json_schema = ?",
            Kind::Tag => "name = ?",
        };
        let mut q = statement(d.sql(&format!(
            "UPDATE {} SET {set}, updated_at = {} WHERE namespace_id = ? AND name = ?",
            kind.table(),
            d.ts()
        )))
        .bind(new.name.as_str());
        if kind == Kind::Object {
            q = q
                .bind(new.description.as_deref())
                .bind(new.required.as_deref());
        }
        if kind != Kind::Tag {
            q = q.bind(new.schema.as_deref().unwrap_or("{}"));
        }
        q.bind(now.as_str())
            .bind(id)
            .bind(old)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Some(true))
    }

    /// Deletes child `name` of `kind` (every one for None) of namespace `id`; how many.
    pub async fn delete_children(
        &self,
        kind: Kind,
        id: i64,
        name: Option<&str>,
    ) -> Result<u64, DbError> {
        let d = self.dialect();
        let by_name = if name.is_some() { " AND name = ?" } else { "" };
        let mut q = statement(d.sql(&format!(
            "DELETE FROM {} WHERE namespace_id = ?{by_name}",
            kind.table()
        )))
        .bind(id);
        if let Some(name) = name {
            q = q.bind(name);
        }
        Ok(q.execute(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected())
    }

    /// Every resource type: (name, created_at, updated_at), by name.
    pub async fn resource_types(&self) -> Result<Vec<(String, String, String)>, DbError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT name, {}, {} FROM metadef_resource_types ORDER BY name",
            d.read_ts("created_at"),
            d.read_ts("COALESCE(updated_at, created_at)")
        ));
        let rows = statement(sql)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| Ok((text(r, 0)?, text(r, 1)?, text(r, 2)?)))
            .collect()
    }

    /// The resource types associated with namespace `id`.
    pub async fn associations(&self, id: i64) -> Result<Vec<Association>, DbError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT r.name, a.prefix, a.properties_target, {}, {} FROM metadef_namespace_resource_types a JOIN metadef_resource_types r ON r.id = a.resource_type_id WHERE a.namespace_id = ? ORDER BY a.created_at, r.name",
            d.read_ts("a.created_at"),
            d.read_ts("COALESCE(a.updated_at, a.created_at)")
        ));
        let rows = statement(sql)
            .bind(id)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| {
                Ok(Association {
                    name: text(r, 0)?,
                    prefix: opt(r, 1)?,
                    properties_target: opt(r, 2)?,
                    created_at: text(r, 3)?,
                    updated_at: text(r, 4)?,
                })
            })
            .collect()
    }

    /// Associates resource type `a.name` (made if it is new) with namespace `id`; false
    /// if it is associated already.
    pub async fn associate(&self, id: i64, a: &Association) -> Result<bool, DbError> {
        if self
            .associations(id)
            .await?
            .iter()
            .any(|x| x.name == a.name)
        {
            return Ok(false);
        }
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.begin().await?;
        let existing = statement(d.sql("SELECT id FROM metadef_resource_types WHERE name = ?"))
            .bind(a.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        if existing.is_none() {
            statement(d.sql(&format!(
                "INSERT INTO metadef_resource_types (name, protected, created_at, updated_at) VALUES (?, false, {ts}, {ts})",
                ts = d.ts()
            )))
            .bind(a.name.as_str())
            .bind(now.as_str())
            .bind(now.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        }
        statement(d.sql(&format!(
            "INSERT INTO metadef_namespace_resource_types (resource_type_id, namespace_id, properties_target, prefix, created_at, updated_at) SELECT id, ?, ?, ?, {ts}, {ts} FROM metadef_resource_types WHERE name = ?",
            ts = d.ts()
        )))
        .bind(id)
        .bind(a.properties_target.as_deref())
        .bind(a.prefix.as_deref())
        .bind(now.as_str())
        .bind(now.as_str())
        .bind(a.name.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Deletes every resource type (and so every association).
    pub async fn delete_resource_types(&self) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        for table in ["metadef_namespace_resource_types", "metadef_resource_types"] {
            statement(format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Removes the association of resource type `name` with namespace `id`; whether
    /// there was one.
    pub async fn dissociate(&self, id: i64, name: &str) -> Result<bool, DbError> {
        let n = statement(self.dialect().sql(
            "DELETE FROM metadef_namespace_resource_types WHERE namespace_id = ? AND resource_type_id IN (SELECT id FROM metadef_resource_types WHERE name = ?)",
        ))
        .bind(id)
        .bind(name)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(n > 0)
    }
}

fn text(row: &AnyRow, i: usize) -> Result<String, DbError> {
    Ok(opt(row, i)?.unwrap_or_default())
}

fn opt(row: &AnyRow, i: usize) -> Result<Option<String>, DbError> {
    row.try_get::<Option<String>, _>(i)
        .map_err(|e| DbError::Sql(format!("column {i}: {e}")))
}

fn namespace_of(row: &AnyRow) -> Result<Namespace, DbError> {
    let int = |i: usize| {
        row.try_get::<i64, _>(i)
            .map_err(|e| DbError::Sql(format!("column {i}: {e}")))
    };
    Ok(Namespace {
        id: int(0)?,
        namespace: text(row, 1)?,
        display_name: opt(row, 2)?,
        description: opt(row, 3)?,
        visibility: opt(row, 4)?.unwrap_or_else(|| "private".to_owned()),
        protected: int(5)? != 0,
        owner: text(row, 6)?,
        created_at: text(row, 7)?,
        updated_at: text(row, 8)?,
    })
}

fn child_of(row: &AnyRow) -> Result<Child, DbError> {
    Ok(Child {
        name: text(row, 0)?,
        schema: opt(row, 1)?,
        description: opt(row, 2)?,
        required: opt(row, 3)?,
        created_at: text(row, 4)?,
        updated_at: text(row, 5)?,
    })
}
