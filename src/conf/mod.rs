//! oslo.config-style INI configuration shared by glance-api and the cache tools
//! (glance-cache-pruner, glance-cache-cleaner, glance-cache-prefetcher).
//!
//! Sources come from `--config-file PATH` (repeatable) and `--config-dir DIR` (every
//! `*.conf` in DIR, sorted by name). **Precedence:** all `--config-file` files in the
//! order given, then the files of each `--config-dir` in the order the directories were
//! given; a later file overrides an earlier one key by key within a section, and keys
//! it does not set are kept. (oslo.config itself reads a directory at its position on
//! the command line, so the two differ only when a `--config-file` follows a
//! `--config-dir`.) With no sources the configuration is empty: there is no search of
//! `/etc/glance` as oslo does.
//!
//! Over the files, as oslo.config's environment source does, a variable
//! `OS_<GROUP>__<OPTION>` sets `<option>` in `[<group>]` (`OS_DEFAULT__BIND_PORT` sets
//! `bind_port` in `[DEFAULT]`). That is how one pod of several, sharing one config
//! directory, sets its own `worker_self_reference_url`.
//!
//! Like oslo, section names other than `DEFAULT` are case-insensitive (stored
//! lowercased), keys are case-sensitive, and a section does not fall back to
//! `[DEFAULT]`. The line syntax (oslo's iniparser, with small differences) is described in
//! `src/conf/ini.rs`.

mod ini;
pub mod logging;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::cache::DriverKind;
use tracing::debug;

/// The name of oslo.config's default section.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// Everything that can go wrong while reading or interpreting the configuration.
#[derive(Debug, Error)]
pub enum ConfError {
    /// A configuration file could not be read (missing, unreadable, ...).
    #[error("cannot read config file {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A configuration file is not UTF-8.
    #[error("{}:{line}: config file is not valid UTF-8", .path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
    },
    /// A `--config-dir` could not be listed (missing, not a directory, ...).
    #[error("cannot read config directory {}: {source}", .path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A malformed line.
    #[error("{file}:{line}: {msg}")]
    Syntax {
        /// The file (or the name given to [`Config::from_str`]).
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// An option has a value of the wrong form.
    #[error("[{section}] {key} = {value:?} (from {origin}): {expected}")]
    InvalidValue {
        /// The section.
        section: String,
        /// The option.
        key: String,
        /// The value as written.
        value: String,
        /// `file:line` the value came from.
        origin: String,
        /// What was expected instead.
        expected: String,
    },
    /// A required option is not set.
    #[error("[{section}] {key} is not set: {why}")]
    Missing {
        /// The section.
        section: String,
        /// The option.
        key: String,
        /// What needs it.
        why: String,
    },
    /// The cache tools were started without an image cache directory.
    #[error(
        "image_cache_dir is not set in [DEFAULT]; the cache tools need it \
         (give --config-file or --config-dir)"
    )]
    MissingCacheDir,
}

/// A directory option as a path: a relative one is taken from the working directory
/// and made absolute when the configuration is read, so that what is recorded from it
/// (an image's `file://` location) reads the same from anywhere.
pub fn absolute(dir: &str) -> PathBuf {
    absolute_path(Path::new(dir))
}

/// `path` made absolute against the working directory, with `.` and `..` folded away
/// as Python's `os.path.abspath` does (lexically: symbolic links are left as they are).
pub fn absolute_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let joined = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where the configuration comes from, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSources {
    /// `--config-file` values, in order.
    pub files: Vec<PathBuf>,
    /// `--config-dir` values, in order.
    pub dirs: Vec<PathBuf>,
}

impl ConfigSources {
    /// The files to read, in load order: all `files`, then each dir's `*.conf` files
    /// sorted by name (hidden files, other files and subdirectories are skipped).
    pub fn paths(&self) -> Result<Vec<PathBuf>, ConfError> {
        let mut paths = self.files.clone();
        for dir in &self.dirs {
            paths.extend(conf_files_in(dir)?);
        }
        Ok(paths)
    }
}

