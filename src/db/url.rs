//! `[database] connection` URLs as SQLAlchemy writes them, turned into the URLs sqlx
//! connects with. A URL is only ever shown with its password replaced by `***`.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// The SQL servers the catalogue can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, a file (or memory) of this process.
    Sqlite,
    /// MariaDB or MySQL.
    MySql,
    /// PostgreSQL.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::MySql => "mysql",
            Self::Postgres => "postgresql",
        })
    }
}

/// A connection URL that cannot be used. The URL in the message has no password.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("[database] connection = {url:?}: {reason}")]
pub struct UrlError {
    /// The URL, password hidden.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

/// A parsed `[database] connection`.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    /// Which server.
    pub backend: Backend,
    /// What sqlx connects to (holds the password: never log it).
    pub(crate) sqlx: String,
    /// The URL as written, password hidden: for logs and errors.
    pub redacted: String,
    /// host:port, the socket, or the SQLite file: where the database is, for messages.
    pub location: String,
    /// The SQLite file; None for servers and for an in-memory database.
    pub sqlite_file: Option<PathBuf>,
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbUrl")
            .field("backend", &self.backend)
            .field("url", &self.redacted)
            .finish()
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// `url` with the password of its authority replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl DbUrl {
    /// The URL sqlx connects to. It holds the password: never log it.
    pub fn sqlx_url(&self) -> &str {
        &self.sqlx
    }

    /// Parses a SQLAlchemy URL: `sqlite://`, `sqlite:///relative`, `sqlite:////absolute`,
    /// `mysql[+driver]://user:pw@host[:port]/db[?charset=..&unix_socket=/path]` and
    /// `postgresql[+driver]://user:pw@host[:port]/db[?host=/socket/dir]`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let error = |reason: &str| UrlError {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            error("expected a URL such as mysql+pymysql://glance:PASSWORD@HOST/glance, postgresql://glance:PASSWORD@HOST/glance or sqlite:////var/lib/glance/glance.sqlite")
        })?;
        let dialect = scheme.split('+').next().unwrap_or(scheme);
        let backend = match dialect {
            "sqlite" => Backend::Sqlite,
            "mysql" | "mariadb" => Backend::MySql,
            "postgresql" | "postgres" => Backend::Postgres,
            _ => {
                return Err(error(&format!(
                    "unknown database {dialect:?} (use mysql, mariadb, postgresql or sqlite)"
                )));
            }
        };
        if backend == Backend::Sqlite {
            return sqlite(url, rest).map_err(|reason| error(&reason));
        }
        server(url, backend, rest).map_err(|reason| error(&reason))
    }
}

fn sqlite(url: &str, rest: &str) -> Result<DbUrl, String> {
    // Query parameters (e.g. ?check_same_thread=False) are the Python driver's.
    let path = rest.split('?').next().unwrap_or("");
    let file = match path {
        "" => None,
        // sqlite:///relative and sqlite:////absolute, as SQLAlchemy reads them.
        path => match path.strip_prefix('/') {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => return Err("the path after sqlite:/// is missing".to_owned()),
        },
    };
    let (sqlx, location) = match &file {
        None => ("sqlite::memory:".to_owned(), ":memory:".to_owned()),
        Some(p) => (
            format!(
                "sqlite://{}?mode=rwc",
                percent_encode_path(&p.to_string_lossy())
            ),
            p.display().to_string(),
        ),
    };
    Ok(DbUrl {
        backend: Backend::Sqlite,
        sqlx,
        redacted: url.to_owned(),
        location,
        sqlite_file: file,
    })
}

fn server(url: &str, backend: Backend, rest: &str) -> Result<DbUrl, String> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, database) = main.split_once('/').unwrap_or((main, ""));
    if database.is_empty() || database.contains('/') {
        return Err("the database name after the host is missing (…@HOST/glance)".to_owned());
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = split_port(hostport)?;
    let mut params: Vec<(String, String)> = Vec::new();
    let mut socket = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match (backend, k) {
            (Backend::MySql, "unix_socket") => socket = Some(v),
            (Backend::MySql, "charset") => params.push(("charset".to_owned(), v)),
            (Backend::Postgres, "host") if v.starts_with('/') => socket = Some(v),
            (Backend::Postgres, "unix_socket") => socket = Some(v),
            (Backend::Postgres, "sslmode") => params.push(("sslmode".to_owned(), v)),
            // Python-driver options (read_timeout, plugin, ...) do not apply here.
            _ => {}
        }
    }
    if host.is_empty() && socket.is_none() {
        return Err(
            "no host: write …@HOST/glance, or give a unix socket (?unix_socket=/path)".to_owned(),
        );
    }
    let location = match &socket {
        Some(s) => format!("{host} (socket {s})").trim_start().to_owned(),
        None => match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        },
    };
    let scheme = match backend {
        Backend::MySql => "mysql",
        _ => "postgres",
    };
    let mut sqlx = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        sqlx.push_str(userinfo);
        sqlx.push('@');
    }
    sqlx.push_str(if host.is_empty() { "localhost" } else { host });
    if let Some(p) = port {
        sqlx.push_str(&format!(":{p}"));
    }
    sqlx.push('/');
    sqlx.push_str(database);
    if let Some(s) = &socket {
        match backend {
            Backend::MySql => params.push(("socket".to_owned(), s.clone())),
            // libpq's form: the host is the socket's directory.
            _ => {
                let dir = if s.ends_with(".s.PGSQL") || s.contains(".s.PGSQL.") {
                    std::path::Path::new(s)
                        .parent()
                        .map_or_else(|| s.clone(), |d| d.display().to_string())
                } else {
                    s.clone()
                };
                params.push(("host".to_owned(), dir));
            }
        }
    }
    if !params.is_empty() {
        sqlx.push('?');
        let encoded: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode_path(v)))
            .collect();
        sqlx.push_str(&encoded.join("&"));
    }
    Ok(DbUrl {
        backend,
        sqlx,
        redacted: redact(url),
        location,
        sqlite_file: None,
    })
}

