//! Image locations with `show_multiple_locations`, as upstream's PATCH serves them: an
//! http location makes a queued image active (its size from a HEAD, its digests from
//! validation data), its data is read from the `http` store, metadata is replaced, a
//! location is removed but never the last, and bad URLs, schemes, positions and
//! mismatched validation data are refused with upstream's status codes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::server::{Reply, Server, call, conf_with_database, create, data, start_conf};
use serde_json::{Value, json};

const PATCH: &str = "application/openstack-images-v2.1-json-patch";

async fn start_with(web_port: u16, show: bool) -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = common::db::fresh_catalogue(dir.path()).await;
    let text = conf_with_database(dir.path(), 0, None, "", &connection).replace(
        "enabled_backends = default_backend:file\n",
        &format!(
            "enabled_backends = default_backend:file, web:http\nshow_multiple_locations = {show}\nshow_image_direct_url = True\n"
        ),
    );
    let text = format!(
        "{text}[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports = {web_port}\n"
    );
    start_conf(dir, connection, &text).await
}

async fn patch(addr: SocketAddr, id: &str, ops: Value) -> Reply {
    call(
        addr,
        "PATCH",
        &format!("/v2/images/{id}"),
        &[("Content-Type", PATCH)],
        ops.to_string().into_bytes(),
    )
    .await
}

async fn show(addr: SocketAddr, id: &str) -> Value {
    call(addr, "GET", &format!("/v2/images/{id}"), &[], Vec::new())
        .await
        .json()
}

