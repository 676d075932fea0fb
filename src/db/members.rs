//! Image members in upstream Glance's `image_members` table: the projects a `shared`
//! image is offered to, each `pending`, `accepted` or `rejected`. Rows are soft-deleted,
//! as upstream does.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::query::Value;
use super::records::{bind_all, statement};
use super::{Db, DbError, db_time, now};
use crate::cache::ImageId;

/// The statuses a membership can have.
pub const MEMBER_STATUSES: &[&str] = &["pending", "accepted", "rejected"];

/// One membership of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The image.
    pub image_id: String,
    /// The member project.
    pub member_id: String,
    /// pending, accepted or rejected.
    pub status: String,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// RFC 3339, seconds.
    pub updated_at: String,
}

/// What adding a member came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// The new membership, `pending`.
    Member(Member),
    /// The project is a member already.
    Duplicate,
    /// The image has `limit` members already (image_member_quota).
    Full {
        /// The quota.
        limit: u64,
    },
}

impl Db {
    fn member_columns(&self) -> String {
        let d = self.dialect();
        format!(
            "image_id, member, status, {}, {}",
            d.read_ts("created_at"),
            d.read_ts("COALESCE(updated_at, created_at)")
        )
    }

    /// The live members of an image, oldest first.
    pub async fn members(&self, image: &ImageId) -> Result<Vec<Member>, DbError> {
        let sql = format!(
            "SELECT {} FROM image_members WHERE image_id = ? AND deleted = false ORDER BY created_at, id",
            self.member_columns()
        );
        statement(self.dialect().sql(&sql))
            .bind(image.as_str())
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?
            .iter()
            .map(member_of)
            .collect()
    }

    /// `project`'s live membership of an image.
    pub async fn member(&self, image: &ImageId, project: &str) -> Result<Option<Member>, DbError> {
        let sql = format!(
            "SELECT {} FROM image_members WHERE image_id = ? AND member = ? AND deleted = false",
            self.member_columns()
        );
        statement(self.dialect().sql(&sql))
            .bind(image.as_str())
            .bind(project)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?
            .as_ref()
            .map(member_of)
            .transpose()
    }

    /// Offers a live image to `project` (status `pending`), unless it is a member
    /// already or the image has `limit` members. Counting and inserting are one
    /// transaction.
    pub async fn add_member(
        &self,
        image: &ImageId,
        project: &str,
        limit: u64,
    ) -> Result<Added, DbError> {
        let d = self.dialect();
        let now = now();
        let stamp = db_time(&now);
        // The image's row lock: two adds to one image take turns.
        let (mut tx, live) = self
            .begin_locked("images", "id", "id", Value::Text(image.to_string()))
            .await?;
        if !live {
            return Err(DbError::Sql(format!("image {image} is gone")));
        }
        // Every row of the image, a removed one of this project included: as upstream,
        // one row stands for one image and project, revived when offered again (a second
        // removal in the same second would otherwise clash with the first on the unique
        // key of image, member and deleted_at).
        let rows = statement(d.sql(
            "SELECT member, CASE WHEN deleted THEN 1 ELSE 0 END, id FROM image_members WHERE image_id = ?",
        ))
        .bind(image.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        let mut live = 0u64;
        let mut removed: Option<i64> = None;
        for row in &rows {
            let column = |e: sqlx::Error| DbError::Sql(format!("image_members: {e}"));
            let member: String = row.try_get(0).map_err(column)?;
            let deleted: i64 = row.try_get(1).map_err(column)?;
            if deleted == 0 {
                if member == project {
                    return Ok(Added::Duplicate);
                }
                live += 1;
            } else if member == project {
                removed = Some(row.try_get(2).map_err(column)?);
            }
        }
        if live >= limit {
            return Ok(Added::Full { limit });
        }
        let write = match removed {
            Some(row) => statement(d.sql(&format!(
                "UPDATE image_members SET deleted = false, deleted_at = NULL, status = 'pending', can_share = false, created_at = {ts}, updated_at = {ts} WHERE id = ?",
                ts = d.ts()
            )))
            .bind(stamp.as_str())
            .bind(stamp.as_str())
            .bind(row),
            None => statement(d.sql(&format!(
                "INSERT INTO image_members (image_id, member, can_share, status, created_at, updated_at, deleted_at, deleted) VALUES (?, ?, false, 'pending', {ts}, {ts}, NULL, false)",
                ts = d.ts()
            )))
            .bind(image.as_str())
            .bind(project)
            .bind(stamp.as_str())
            .bind(stamp.as_str()),
        };
        write.execute(&mut *tx).await.map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(Added::Member(Member {
            image_id: image.to_string(),
            member_id: project.to_owned(),
            status: "pending".to_owned(),
            created_at: now.clone(),
            updated_at: now,
        }))
    }

    /// Sets a live membership's status; None when there is none.
    pub async fn set_member_status(
        &self,
        image: &ImageId,
        project: &str,
        status: &str,
    ) -> Result<Option<Member>, DbError> {
        let stamp = db_time(&now());
        let set = format!("status = ?, updated_at = {}", self.dialect().ts());
        let values = [Value::Text(status.to_owned()), Value::Text(stamp)];
        if self
            .update_membership(image, project, &set, &values)
            .await?
            == 0
        {
            return Ok(None);
        }
        self.member(image, project).await
    }

    /// Soft-deletes a live membership; false when there is none.
    pub async fn remove_member(&self, image: &ImageId, project: &str) -> Result<bool, DbError> {
        let stamp = db_time(&now());
        let ts = self.dialect().ts();
        let set = format!("deleted = true, deleted_at = {ts}, updated_at = {ts}");
        let values = [Value::Text(stamp.clone()), Value::Text(stamp)];
        Ok(self
            .update_membership(image, project, &set, &values)
            .await?
            > 0)
    }

    /// `UPDATE image_members SET <set>` of `project`'s live membership of `image`, with
    /// `values` bound to `set`'s placeholders; the rows changed.
    async fn update_membership(
        &self,
        image: &ImageId,
        project: &str,
        set: &str,
        values: &[Value],
    ) -> Result<u64, DbError> {
        let sql = format!(
            "UPDATE image_members SET {set} WHERE image_id = ? AND member = ? AND deleted = false"
        );
        Ok(bind_all(statement(self.dialect().sql(&sql)), values)
            .bind(image.as_str())
            .bind(project)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected())
    }
}

fn member_of(row: &AnyRow) -> Result<Member, DbError> {
    let text = |i: usize| {
        row.try_get::<String, _>(i)
            .map_err(|e| DbError::Sql(format!("image_members column {i}: {e}")))
    };
    Ok(Member {
        image_id: text(0)?,
        member_id: text(1)?,
        status: text(2)?,
        created_at: text(3)?,
        updated_at: text(4)?,
    })
}