fn split_port(hostport: &str) -> Result<(&str, Option<u16>), String> {
    // [v6::addr]:port
    if let Some(rest) = hostport.strip_prefix('[') {
        let (_, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed [ in the host".to_owned())?;
        let host_len = hostport.len() - after.len();
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None => None,
        };
        return Ok((&hostport[..host_len], port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok((h, Some(parse_port(p)?))),
        None => Ok((hostport, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {p:?} is not a TCP port"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> DbUrl {
        DbUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn sqlite_urls_as_sqlalchemy_reads_them() {
        let abs = parse("sqlite:////var/lib/glance/glance.sqlite");
        assert_eq!(abs.backend, Backend::Sqlite);
        assert_eq!(
            abs.sqlite_file,
            Some(PathBuf::from("/var/lib/glance/glance.sqlite"))
        );
        assert_eq!(abs.sqlx, "sqlite:///var/lib/glance/glance.sqlite?mode=rwc");
        let rel = parse("sqlite:///glance.sqlite?check_same_thread=False");
        assert_eq!(rel.sqlite_file, Some(PathBuf::from("glance.sqlite")));
        assert_eq!(rel.sqlx, "sqlite://glance.sqlite?mode=rwc");
        let mem = parse("sqlite://");
        assert_eq!(
            (mem.sqlite_file, mem.sqlx.as_str()),
            (None, "sqlite::memory:")
        );
        for bad in ["sqlite:/x", "sqlite:///"] {
            assert!(DbUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mysql_urls_with_drivers_charset_and_sockets() {
        let u = parse("mysql+pymysql://glance:s3cr%40t@db.example:3306/glance?charset=utf8");
        assert_eq!(u.backend, Backend::MySql);
        assert_eq!(
            u.sqlx,
            "mysql://glance:s3cr%40t@db.example:3306/glance?charset=utf8"
        );
        assert_eq!(u.location, "db.example:3306");
        assert_eq!(
            u.redacted,
            "mysql+pymysql://glance:***@db.example:3306/glance?charset=utf8"
        );
        let plain = parse("mysql://glance:pw@db/glance");
        assert_eq!(plain.sqlx, "mysql://glance:pw@db/glance");
        let sock = parse("mysql+pymysql://glance:pw@/glance?unix_socket=/run/mysqld/mysqld.sock");
        assert_eq!(
            sock.sqlx,
            "mysql://glance:pw@localhost/glance?socket=/run/mysqld/mysqld.sock"
        );
        assert_eq!(sock.location, "(socket /run/mysqld/mysqld.sock)");
    }

    #[test]
    fn postgresql_urls_with_drivers_and_sockets() {
        let u = parse("postgresql+psycopg2://glance:pw@[::1]:5432/glance");
        assert_eq!(u.backend, Backend::Postgres);
        assert_eq!(u.sqlx, "postgres://glance:pw@[::1]:5432/glance");
        assert_eq!(u.location, "[::1]:5432");
        let plain = parse("postgresql://glance:pw@pg/glance");
        assert_eq!(plain.sqlx, "postgres://glance:pw@pg/glance");
        let sock = parse("postgresql://glance:pw@/glance?host=/run/postgresql");
        assert_eq!(
            sock.sqlx,
            "postgres://glance:pw@localhost/glance?host=/run/postgresql"
        );
        let sock = parse("postgresql://glance:pw@/glance?unix_socket=/tmp/.s.PGSQL.5433");
        assert_eq!(sock.sqlx, "postgres://glance:pw@localhost/glance?host=/tmp");
    }

    #[test]
    fn errors_name_the_option_and_never_the_password() {
        for (bad, reason) in [
            ("oracle://u:hunter2@h/glance", "unknown database \"oracle\""),
            ("mysql://u:hunter2@h", "database name"),
            ("mysql://u:hunter2@h:99999/glance", "not a TCP port"),
            ("mysql://u:hunter2@/glance", "no host"),
            ("hunter2", "expected a URL"),
        ] {
            let err = DbUrl::parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with("[database] connection = "), "{err}");
            assert!(err.contains(reason), "{err}");
            if bad.contains("://") {
                assert!(!err.contains("hunter2"), "{err}");
            }
        }
        let shown = format!(
            "{:?} {}",
            parse("mysql://u:hunter2@h/g"),
            parse("mysql://u:hunter2@h/g")
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