/// The `*.conf` files directly in `dir`, sorted by name.
fn conf_files_in(dir: &Path) -> Result<Vec<PathBuf>, ConfError> {
    files_in(dir, |path| path.extension().is_some_and(|e| e == "conf")).map_err(|source| {
        ConfError::ReadDir {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// The files directly in `dir` that `keep` accepts, hidden ones left out, sorted by
/// name (as oslo.config reads a config directory, and oslo.policy a policy directory).
pub fn files_in(dir: &Path, keep: impl Fn(&Path) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        if !hidden && path.is_file() && keep(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One value and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: String,
    file: String,
    line: usize,
}

/// Merged configuration values; each remembers the `file:line` it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    sections: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The files read, in load order.
    files: Vec<PathBuf>,
}

/// oslo's group name normalization: `DEFAULT` stays, anything else is lowercased.
fn section_name(name: &str) -> String {
    if name == DEFAULT_SECTION {
        name.to_string()
    } else {
        name.to_lowercase()
    }
}

impl Config {
    /// Reads every source in precedence order (see the module docs) and merges them.
    pub fn load(sources: &ConfigSources) -> Result<Config, ConfError> {
        let mut config = Config::default();
        for path in sources.paths()? {
            config.merge(Config::from_file(&path)?);
            debug!(file = %path.display(), "loaded config file");
        }
        config.merge(Config::from_env(std::env::vars()));
        Ok(config)
    }

    /// The options that `OS_<GROUP>__<OPTION>` variables among `vars` set. Option names
    /// are lower-cased, as oslo's are; a group other than DEFAULT too.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Config {
        let mut config = Config::default();
        for (name, value) in vars {
            let Some((group, option)) = name
                .strip_prefix("OS_")
                .and_then(|rest| rest.split_once("__"))
            else {
                continue;
            };
            if group.is_empty() || option.is_empty() {
                continue;
            }
            let entry = Entry {
                value,
                file: format!("environment variable {name}"),
                line: 0,
            };
            config
                .sections
                .entry(section_name(group))
                .or_default()
                .insert(option.to_lowercase(), entry);
        }
        config
    }

    /// Reads and parses one file.
    pub fn from_file(path: &Path) -> Result<Config, ConfError> {
        let bytes = fs::read(path).map_err(|source| ConfError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfError::NotUtf8 {
                path: path.to_path_buf(),
                line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
            }
        })?;
        let mut config = Config::from_str(&path.display().to_string(), &text)?;
        config.files.push(path.to_path_buf());
        Ok(config)
    }

    /// Parses INI `text`; `name` stands for the file in errors and [`Config::source_of`].
    pub fn from_str(name: &str, text: &str) -> Result<Config, ConfError> {
        let mut config = Config::default();
        for a in ini::parse(name, text)? {
            let entry = Entry {
                value: a.value,
                file: name.to_string(),
                line: a.line,
            };
            config
                .sections
                .entry(section_name(&a.section))
                .or_default()
                .insert(a.key, entry);
        }
        Ok(config)
    }

    /// Overrides this configuration with every value set in `later`.
    pub fn merge(&mut self, later: Config) {
        for (section, entries) in later.sections {
            self.sections.entry(section).or_default().extend(entries);
        }
        self.files.extend(later.files);
    }

    /// The configuration files read, in load order. oslo.config looks for files that
    /// other options name by a relative path (`[oslo_policy] policy_file`) in their
    /// directories.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn entry(&self, section: &str, key: &str) -> Option<&Entry> {
        self.sections.get(&section_name(section))?.get(key)
    }

    /// The value of `key` in `section`, if set.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entry(section, key).map(|e| e.value.as_str())
    }

    /// `"file:line"` where `key` in `section` was set, if it is.
    pub fn source_of(&self, section: &str, key: &str) -> Option<String> {
        self.entry(section, key)
            .map(|e| format!("{}:{}", e.file, e.line))
    }

    /// The value of `key` in `section`, or `default` when unset.
    pub fn get_str<'a>(&'a self, section: &str, key: &str, default: &'a str) -> &'a str {
        self.get(section, key).unwrap_or(default)
    }

    /// A non-negative integer option, or `default` when unset.
    pub fn get_u64(&self, section: &str, key: &str, default: u64) -> Result<u64, ConfError> {
        self.u64_option(
            section,
            key,
            default,
            "expected a non-negative whole number",
        )
    }

    /// A boolean option (`true/false`, `yes/no`, `on/off`, `1/0`, any case), or `default`
    /// when unset.
    pub fn get_bool(&self, section: &str, key: &str, default: bool) -> Result<bool, ConfError> {
        let Some(value) = self.get(section, key) else {
            return Ok(default);
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(self.invalid(section, key, "expected true/false, yes/no, on/off or 1/0")),
        }
    }

    fn u64_option(
        &self,
        section: &str,
        key: &str,
        default: u64,
        expected: &str,
    ) -> Result<u64, ConfError> {
        let Some(value) = self.get(section, key) else {
            return Ok(default);
        };
        // Digits only (no sign, spaces or suffix); too large for u64 is an error too.
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        match value.parse() {
            Ok(n) if digits => Ok(n),
            _ => Err(self.invalid(section, key, expected)),
        }
    }

    /// A [`ConfError::InvalidValue`] for a key that is set.
    pub fn invalid(&self, section: &str, key: &str, expected: &str) -> ConfError {
        ConfError::InvalidValue {
            section: section.to_string(),
            key: key.to_string(),
            value: self.get(section, key).unwrap_or_default().to_string(),
            origin: self.source_of(section, key).unwrap_or_default(),
            expected: expected.to_string(),
        }
    }
}

