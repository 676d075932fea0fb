//! A SQLite catalogue that glance-api 0.1.0 wrote (tests/fixtures/legacy-0.1.0) moves
//! into upstream Glance's schema when glance-api 0.2 opens it: no image is lost, every
//! field reads back as 0.1.0 showed it, the data still downloads, and a failed move
//! leaves the old catalogue as it was.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::server::{call, start_on};
use md5::{Digest, Md5};
use serde_json::Value;

/// A copy of the fixture in a fresh directory: glance.sqlite and images/.
fn legacy_copy() -> Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = common::fixture_path("legacy-0.1.0");
    std::fs::copy(
        fixture.join("glance.sqlite"),
        dir.path().join("glance.sqlite"),
    )
    .expect("copy db");
    std::fs::create_dir(dir.path().join("images")).expect("images");
    for entry in std::fs::read_dir(fixture.join("images")).expect("fixture images") {
        let entry = entry.expect("entry");
        std::fs::copy(
            entry.path(),
            dir.path().join("images").join(entry.file_name()),
        )
        .expect("copy image");
    }
    Arc::new(dir)
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:///{}/glance.sqlite", dir.display())
}

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(common::fixture_path("legacy-0.1.0/images.json"))
        .expect("images.json");
    serde_json::from_str(&text).expect("json")
}

async fn listed(addr: std::net::SocketAddr) -> Vec<Value> {
    let mut images = Vec::new();
    for query in [
        "/v2/images?limit=100",
        "/v2/images?limit=100&os_hidden=true",
    ] {
        let list = call(addr, "GET", query, &[], vec![]).await.json();
        images.extend(list["images"].as_array().expect("images").iter().cloned());
    }
    images.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    images
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_0_catalogue_moves_into_upstreams_schema_without_losing_an_image() {
    let dir = legacy_copy();
    let url = sqlite_url(dir.path());
    let server = start_on(dir.clone(), url.clone(), None, "").await;
    let images = listed(server.addr).await;
    let want = expected();
    assert_eq!(images.len(), want.len());
    for (got, want) in images.iter().zip(&want) {
        assert_eq!(
            got, want,
            "image {} reads back as 0.1.0 showed it",
            want["id"]
        );
    }
    for image in images.iter().filter(|i| i["status"] == "active") {
        let id = image["id"].as_str().expect("id");
        let data = call(
            server.addr,
            "GET",
            &format!("/v2/images/{id}/file"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(data.status, 200);
        assert_eq!(
            hex::encode(Md5::digest(&data.body)),
            image["checksum"].as_str().expect("checksum")
        );
    }
    // The move happens once; glance-manage then finds the schema current.
    drop(server);
    let conf = dir.path().join("glance.conf");
    std::fs::write(&conf, format!("[database]\nconnection = {url}\n")).expect("conf");
    let out = Command::new(env!("CARGO_BIN_EXE_glance-manage"))
        .arg("--config-file")
        .arg(&conf)
        .arg("db_version")
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2024_1_contract01\n");
    let conn = rusqlite::Connection::open(dir.path().join("glance.sqlite")).expect("open");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(
        version, 2,
        "0.1.0 (user_version 1) refuses the moved catalogue"
    );
    let locations: Vec<(String, String)> = conn
        .prepare("SELECT value, meta_data FROM image_locations ORDER BY image_id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let store = dir.path().join("images");
    assert_eq!(
        locations,
        vec![
            (
                format!(
                    "file://{}/11111111-1111-4111-8111-111111111111",
                    store.display()
                ),
                r#"{"store": "default_backend"}"#.to_owned()
            ),
            (
                format!(
                    "file://{}/44444444-4444-4444-8444-444444444444",
                    store.display()
                ),
                r#"{"store": "default_backend"}"#.to_owned()
            ),
        ]
    );
    drop(conn);
    let again = start_on(dir.clone(), url, None, "").await;
    assert_eq!(listed(again.addr).await, want, "reopening changes nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_that_fails_leaves_the_0_1_0_catalogue_as_it_was() {
    let dir = legacy_copy();
    let path = dir.path().join("glance.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute(
        "UPDATE images SET properties = 'not json' WHERE name = 'queued-one'",
        [],
    )
    .expect("corrupt");
    drop(conn);
    let before = std::fs::read(&path).expect("read");
    let config = glance_operator::conf::Config::from_str(
        "t.conf",
        &common::server::conf_with_database(dir.path(), 0, None, "", &sqlite_url(dir.path())),
    )
    .expect("conf");
    let settings =
        glance_operator::api::settings::ApiSettings::from_config(&config).expect("settings");
    let err = glance_operator::api::server::build_state(settings)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("database"), "{err}");
    let conn = rusqlite::Connection::open(&path).expect("open");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(tables, vec!["images".to_owned()], "only 0.1.0's table");
    let count: i64 = conn
        .query_row("SELECT count(*) FROM images", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 3);
    drop(conn);
    assert_eq!(
        std::fs::read(&path).expect("read").len(),
        before.len(),
        "the file is as it was"
    );
}
