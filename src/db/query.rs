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
    /// visibility
    Visibility,
    /// owner
    Owner,
    /// min_disk
    MinDisk,
    /// min_ram
    MinRam,
}

impl SortKey {
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
            "visibility" => Self::Visibility,
            "owner" => Self::Owner,
            "min_disk" => Self::MinDisk,
            "min_ram" => Self::MinRam,
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
            Self::Visibility => "visibility",
            Self::Owner => "owner",
            Self::MinDisk => "min_disk",
            Self::MinRam => "min_ram",
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

/// A listing request. Filters are exact matches; `properties` match extra properties.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Exact-match filters on text columns: (column, value).
    pub columns: Vec<(&'static str, String)>,
    /// Exact-match filters on boolean columns: (column, value).
    pub flags: Vec<(&'static str, bool)>,
    /// Every tag must be present.
    pub tags: Vec<String>,
    /// Extra property filters: (name, value).
    pub properties: Vec<(String, String)>,
    /// Minimum size in bytes.
    pub size_min: Option<i64>,
    /// Maximum size in bytes.
    pub size_max: Option<i64>,
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
            columns: Vec::new(),
            flags: Vec::new(),
            tags: Vec::new(),
            properties: Vec::new(),
            size_min: None,
            size_max: None,
            include_hidden: false,
            sort: vec![(SortKey::CreatedAt, SortDir::Desc)],
            limit,
            offset: 0,
            viewer: None,
            hide_others_community: None,
        }
    }

    fn where_clause(&self, dialect: Dialect, values: &mut Vec<Value>) -> String {
        let mut clauses = vec!["images.deleted = false".to_owned()];
        for (column, value) in &self.columns {
            values.push(Value::Text(value.clone()));
            let placeholder = if *column == "visibility" {
                dialect.visibility()
            } else {
                "?"
            };
            clauses.push(format!("images.{column} = {placeholder}"));
        }
        for (column, value) in &self.flags {
            values.push(Value::Bool(*value));
            clauses.push(format!("images.{column} = ?"));
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
        if let Some(min) = self.size_min {
            values.push(Value::Int(min));
            clauses.push("images.size >= ?".to_owned());
        }
        if let Some(max) = self.size_max {
            values.push(Value::Int(max));
            clauses.push("images.size <= ?".to_owned());
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
