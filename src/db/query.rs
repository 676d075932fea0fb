//! `GET /v2/images` as SQL on upstream Glance's tables: filters, multi-key sort, and
//! marker paging. Soft-deleted rows never match.

use std::fmt;

use super::dialect::Dialect;

/// A sortable image attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// name
    Name,
    /// status
    Status,
    /// container_format
    ContainerFormat,
    /// disk_format
    DiskFormat,
    /// size
    Size,
    /// id
    Id,
    /// created_at
    CreatedAt,
    /// updated_at
    UpdatedAt,
}

impl SortKey {
    /// The API's sort keys, in upstream's order.
    pub const NAMES: &[&str] = &[
        "name",
        "status",
        "container_format",
        "disk_format",
        "size",
        "id",
        "created_at",
        "updated_at",
    ];

    /// Parses an API sort key.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "name" => Self::Name,
            "status" => Self::Status,
            "container_format" => Self::ContainerFormat,
            "disk_format" => Self::DiskFormat,
            "size" => Self::Size,
            "id" => Self::Id,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Status => "status",
            Self::ContainerFormat => "container_format",
            Self::DiskFormat => "disk_format",
            Self::Size => "size",
            Self::Id => "id",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

impl SortDir {
    /// Parses `asc` or `desc`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "asc" => Some(Self::Asc),
            "desc" => Some(Self::Desc),
            _ => None,
        }
    }
}

impl fmt::Display for SortDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        })
    }
}

/// A comparison of a listing filter (upstream's `gt:`, `gte:`, … operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `eq:` (the default).
    Eq,
    /// `neq:`
    Neq,
    /// `gt:`
    Gt,
    /// `gte:`
    Gte,
    /// `lt:`
    Lt,
    /// `lte:`
    Lte,
}

impl Cmp {
    /// Parses an API operator.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            _ => return None,
        })
    }

    fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Neq => "<>",
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            Self::Lte => "<=",
        }
    }
}

/// One condition on a column of `images`. Column names come from the API's fixed lists,
/// never from the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A text column equal to one of the values (`name=in:a,b`, or one value).
    Text(&'static str, Vec<String>),
    /// An integer column compared with a value (`size`, `min_ram`, `size_min`, …).
    Int(&'static str, Cmp, i64),
    /// A timestamp column compared with a time written as the columns hold it
    /// (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC).
    Time(&'static str, Cmp, String),
    /// A boolean column.
    Flag(&'static str, bool),
}

/// A listing request: `conditions` on the image's columns, `properties` on its extra
/// properties, and every tag of `tags`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Conditions on the image's columns, all of which must hold.
    pub conditions: Vec<Condition>,
    /// Every tag must be present.
    pub tags: Vec<String>,
    /// Extra property filters: (name, value).
    pub properties: Vec<(String, String)>,
    /// Include images with os_hidden = true.
    pub include_hidden: bool,
    /// Sort keys in order; `id` is always appended so the order is total.
    pub sort: Vec<(SortKey, SortDir)>,
    /// Page size.
    pub limit: usize,
    /// Rows to skip (from the marker).
    pub offset: usize,
    /// Whose listing it is; None lists every image (an administrator, or glance-api
    /// without Keystone).
    pub viewer: Option<Viewer>,
    /// Leave out `community` images of other projects, as upstream does when the listing
    /// names no visibility.
    pub hide_others_community: Option<Viewer>,
}

/// A project listing images as upstream Glance's regular users do: public and community
/// images, its own, and shared ones it is a member of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The caller's project; None for a token without one.
    pub project: Option<String>,
    /// Only memberships with this status count (the API's `member_status`, default
    /// `accepted`); None counts every status (`all`).
    pub member_status: Option<String>,
}

/// A bound SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
    /// SQL NULL, in a text column.
    Null,
}

impl Viewer {
    /// The images this viewer lists (upstream's `_select_images_query` for a regular
    /// user): public or community, owned by its project, or shared with its project.
    fn visible_clause(&self, values: &mut Vec<Value>) -> String {
        let mut member = "m.image_id = images.id AND m.deleted = false".to_owned();
        let mut own = String::new();
        if let Some(project) = &self.project {
            values.push(Value::Text(project.clone()));
            own = " OR images.owner = ?".to_owned();
            values.push(Value::Text(project.clone()));
            member.push_str(" AND m.member = ?");
            if let Some(status) = &self.member_status {
                values.push(Value::Text(status.clone()));
                member.push_str(" AND m.status = ?");
            }
        }
        format!(
            "(images.visibility IN ('public', 'community'){own} OR (images.visibility = 'shared' AND EXISTS (SELECT 1 FROM image_members m WHERE {member})))"
        )
    }
}

