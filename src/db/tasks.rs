//! Tasks in upstream Glance's `tasks` and `task_info` tables: the image imports
//! (`api_image_import`) with their input, result and message. A task moves
//! pending -> processing -> success or failure, each move a conditional update; a
//! finished task expires `task_time_to_live` hours later, after which it is no longer
//! shown. Rows are soft-deleted, as upstream does.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::records::statement;
use super::{Db, DbError, db_time, db_time_ago, now};

/// One task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its id (a UUID).
    pub id: String,
    /// `api_image_import`, or upstream's older `import`.
    pub kind: String,
    /// pending, processing, success or failure.
    pub status: String,
    /// The project that made it.
    pub owner: String,
    /// RFC 3339, seconds; set when the task ends.
    pub expires_at: Option<String>,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// RFC 3339, seconds.
    pub updated_at: String,
    /// The image it works on.
    pub image_id: Option<String>,
    /// The x-openstack-request-id of the request that made it.
    pub request_id: Option<String>,
    /// The user that made it.
    pub user_id: Option<String>,
    /// Its input, JSON text.
    pub input: Option<String>,
    /// Its result, JSON text.
    pub result: Option<String>,
    /// What happened, for people.
    pub message: String,
}

/// What a task listing shows (upstream's `task_get_all` filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only this project's tasks; None for every project's (an administrator).
    pub owner: Option<String>,
    /// Only tasks with this status.
    pub status: Option<String>,
    /// Only tasks of this type.
    pub kind: Option<String>,
    /// Sort by this column (created_at, updated_at, id, type, status), descending unless
    /// `ascending`.
    pub sort_key: &'static str,
    /// Ascending order.
    pub ascending: bool,
    /// Page size.
    pub limit: usize,
    /// Rows to skip (from the marker).
    pub offset: usize,
}

impl Db {
    fn task_columns(&self) -> String {
        let d = self.dialect();
        format!(
            "t.id, t.type, t.status, t.owner, {}, {}, {}, t.image_id, t.request_id, t.user_id, i.input, i.result, i.message",
            d.read_ts("t.expires_at"),
            d.read_ts("t.created_at"),
            d.read_ts("COALESCE(t.updated_at, t.created_at)")
        )
    }

    /// Records a new task and its input, in one transaction.
    pub async fn insert_task(&self, task: &Task) -> Result<(), DbError> {
        let d = self.dialect();
        let created = db_time(&task.created_at);
        let mut tx = self.begin().await?;
        statement(d.sql(&format!(
            "INSERT INTO tasks (id, type, status, owner, expires_at, created_at, updated_at, deleted_at, deleted, image_id, request_id, user_id) VALUES (?, ?, ?, ?, NULL, {ts}, {ts}, NULL, false, ?, ?, ?)",
            ts = d.ts()
        )))
        .bind(task.id.as_str())
        .bind(task.kind.as_str())
        .bind(task.status.as_str())
        .bind(task.owner.as_str())
        .bind(created.as_str())
        .bind(created.as_str())
        .bind(task.image_id.as_deref())
        .bind(task.request_id.as_deref())
        .bind(task.user_id.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        statement(
            d.sql("INSERT INTO task_info (task_id, input, result, message) VALUES (?, ?, ?, ?)"),
        )
        .bind(task.id.as_str())
        .bind(task.input.as_deref())
        .bind(task.result.as_deref())
        .bind(task.message.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The live task `id` that has not expired.
    pub async fn task(&self, id: &str) -> Result<Option<Task>, DbError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT {} FROM tasks t LEFT JOIN task_info i ON i.task_id = t.id WHERE t.id = ? AND t.deleted = false AND (t.expires_at IS NULL OR t.expires_at > {})",
            self.task_columns(),
            d.ts()
        ));
        let now = db_time_ago(0);
        let row = statement(sql)
            .bind(id)
            .bind(now.as_str())
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        row.as_ref().map(task_of).transpose()
    }

