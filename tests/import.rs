//! Interoperable image import over real HTTP, on the catalogue of GLANCE_TEST_DATABASE:
//! glance-direct (stage, then import), web-download from a real HTTP server on loopback
//! (refused by default, allowed by `[import_filtering_opts]`, every redirect checked
//! again), the tasks that record them, and what upstream refuses.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{Reply, Server, call, conf_with_database, create, data, start, start_conf};
use md5::{Digest, Md5};
use serde_json::{Value, json};

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// glance-api whose configuration has `extra` at its end.
async fn start_with(extra: &str) -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = common::db::fresh_catalogue(dir.path()).await;
    let text = format!(
        "{}{extra}",
        conf_with_database(dir.path(), 0, None, "", &connection)
    );
    start_conf(dir, connection, &text).await
}

async fn new_image(addr: SocketAddr) -> String {
    create(
        addr,
        json!({"name": "imported", "disk_format": "raw", "container_format": "bare"}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn import(addr: SocketAddr, id: &str, body: Value) -> Reply {
    call(
        addr,
        "POST",
        &format!("/v2/images/{id}/import"),
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        body.to_string().into_bytes(),
    )
    .await
}

async fn image(addr: SocketAddr, id: &str) -> Value {
    call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
        .await
        .json()
}

/// Waits until image `id` has left `importing`; its final JSON.
async fn settled(addr: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let image = image(addr, id).await;
        if image["status"] != "importing" {
            return image;
        }
        assert!(Instant::now() < deadline, "still importing: {image}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The image's tasks, once the last one has ended.
async fn tasks(addr: SocketAddr, id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(addr, "GET", &format!("/v2/images/{id}/tasks"), &[], vec![]).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        let tasks = r.json()["tasks"].as_array().cloned().unwrap_or_default();
        if tasks
            .last()
            .is_some_and(|t| t["status"] == "success" || t["status"] == "failure")
        {
            return tasks;
        }
        assert!(Instant::now() < deadline, "tasks: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn glance_direct_stages_then_imports_and_its_task_records_the_request() {
    let server = start(None).await;
    let addr = server.addr;
    let r = call(addr, "GET", "/v2/info/import", &[], vec![]).await;
    assert_eq!(
        r.json(),
        json!({"import-methods": {"description": "Import methods available.", "type": "array", "value": ["glance-direct", "web-download", "copy-image"]}})
    );
    let id = new_image(addr).await;
    // Nothing staged yet: upstream's 409.
    let r = import(addr, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, 409, "{}", text(&r));
    assert!(text(&r).contains("needs to be staged"), "{}", text(&r));

    let bytes = data(3 << 20, 5);
    let stage = |size: String| {
        call(
            addr,
            "PUT",
            &format!("/v2/images/{id}/stage"),
            &[
                ("Content-Type", "application/octet-stream"),
                ("x-openstack-image-size", &size),
            ],
            bytes.clone(),
        )
    };
    // A size that the data does not have is refused, and the image stays queued.
    let r = stage("5".to_owned()).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert_eq!(image(addr, &id).await["status"], "queued");
    let r = stage(bytes.len().to_string()).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    let staged = image(addr, &id).await;
    assert_eq!(
        (staged["status"].as_str(), staged["size"].as_u64()),
        (Some("uploading"), Some(bytes.len() as u64))
    );
    assert_eq!(
        stage(bytes.len().to_string()).await.status,
        409,
        "staged twice"
    );

    for (body, words) in [
        (json!({}), "requires a 'method' field"),
        (json!({"method": {}}), "requires a 'name' field"),
        (
            json!({"method": {"name": "glance-download"}}),
            "Unknown import method name 'glance-download'",
        ),
        (
            json!({"method": {"name": "glance-direct"}, "all_stores": "yes"}),
            "'all_stores' must be boolean",
        ),
        (
            json!({"method": {"name": "glance-direct"}, "stores": ["nowhere"]}),
            "Unknown scheme 'nowhere'",
        ),
    ] {
        let r = import(addr, &id, body.clone()).await;
        assert!(r.status == 400 || r.status == 409, "{body}: {}", text(&r));
        assert!(text(&r).contains(words), "{body}: {}", text(&r));
    }
    let r = import(addr, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let request_id = r
        .header("x-openstack-request-id")
        .expect("request id")
        .to_owned();
    let done = settled(addr, &id).await;
    assert_eq!(done["status"], "active", "{done}");
    assert_eq!(done["checksum"], md5_hex(&bytes).as_str());
    assert_eq!(done["stores"], "default_backend");
    assert!(done.get("os_glance_import_task").is_none(), "{done}");
    // As upstream leaves them: emptied, not removed (Tempest's waiters read them).
    assert_eq!(done["os_glance_importing_to_stores"], "", "{done}");
    assert_eq!(done["os_glance_failed_import"], "", "{done}");
    let got = call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    assert!(got.body == bytes, "the imported bytes");
    assert!(
        std::fs::read_dir(server.dir.path().join("staging"))
            .expect("staging")
            .next()
            .is_none(),
        "the staged data is gone"
    );

    let tasks = tasks(addr, &id).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(task["type"], "api_image_import");
    assert_eq!(task["request_id"], request_id.as_str());
    assert_eq!(
        task["input"]["import_req"]["method"]["name"],
        "glance-direct"
    );
    assert_eq!(task["result"]["image_id"], id.as_str());
    assert!(task["expires_at"].is_string(), "{task}");
    let task_id = task["id"].as_str().expect("task id");
    let shown = call(addr, "GET", &format!("/v2/tasks/{task_id}"), &[], vec![]).await;
    assert_eq!(shown.json()["status"], "success");
    let listed = call(addr, "GET", "/v2/tasks?status=success", &[], vec![]).await;
    assert!(
        listed.json()["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .any(|t| t["id"] == task_id)
    );
    assert!(
        listed.json()["tasks"][0].get("input").is_none(),
        "a listing shows no input"
    );
    assert_eq!(
        call(addr, "GET", "/v2/tasks?status=done", &[], vec![])
            .await
            .status,
        400
    );
    // Active now: nothing more to import into it.
    let r = import(addr, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, 409, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn web_download_fetches_only_what_the_filter_lets_through() {
    let bytes = data(2 << 20, 9);
    let web = common::web::serve(bytes.clone()).await;
    // Loopback is refused by default.
    let server = start(None).await;
    let id = new_image(server.addr).await;
    let uri = format!("http://127.0.0.1:{}/image", web.port());
    let r = import(
        server.addr,
        &id,
        json!({"method": {"name": "web-download", "uri": uri}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(text(&r).contains("does not pass filtering"), "{}", text(&r));
    assert_eq!(image(server.addr, &id).await["status"], "queued");

    let server = start_with(&format!(
        "[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports = {}\n",
        web.port()
    ))
    .await;
    let addr = server.addr;
    // Through a redirect on the same host: imported.
    let id = new_image(addr).await;
    let hop = format!("http://127.0.0.1:{}/hop", web.port());
    let r = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": hop}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let done = settled(addr, &id).await;
    assert_eq!(done["status"], "active", "{done}");
    assert_eq!(done["checksum"], md5_hex(&bytes).as_str());
    assert_eq!(tasks(addr, &id).await[0]["status"], "success");

    // A redirect to a host the filter refuses ends the import; the image is queued again.
    let id = new_image(addr).await;
    let away = format!("http://127.0.0.1:{}/away", web.port());
    let r = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": away}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let done = settled(addr, &id).await;
    assert_eq!(done["status"], "queued", "{done}");
    assert_eq!(done["os_glance_failed_import"], "default_backend", "{done}");
    assert!(done.get("os_glance_import_task").is_none(), "{done}");
    let task = &tasks(addr, &id).await[0];
    assert_eq!(task["status"], "failure", "{task}");
    assert!(
        task["message"].as_str().unwrap_or("").contains("localhost"),
        "{task}"
    );
    // A missing file fails the same way.
    let id = new_image(addr).await;
    let missing = format!("http://127.0.0.1:{}/nothing", web.port());
    assert_eq!(
        import(
            addr,
            &id,
            json!({"method": {"name": "web-download", "uri": missing}})
        )
        .await
        .status,
        202
    );
    assert_eq!(settled(addr, &id).await["status"], "queued");
    assert!(
        tasks(addr, &id).await[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("404")
    );
}

/// glance-api with two file stores, `default_backend` and `cheap`.
async fn two_stores() -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = common::db::fresh_catalogue(dir.path()).await;
    let text = conf_with_database(dir.path(), 0, None, "", &connection)
        .replace(
            "enabled_backends = default_backend:file\n",
            "enabled_backends = default_backend:file, cheap:file\n",
        )
        .replace(
            "[database]\n",
            &format!(
                "[cheap]\nfilesystem_store_datadir = {}/cheap\n[database]\n",
                dir.path().display()
            ),
        );
    start_conf(dir, connection, &text).await
}

async fn stage(addr: SocketAddr, id: &str, bytes: &[u8]) {
    let r = call(
        addr,
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/octet-stream")],
        bytes.to_vec(),
    )
    .await;
    assert_eq!(r.status, 204, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn imports_and_copies_go_to_every_store_asked_for() {
    let server = two_stores().await;
    let addr = server.addr;
    let root = server.dir.path().to_owned();
    let bytes = data(1 << 20, 21);
    let both = json!(["default_backend", "cheap"]);

    let id = new_image(addr).await;
    stage(addr, &id, &bytes).await;
    let r = import(
        addr,
        &id,
        json!({"method": {"name": "glance-direct"}, "stores": both}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let done = settled(addr, &id).await;
    assert_eq!(
        (done["status"].as_str(), done["stores"].as_str()),
        (Some("active"), Some("default_backend,cheap")),
        "{done}"
    );
    for dir in ["images", "cheap"] {
        assert_eq!(
            std::fs::read(root.join(dir).join(&id)).expect("stored"),
            bytes,
            "{dir}"
        );
    }

    // copy-image: an active image into the store it is not in yet.
    let copied = new_image(addr).await;
    assert_eq!(common::server::upload(addr, &copied, &bytes).await, 204);
    let r = import(
        addr,
        &copied,
        json!({"method": {"name": "copy-image"}, "stores": ["cheap"]}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let copy_tasks = tasks(addr, &copied).await;
    assert_eq!(copy_tasks[0]["status"], "success", "{copy_tasks:?}");
    let shown = image(addr, &copied).await;
    assert_eq!(
        (shown["status"].as_str(), shown["stores"].as_str()),
        (Some("active"), Some("default_backend,cheap")),
        "{shown}"
    );
    assert!(shown.get("os_glance_import_task").is_none(), "{shown}");
    assert_eq!(
        std::fs::read(root.join("cheap").join(&copied)).expect("copied"),
        bytes
    );
    // Again into a store that has it: upstream's 400; with all_stores, nothing to do.
    let r = import(
        addr,
        &copied,
        json!({"method": {"name": "copy-image"}, "stores": ["cheap"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(
        text(&r).contains("already present at store 'cheap'"),
        "{}",
        text(&r)
    );
    let r = import(
        addr,
        &copied,
        json!({"method": {"name": "copy-image"}, "all_stores": true}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    // Only active images are copied.
    let queued = new_image(addr).await;
    let r = import(
        addr,
        &queued,
        json!({"method": {"name": "copy-image"}, "stores": ["cheap"]}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", text(&r));

    // DELETE /v2/stores/{store}/{id}: one store's copy goes, never the last one.
    let delete = |store: &str, image: &str| {
        call(
            addr,
            "DELETE",
            &format!("/v2/stores/{store}/{image}"),
            &[("Accept", "application/json")],
            vec![],
        )
    };
    assert_eq!(delete("cheap", &id).await.status, 204);
    assert!(
        !root.join("cheap").join(&id).exists(),
        "the data is deleted"
    );
    assert_eq!(image(addr, &id).await["stores"], "default_backend");
    let r = delete("cheap", &id).await;
    assert_eq!(r.status, 404, "{}", text(&r));
    assert!(
        text(&r).contains("is not stored in store cheap"),
        "{}",
        text(&r)
    );
    let r = delete("default_backend", &id).await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert!(
        text(&r).contains("only store containing it"),
        "{}",
        text(&r)
    );
    assert_eq!(delete("nowhere", &id).await.status, 409);
    assert_eq!(delete("cheap", &queued).await.status, 409);
    let got = call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    assert!(got.body == bytes, "the image is whole from its other store");

    // A store that fails: with all_stores_must_succeed false the others make the image.
    std::fs::remove_dir_all(root.join("cheap")).expect("rm");
    std::fs::write(root.join("cheap"), b"not a directory").expect("block the store");
    let partial = new_image(addr).await;
    stage(addr, &partial, &bytes).await;
    let r = import(addr, &partial, json!({"method": {"name": "glance-direct"}, "stores": both, "all_stores_must_succeed": false})).await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let done = settled(addr, &partial).await;
    assert_eq!(
        (done["status"].as_str(), done["stores"].as_str()),
        (Some("active"), Some("default_backend")),
        "{done}"
    );
    assert_eq!(done["os_glance_failed_import"], "cheap", "{done}");
    // With it (the default), the import fails and leaves no data anywhere.
    let whole = new_image(addr).await;
    stage(addr, &whole, &bytes).await;
    let r = import(
        addr,
        &whole,
        json!({"method": {"name": "glance-direct"}, "stores": both}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let done = settled(addr, &whole).await;
    assert_eq!(done["status"], "queued", "{done}");
    assert!(
        !root.join("images").join(&whole).exists(),
        "no data left behind"
    );
    let task = &tasks(addr, &whole).await[0];
    assert_eq!(task["status"], "failure");
    assert!(
        task["message"].as_str().unwrap_or("").contains("cheap"),
        "{task}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_download_of_2_gib_streams_in_bounded_memory() {
    use common::process::{Process, free_port, rss_split};
    // Memory does not depend on the catalogue: run once, on SQLite.
    if common::db::backend() != glance_operator::db::Backend::Sqlite {
        return;
    }
    let size: u64 = 2 << 30;
    let web = common::web::serve(Vec::new()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let connection = common::db::fresh_catalogue(dir.path()).await;
    let port = free_port();
    let conf = format!(
        "{}[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports = {}\n",
        conf_with_database(dir.path(), port, None, "", &connection),
        web.port()
    );
    let server = Process::start(dir.path(), "importer", port, &conf);
    let addr = server.addr;
    let exe = env!("CARGO_BIN_EXE_glance-api").to_owned();
    let pid = server.pid();
    let id = new_image(addr).await;
    let idle = rss_split(pid, &exe).1;
    let uri = format!("http://127.0.0.1:{}/generated/{size}", web.port());
    let r = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": uri}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let mut peak = idle;
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        peak = peak.max(rss_split(pid, &exe).1);
        let shown = image(addr, &id).await;
        if shown["status"] != "importing" {
            break shown;
        }
        assert!(Instant::now() < deadline, "still importing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    println!(
        "2 GiB web-download: memory besides the executable idle {:.1} MiB, peak {:.1} MiB",
        mib(idle),
        mib(peak)
    );
    assert_eq!(done["status"], "active", "{done}");
    assert_eq!(done["size"], json!(size));
    assert_eq!(done["checksum"], common::web::generated_md5(size).as_str());
    assert!(
        peak.saturating_sub(idle) <= 64 << 20,
        "idle {:.1} MiB, peak {:.1} MiB",
        mib(idle),
        mib(peak)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_older_import_task_downloads_into_a_new_image() {
    let bytes = data(1 << 20, 31);
    let web = common::web::serve(bytes.clone()).await;
    let server = start_with(&format!(
        "[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports = {}\n",
        web.port()
    ))
    .await;
    let addr = server.addr;
    let create = |body: Value| {
        call(
            addr,
            "POST",
            "/v2/tasks",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
            body.to_string().into_bytes(),
        )
    };
    let task = |from: String| {
        json!({"type": "import", "input": {
            "import_from": from, "import_from_format": "raw",
            "image_properties": {"name": "from-task", "disk_format": "raw", "container_format": "bare"},
        }})
    };
    // Refused at once: a host that does not resolve, an address the filter refuses.
    for from in ["http://no-such-host.invalid/x.qcow2", "http://10.1.2.3/x"] {
        let r = create(task(from.to_owned())).await;
        assert_eq!(r.status, 400, "{from}: {}", text(&r));
    }
    let r = create(json!({"input": {}})).await;
    assert_eq!(
        (r.status, text(&r).contains("'type' is required")),
        (400, true)
    );
    let r = create(task(format!("http://127.0.0.1:{}/image", web.port()))).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/tasks/{id}").as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let shown = call(addr, "GET", &format!("/v2/tasks/{id}"), &[], vec![])
            .await
            .json();
        if shown["status"] == "success" || shown["status"] == "failure" {
            break shown;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    let image_id = done["result"]["image_id"].as_str().expect("image id");
    let shown = image(addr, image_id).await;
    assert_eq!(
        (shown["status"].as_str(), shown["name"].as_str()),
        (Some("active"), Some("from-task"))
    );
    assert_eq!(shown["checksum"], md5_hex(&bytes).as_str());
}

/// Two replicas on one catalogue and one store, each with its own staging directory and
/// its own `worker_self_reference_url`: an import through the replica that did not stage
/// the data is sent to the one that did, as upstream's os_glance_stage_host proxy.
#[tokio::test(flavor = "multi_thread")]
async fn glance_direct_through_another_replica_goes_to_the_stage_host() {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = common::db::fresh_catalogue(dir.path()).await;
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let staging = dir.path().join(format!("staging-{name}"));
        let text = conf_with_database(dir.path(), 0, None, "", &connection)
            .replace(
                "[DEFAULT]\n",
                &format!("[DEFAULT]\nworker_self_reference_url = http://127.0.0.1:{port}\n"),
            )
            .replace(
                &format!("{}/staging", dir.path().display()),
                &staging.display().to_string(),
            );
        servers.push(
            common::server::start_listening(listener, dir.clone(), connection.clone(), &text).await,
        );
    }
    let (a, b) = (servers[0].addr, servers[1].addr);
    let bytes = data(300_000, 4);
    let id = new_image(a).await;
    stage(a, &id, &bytes).await;
    assert!(
        !dir.path().join("staging-b").join(&id).exists(),
        "staged on a only"
    );
    // The stage host is upstream's hidden property: not shown.
    assert!(image(b, &id).await.get("os_glance_stage_host").is_none());
    let r = import(b, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let done = settled(b, &id).await;
    assert_eq!(done["status"], "active", "{done}");
    assert_eq!(done["checksum"], md5_hex(&bytes).as_str());
    let got = call(b, "GET", &format!("/v2/images/{id}/file"), &[], Vec::new()).await;
    assert!(got.body == bytes, "the staged bytes");

    // A stage host that is gone: 504, and the image stays staged.
    let id = new_image(a).await;
    stage(a, &id, &bytes).await;
    drop(servers.remove(0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = import(b, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, 504, "{}", text(&r));
    assert_eq!(image(b, &id).await["status"], "uploading");
}

/// `[task] task_time_to_live`: an ended task expires that many hours after it ended, and
/// an expired task is gone (as upstream's task listing soft-deletes expired ones).
#[tokio::test(flavor = "multi_thread")]
async fn an_ended_task_expires_after_task_time_to_live() {
    let server = start_with("[task]\ntask_time_to_live = 0\n").await;
    let addr = server.addr;
    let bytes = data(10_000, 6);
    let id = new_image(addr).await;
    stage(addr, &id, &bytes).await;
    let r = import(addr, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, 202, "{}", text(&r));
    assert_eq!(settled(addr, &id).await["status"], "active");
    // The task ended with no time to live: it expired at once, and the next purge (the
    // upkeep's, or this one) takes it away. With the default 48 hours it stays, as
    // glance_direct_stages_then_imports_and_its_task_records_the_request shows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.state.db.purge_expired_tasks().await.expect("purge");
    let left = call(addr, "GET", &format!("/v2/images/{id}/tasks"), &[], vec![]).await;
    assert_eq!(left.status, 200);
    assert_eq!(left.json()["tasks"], json!([]), "the expired task is gone");
    let listed = call(addr, "GET", "/v2/tasks", &[], vec![]).await;
    assert_eq!(listed.json()["tasks"], json!([]), "nor listed");
}
