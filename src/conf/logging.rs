//! Logging that follows the configuration, as oslo.log does for upstream's programs.
//!
//! glance-api, glance-manage and the cache tools load their configuration first and then
//! call [`init`] once. The `[DEFAULT]` options read are:
//!
//! - `debug` (boolean): log at debug level instead of info; the command line's `--debug`
//!   does the same, and either one turns it on.
//! - `default_log_levels`: oslo.log's list `logger=LEVEL, logger2=LEVEL`, see
//!   [`parse_levels`].
//! - `log_file` and `log_dir`: append the log to that file instead of writing it to
//!   stderr; `log_file` is relative to `log_dir` when both are set, and `log_dir` alone
//!   means `<log_dir>/<program>.log`, as in oslo.log.
//! - `use_json` (boolean): one JSON object per line instead of text.
//!
//! `RUST_LOG`, when set, replaces the levels that `debug` and `default_log_levels` give
//! (not the destination or the format).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tracing::debug;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, LevelFilter};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use super::{ConfError, Config, DEFAULT_SECTION};

/// Chatty dependencies kept at info level even when `debug` is on (their debug lines
/// are per request, per connection or per SQL statement), as oslo.log's own
/// `default_log_levels` quiets sqlalchemy, urllib3 and others. An entry of the
/// configured `default_log_levels` for the same target replaces one of these.
pub const QUIET_TARGETS: &[&str] = &[
    "sqlx",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tower",
    "ureq",
    "ureq_proto",
    "aws_config",
    "aws_sdk_s3",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
];

/// Why logging could not start.
#[derive(Debug, Error)]
pub enum LogError {
    /// A logging option is malformed.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The log file cannot be opened for appending.
    #[error("cannot open the log file {} ([DEFAULT] log_file/log_dir): {source}", .path.display())]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The filter built from the options does not parse (a bug: entries are checked).
    #[error("invalid log filter {directives:?}: {source}")]
    Filter {
        /// The directives.
        directives: String,
        /// Why.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is installed already.
    #[error("cannot start logging: {0}")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The logging options of a configuration, read by [`LogSettings::from_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Debug level rather than info (`[DEFAULT] debug` or `--debug`).
    pub debug: bool,
    /// `[DEFAULT] default_log_levels` as (Rust target, level); empty when unset.
    pub levels: Vec<(String, LevelFilter)>,
    /// Where to append the log; None = stderr.
    pub log_file: Option<PathBuf>,
    /// `[DEFAULT] use_json`.
    pub use_json: bool,
}

impl LogSettings {
    /// Reads the logging options of `config`; `cli_debug` is the command line's `--debug`
    /// and `program` names the file when only `log_dir` is set.
    pub fn from_config(config: &Config, cli_debug: bool, program: &str) -> Result<Self, ConfError> {
        let debug = config.get_bool(DEFAULT_SECTION, "debug", false)? || cli_debug;
        let levels = match config.get(DEFAULT_SECTION, "default_log_levels") {
            Some(value) => parse_levels(value)
                .map_err(|why| config.invalid(DEFAULT_SECTION, "default_log_levels", &why))?,
            None => Vec::new(),
        };
        let set = |key| config.get(DEFAULT_SECTION, key).filter(|v| !v.is_empty());
        let log_file = match (set("log_file"), set("log_dir")) {
            // An absolute log_file ignores log_dir, as os.path.join does.
            (Some(file), Some(dir)) => Some(Path::new(dir).join(file)),
            (Some(file), None) => Some(PathBuf::from(file)),
            (None, Some(dir)) => Some(Path::new(dir).join(format!("{program}.log"))),
            (None, None) => None,
        };
        let use_json = config.get_bool(DEFAULT_SECTION, "use_json", false)?;
        Ok(Self {
            debug,
            levels,
            log_file,
            use_json,
        })
    }

    /// The EnvFilter directives these settings give: the base level, the quieted
    /// dependencies, then `default_log_levels` (replacing a quieted target it names).
    pub fn directives(&self) -> String {
        let base = if self.debug { "debug" } else { "info" };
        let mut targets: Vec<(String, LevelFilter)> = QUIET_TARGETS
            .iter()
            .map(|t| ((*t).to_owned(), LevelFilter::INFO))
            .collect();
        for (target, level) in &self.levels {
            targets.retain(|(t, _)| t != target);
            targets.push((target.clone(), *level));
        }
        let mut directives = vec![base.to_owned()];
        directives.extend(targets.iter().map(|(t, l)| format!("{t}={l}")));
        directives.join(",")
    }