impl ListQuery {
    /// A query for every image, newest first, `limit` per page.
    pub fn new(limit: usize) -> Self {
        Self {
            conditions: Vec::new(),
            tags: Vec::new(),
            properties: Vec::new(),
            include_hidden: false,
            sort: vec![(SortKey::CreatedAt, SortDir::Desc)],
            limit,
            offset: 0,
            viewer: None,
            hide_others_community: None,
        }
    }

    fn where_clause(&self, dialect: Dialect, values: &mut Vec<Value>) -> String {
        // As upstream's listing (`deleted = False`): killed images are never listed.
        let mut clauses = vec!["images.deleted = false AND images.status <> 'killed'".to_owned()];
        for condition in &self.conditions {
            clauses.push(match condition {
                Condition::Text(column, list) => {
                    let placeholder = if *column == "visibility" {
                        dialect.visibility()
                    } else {
                        "?"
                    };
                    values.extend(list.iter().cloned().map(Value::Text));
                    match list.len() {
                        // `in:` with nothing in it matches nothing, as SQL's IN ().
                        0 => "1 = 0".to_owned(),
                        1 => format!("images.{column} = {placeholder}"),
                        n => format!("images.{column} IN ({})", vec![placeholder; n].join(", ")),
                    }
                }
                Condition::Int(column, cmp, n) => {
                    values.push(Value::Int(*n));
                    format!("images.{column} {} ?", cmp.sql())
                }
                Condition::Time(column, cmp, time) => {
                    values.push(Value::Text(time.clone()));
                    format!("images.{column} {} {}", cmp.sql(), dialect.ts())
                }
                Condition::Flag(column, flag) => {
                    values.push(Value::Bool(*flag));
                    format!("images.{column} = ?")
                }
            });
        }
        for tag in &self.tags {
            values.push(Value::Text(tag.clone()));
            clauses.push(
                "EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = images.id AND t.deleted = false AND t.value = ?)"
                    .to_owned(),
            );
        }
        for (name, value) in &self.properties {
            values.push(Value::Text(name.clone()));
            values.push(Value::Text(value.clone()));
            clauses.push(
                "EXISTS (SELECT 1 FROM image_properties p WHERE p.image_id = images.id AND p.deleted = false AND p.name = ? AND p.value = ?)"
                    .to_owned(),
            );
        }
        if !self.include_hidden {
            clauses.push("images.os_hidden = false".to_owned());
        }
        if let Some(viewer) = &self.viewer {
            clauses.push(viewer.visible_clause(values));
        }
        if let Some(viewer) = &self.hide_others_community {
            clauses.push(match &viewer.project {
                Some(project) => {
                    values.push(Value::Text(project.clone()));
                    "(images.visibility <> 'community' OR images.owner = ?)".to_owned()
                }
                None => "images.visibility <> 'community'".to_owned(),
            });
        }
        format!(" WHERE {}", clauses.join(" AND "))
    }

    fn order_clause(&self) -> String {
        let mut keys: Vec<String> = self
            .sort
            .iter()
            .map(|(k, d)| format!("images.{} {d}", k.column()))
            .collect();
        if !self.sort.iter().any(|(k, _)| *k == SortKey::Id) {
            let dir = self.sort.last().map_or(SortDir::Desc, |(_, d)| *d);
            keys.push(format!("images.id {dir}"));
        }
        format!(" ORDER BY {}", keys.join(", "))
    }

    /// The SQL selecting `columns` of `images` for this page (one row more than `limit`,
    /// to tell whether another page follows), and its bound values.
    pub fn to_sql(&self, dialect: Dialect, columns: &str) -> (String, Vec<Value>) {
        let mut values = Vec::new();
        let sql = format!(
            "SELECT {columns} FROM images{}{} LIMIT {} OFFSET {}",
            self.where_clause(dialect, &mut values),
            self.order_clause(),
            self.limit.saturating_add(1),
            self.offset
        );
        (dialect.sql(&sql), values)
    }

    /// The SQL listing only the IDs in this order (to find a marker's position).
    pub fn ids_sql(&self, dialect: Dialect) -> (String, Vec<Value>) {
        let mut values = Vec::new();
        let sql = format!(
            "SELECT images.id FROM images{}{}",
            self.where_clause(dialect, &mut values),
            self.order_clause()
        );
        (dialect.sql(&sql), values)
    }
}