    /// A page of tasks, and whether more follow.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<(Vec<Task>, bool), DbError> {
        let d = self.dialect();
        let mut clauses = vec![format!(
            "t.deleted = false AND (t.expires_at IS NULL OR t.expires_at > {})",
            d.ts()
        )];
        let mut values = vec![db_time_ago(0)];
        for (column, value) in [
            ("t.owner", &query.owner),
            ("t.status", &query.status),
            ("t.type", &query.kind),
        ] {
            if let Some(value) = value {
                clauses.push(format!("{column} = ?"));
                values.push(value.clone());
            }
        }
        let dir = if query.ascending { "ASC" } else { "DESC" };
        let sql = d.sql(&format!(
            "SELECT {} FROM tasks t LEFT JOIN task_info i ON i.task_id = t.id WHERE {} ORDER BY t.{} {dir}, t.id {dir} LIMIT {} OFFSET {}",
            self.task_columns(),
            clauses.join(" AND "),
            query.sort_key,
            query.limit.saturating_add(1),
            query.offset
        ));
        let mut q = statement(sql);
        for value in &values {
            q = q.bind(value.as_str());
        }
        let rows = q
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        let mut tasks = rows.iter().map(task_of).collect::<Result<Vec<_>, _>>()?;
        let more = tasks.len() > query.limit;
        tasks.truncate(query.limit);
        Ok((tasks, more))
    }

    /// Where task `marker` sits in `query`'s order (the offset of the task after it);
    /// None if it is not among them.
    pub async fn task_offset_after(
        &self,
        query: &TaskQuery,
        marker: &str,
    ) -> Result<Option<usize>, DbError> {
        let all = TaskQuery {
            limit: usize::MAX - 1,
            offset: 0,
            ..query.clone()
        };
        let (tasks, _) = self.tasks(&all).await?;
        Ok(tasks.iter().position(|t| t.id == marker).map(|n| n + 1))
    }

    /// The live tasks of image `image`, oldest first.
    pub async fn image_tasks(&self, image: &str) -> Result<Vec<Task>, DbError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT {} FROM tasks t LEFT JOIN task_info i ON i.task_id = t.id WHERE t.image_id = ? AND t.deleted = false AND (t.expires_at IS NULL OR t.expires_at > {}) ORDER BY t.created_at, t.id",
            self.task_columns(),
            d.ts()
        ));
        let now = db_time_ago(0);
        let rows = statement(sql)
            .bind(image)
            .bind(now.as_str())
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(task_of).collect()
    }

    /// Moves task `id` from one of `from` to `to` with `message` (and `result`, JSON
    /// text, when given); a task that ends (success, failure) expires `ttl_hours` later.
    /// False if it was not in `from`.
    pub async fn move_task(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        message: &str,
        result: Option<&str>,
        ttl_hours: u64,
    ) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let ends = matches!(to, "success" | "failure");
        let expires = ends.then(|| {
            db_time_ago(-i64::try_from(ttl_hours.saturating_mul(3600)).unwrap_or(i64::MAX / 2))
        });
        let marks = vec!["?"; from.len()].join(", ");
        let mut tx = self.begin().await?;
        let expiry = if expires.is_some() {
            format!(", expires_at = {}", d.ts())
        } else {
            String::new()
        };
        let mut q = statement(d.sql(&format!(
            "UPDATE tasks SET status = ?, updated_at = {}{expiry} WHERE id = ? AND deleted = false AND status IN ({marks})",
            d.ts()
        )))
        .bind(to)
        .bind(now.as_str());
        if let Some(expires) = &expires {
            q = q.bind(expires.as_str());
        }
        q = q.bind(id);
        for status in from {
            q = q.bind(*status);
        }
        let n = q
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        let set_result = if result.is_some() { ", result = ?" } else { "" };
        let mut q = statement(d.sql(&format!(
            "UPDATE task_info SET message = ?{set_result} WHERE task_id = ?"
        )))
        .bind(message);
        if let Some(result) = result {
            q = q.bind(result);
        }
        q.bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Sets the message of a processing task (its progress); false if it no longer is.
    pub async fn task_progress(&self, id: &str, message: &str) -> Result<bool, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let mut tx = self.begin().await?;
        let n = statement(d.sql(&format!(
            "UPDATE tasks SET updated_at = {} WHERE id = ? AND deleted = false AND status = 'processing'",
            d.ts()
        )))
        .bind(now.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        statement(d.sql("UPDATE task_info SET message = ? WHERE task_id = ?"))
            .bind(message)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(n > 0)
    }

    /// Soft-deletes the tasks that expired (upstream's `glance-manage db purge` does
    /// the same for old ones); the number removed.
    pub async fn purge_expired_tasks(&self) -> Result<u64, DbError> {
        let d = self.dialect();
        let now = db_time(&now());
        let n = statement(d.sql(&format!(
            "UPDATE tasks SET deleted = true, deleted_at = {ts} WHERE deleted = false AND expires_at IS NOT NULL AND expires_at <= {ts}",
            ts = d.ts()
        )))
        .bind(now.as_str())
        .bind(now.as_str())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(n)
    }
}

fn task_of(row: &AnyRow) -> Result<Task, DbError> {
    let text = |i: usize| -> Result<Option<String>, DbError> {
        row.try_get::<Option<String>, _>(i)
            .map_err(|e| DbError::Sql(format!("column {i}: {e}")))
    };
    let required = |i: usize| -> Result<String, DbError> { Ok(text(i)?.unwrap_or_default()) };
    Ok(Task {
        id: required(0)?,
        kind: required(1)?,
        status: required(2)?,
        owner: required(3)?,
        expires_at: text(4)?,
        created_at: required(5)?,
        updated_at: required(6)?,
        image_id: text(7)?,
        request_id: text(8)?,
        user_id: text(9)?,
        input: text(10)?,
        result: text(11)?,
        message: text(12)?.unwrap_or_default(),
    })
}
