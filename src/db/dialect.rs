//! The few places where MariaDB/MySQL, PostgreSQL and SQLite need different SQL text for
//! upstream Glance's schema: placeholders, timestamps, the visibility enum, and booleans
//! read back as integers. Statements are written once, with `?` placeholders, and passed
//! through [`Dialect::sql`].

use super::url::Backend;

/// SQL text for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect(pub Backend);

impl Dialect {
    /// `sql` with its `?` placeholders numbered `$1, $2, …` for PostgreSQL. A `?` inside
    /// a quoted string is left alone.
    pub fn sql(self, sql: &str) -> String {
        if self.0 != Backend::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        let mut quoted = false;
        for c in sql.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    out.push(c);
                }
                '?' if !quoted => {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                _ => out.push(c),
            }
        }
        out
    }

    /// A placeholder for a timestamp bound as text (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC).
    pub fn ts(self) -> &'static str {
        match self.0 {
            Backend::Postgres => "CAST(? AS TIMESTAMP)",
            _ => "?",
        }
    }

    /// A placeholder for the `visibility` column (an ENUM type on PostgreSQL).
    pub fn visibility(self) -> &'static str {
        match self.0 {
            Backend::Postgres => "CAST(? AS image_visibility)",
            _ => "?",
        }
    }

    /// An expression reading timestamp column `col` as the API shows it:
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn read_ts(self, col: &str) -> String {
        match self.0 {
            Backend::Postgres => format!("to_char({col}, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"),
            Backend::MySql => format!("DATE_FORMAT({col}, '%Y-%m-%dT%H:%i:%sZ')"),
            Backend::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%SZ', {col})"),
        }
    }

    /// An expression reading text-like column `col` (enums included) as text.
    pub fn read_text(self, col: &str) -> String {
        match self.0 {
            Backend::Postgres => format!("CAST({col} AS TEXT)"),
            Backend::MySql => format!("CAST({col} AS CHAR)"),
            Backend::Sqlite => col.to_owned(),
        }
    }

    /// An expression reading boolean column `col` as 0 or 1.
    pub fn read_bool(self, col: &str) -> String {
        format!("CASE WHEN {col} THEN 1 ELSE 0 END")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgresql_only() {
        let sql = "UPDATE t SET a = ?, b = '?' WHERE c = ? AND d = ?";
        assert_eq!(Dialect(Backend::MySql).sql(sql), sql);
        assert_eq!(Dialect(Backend::Sqlite).sql(sql), sql);
        assert_eq!(
            Dialect(Backend::Postgres).sql(sql),
            "UPDATE t SET a = $1, b = '?' WHERE c = $2 AND d = $3"
        );
    }
}