    /// Installs the global subscriber. `RUST_LOG`, when set and valid, replaces
    /// [`LogSettings::directives`].
    pub fn install(&self) -> Result<(), LogError> {
        let filter = match EnvFilter::try_from_default_env() {
            Ok(filter) => filter,
            Err(_) => {
                let directives = self.directives();
                EnvFilter::builder()
                    .parse(&directives)
                    .map_err(|source| LogError::Filter { directives, source })?
            }
        };
        let (writer, ansi) = match &self.log_file {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LogError::OpenFile {
                        path: path.clone(),
                        source,
                    })?;
                (BoxMakeWriter::new(Arc::new(file)), false)
            }
            None => (
                BoxMakeWriter::new(std::io::stderr),
                std::io::stderr().is_terminal(),
            ),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        let installed = if self.use_json {
            builder.json().with_ansi(false).try_init()
        } else {
            builder.with_ansi(ansi).try_init()
        };
        installed.map_err(LogError::Install)
    }
}

/// Starts logging as `config` says (see the module docs), once, after the configuration
/// is loaded. `cli_debug` is the command line's `--debug`; `program` names the log file
/// when only `log_dir` is set.
pub fn init(config: &Config, cli_debug: bool, program: &str) -> Result<LogSettings, LogError> {
    let settings = LogSettings::from_config(config, cli_debug, program)?;
    settings.install()?;
    debug!(
        program,
        debug = settings.debug,
        filter = %settings.directives(),
        log_file = ?settings.log_file,
        use_json = settings.use_json,
        "logging configured"
    );
    Ok(settings)
}

/// Parses oslo.log's `default_log_levels`: comma-separated `logger=LEVEL` entries (empty
/// entries are skipped). A logger is a Rust tracing target (`sqlx`,
/// `glance_operator::api`); a Python logger name with dots (`glance.api`) is translated
/// by replacing each `.` with `::` (`glance::api`), nothing more. LEVEL is one of
/// TRACE, DEBUG, INFO, WARNING (or WARN), ERROR and CRITICAL (= ERROR), in any case.
/// The error says what is wrong, for [`Config::invalid`].
pub fn parse_levels(value: &str) -> Result<Vec<(String, LevelFilter)>, String> {
    let mut levels = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let malformed = |why: &str| {
            format!("expected logger=LEVEL entries separated by commas; {entry:?} {why}")
        };
        let Some((logger, level)) = entry.split_once('=') else {
            return Err(malformed("has no '='"));
        };
        let (logger, level) = (logger.trim(), level.trim());
        let Some(level) = level_filter(level) else {
            return Err(malformed(
                "has an unknown level (use DEBUG, INFO, WARNING, ERROR, CRITICAL or TRACE)",
            ));
        };
        let target = logger.replace('.', "::");
        let well_formed = !target.is_empty()
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':')
            && format!("{target}={level}").parse::<Directive>().is_ok();
        if !well_formed {
            return Err(malformed("has an invalid logger name"));
        }
        levels.push((target, level));
    }
    Ok(levels)
}