async fn queued(addr: SocketAddr) -> String {
    create(
        addr,
        json!({"name": "located", "disk_format": "raw", "container_format": "bare"}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_locations_through_patch_as_upstream() {
    let bytes = data(300_000, 5);
    let web = common::web::serve(bytes.clone()).await;
    let server = start_with(web.port(), true).await;
    let addr = server.addr;
    let url = format!("http://127.0.0.1:{}/image", web.port());

    // A queued image shows an empty list; an http location makes it active.
    let id = queued(addr).await;
    assert_eq!(show(addr, &id).await["locations"], json!([]));
    let r = patch(
        addr,
        &id,
        json!([{"op": "add", "path": "/locations/-", "value": {"url": url, "metadata": {"foo": "bar"}}}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let image = show(addr, &id).await;
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["size"], bytes.len(), "{image}");
    assert_eq!(
        image["locations"],
        json!([{"url": url, "metadata": {"foo": "bar"}}])
    );
    assert_eq!(image["direct_url"], url.as_str());
    assert_eq!(image["os_hash_value"], Value::Null);
    // Its data comes from the http store.
    let r = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body == bytes, "the location's bytes");

    // A second location; the same URL twice is refused.
    let second = format!("{url}#new");
    let r = patch(
        addr,
        &id,
        json!([{"op": "add", "path": "/locations/-", "value": {"url": second, "metadata": {"speed": "88mph"}}}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = patch(
        addr,
        &id,
        json!([{"op": "add", "path": "/locations/-", "value": {"url": second, "metadata": {}}}]),
    )
    .await;
    assert_eq!(r.status, 400, "{}", text(&r));

    // Replace: new metadata for the same URLs; dropping or changing a URL is refused.
    let mut locations = show(addr, &id).await["locations"].clone();
    locations[0]["metadata"]["date"] = json!("2015-10-15");
    let r = patch(
        addr,
        &id,
        json!([{"op": "replace", "path": "/locations", "value": locations}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    for value in [
        json!([locations[0]]),
        json!([locations[0], {"url": format!("{url}#new3"), "metadata": {}}]),
    ] {
        let r = patch(
            addr,
            &id,
            json!([{"op": "replace", "path": "/locations", "value": value}]),
        )
        .await;
        assert_eq!(r.status, 400, "{}", text(&r));
    }
    assert_eq!(show(addr, &id).await["locations"], locations);

    // Remove: the first goes, the last stays (403); a bad position is 400.
    let r = patch(addr, &id, json!([{"op": "remove", "path": "/locations/5"}])).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    let r = patch(addr, &id, json!([{"op": "remove", "path": "/locations/0"}])).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let image = show(addr, &id).await;
    assert_eq!(image["locations"], json!([locations[1]]));
    assert_eq!(image["direct_url"], second.as_str());
    let r = patch(addr, &id, json!([{"op": "remove", "path": "/locations/0"}])).await;
    assert_eq!(r.status, 403, "{}", text(&r));

    // Bad schemes, hosts the filter refuses and URLs with nothing there: 400.
    let id = queued(addr).await;
    for bad in [
        "gopher://info.cern.ch".to_owned(),
        format!("file://{}", server.dir.path().display()),
        "http://169.254.169.254/latest".to_owned(),
        format!("http://127.0.0.1:{}/empty", web.port() + 1),
    ] {
        let r = patch(
            addr,
            &id,
            json!([{"op": "add", "path": "/locations/-", "value": {"url": bad, "metadata": {}}}]),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", text(&r));
    }
    assert_eq!(show(addr, &id).await["status"], "queued");
    // Nor may the list be set empty, or the path go deeper.
    let r = patch(
        addr,
        &id,
        json!([{"op": "replace", "path": "/locations", "value": []}]),
    )
    .await;
    assert_eq!(r.status, 400, "{}", text(&r));
    let r = patch(
        addr,
        &id,
        json!([{"op": "replace", "path": "/locations/0", "value": {"url": url, "metadata": {}}}]),
    )
    .await;
    assert_eq!(r.status, 400, "{}", text(&r));

    // Validation data fills a queued image's digests; a different value later is 409.
    let valid = json!({"checksum": "1".repeat(32), "os_hash_algo": "sha512", "os_hash_value": "deadbeef".repeat(16)});
    let r = patch(
        addr,
        &id,
        json!([{"op": "add", "path": "/locations/-", "value": {"url": url, "metadata": {}, "validation_data": valid}}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let image = show(addr, &id).await;
    assert_eq!(image["status"], "active");
    assert_eq!(image["checksum"], "1".repeat(32));
    assert_eq!(image["os_hash_value"], "deadbeef".repeat(16));
    assert!(
        image["locations"][0].get("validation_data").is_none(),
        "{image}"
    );
    for (key, other) in [
        ("checksum", json!("2".repeat(32))),
        ("os_hash_value", json!("beefdead".repeat(16))),
        ("os_hash_algo", json!("sha256")),
    ] {
        let mut v = valid.clone();
        v[key] = other;
        let r = patch(
            addr,
            &id,
            json!([{"op": "add", "path": "/locations/-", "value": {"url": second, "metadata": {}, "validation_data": v}}]),
        )
        .await;
        assert_eq!(r.status, 409, "{key}: {}", text(&r));
    }
    let r = patch(
        addr,
        &id,
        json!([{"op": "add", "path": "/locations/-", "value": {"url": second, "metadata": {}, "validation_data": valid}}]),
    )
    .await;
    assert_eq!(r.status, 200, "the same values: {}", text(&r));
    assert_eq!(
        show(addr, &id).await["locations"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_show_multiple_locations_they_are_neither_shown_nor_changed() {
    let web = common::web::serve(data(1000, 1)).await;
    let server = start_with(web.port(), false).await;
    let id = queued(server.addr).await;
    assert!(show(server.addr, &id).await.get("locations").is_none());
    let url = format!("http://127.0.0.1:{}/image", web.port());
    let r = patch(
        server.addr,
        &id,
        json!([{"op": "add", "path": "/locations/-", "value": {"url": url, "metadata": {}}}]),
    )
    .await;
    assert_eq!(r.status, 403, "{}", text(&r));
    // The http store is listed read-only, and takes no uploads.
    let stores = call(server.addr, "GET", "/v2/info/stores", &[], Vec::new())
        .await
        .json();
    assert_eq!(
        stores["stores"][1],
        json!({"id": "web", "read-only": "true"})
    );
    let r = call(
        server.addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Image-Meta-Store", "web"),
        ],
        b"data".to_vec(),
    )
    .await;
    assert!(
        r.status >= 400 && r.status < 500,
        "{} {}",
        r.status,
        text(&r)
    );
}

async fn add_location(addr: SocketAddr, id: &str, body: Value) -> Reply {
    call(
        addr,
        "POST",
        &format!("/v2/images/{id}/locations"),
        &[("Content-Type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await
}

/// The image once its location_import tasks ended.
async fn settled(addr: SocketAddr, id: &str) -> (Value, Vec<Value>) {
    for _ in 0..200 {
        let tasks = call(
            addr,
            "GET",
            &format!("/v2/images/{id}/tasks"),
            &[],
            Vec::new(),
        )
        .await
        .json()["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !tasks.is_empty()
            && tasks
                .iter()
                .all(|t| t["status"] == "success" || t["status"] == "failure")
        {
            return (show(addr, id).await, tasks);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the tasks of {id} did not end");
}

fn hex_digest(algo: openssl::hash::MessageDigest, data: &[u8]) -> String {
    hex::encode(openssl::hash::hash(algo, data).expect("digest"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_location_api_hashes_and_checks_as_upstream() {
    use openssl::hash::MessageDigest;
    let bytes = data(200_000, 8);
    let web = common::web::serve(bytes.clone()).await;
    let server = start_with(web.port(), true).await;
    let addr = server.addr;
    let url = format!("http://127.0.0.1:{}/image", web.port());
    let md5 = hex_digest(MessageDigest::md5(), &bytes);
    let sha256 = hex_digest(MessageDigest::sha256(), &bytes);
    let sha512 = hex_digest(MessageDigest::sha512(), &bytes);

    let versions = call(addr, "GET", "/versions", &[], Vec::new()).await.json();
    assert_eq!(versions["versions"][0]["id"], "v2.17", "{versions}");

    // Bad validation data: 400 at once.
    let id = queued(addr).await;
    for bad in [
        json!({"os_hash_algo": "sha512", "os_hash_value": "dbc9e0f80d131e64b94913a7b40bb5"}),
        json!({"os_hash_value": sha512}),
        json!({"os_hash_algo": "sha123", "os_hash_value": sha512}),
        json!({"os_hash_algo": "sha512", "os_hash_value": sha256}),
    ] {
        let r = add_location(addr, &id, json!({"url": url, "validation_data": bad})).await;
        assert_eq!(r.status, 400, "{bad}: {}", text(&r));
    }
    // A URL the filter refuses: 400.
    let r = add_location(addr, &id, json!({"url": "http://169.254.169.254/x"})).await;
    assert_eq!(r.status, 400, "{}", text(&r));

    // Matching validation data: active with both digests, in store web.
    let r = add_location(
        addr,
        &id,
        json!({"url": url, "validation_data": {"os_hash_algo": "sha256", "os_hash_value": sha256}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let (image, tasks) = settled(addr, &id).await;
    assert_eq!(tasks[0]["status"], "success", "{tasks:?}");
    assert_eq!(tasks[0]["type"], "location_import");
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["checksum"], md5.as_str());
    assert_eq!(image["os_hash_algo"], "sha256");
    assert_eq!(image["os_hash_value"], sha256.as_str());
    assert_eq!(image["size"], bytes.len());
    assert_eq!(image["stores"], "web");
    assert!(image.get("os_glance_import_task").is_none(), "{image}");
    // Not queued any more: 409.
    let r = add_location(addr, &id, json!({"url": url})).await;
    assert_eq!(r.status, 409, "{}", text(&r));
    // Services (and callers without Keystone here) list the locations.
    let listed = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/locations"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        listed.json(),
        json!([{"url": url, "metadata": {"store": "web"}}])
    );

    // A hash that does not match: the task fails, the image is queued again, no digests.
    let id = queued(addr).await;
    let r = add_location(
        addr,
        &id,
        json!({"url": url, "validation_data": {"os_hash_algo": "sha512", "os_hash_value": "beefdead".repeat(16)}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let (image, tasks) = settled(addr, &id).await;
    assert_eq!(tasks[0]["status"], "failure", "{tasks:?}");
    assert_eq!(image["status"], "queued", "{image}");
    assert_eq!(image["checksum"], Value::Null);
    assert_eq!(image["os_hash_algo"], Value::Null);
    assert_eq!(image["stores"], "web");

    // No validation data: MD5 and SHA-512 computed.
    let id = queued(addr).await;
    assert_eq!(
        add_location(addr, &id, json!({"url": url})).await.status,
        202
    );
    let (image, _) = settled(addr, &id).await;
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["checksum"], md5.as_str());
    assert_eq!(image["os_hash_algo"], "sha512");
    assert_eq!(image["os_hash_value"], sha512.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_do_secure_hash_the_given_hash_is_taken() {
    let web = common::web::serve(data(5000, 3)).await;
    let dir_server = {
        let dir = Arc::new(tempfile::tempdir().expect("tmp"));
        let connection = common::db::fresh_catalogue(dir.path()).await;
        let text = conf_with_database(dir.path(), 0, None, "", &connection).replace(
            "enabled_backends = default_backend:file\n",
            "enabled_backends = default_backend:file, web:http\ndo_secure_hash = False\n",
        );
        let text = format!(
            "{text}[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports = {}\n",
            web.port()
        );
        start_conf(dir, connection, &text).await
    };
    let addr = dir_server.addr;
    let url = format!("http://127.0.0.1:{}/image", web.port());
    let given = "ab".repeat(32);
    let id = queued(addr).await;
    let r = add_location(
        addr,
        &id,
        json!({"url": url, "validation_data": {"os_hash_algo": "sha256", "os_hash_value": given}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let (image, tasks) = settled(addr, &id).await;
    assert_eq!(tasks[0]["status"], "success");
    assert_eq!(image["status"], "active");
    assert_eq!(image["checksum"], Value::Null);
    assert_eq!(image["os_hash_value"], given.as_str());
    assert_eq!(image["size"], 5000);
}
