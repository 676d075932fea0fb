//! glance-manage's db_sync, db_version and db_check print what upstream's print and exit
//! as upstream's do, on the backend of GLANCE_TEST_DATABASE.

mod common;

use std::path::Path;
use std::process::Command;

use glance_operator::db::Backend;

fn manage(conf: &Path, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_glance-manage"))
        .arg("--config-file")
        .arg(conf)
        .args(args)
        .output()
        .expect("run glance-manage");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

const NOT_UNDER_CONTROL: &str = "Database is either not under migration control or under legacy migration control, please run \"glance-manage db sync\" to place the database under alembic migration control.\n";

#[tokio::test(flavor = "multi_thread")]
async fn db_sync_version_and_check_answer_as_upstreams_do() {
    let backend = common::db::backend();
    let dir = tempfile::tempdir().expect("tmp");
    let url = match backend {
        Backend::Sqlite => format!("sqlite:///{}/glance.sqlite", dir.path().display()),
        server => common::db::create_database(server).await,
    };
    let conf = dir.path().join("glance-api.conf");
    std::fs::write(&conf, format!("[database]\nconnection = {url}\n")).expect("conf");

    assert_eq!(manage(&conf, &["db_version"]).0, NOT_UNDER_CONTROL);
    let check = manage(&conf, &["db_check"]);
    match backend {
        Backend::Postgres => assert_eq!(
            (check.0.as_str(), check.1.as_str(), check.2),
            (
                "",
                "Rolling upgrades are currently supported only for MySQL and Sqlite\n",
                1
            )
        ),
        _ => assert_eq!(
            (check.0.as_str(), check.2),
            (
                "Your database is not up to date. Your first step is to run `glance-manage db expand`.\n",
                3
            )
        ),
    }
    let sync = manage(&conf, &["db_sync"]);
    assert_eq!(
        (sync.0.as_str(), sync.2),
        (
            "Upgraded database to: 2024_1_expand01, current revision(s): 2024_1_expand01\nDatabase migration is up to date. No migration needed.\nUpgraded database to: 2024_1_contract01, current revision(s): 2024_1_contract01\nDatabase is synced successfully.\n",
            0
        ),
        "{}",
        sync.1
    );
    for args in [
        &["db_sync"][..],
        &["db", "sync"],
        &["db_sync", "2024_1_contract01"],
    ] {
        let again = manage(&conf, args);
        assert_eq!(
            (again.0.as_str(), again.2),
            ("Database is up to date. No migrations needed.\n", 0),
            "{args:?}"
        );
    }
    for args in [&["db_version"][..], &["db", "version"]] {
        assert_eq!(manage(&conf, args).0, "2024_1_contract01\n", "{args:?}");
    }
    let check = manage(&conf, &["db", "check"]);
    if backend != Backend::Postgres {
        assert_eq!(
            (check.0.as_str(), check.2),
            ("Database is up to date. No upgrades needed.\n", 0)
        );
    }
    let other = manage(&conf, &["db_sync", "2023_1_contract01"]);
    assert_eq!(other.2, 1);
    assert!(other.1.contains("only to 2024_1_contract01"), "{}", other.1);
}

#[test]
fn bad_commands_and_urls_are_refused_with_the_option_named_and_no_password() {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("glance-api.conf");
    std::fs::write(
        &conf,
        "[database]\nconnection = oracle://glance:hunter2@db/glance\n",
    )
    .expect("conf");
    let (_, stderr, code) = manage(&conf, &["db_sync"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("[database] connection = \"oracle://glance:***@db/glance\""),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let (_, stderr, code) = manage(&conf, &["db_frobnicate"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown command"), "{stderr}");
}

/// Locations that an earlier glance-api recorded from a relative
/// `filesystem_store_datadir` (`file://glance-data/images/<id>`, relative to its working
/// directory) are read as they were written, and db_sync rewrites them as absolute
/// `file:///` URLs.
#[tokio::test(flavor = "multi_thread")]
async fn relative_file_locations_are_read_and_db_sync_makes_them_absolute() {
    use common::server::{call, data, start_on};
    use sqlx::Connection;

    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let url = common::db::fresh_catalogue(dir.path()).await;
    let server = start_on(dir.clone(), url.clone(), None, "").await;
    let bytes = data(70_000, 4);
    let id = common::server::active_image(server.addr, &bytes).await;
    let absolute = dir.path().join("images").join(&id);
    // The same file, relative to the working directory (as the old version wrote it).
    let cwd = std::env::current_dir().expect("cwd");
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = format!(
        "{up}{}",
        absolute.display().to_string().trim_start_matches('/')
    );
    assert!(cwd.join(&relative).exists(), "{relative}");

    sqlx::any::install_default_drivers();
    let sqlx_url = glance_operator::db::DbUrl::parse(&url)
        .expect("url")
        .sqlx_url()
        .to_owned();
    let mut conn = sqlx::AnyConnection::connect(&sqlx_url)
        .await
        .expect("connect");
    let set = sqlx::query("UPDATE image_locations SET value = $1 WHERE image_id = $2");
    let set = if common::db::backend() == Backend::Postgres {
        set
    } else {
        sqlx::query("UPDATE image_locations SET value = ? WHERE image_id = ?")
    };
    set.bind(format!("file://{relative}"))
        .bind(id.as_str())
        .execute(&mut conn)
        .await
        .expect("relative location");

    let got = call(
        server.addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(got.status, 200, "a relative location is read");
    assert!(got.body == bytes);

    let conf = dir.path().join("manage.conf");
    std::fs::write(&conf, format!("[database]\nconnection = {url}\n")).expect("conf");
    let (out, err, code) = manage(&conf, &["db_sync"]);
    assert_eq!(code, 0, "{out}{err}");
    let get = if common::db::backend() == Backend::Postgres {
        "SELECT value FROM image_locations WHERE image_id = $1"
    } else {
        "SELECT value FROM image_locations WHERE image_id = ?"
    };
    let value: String = sqlx::query_scalar(get)
        .bind(id.as_str())
        .fetch_one(&mut conn)
        .await
        .expect("location");
    assert_eq!(value, format!("file://{}", absolute.display()));
    let _ = conn.close().await;
    let got = call(
        server.addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn metadefs_load_from_upstreams_files_export_and_unload() {
    let backend = common::db::backend();
    let dir = tempfile::tempdir().expect("tmp");
    let url = match backend {
        Backend::Sqlite => format!("sqlite:///{}/glance.sqlite", dir.path().display()),
        server => common::db::create_database(server).await,
    };
    let conf = dir.path().join("glance-api.conf");
    std::fs::write(&conf, format!("[database]\nconnection = {url}\n")).expect("conf");
    assert_eq!(manage(&conf, &["db_sync"]).2, 0);
    // Two files in upstream's format (as the glance package's etc/metadefs has them).
    let files = dir.path().join("metadefs");
    std::fs::create_dir(&files).expect("dir");
    let watchdog = serde_json::json!({
        "namespace": "OS::Compute::Watchdog", "display_name": "Watchdog Behavior",
        "description": "d", "visibility": "public", "protected": true,
        "resource_type_associations": [{"name": "OS::Glance::Image"}, {"name": "OS::Nova::Flavor", "prefix": "hw:"}],
        "properties": {"hw_watchdog_action": {"title": "Watchdog Action", "type": "string", "enum": ["disabled", "reset"]}},
        "objects": [{"name": "Watchdog", "required": [], "properties": {"action": {"title": "A", "type": "string"}}}],
        "tags": [{"name": "watch"}],
    });
    std::fs::write(files.join("compute-watchdog.json"), watchdog.to_string()).expect("file");
    std::fs::write(
        files.join("software.json"),
        r#"{"namespace": "OS::Software::DBMS", "display_name": "Database Software", "visibility": "public"}"#,
    )
    .expect("file");
    std::fs::write(files.join("notes.txt"), "not a definition").expect("file");
    let path = files.display().to_string();
    let (out, err, code) = manage(&conf, &["db_load_metadefs", &path]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "Loaded namespace OS::Compute::Watchdog\nLoaded namespace OS::Software::DBMS\n"
    );
    let (out, _, _) = manage(&conf, &["db_load_metadefs", "--path", &path]);
    assert!(
        out.contains("Skipping namespace OS::Compute::Watchdog"),
        "{out}"
    );
    let (_, err, code) = manage(&conf, &["db_load_metadefs", &path, "--overwrite"]);
    assert_eq!(code, 1, "--overwrite needs --merge");
    assert!(err.contains("--merge"), "{err}");
    let (out, _, code) = manage(
        &conf,
        &["db_load_metadefs", &path, "--merge", "--overwrite"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("Loaded namespace OS::Compute::Watchdog"),
        "{out}"
    );

    // The export writes upstream's format back, one file a namespace.
    let out_dir = dir.path().join("export");
    let (out, err, code) = manage(
        &conf,
        &["db_export_metadefs", &out_dir.display().to_string()],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let exported: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("WatchdogBehavior.json")).expect("exported"),
    )
    .expect("json");
    assert_eq!(exported["namespace"], "OS::Compute::Watchdog");
    assert_eq!(exported["protected"], true);
    assert_eq!(exported["properties"], watchdog["properties"]);
    assert_eq!(
        exported["objects"][0]["properties"],
        watchdog["objects"][0]["properties"]
    );
    assert_eq!(exported["tags"], watchdog["tags"]);
    assert_eq!(
        exported["resource_type_associations"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let (out, _, code) = manage(&conf, &["db_unload_metadefs"]);
    assert_eq!(
        (out.as_str(), code),
        ("Unloaded 2 metadata definition namespaces\n", 0)
    );
    let (out, _, _) = manage(&conf, &["db_load_metadefs", &path]);
    assert_eq!(
        out.lines().count(),
        2,
        "loaded again after the unload: {out}"
    );
}