/// An oslo.log level name as a tracing level.
fn level_filter(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_uppercase().as_str() {
        "TRACE" => LevelFilter::TRACE,
        "DEBUG" => LevelFilter::DEBUG,
        "INFO" => LevelFilter::INFO,
        "WARNING" | "WARN" => LevelFilter::WARN,
        "ERROR" | "CRITICAL" => LevelFilter::ERROR,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str, cli_debug: bool) -> Result<LogSettings, ConfError> {
        let config = Config::from_str("test.conf", text).expect("parses");
        LogSettings::from_config(&config, cli_debug, "glance-api")
    }

    #[test]
    fn nothing_set_means_info_on_stderr_as_text() {
        let s = settings("[DEFAULT]\nbind_port = 9292\n", false).expect("valid");
        assert_eq!(
            s,
            LogSettings {
                debug: false,
                levels: vec![],
                log_file: None,
                use_json: false,
            }
        );
        assert!(
            s.directives().starts_with("info,sqlx=info,"),
            "{}",
            s.directives()
        );
    }

    #[test]
    fn debug_takes_oslo_booleans_and_the_command_line_flag() {
        for yes in ["true", "True", "YES", "on", "1"] {
            let s = settings(&format!("[DEFAULT]\ndebug = {yes}\n"), false).expect("valid");
            assert!(s.debug, "{yes}");
            assert!(s.directives().starts_with("debug,"));
        }
        for no in ["false", "No", "OFF", "0"] {
            assert!(
                !settings(&format!("[DEFAULT]\ndebug = {no}\n"), false)
                    .expect("valid")
                    .debug
            );
            assert!(
                settings(&format!("[DEFAULT]\ndebug = {no}\n"), true)
                    .expect("valid")
                    .debug
            );
        }
        assert!(settings("", true).expect("valid").debug);
        let err = settings("[DEFAULT]\ndebug = maybe\n", false).expect_err("invalid");
        assert!(
            err.to_string()
                .contains("[DEFAULT] debug = \"maybe\" (from test.conf:2)"),
            "{err}"
        );
    }

    #[test]
    fn default_log_levels_become_directives() {
        let s = settings(
            "[DEFAULT]\ndefault_log_levels = sqlx=WARN, glance_operator::api=debug,glance.api.v2=Warning,x=critical, y=TRACE,z=info,\n",
            false,
        )
        .expect("valid");
        assert_eq!(
            s.levels,
            vec![
                ("sqlx".to_owned(), LevelFilter::WARN),
                ("glance_operator::api".to_owned(), LevelFilter::DEBUG),
                ("glance::api::v2".to_owned(), LevelFilter::WARN),
                ("x".to_owned(), LevelFilter::ERROR),
                ("y".to_owned(), LevelFilter::TRACE),
                ("z".to_owned(), LevelFilter::INFO),
            ]
        );
        let directives = s.directives();
        assert!(directives.starts_with("info,hyper=info,"), "{directives}");
        assert!(
            directives.ends_with(
                ",sqlx=warn,glance_operator::api=debug,glance::api::v2=warn,x=error,y=trace,z=info"
            ),
            "{directives}"
        );
        assert_eq!(directives.matches("sqlx=").count(), 1, "{directives}");
        assert!(EnvFilter::builder().parse(&directives).is_ok());
    }

    #[test]
    fn an_empty_default_log_levels_adds_nothing() {
        let s = settings("[DEFAULT]\ndefault_log_levels =\n", false).expect("valid");
        assert!(s.levels.is_empty());
        assert_eq!(
            s.directives(),
            settings("", false).expect("valid").directives()
        );
    }

    #[test]
    fn a_malformed_default_log_levels_names_the_option() {
        for (value, why) in [
            ("sqlx", "has no '='"),
            ("sqlx=LOUD", "unknown level"),
            ("=INFO", "invalid logger name"),
            ("a b=INFO", "invalid logger name"),
            ("sqlx=INFO,hyper=", "unknown level"),
            ("a=b=INFO", "unknown level"),
        ] {
            let err = settings(&format!("[DEFAULT]\ndefault_log_levels = {value}\n"), false)
                .expect_err(value);
            let text = err.to_string();
            assert!(
                text.starts_with("[DEFAULT] default_log_levels = "),
                "{text}"
            );
            assert!(text.contains(why), "{value}: {text}");
        }
    }

    #[test]
    fn log_file_is_relative_to_log_dir() {
        let file = |text: &str| settings(text, false).expect("valid").log_file;
        assert_eq!(
            file("[DEFAULT]\nlog_file = /var/log/glance/api.log\n"),
            Some(PathBuf::from("/var/log/glance/api.log"))
        );
        assert_eq!(
            file("[DEFAULT]\nlog_file = api.log\nlog_dir = /var/log/glance\n"),
            Some(PathBuf::from("/var/log/glance/api.log"))
        );
        assert_eq!(
            file("[DEFAULT]\nlog_file = /tmp/api.log\nlog_dir = /var/log/glance\n"),
            Some(PathBuf::from("/tmp/api.log"))
        );
        assert_eq!(
            file("[DEFAULT]\nlog_dir = /var/log/glance\n"),
            Some(PathBuf::from("/var/log/glance/glance-api.log"))
        );
        assert_eq!(file("[DEFAULT]\nlog_file =\n"), None);
    }

    #[test]
    fn use_json_is_a_boolean() {
        assert!(
            settings("[DEFAULT]\nuse_json = yes\n", false)
                .expect("valid")
                .use_json
        );
        assert!(
            !settings("[DEFAULT]\nuse_json = false\n", false)
                .expect("valid")
                .use_json
        );
        assert!(settings("[DEFAULT]\nuse_json = json\n", false).is_err());
    }
}
