//! Logging follows the configuration files, as oslo.log does: the real glance-api and
//! glance-cache-pruner binaries, and the operator's rendered config.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::server::conf_text;
use common::{DEFAULT_IMAGE, glance};
use glance_operator::conf::logging::LogSettings;
use glance_operator::conf::{Config, ConfigSources};
use glance_operator::crd::validate::validate;
use glance_operator::resources::config::{CUSTOM_KEY, RENDERED_KEY};
use glance_operator::resources::{Observed, build};

/// How long glance-api may take to start listening.
const START: Duration = Duration::from_secs(30);

/// A child process, killed when dropped (also when a test fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config dir holding `glance-api.conf` for glance-api on port 0 in `root`, with
/// `extra` lines in [DEFAULT].
fn api_config_dir(root: &Path, extra: &str) -> PathBuf {
    let dir = root.join("glance.conf.d");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let text = conf_text(root, 0, Some(1 << 20), "").replacen(
        "[DEFAULT]\n",
        &format!("[DEFAULT]\n{extra}"),
        1,
    );
    std::fs::write(dir.join("glance-api.conf"), text).expect("write");
    dir
}

/// Starts glance-api on `config_dir`; its stderr lines arrive on the receiver.
fn glance_api(config_dir: &Path) -> (Running, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glance-api"))
        .arg("--config-dir")
        .arg(config_dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start glance-api");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Running(child), rx)
}

/// The stderr lines up to and with the first containing `until`.
fn lines_until(rx: &mpsc::Receiver<String>, until: &str) -> Vec<String> {
    let deadline = Instant::now() + START;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(until);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "no line with {until:?} in time; stderr:\n{}",
        lines.join("\n")
    );
}

fn has_debug(lines: &[String]) -> bool {
    lines.iter().any(|l| l.contains(" DEBUG "))
}

#[test]
fn glance_api_logs_at_debug_level_when_its_config_says_debug() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_api, rx) = glance_api(&api_config_dir(tmp.path(), "debug = true\n"));
    let lines = lines_until(&rx, "glance-api listening");
    assert!(has_debug(&lines), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" DEBUG ") && l.contains("configuration loaded")),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn glance_api_logs_no_debug_lines_without_debug() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_api, rx) = glance_api(&api_config_dir(tmp.path(), "debug = false\n"));
    let lines = lines_until(&rx, "glance-api listening");
    assert!(!has_debug(&lines), "{}", lines.join("\n"));
}

#[test]
fn glance_api_writes_json_to_log_dir_and_log_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let extra = format!(
        "debug = yes\nuse_json = true\nlog_dir = {}\nlog_file = api.log\n",
        logs.display()
    );
    let (_api, _rx) = glance_api(&api_config_dir(tmp.path(), &extra));
    let file = logs.join("api.log");
    let deadline = Instant::now() + START;
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("glance-api listening") {
            break text;
        }
        assert!(Instant::now() < deadline, "not listening in time:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "DEBUG"),
        "no DEBUG event:\n{text}"
    );
}

/// A config file for the cache tools on a fresh cache dir in `root`, with `extra` lines.
fn tool_config(root: &Path, extra: &str) -> PathBuf {
    let conf = root.join("glance-cache.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nimage_cache_max_size = 1000\n{extra}",
            root.join("cache").display()
        ),
    )
    .expect("write");
    conf
}

/// Runs `program --config-file conf` to its end; (success, stderr).
fn run_tool(program: &str, conf: &Path) -> (bool, String) {
    let out = Command::new(program)
        .arg("--config-file")
        .arg(conf)
        .env_remove("RUST_LOG")
        .env_remove("OS_DEFAULT__WORKER_SELF_REFERENCE_URL")
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cache_pruner_logs_at_debug_level_when_its_config_says_debug() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pruner = env!("CARGO_BIN_EXE_glance-cache-pruner");
    let (ok, log) = run_tool(pruner, &tool_config(tmp.path(), "debug = True\n"));
    assert!(ok, "{log}");
    assert!(
        log.lines().any(|l| l.contains(" DEBUG ")),
        "no DEBUG line:\n{log}"
    );
    let (ok, log) = run_tool(pruner, &tool_config(tmp.path(), ""));
    assert!(ok, "{log}");
    assert!(log.contains("pruned the image cache"), "{log}");
    assert!(!log.contains(" DEBUG "), "{log}");
}

#[test]
fn a_malformed_default_log_levels_stops_the_programs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = tool_config(tmp.path(), "default_log_levels = sqlx=LOUD\n");
    for program in [
        env!("CARGO_BIN_EXE_glance-cache-pruner"),
        env!("CARGO_BIN_EXE_glance-cache-cleaner"),
    ] {
        let (ok, log) = run_tool(program, &conf);
        assert!(!ok, "{program} started");
        assert!(
            log.contains("[DEFAULT] default_log_levels = \"sqlx=LOUD\""),
            "{program}: {log}"
        );
    }
    let api_dir = api_config_dir(tmp.path(), "default_log_levels = sqlx\n");
    let out = Command::new(env!("CARGO_BIN_EXE_glance-api"))
        .arg("--config-dir")
        .arg(&api_dir)
        .output()
        .expect("run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("glance-api: [DEFAULT] default_log_levels = \"sqlx\""),
        "{log}"
    );
}

#[test]
fn custom_service_config_debug_reaches_the_logging_of_glance_api() {
    let load = |custom: Option<&str>| {
        let mut g = glance("seed.yaml");
        g.spec.custom_service_config = custom.map(str::to_owned);
        let valid = validate(&g, DEFAULT_IMAGE).expect("valid");
        let children = build(&valid, &Observed::default());
        let data = children.config.data.expect("config Secret data");
        // Lay the Secret out as its volume does, and read it as glance-api does.
        let dir = tempfile::tempdir().expect("tmp");
        for key in [RENDERED_KEY, CUSTOM_KEY] {
            let value = data
                .get(key)
                .unwrap_or_else(|| panic!("{key} in the Secret"));
            std::fs::write(dir.path().join(key), &value.0).expect("write");
        }
        let config = Config::load(&ConfigSources {
            files: vec![],
            dirs: vec![dir.path().to_path_buf()],
        })
        .expect("loads");
        let custom_text = String::from_utf8(data[CUSTOM_KEY].0.clone()).expect("utf-8");
        let settings = LogSettings::from_config(&config, false, "glance-api").expect("valid");
        (custom_text, settings)
    };
    let (custom, settings) = load(Some("[DEFAULT]\ndebug = true\n"));
    assert!(custom.contains("[DEFAULT]\ndebug = true\n"), "{custom}");
    assert!(settings.debug);
    assert!(settings.directives().starts_with("debug,"));

    let (_, settings) = load(None);
    assert!(
        !settings.debug,
        "the rendered config alone does not turn debug on"
    );
}