/// The image cache options of `[DEFAULT]`, with upstream Glance's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// `image_cache_dir`; no default (an empty value counts as unset).
    pub image_cache_dir: Option<PathBuf>,
    /// `image_cache_max_size` in bytes; default 10 GiB.
    pub image_cache_max_size: u64,
    /// `image_cache_stall_time` in seconds; default 86400.
    pub image_cache_stall_time: u64,
    /// `image_cache_driver`; default `sqlite`.
    pub image_cache_driver: DriverKind,
    /// `image_cache_sqlite_db`, relative to the cache directory; default `cache.db`.
    /// With `centralized_db`, a database of that name found at start is migrated.
    pub image_cache_sqlite_db: String,
    /// `worker_self_reference_url`: this node's URL, which keys its rows with the
    /// `centralized_db` driver; no default (an empty value counts as unset).
    pub worker_self_reference_url: Option<String>,
}

impl CacheOptions {
    /// Reads the options from `[DEFAULT]`; other options are ignored.
    pub fn from_config(c: &Config) -> Result<Self, ConfError> {
        const S: &str = DEFAULT_SECTION;
        let image_cache_driver = match c.get(S, "image_cache_driver") {
            None | Some("sqlite") => DriverKind::Sqlite,
            Some("xattr") => DriverKind::Xattr,
            Some("centralized_db") => DriverKind::CentralizedDb,
            Some(_) => {
                return Err(c.invalid(
                    S,
                    "image_cache_driver",
                    "expected sqlite, xattr or centralized_db",
                ));
            }
        };
        let image_cache_sqlite_db = c.get_str(S, "image_cache_sqlite_db", "cache.db");
        if image_cache_sqlite_db.is_empty() {
            return Err(c.invalid(S, "image_cache_sqlite_db", "expected a file name"));
        }
        Ok(CacheOptions {
            image_cache_dir: c
                .get(S, "image_cache_dir")
                .filter(|dir| !dir.is_empty())
                .map(absolute),
            image_cache_max_size: c.u64_option(
                S,
                "image_cache_max_size",
                10_737_418_240,
                "expected a whole number of bytes",
            )?,
            image_cache_stall_time: c.u64_option(
                S,
                "image_cache_stall_time",
                86_400,
                "expected a whole number of seconds",
            )?,
            image_cache_driver,
            image_cache_sqlite_db: image_cache_sqlite_db.to_string(),
            worker_self_reference_url: c
                .get(S, "worker_self_reference_url")
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned),
        })
    }

    /// This node's `worker_self_reference_url`, which the `centralized_db` driver needs;
    /// [`ConfError::Missing`] naming the option when it is not set (as upstream refuses
    /// to start in `sqlite_migration.can_migrate_to_central_db`).
    pub fn node_url(&self) -> Result<&str, ConfError> {
        self.worker_self_reference_url
            .as_deref()
            .ok_or_else(|| ConfError::Missing {
                section: DEFAULT_SECTION.to_owned(),
                key: "worker_self_reference_url".to_owned(),
                why: "it needs to be set if `centralized_db` is defined as cache driver \
                      for image_cache_driver config option (the cache's rows in the \
                      catalogue database are keyed by this node's URL)"
                    .to_owned(),
            })
    }

    /// The cache directory, or [`ConfError::MissingCacheDir`] when it is not set.
    pub fn require_dir(&self) -> Result<&Path, ConfError> {
        self.image_cache_dir
            .as_deref()
            .ok_or(ConfError::MissingCacheDir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use tempfile::TempDir;

    #[test]
    fn relative_directories_become_absolute_without_dots() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute("glance-data/images"),
            cwd.join("glance-data/images")
        );
        assert_eq!(absolute("./a/../b/./c"), cwd.join("b/c"));
        assert_eq!(
            absolute("/var/lib/glance/images/"),
            PathBuf::from("/var/lib/glance/images")
        );
        assert_eq!(absolute("/x/../y"), PathBuf::from("/y"));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn parse_rules() {
        let text = "# comment\n\
                    ; another comment\n\
                    \n\
                    [DEFAULT]\n\
                    \x20\x20# indented comment\n\
                    plain=1\n\
                    spaced \t  =   a value with  inner  spaces \t \n\
                    colon: x = y\n\
                    url = http://host:9292/v2\n\
                    empty =\n\
                    quoted = \" padded \"\n\
                    multi = first\n\
                    \x20   second line\n\
                    \tthird\n\
                    \n\
                    [Glance_Store]\n\
                    stores = file\n\
                    stores = file, http\n";
        let c = Config::from_str("t.conf", text).unwrap();
        assert_eq!(c.get("DEFAULT", "plain"), Some("1"));
        assert_eq!(
            c.get("DEFAULT", "spaced"),
            Some("a value with  inner  spaces")
        );
        assert_eq!(c.get("DEFAULT", "colon"), Some("x = y"));
        assert_eq!(c.get("DEFAULT", "url"), Some("http://host:9292/v2"));
        assert_eq!(c.get("DEFAULT", "empty"), Some(""));
        assert_eq!(c.get("DEFAULT", "quoted"), Some(" padded "));
        assert_eq!(c.get("DEFAULT", "multi"), Some("first\nsecond line\nthird"));
        assert_eq!(
            c.source_of("DEFAULT", "multi").as_deref(),
            Some("t.conf:12")
        );
        // Section names other than DEFAULT are case-insensitive; keys are not.
        assert_eq!(c.get("glance_store", "stores"), Some("file, http"));
        assert_eq!(c.get("GLANCE_STORE", "stores"), Some("file, http"));
        assert_eq!(
            c.source_of("glance_store", "stores").as_deref(),
            Some("t.conf:18")
        );
        assert_eq!(c.get("DEFAULT", "PLAIN"), None);
        // No fallback from a section to [DEFAULT].
        assert_eq!(c.get("glance_store", "plain"), None);
        assert_eq!(c.get("nosuch", "plain"), None);
    }

    #[test]
    fn continuation_of_an_empty_value_and_crlf() {
        let c = Config::from_str("t", "[DEFAULT]\r\nk =\r\n  a\r\n  b\r\n").unwrap();
        assert_eq!(c.get("DEFAULT", "k"), Some("\na\nb"));
        // As in oslo, an indented `key = value` right after a key line is a continuation.
        let c = Config::from_str("t", "[DEFAULT]\na = 1\n  b = 2\n").unwrap();
        assert_eq!(c.get("DEFAULT", "a"), Some("1\nb = 2"));
        assert_eq!(c.get("DEFAULT", "b"), None);
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let cases = [
            (
                "[DEFAULT]\na = 1\nnovalue\n",
                r#"f.conf:3: expected "key = value", found "novalue""#,
            ),
            (
                "[unterminated\n",
                r#"f.conf:1: expected "]" at the end of the section header, found "[unterminated""#,
            ),
            ("[DEFAULT]\n=\n", r#"f.conf:2: empty key in "=""#),
            (
                "[DEFAULT]\n\n = value\n",
                r#"f.conf:3: unexpected continuation line "= value" (an indented line must follow a "key = value" line)"#,
            ),
            (
                "[DEFAULT]\n: value\n",
                r#"f.conf:2: empty key in ": value""#,
            ),
            ("[DEFAULT]\n[]\n", r#"f.conf:2: empty section name in "[]""#),
            (
                "# c\nkey = v\n",
                r#"f.conf:2: key "key" comes before any section header (put it under [DEFAULT])"#,
            ),
            (
                "  indented = first\n",
                r#"f.conf:1: unexpected continuation line "indented = first" (an indented line must follow a "key = value" line)"#,
            ),
            (
                "[DEFAULT]\nk = v\n# c\n  more\n",
                r#"f.conf:4: unexpected continuation line "more" (an indented line must follow a "key = value" line)"#,
            ),
        ];
        for (text, expected) in cases {
            let err = Config::from_str("f.conf", text).unwrap_err();
            assert!(matches!(err, ConfError::Syntax { .. }), "{text:?}");
            assert_eq!(err.to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let tmp = TempDir::new().unwrap();
        let bad = write(tmp.path(), "01-custom.conf", "[DEFAULT]\nok = 1\nnovalue\n");
        let err = Config::from_file(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                r#"{}:3: expected "key = value", found "novalue""#,
                bad.display()
            )
        );

        let latin1 = tmp.path().join("latin1.conf");
        fs::write(&latin1, b"[DEFAULT]\nname = caf\xe9\n").unwrap();
        let err = Config::from_file(&latin1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:2: config file is not valid UTF-8", latin1.display())
        );

        let missing = tmp.path().join("missing.conf");
        let sources = ConfigSources {
            files: vec![missing.clone()],
            dirs: vec![],
        };
        let msg = Config::load(&sources).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("cannot read config file {}: ", missing.display())),
            "{msg}"
        );

        let missing_dir = tmp.path().join("glance-api.conf.d");
        let sources = ConfigSources {
            files: vec![],
            dirs: vec![missing_dir.clone()],
        };
        let msg = Config::load(&sources).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot read config directory {}: ",
                missing_dir.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn config_dir_takes_only_conf_files_in_name_order() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        let b = write(dir, "10-b.conf", "[DEFAULT]\nshared = b\nonly_b = 1\n");
        let a = write(dir, "01-a.conf", "[DEFAULT]\nshared = a\nonly_a = 1\n");
        write(dir, "notes.txt", "not ini at all\n");
        write(dir, ".hidden.conf", "not ini at all\n");
        fs::create_dir(dir.join("subdir")).unwrap();
        write(&dir.join("subdir"), "x.conf", "not ini at all\n");
        fs::create_dir(dir.join("dir.conf")).unwrap();

        let sources = ConfigSources {
            files: vec![],
            dirs: vec![dir.to_path_buf()],
        };
        assert_eq!(sources.paths().unwrap(), vec![a, b.clone()]);
        let c = Config::load(&sources).unwrap();
        assert_eq!(c.get("DEFAULT", "shared"), Some("b"));
        assert_eq!(
            c.source_of("DEFAULT", "shared"),
            Some(format!("{}:2", b.display()))
        );
        assert_eq!(c.get("DEFAULT", "only_a"), Some("1"));
        assert_eq!(c.get("DEFAULT", "only_b"), Some("1"));
    }

    #[test]
    fn later_sources_override_key_by_key() {
        let tmp = TempDir::new().unwrap();
        let base = write(
            tmp.path(),
            "glance-api.conf",
            "[DEFAULT]\nx = base\ny = base\nz = base\n[s]\nk = base\n",
        );
        let extra = write(
            tmp.path(),
            "extra.conf",
            "[DEFAULT]\n\nx = extra\ny = extra\n",
        );
        let dir = tmp.path().join("conf.d");
        fs::create_dir(&dir).unwrap();
        let dropin = write(&dir, "50.conf", "[DEFAULT]\nx = dir\n");

        // The dir is listed first on purpose: files still come before dirs.
        let sources = ConfigSources {
            files: vec![base.clone(), extra.clone()],
            dirs: vec![dir.clone()],
        };
        let c = Config::load(&sources).unwrap();
        assert_eq!(c.get("DEFAULT", "x"), Some("dir"));
        assert_eq!(
            c.source_of("DEFAULT", "x"),
            Some(format!("{}:2", dropin.display()))
        );
        assert_eq!(c.get("DEFAULT", "y"), Some("extra"));
        assert_eq!(
            c.source_of("DEFAULT", "y"),
            Some(format!("{}:4", extra.display()))
        );
        assert_eq!(c.get("DEFAULT", "z"), Some("base"));
        assert_eq!(c.get("s", "k"), Some("base"));
    }

    #[test]
    fn merge_overrides_and_keeps() {
        let mut c = Config::from_str("defaults", "[DEFAULT]\na = 1\nb = 1\n").unwrap();
        c.merge(Config::from_str("site", "[DEFAULT]\nb = 2\n[new]\nc = 3\n").unwrap());
        assert_eq!(c.get("DEFAULT", "a"), Some("1"));
        assert_eq!(c.get("DEFAULT", "b"), Some("2"));
        assert_eq!(c.source_of("DEFAULT", "b").as_deref(), Some("site:2"));
        assert_eq!(c.get("new", "c"), Some("3"));
    }

    #[test]
    fn cache_options_defaults() {
        let empty = Config::default();
        let o = CacheOptions::from_config(&empty).unwrap();
        assert_eq!(
            o,
            CacheOptions {
                image_cache_dir: None,
                image_cache_max_size: 10_737_418_240,
                image_cache_stall_time: 86_400,
                image_cache_driver: DriverKind::Sqlite,
                image_cache_sqlite_db: "cache.db".to_string(),
                worker_self_reference_url: None,
            }
        );
        assert_eq!(
            o.require_dir().unwrap_err().to_string(),
            "image_cache_dir is not set in [DEFAULT]; the cache tools need it \
             (give --config-file or --config-dir)"
        );
        let blank = Config::from_str("t", "[DEFAULT]\nimage_cache_dir =\n").unwrap();
        let o = CacheOptions::from_config(&blank).unwrap();
        assert!(matches!(o.require_dir(), Err(ConfError::MissingCacheDir)));
    }

    #[test]
    fn cache_options_from_values() {
        let text = "[DEFAULT]\n\
                    image_cache_dir = /var/lib/glance/image-cache\n\
                    image_cache_max_size = 1024\n\
                    image_cache_stall_time = 0\n\
                    image_cache_driver = xattr\n\
                    image_cache_sqlite_db = meta.db\n\
                    some_unknown_option = whatever\n\
                    [image_cache]\n\
                    image_cache_max_size = not-read-here\n";
        let c = Config::from_str("t", text).unwrap();
        let o = CacheOptions::from_config(&c).unwrap();
        assert_eq!(
            o.require_dir().unwrap(),
            Path::new("/var/lib/glance/image-cache")
        );
        assert_eq!(o.image_cache_max_size, 1024);
        assert_eq!(o.image_cache_stall_time, 0);
        assert_eq!(o.image_cache_driver, DriverKind::Xattr);
        assert_eq!(o.image_cache_sqlite_db, "meta.db");
    }

    #[test]
    fn cache_options_centralized_db_needs_worker_self_reference_url() {
        for text in [
            "[DEFAULT]\nimage_cache_driver = centralized_db\n",
            "[DEFAULT]\nimage_cache_driver = centralized_db\nworker_self_reference_url =  \n",
        ] {
            let o = CacheOptions::from_config(&Config::from_str("t", text).unwrap()).unwrap();
            assert_eq!(o.image_cache_driver, DriverKind::CentralizedDb);
            assert_eq!(o.worker_self_reference_url, None);
            let err = o.node_url().unwrap_err();
            assert!(matches!(err, ConfError::Missing { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with("[DEFAULT] worker_self_reference_url is not set: "),
                "{err}"
            );
            assert!(err.to_string().contains("centralized_db"), "{err}");
        }
        let mut c = Config::from_str(
            "t",
            "[DEFAULT]\nimage_cache_driver = centralized_db\nworker_self_reference_url = http://file:9292\n",
        )
        .unwrap();
        let o = CacheOptions::from_config(&c).unwrap();
        assert_eq!(o.node_url().unwrap(), "http://file:9292");
        // One pod of several sharing a configuration names itself in its environment.
        c.merge(Config::from_env([(
            "OS_DEFAULT__WORKER_SELF_REFERENCE_URL".to_owned(),
            "http://glance-1.glance:9292".to_owned(),
        )]));
        let o = CacheOptions::from_config(&c).unwrap();
        assert_eq!(o.node_url().unwrap(), "http://glance-1.glance:9292");
    }

    #[test]
    fn cache_option_errors() {
        let cases = [
            (
                "image_cache_max_size = 10G",
                r#"[DEFAULT] image_cache_max_size = "10G" (from a.conf:4): expected a whole number of bytes"#,
            ),
            (
                "image_cache_max_size = -1",
                r#"[DEFAULT] image_cache_max_size = "-1" (from a.conf:4): expected a whole number of bytes"#,
            ),
            (
                "image_cache_max_size = 99999999999999999999",
                r#"[DEFAULT] image_cache_max_size = "99999999999999999999" (from a.conf:4): expected a whole number of bytes"#,
            ),
            (
                "image_cache_stall_time =",
                r#"[DEFAULT] image_cache_stall_time = "" (from a.conf:4): expected a whole number of seconds"#,
            ),
            (
                "image_cache_stall_time = 1.5",
                r#"[DEFAULT] image_cache_stall_time = "1.5" (from a.conf:4): expected a whole number of seconds"#,
            ),
            (
                "image_cache_driver = SQLite",
                r#"[DEFAULT] image_cache_driver = "SQLite" (from a.conf:4): expected sqlite, xattr or centralized_db"#,
            ),
            (
                "image_cache_driver = centralized-db",
                r#"[DEFAULT] image_cache_driver = "centralized-db" (from a.conf:4): expected sqlite, xattr or centralized_db"#,
            ),
            (
                "image_cache_sqlite_db = \"\"",
                r#"[DEFAULT] image_cache_sqlite_db = "" (from a.conf:4): expected a file name"#,
            ),
        ];
        for (line, expected) in cases {
            let c = Config::from_str("a.conf", &format!("# x\n[DEFAULT]\n\n{line}\n")).unwrap();
            let err = CacheOptions::from_config(&c).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn generic_getters() {
        let text = "[api]\nt1 = TRUE\nt2 = yes\nt3 = On\nt4 = 1\n\
                    f1 = false\nf2 = NO\nf3 = off\nf4 = 0\nbad = maybe\n\
                    n = 42\nneg = -3\nname = glance\n";
        let c = Config::from_str("g.conf", text).unwrap();
        for key in ["t1", "t2", "t3", "t4"] {
            assert!(c.get_bool("api", key, false).unwrap(), "{key}");
        }
        for key in ["f1", "f2", "f3", "f4"] {
            assert!(!c.get_bool("api", key, true).unwrap(), "{key}");
        }
        assert!(c.get_bool("api", "unset", true).unwrap());
        assert_eq!(
            c.get_bool("api", "bad", true).unwrap_err().to_string(),
            r#"[api] bad = "maybe" (from g.conf:10): expected true/false, yes/no, on/off or 1/0"#
        );
        assert_eq!(c.get_u64("api", "n", 7).unwrap(), 42);
        assert_eq!(c.get_u64("api", "unset", 7).unwrap(), 7);
        assert_eq!(
            c.get_u64("api", "neg", 7).unwrap_err().to_string(),
            r#"[api] neg = "-3" (from g.conf:12): expected a non-negative whole number"#
        );
        assert_eq!(c.get_str("api", "name", "x"), "glance");
        assert_eq!(c.get_str("api", "unset", "x"), "x");
    }

    #[test]
    fn os_group_option_variables_set_options_over_the_files() {
        let mut c = Config::from_str("f", "[DEFAULT]\nworker_self_reference_url = http://file\n[glance_store]\ndefault_backend = fast\n").unwrap();
        c.merge(Config::from_env([
            (
                "OS_DEFAULT__WORKER_SELF_REFERENCE_URL".to_owned(),
                "http://pod-0".to_owned(),
            ),
            (
                "OS_GLANCE_STORE__DEFAULT_BACKEND".to_owned(),
                "ceph".to_owned(),
            ),
            ("OS_NOTHING".to_owned(), "x".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ]));
        assert_eq!(
            c.get("DEFAULT", "worker_self_reference_url"),
            Some("http://pod-0")
        );
        assert_eq!(c.get("glance_store", "default_backend"), Some("ceph"));
        assert_eq!(
            c.source_of("DEFAULT", "worker_self_reference_url")
                .as_deref(),
            Some("environment variable OS_DEFAULT__WORKER_SELF_REFERENCE_URL:0")
        );
        assert_eq!(
            Config::from_env([("OS_NOTHING".to_owned(), "x".to_owned())]),
            Config::default()
        );
    }
}
