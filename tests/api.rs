//! glance-api over real HTTP: the Image API, uploads and downloads, the transparent cache,
//! the cache API, start-up refusals, graceful shutdown, and the cache tools against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

mod common;

use common::server::{
    Reply, Server, active_image, call, conf_text, create, data, start, status, upload,
};

use glance_operator::api::settings::{ApiSettings, SettingsError};
use glance_operator::cache::ImageId;
use glance_operator::conf::Config;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha512;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cached_path(server: &Server, id: &str) -> PathBuf {
    server.dir.path().join("image-cache").join(id)
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_healthcheck_and_schemas() {
    let server = start(Some(1 << 30)).await;
    let root = call(server.addr, "GET", "/", &[], vec![]).await;
    assert_eq!(root.status, 300);
    let versions = call(server.addr, "GET", "/versions", &[], vec![]).await;
    assert_eq!(versions.status, 200);
    assert_eq!(root.json(), versions.json());
    let ids: Vec<String> = versions.json()["versions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["id"].as_str().unwrap_or("").to_owned())
        .collect();
    // 2.17 is the location API; 2.18 is not served.
    assert_eq!(ids.first().map(String::as_str), Some("v2.17"));
    assert!(ids.contains(&"v2.16".to_owned()) && !ids.contains(&"v2.18".to_owned()));
    assert_eq!(versions.json()["versions"][0]["status"], json!("CURRENT"));
    assert!(ids.contains(&"v2.14".to_owned()) && ids.contains(&"v2.0".to_owned()));
    assert_eq!(
        (call(server.addr, "GET", "/healthcheck", &[], vec![])
            .await
            .body),
        b"OK"
    );
    let schema = call(server.addr, "GET", "/v2/schemas/image", &[], vec![])
        .await
        .json();
    assert_eq!(schema["name"], json!("image"));
    assert_eq!(schema["additionalProperties"], json!({"type": "string"}));
    assert_eq!(
        call(server.addr, "GET", "/v2/schemas/images", &[], vec![])
            .await
            .json()["properties"]["images"]["items"],
        schema
    );

    let no_cache = start(None).await;
    let ids = call(no_cache.addr, "GET", "/versions", &[], vec![])
        .await
        .json()
        .to_string();
    assert!(!ids.contains("v2.14") && ids.contains("v2.13"), "{ids}");
    assert_eq!(
        status(no_cache.addr, "GET", "/v2/cache").await,
        404,
        "no cache, no cache API"
    );
    assert_eq!(status(no_cache.addr, "GET", "/v2/cached_images").await, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_metadata_lifecycle() {
    let server = start(None).await;
    let addr = server.addr;
    let id = "6f1c2d3e-0000-4000-8000-000000000001";
    let image = create(addr, json!({"id": id, "name": "cirros", "disk_format": "qcow2", "container_format": "bare", "tags": ["a", "b"], "os_distro": "cirros", "min_ram": 64})).await;
    assert_eq!(image["status"], json!("queued"));
    assert_eq!(image["os_distro"], json!("cirros"));
    assert_eq!(image["tags"], json!(["a", "b"]));
    assert_eq!(image["self"], json!(format!("/v2/images/{id}")));
    assert_eq!(image["checksum"], Value::Null);

    let post = |body: Value| {
        call(
            addr,
            "POST",
            "/v2/images",
            &[("Content-Type", "application/json")],
            body.to_string().into_bytes(),
        )
    };
    assert_eq!(post(json!({"id": id})).await.status, 409, "duplicate id");
    assert_eq!(post(json!({"disk_format": "floppy"})).await.status, 400);
    assert_eq!(
        post(json!({"status": "active"})).await.status,
        403,
        "read-only"
    );
    assert_eq!(post(json!({"min_ram": -1})).await.status, 400);
    let bad = call(
        addr,
        "POST",
        "/v2/images",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        b"[1]".to_vec(),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json()["code"],
        json!("400 Bad Request"),
        "errors are JSON for JSON clients"
    );
    assert_eq!(bad.json()["title"], json!("Bad Request"));
    let page = call(
        addr,
        "GET",
        "/v2/images/6f1c2d3e-0000-4000-8000-000000000099",
        &[],
        vec![],
    )
    .await;
    assert_eq!(
        (page.status, page.header("content-type")),
        (404, Some("text/html; charset=UTF-8"))
    );
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("<h1>404 Not Found</h1>")
            && html.contains("No image found with ID 6f1c2d3e-0000-4000-8000-000000000099<br />"),
        "{html}"
    );

    let patch = |ops: Value, ct: &'static str| {
        call(
            addr,
            "PATCH",
            &format!("/v2/images/{id}"),
            &[("Content-Type", ct)],
            ops.to_string().into_bytes(),
        )
    };
    const PATCH: &str = "application/openstack-images-v2.1-json-patch";
    let r = patch(json!([{"op": "replace", "path": "/name", "value": "cirros-0.6"}, {"op": "add", "path": "/hw_disk_bus", "value": "scsi"}, {"op": "remove", "path": "/os_distro"}]), PATCH).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let shown = call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
        .await
        .json();
    assert_eq!(
        (
            shown["name"].clone(),
            shown["hw_disk_bus"].clone(),
            shown.get("os_distro").cloned()
        ),
        (json!("cirros-0.6"), json!("scsi"), None)
    );
    assert_eq!(
        patch(
            json!([{"op": "replace", "path": "/checksum", "value": "x"}]),
            PATCH
        )
        .await
        .status,
        403
    );
    assert_eq!(
        patch(json!([{"op": "remove", "path": "/nope"}]), PATCH)
            .await
            .status,
        409
    );
    assert_eq!(
        patch(
            json!([{"op": "replace", "path": "/name", "value": "x"}]),
            "application/json"
        )
        .await
        .status,
        415
    );

    assert_eq!(
        status(addr, "PUT", &format!("/v2/images/{id}/tags/c")).await,
        204
    );
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{id}/tags/a")).await,
        204
    );
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{id}/tags/a")).await,
        404
    );
    assert_eq!(
        call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
            .await
            .json()["tags"],
        json!(["b", "c"])
    );

    assert_eq!(
        status(
            addr,
            "GET",
            "/v2/images/6f1c2d3e-0000-4000-8000-000000000099"
        )
        .await,
        404
    );
    assert_eq!(status(addr, "GET", "/v2/images/..%2F..%2Fetc").await, 404);
    assert_eq!(
        patch(
            json!([{"op": "replace", "path": "/protected", "value": true}]),
            PATCH
        )
        .await
        .status,
        200
    );
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{id}")).await,
        403,
        "protected"
    );
    assert_eq!(
        patch(
            json!([{"op": "replace", "path": "/protected", "value": false}]),
            PATCH
        )
        .await
        .status,
        200
    );
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{id}")).await,
        204
    );
    assert_eq!(status(addr, "GET", &format!("/v2/images/{id}")).await, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_sorts_and_pages() {
    let server = start(None).await;
    let addr = server.addr;
    for (n, name) in ["delta", "alpha", "echo", "charlie", "bravo"]
        .iter()
        .enumerate()
    {
        let tags = if n % 2 == 0 {
            json!(["even"])
        } else {
            json!([])
        };
        create(
            addr,
            json!({"name": name, "tags": tags, "os_type": if n < 2 { "linux" } else { "windows" }}),
        )
        .await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let get = |q: &str| call(addr, "GET", &format!("/v2/images{q}"), &[], vec![]);

    assert_eq!(
        names(&get("?sort=name:asc&limit=10").await.json()),
        vec!["alpha", "bravo", "charlie", "delta", "echo"]
    );
    assert_eq!(
        names(&get("?sort_key=name&sort_dir=desc&limit=2").await.json()),
        vec!["echo", "delta"]
    );
    assert_eq!(
        names(&get("?tag=even&sort=name:asc").await.json()),
        vec!["bravo", "delta", "echo"]
    );
    assert_eq!(
        names(&get("?os_type=linux&sort=name:asc").await.json()),
        vec!["alpha", "delta"]
    );
    assert_eq!(names(&get("?name=charlie").await.json()), vec!["charlie"]);
    assert_eq!(get("?sort_key=colour").await.status, 400);
    assert_eq!(
        get("?marker=6f1c2d3e-0000-4000-8000-000000000077")
            .await
            .status,
        400
    );

    // Default page size (limit_param_default = 3), following `next` to the end.
    let mut seen = Vec::new();
    let mut page = get("?sort=name:asc").await.json();
    loop {
        seen.extend(names(&page));
        let Some(next) = page.get("next").and_then(Value::as_str).map(str::to_owned) else {
            break;
        };
        assert!(next.starts_with("/v2/images?"), "{next}");
        page = call(addr, "GET", &next, &[], vec![]).await.json();
    }
    assert_eq!(seen, vec!["alpha", "bravo", "charlie", "delta", "echo"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_on_sizes_hashes_lists_and_times_as_upstream() {
    let server = start(None).await;
    let addr = server.addr;
    let small = active_image(addr, &data(1000, 1)).await;
    let large = active_image(addr, &data(3000, 2)).await;
    let ram = create(
        addr,
        json!({"name": "needs ram", "min_ram": 512, "visibility": "community"}),
    )
    .await;
    let ram = ram["id"].as_str().expect("id").to_owned();
    let ids = |r: &Reply| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let mut ids: Vec<String> = r.json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["id"].as_str().unwrap_or("").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<String>>()
    };
    let get = |q: String| {
        call(
            addr,
            "GET",
            &format!("/v2/images?limit=20&{q}"),
            &[],
            vec![],
        )
    };
    let shown = call(addr, "GET", &format!("/v2/images/{small}"), &[], vec![])
        .await
        .json();

    assert_eq!(ids(&get("size=1000".into()).await), vec![small.clone()]);
    assert_eq!(
        ids(&get("size_min=1001&size_max=5000".into()).await),
        vec![large.clone()]
    );
    assert_eq!(
        ids(&get("min_ram=512".into()).await),
        Vec::<String>::new(),
        "community is left out without a visibility"
    );
    assert_eq!(
        ids(&get("min_ram=512&visibility=all".into()).await),
        vec![ram.clone()]
    );
    assert_eq!(
        ids(&get("visibility=community".into()).await),
        vec![ram.clone()]
    );
    let checksum = shown["checksum"].as_str().expect("checksum");
    assert_eq!(
        ids(&get(format!("checksum={checksum}")).await),
        vec![small.clone()]
    );
    let hash = shown["os_hash_value"].as_str().expect("os_hash_value");
    assert_eq!(
        ids(&get(format!("os_hash_value={hash}")).await),
        vec![small.clone()]
    );
    assert_eq!(
        ids(&get(format!("id=in:{small},{large}")).await),
        sorted(vec![&small, &large])
    );
    assert_eq!(
        ids(&get("name=in:img,%22needs%20ram%22&visibility=all".into()).await).len(),
        3
    );
    let created = shown["created_at"].as_str().expect("created_at");
    assert!(ids(&get(format!("created_at=lt:{created}")).await).is_empty());
    assert!(ids(&get(format!("created_at=gte:{created}")).await).contains(&small));
    assert!(ids(&get(format!("created_at={created}")).await).contains(&small));
    assert!(!ids(&get(format!("created_at=neq:{created}")).await).contains(&small));
    assert!(ids(&get("updated_at=gt:2999-01-01T00:00:00Z".into()).await).is_empty());
    assert_eq!(
        ids(&get("updated_at=lt:2999-01-01T00:00:00%2B02:00".into()).await).len(),
        2
    );

    // What upstream refuses is refused, naming what is wrong; never an empty list.
    for (query, words) in [
        ("name=like:img", "unknown operator 'like'"),
        ("created_at=gt:yesterday", "\"created_at\""),
        ("created_at=about:2024-01-01T00:00:00Z", "unknown operator"),
        ("size_min=big", "non-numeric"),
        ("size=big", "'size'"),
        ("visibility=everyone", "everyone"),
        ("os_hidden=maybe", "os_hidden"),
        ("protected=yes", "protected"),
        ("sort_key=owner", "Invalid sort key: owner"),
        ("sort=name&sort_key=size", "cannot be combined"),
        ("sort_dir=sideways", "sideways"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("member_status=maybe", "maybe"),
        ("changes-since=2024-01-01", "changes-since"),
        ("id=in:%22a", "quote"),
    ] {
        let r = call(
            addr,
            "GET",
            &format!("/v2/images?{query}"),
            &[("Accept", "application/json")],
            vec![],
        )
        .await;
        assert_eq!(
            r.status,
            400,
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let message = r.json()["message"].as_str().unwrap_or("").to_owned();
        assert!(message.contains(words), "{query}: {message}");
    }

    // The links keep the query, and `next` adds the marker to it.
    let page = call(
        addr,
        "GET",
        "/v2/images?sort=size:asc&limit=1&visibility=all",
        &[],
        vec![],
    )
    .await
    .json();
    assert_eq!(
        page["first"],
        "/v2/images?sort=size%3Aasc&limit=1&visibility=all"
    );
    let next = page["next"].as_str().expect("next");
    assert!(
        next.starts_with("/v2/images?sort=size%3Aasc&limit=1&visibility=all&marker="),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_older_patch_media_type_and_upstreams_415() {
    let server = start(None).await;
    let addr = server.addr;
    let id = create(addr, json!({"name": "old", "color": "red"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patch = |content_type: &'static str, ops: Value| {
        call(
            addr,
            "PATCH",
            &format!("/v2/images/{id}"),
            &[
                ("Content-Type", content_type),
                ("Accept", "application/json"),
            ],
            ops.to_string().into_bytes(),
        )
    };
    const V20: &str = "application/openstack-images-v2.0-json-patch";
    let r = patch(V20, json!([{"replace": "/name", "value": "new"}, {"add": "/size_hint", "value": "1"}, {"remove": "/color"}])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let image = r.json();
    assert_eq!(
        (image["name"].as_str(), image["size_hint"].as_str()),
        (Some("new"), Some("1"))
    );
    assert!(image.get("color").is_none());
    // In that form an add of something already there is a conflict.
    let r = patch(V20, json!([{"add": "/size_hint", "value": "2"}])).await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("already present")
    );
    let r = patch(V20, json!([{"add": "/os_glance_foo", "value": "bar"}])).await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["message"],
        "Attribute 'os_glance_foo' is reserved."
    );
    for ops in [
        json!([{"add": "/a", "remove": "/b", "value": "1"}]),
        json!([{"path": "/a", "value": "1"}]),
        json!({"add": "/a"}),
        json!(["add"]),
    ] {
        let r = patch(V20, ops.clone()).await;
        assert_eq!(r.status, 400, "{ops}: {}", String::from_utf8_lossy(&r.body));
    }
    let r = patch("application/json-patch+json", json!([])).await;
    assert_eq!(r.status, 415);
    assert_eq!(
        r.header("accept-patch"),
        Some(
            "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch"
        )
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Image PATCH expects Content-Type one of")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_create_headers_405_and_the_v2_redirect() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let r = call(
        addr,
        "POST",
        "/v2/images",
        &[
            ("Content-Type", "application/json"),
            ("Host", "glance.example:9292"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("http://glance.example:9292/v2/images/{id}").as_str())
    );
    let request_id = r
        .header("x-openstack-request-id")
        .expect("request id")
        .to_owned();
    assert!(
        request_id.starts_with("req-") && request_id.len() == 40,
        "{request_id}"
    );
    // Every answer has one, errors and the download's too; a client's own is kept.
    for (method, path) in [
        ("GET", "/v2/images"),
        ("GET", "/v2/nothing"),
        ("PUT", "/v2/images"),
        ("GET", &format!("/v2/images/{id}/file") as &str),
    ] {
        let r = call(addr, method, path, &[], vec![]).await;
        assert!(
            r.header("x-openstack-request-id")
                .is_some_and(|v| v.starts_with("req-")),
            "{method} {path}"
        );
    }
    let r = call(
        addr,
        "GET",
        "/v2/images",
        &[("X-Openstack-Request-Id", "req-mine")],
        vec![],
    )
    .await;
    assert_eq!(r.header("x-openstack-request-id"), Some("req-mine"));
    let long = "x".repeat(65);
    let r = call(
        addr,
        "GET",
        "/v2/images",
        &[("X-Openstack-Request-Id", &long)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 431);
    // The router's 405 is upstream's, in JSON for a client that asks for it.
    let r = call(
        addr,
        "PUT",
        "/v2/images",
        &[("Accept", "application/json")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json()["message"],
        "The method PUT is not allowed for this resource."
    );
    assert!(
        r.header("allow")
            .is_some_and(|a| a.contains("GET") && a.contains("POST"))
    );
    let r = call(
        addr,
        "GET",
        "/v2",
        &[("Host", "glance.example:9292")],
        vec![],
    )
    .await;
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("http://glance.example:9292/v2/"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_hashes_and_download_with_range() {
    let server = start(None).await;
    let addr = server.addr;
    let bytes = data(3 << 20, 7);
    // As upstream: no data before both formats are set, and the image stays queued.
    let bare = create(addr, json!({"name": "no formats", "disk_format": "raw"})).await;
    let bare_id = bare["id"].as_str().expect("id");
    let refused = call(
        addr,
        "PUT",
        &format!("/v2/images/{bare_id}/file"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Accept", "application/json"),
        ],
        bytes.clone(),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        String::from_utf8_lossy(&refused.body)
            .contains("Property container_format must be set prior to saving data."),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let shown = call(addr, "GET", &format!("/v2/images/{bare_id}"), &[], vec![]).await;
    assert_eq!(shown.json()["status"], "queued");

    let image = create(
        addr,
        json!({"name": "data", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let id = image["id"].as_str().expect("id");
    assert_eq!(
        status(addr, "GET", &format!("/v2/images/{id}/file")).await,
        204,
        "no data yet"
    );
    assert_eq!(
        call(
            addr,
            "PUT",
            &format!("/v2/images/{id}/file"),
            &[("Content-Type", "text/plain")],
            b"x".to_vec()
        )
        .await
        .status,
        415
    );
    assert_eq!(upload(addr, id, &bytes).await, 204);
    assert_eq!(
        upload(addr, id, &bytes).await,
        409,
        "an active image takes no new data"
    );
    let shown = call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
        .await
        .json();
    assert_eq!(shown["status"], json!("active"));
    assert_eq!(shown["size"], json!(3 << 20));
    assert_eq!(shown["checksum"], json!(hex::encode(Md5::digest(&bytes))));
    assert_eq!(shown["os_hash_algo"], json!("sha512"));
    assert_eq!(
        shown["os_hash_value"],
        json!(hex::encode(Sha512::digest(&bytes)))
    );

    let full = call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    assert_eq!(full.status, 200);
    assert_eq!(
        full.header("content-md5"),
        Some(hex::encode(Md5::digest(&bytes)).as_str())
    );
    assert_eq!(full.header("content-length"), Some("3145728"));
    assert!(full.body == bytes, "byte-identical download");
    let part = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[("Range", "bytes=1000-1999")],
        vec![],
    )
    .await;
    assert_eq!(
        (part.status, part.header("content-range")),
        (206, Some("bytes 1000-1999/3145728"))
    );
    assert!(part.body == bytes[1000..2000]);
    let tail = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[("Range", "bytes=-10")],
        vec![],
    )
    .await;
    assert!(tail.status == 206 && tail.body == bytes[bytes.len() - 10..]);
    let bad = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[("Range", "bytes=9999999-")],
        vec![],
    )
    .await;
    assert_eq!(
        (bad.status, bad.header("content-range")),
        (416, Some("bytes */3145728"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_transparent_cache() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let bytes = data(2 << 20, 3);
    let id = active_image(addr, &bytes).await;
    let path = cached_path(&server, &id);

    // A Range request is served but never caches.
    let part = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[("Range", "bytes=0-99")],
        vec![],
    )
    .await;
    assert_eq!(part.status, 206);
    assert!(!path.exists(), "a partial read is never cached");
    // A full read fills the cache; the next one is served from it and counts a hit.
    assert!(
        call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![])
            .await
            .body
            == bytes
    );
    assert_eq!(std::fs::read(&path).expect("cached"), bytes);
    std::fs::write(&path, vec![b'X'; bytes.len()]).expect("mark the cached copy");
    let hit = call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    assert!(
        hit.body.iter().all(|b| *b == b'X'),
        "the second read came from the cache"
    );
    let range_hit = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[("Range", "bytes=5-9")],
        vec![],
    )
    .await;
    assert_eq!(
        range_hit.body, b"XXXXX",
        "ranges of a cached image come from the cache too"
    );
    std::fs::write(&path, &bytes).expect("restore");
    let listing = call(addr, "GET", "/v2/cache", &[], vec![]).await.json();
    assert_eq!(listing["cached_images"][0]["image_id"], json!(id));
    // The whole GET is a hit; the range is not, as upstream counts them.
    assert_eq!(listing["cached_images"][0]["hits"], json!(1));

    // Deleting the image removes its cached copy.
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{id}")).await,
        204
    );
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_reads_make_one_cache_write() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let bytes = data(8 << 20, 11);
    let id = active_image(addr, &bytes).await;
    let reads: Vec<_> = (0..8)
        .map(|_| call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]))
        .collect();
    for reply in futures::future::join_all(reads).await {
        assert_eq!(reply.status, 200);
        assert!(reply.body == bytes, "every client gets the right bytes");
    }
    let cache_dir = server.dir.path().join("image-cache");
    assert_eq!(std::fs::read(cache_dir.join(&id)).expect("cached"), bytes);
    let leftovers = |sub: &str| std::fs::read_dir(cache_dir.join(sub)).expect("dir").count();
    assert_eq!(
        (leftovers("incomplete"), leftovers("invalid")),
        (0, 0),
        "no second writer ever started"
    );
    let listing = server
        .state
        .cache
        .as_ref()
        .expect("cache")
        .cache
        .cached()
        .expect("list");
    assert_eq!(listing.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_stays_within_its_size() {
    let mib = 1u64 << 20;
    let server = start(Some(5 * mib / 2)).await;
    let addr = server.addr;
    let mut ids = Vec::new();
    for seed in 0..3 {
        let id = active_image(addr, &data(mib as usize, seed)).await;
        assert_eq!(
            status(addr, "GET", &format!("/v2/images/{id}/file")).await,
            200
        );
        ids.push(id);
    }
    let cache = &server.state.cache.as_ref().expect("cache").cache;
    assert!(cache.total_size().expect("size") <= 5 * mib / 2);
    assert!(
        !cache.is_cached(&ImageId::parse(&ids[0]).expect("id")),
        "the least recently used went first"
    );
    assert!(cache.is_cached(&ImageId::parse(&ids[2]).expect("id")));
    // An image larger than the whole cache is served but not cached.
    let big = active_image(addr, &data(3 * mib as usize, 9)).await;
    assert_eq!(
        call(addr, "GET", &format!("/v2/images/{big}/file"), &[], vec![])
            .await
            .body
            .len(),
        3 * mib as usize
    );
    assert!(!cache.is_cached(&ImageId::parse(&big).expect("id")));
}

#[tokio::test(flavor = "multi_thread")]
async fn queueing_prefetches_in_the_background() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let bytes = data(1 << 20, 5);
    let id = active_image(addr, &bytes).await;
    let queued = create(addr, json!({"name": "empty"})).await;
    assert_eq!(
        status(
            addr,
            "PUT",
            &format!("/v2/cache/{}", queued["id"].as_str().expect("id"))
        )
        .await,
        400,
        "not active"
    );
    assert_eq!(status(addr, "PUT", &format!("/v2/cache/{id}")).await, 202);
    let path = cached_path(&server, &id);
    for _ in 0..100 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read(&path).expect("prefetched"), bytes);
    assert_eq!(
        call(addr, "GET", "/v2/cache", &[], vec![]).await.json()["queued_images"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_detail_and_usage_as_upstream_answers_them() {
    let server = start(None).await;
    let r = call(server.addr, "GET", "/v2/info/stores/detail", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let images = server.dir.path().join("images");
    assert_eq!(
        r.json(),
        json!({"stores": [{
            "id": "default_backend",
            "default": "true",
            "type": "file",
            "properties": {
                "data_dir": images.display().to_string(),
                "chunk_size": 65536,
                "thin_provisioning": false,
            },
            "weight": 0,
        }]})
    );
    let r = call(server.addr, "GET", "/v2/info/usage", &[], vec![]).await;
    assert_eq!((r.status, r.json()), (200, json!({"usage": {}})));
    // Keystone's unified limits are not enforced here: asking for them is refused.
    let dir = tempfile::tempdir().expect("tmp");
    let text = conf_text(dir.path(), 9292, None, "").replacen(
        "[DEFAULT]\n",
        "[DEFAULT]\nuse_keystone_limits = True\n",
        1,
    );
    let err = ApiSettings::from_config(&Config::from_str("t.conf", &text).expect("conf"))
        .expect_err("unified limits");
    assert!(err.to_string().contains("use_keystone_limits"), "{err}");
}

#[test]
fn keystone_flavors_need_keystone_authtoken_and_odd_flavors_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = |flavor: &str, extra: &str| {
        let text = format!("{}{extra}", conf_text(dir.path(), 9292, Some(1), flavor));
        ApiSettings::from_config(&Config::from_str("t.conf", &text).expect("conf"))
    };
    let authtoken = "\n[keystone_authtoken]\nauth_type = password\nauth_url = http://127.0.0.1:5000/v3\nusername = glance\npassword = pw\nuser_domain_name = Default\nproject_name = service\nproject_domain_name = Default\n";
    for (flavor, caching, management) in [
        ("keystone", false, false),
        ("keystone+caching", true, false),
        ("keystone+cachemanagement", true, true),
    ] {
        let s = settings(flavor, authtoken).expect(flavor);
        assert_eq!(
            s.keystone.as_ref().map(|k| k.auth_url.as_str()),
            Some("http://127.0.0.1:5000/v3")
        );
        assert_eq!(
            (s.cache.is_some(), s.cache_management),
            (caching, management),
            "{flavor}"
        );
        let err = settings(flavor, "").expect_err("no [keystone_authtoken]");
        assert!(err.to_string().contains("keystone_authtoken"), "{err}");
    }
    assert!(
        settings("cachemanagement", "")
            .expect("plain")
            .keystone
            .is_none()
    );
    for flavor in [
        "keystone+",
        "keystonecaching",
        "keystone+keystone",
        "noauth",
    ] {
        let err = settings(flavor, authtoken).expect_err(flavor);
        assert!(matches!(err, SettingsError::Flavor(_)), "{flavor}: {err}");
        assert!(err.to_string().contains(flavor), "{err}");
    }
    let conf = dir.path().join("glance-api.conf");
    std::fs::write(&conf, conf_text(dir.path(), 9292, Some(1), "keystone")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_glance-api"))
        .arg("--config-file")
        .arg(&conf)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keystone_authtoken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a full download on a raw connection and returns it with the first bytes read.
async fn start_download(addr: SocketAddr, id: &str, extra: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes(),
        )
        .await
        .expect("request");
    let mut received = vec![0u8; 4096];
    let n = stream.read(&mut received).await.expect("first bytes");
    received.truncate(n);
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    (stream, received)
}

/// Reads one response (Content-Length framed) from `received` and then `stream`; the
/// body is short when the connection closes early. Consumes it from `received`.
async fn read_response(stream: &mut TcpStream, received: &mut Vec<u8>) -> Reply {
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut more = vec![0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut more))
            .await
            .expect("a head within 10 s")
            .expect("head");
        assert!(
            n > 0,
            "closed before a head: {}",
            String::from_utf8_lossy(received)
        );
        received.extend_from_slice(&more[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("length"));
    while received.len() < head_end + len {
        let mut more = vec![0u8; 1 << 20];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut more));
        match read.await.expect("body bytes within 10 s") {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&more[..n]),
        }
    }
    let end = received.len().min(head_end + len);
    let body = received[head_end..end].to_vec();
    received.drain(..end);
    Reply {
        status,
        headers,
        body,
    }
}

/// True when the server has closed `stream` (no more bytes, end of file).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// How many times the server logged that it sent image `id` with sendfile.
fn sendfile_count(id: &str) -> usize {
    common::server::log()
        .lines()
        .filter(|l| l.contains("sent with sendfile") && l.contains(id))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_copies_go_out_with_sendfile_between_requests_for_hyper() {
    common::server::log();
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let bytes = data(3 << 20, 5);
    let id = active_image(addr, &bytes).await;
    assert_eq!(
        call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![])
            .await
            .body,
        bytes
    );
    assert_eq!(
        sendfile_count(&id),
        1,
        "a miss follows its fill of the cache with sendfile too"
    );

    // Pipelined in one write: cached reads for the connection loop, and between them
    // requests for hyper (one with a body), after each of which the connection comes back.
    let file = format!("GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\n\r\n");
    let ranged =
        format!("GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n");
    let show =
        format!("GET /v2/images/{id} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n");
    let json = r#"{"name": "second", "disk_format": "raw", "container_format": "bare"}"#;
    let post = format!(
        "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("{file}{ranged}{show}{post}{file}").as_bytes())
        .await
        .expect("requests");
    let mut received = Vec::new();
    let first = read_response(&mut stream, &mut received).await;
    let range = read_response(&mut stream, &mut received).await;
    let metadata = read_response(&mut stream, &mut received).await;
    let created = read_response(&mut stream, &mut received).await;
    let again = read_response(&mut stream, &mut received).await;
    assert_eq!(
        [
            first.status,
            range.status,
            metadata.status,
            created.status,
            again.status
        ],
        [200, 206, 200, 201, 200]
    );
    assert!(first.body == bytes && again.body == bytes);
    assert_eq!(range.body, &bytes[10..20]);
    assert_eq!(
        range.header("content-range"),
        Some(format!("bytes 10-19/{}", bytes.len()).as_str())
    );
    assert_eq!(metadata.json()["id"], json!(id));
    assert_eq!(created.json()["name"], json!("second"));
    assert_eq!(
        sendfile_count(&id),
        4,
        "every cached read, before and after hyper's turns"
    );

    // An upload with a Content-Length body larger than any read: hyper gets exactly its
    // bytes from the socket, and the cached read behind it is the loop's again.
    let third = create(
        addr,
        json!({"name": "third", "disk_format": "raw", "container_format": "bare"}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let upload_bytes = data(3 << 20, 6);
    let mut request = format!(
        "PUT /v2/images/{third}/file HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        upload_bytes.len()
    )
    .into_bytes();
    request.extend_from_slice(&upload_bytes);
    request.extend_from_slice(file.as_bytes());
    stream.write_all(&request).await.expect("requests");
    assert_eq!(read_response(&mut stream, &mut received).await.status, 204);
    assert!(read_response(&mut stream, &mut received).await.body == bytes);
    assert_eq!(sendfile_count(&id), 5);
    let stored = call(addr, "GET", &format!("/v2/images/{third}"), &[], vec![])
        .await
        .json();
    assert_eq!(
        stored["checksum"],
        json!(hex::encode(Md5::digest(&upload_bytes)))
    );

    // A chunked upload is a body whose end only hyper sees: it keeps the connection, and
    // serves the cached read that follows itself.
    let second = created.json()["id"].as_str().expect("id").to_owned();
    stream
        .write_all(
            format!(
                "PUT /v2/images/{second}/file HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{file}"
            )
            .as_bytes(),
        )
        .await
        .expect("requests");
    assert_eq!(read_response(&mut stream, &mut received).await.status, 204);
    let by_hyper = read_response(&mut stream, &mut received).await;
    assert!(by_hyper.body == bytes);
    assert_eq!(sendfile_count(&id), 5, "served by hyper");
    // On that connection, hyper also serves a miss, following its fill as a stream.
    stream
        .write_all(format!("GET /v2/images/{second}/file HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let miss = read_response(&mut stream, &mut received).await;
    assert_eq!((miss.status, miss.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(sendfile_count(&second), 0, "a miss served by hyper");
    // Each answer has a request id of its own, whichever transport sent it.
    for reply in [&first, &by_hyper] {
        let id = reply.header("x-openstack-request-id").unwrap_or_default();
        assert!(id.starts_with("req-") && id.len() == 40, "{id:?}");
    }
    assert_ne!(
        first.header("x-openstack-request-id"),
        by_hyper.header("x-openstack-request-id")
    );
    let without_date = |r: &Reply| {
        let mut h: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "date" && k != "x-openstack-request-id")
            .cloned()
            .collect();
        h.sort();
        h
    };
    assert_eq!(
        without_date(&first),
        without_date(&by_hyper),
        "both transports answer alike"
    );
    assert!(first.header("date").is_some() && first.header("content-md5").is_some());

    // Connection: close is honoured.
    let (mut stream, mut received) = start_download(addr, &id, "Connection: close\r\n").await;
    let reply = read_response(&mut stream, &mut received).await;
    assert!(reply.body == bytes);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(closed(&mut stream).await);
    assert_eq!(sendfile_count(&id), 6);

    // Every hit was counted, whichever transport served it; the range is no hit.
    let listing = call(addr, "GET", "/v2/cache", &[], vec![]).await.json();
    let hits = listing["cached_images"]
        .as_array()
        .expect("list")
        .iter()
        .find(|entry| entry["image_id"] == json!(id))
        .map(|entry| entry["hits"].clone());
    assert_eq!(hits, Some(json!(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_gets_every_byte_and_keeps_its_connection() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let bytes = data(16 << 20, 17);
    let id = active_image(addr, &bytes).await;
    // A first (uncached) read is hyper's, and its answer outgrows the socket buffers while
    // the client dawdles; the metadata read behind it needs the connection afterwards.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!(
                "GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/images/{id} HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("requests");
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    while received.len() < bytes.len() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("bytes within 10 s")
            .expect("read");
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let download = read_response(&mut stream, &mut received).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body.len(), bytes.len(), "every byte");
    assert!(download.body == bytes);
    let metadata = read_response(&mut stream, &mut received).await;
    assert_eq!(metadata.status, 200, "the connection went on");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_cached_copy_ends_the_connection_not_the_server() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let bytes = data(2 << 20, 9);
    let id = active_image(addr, &bytes).await;
    call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    let path = cached_path(&server, &id);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("truncate the cached copy");
    // Sent by the connection loop, then (after a hand-off) by hyper: each promises the
    // image's size, sends what there is, and closes the connection.
    let show = format!("GET /v2/images/{id} HTTP/1.1\r\nHost: x\r\n\r\n");
    for before in ["", show.as_str()] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                format!("{before}GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            )
            .await
            .expect("request");
        let mut received = Vec::new();
        if !before.is_empty() {
            assert_eq!(read_response(&mut stream, &mut received).await.status, 200);
        }
        let reply = read_response(&mut stream, &mut received).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-length"),
            Some((2u64 << 20).to_string().as_str())
        );
        assert!(
            reply.body == bytes[..1 << 20],
            "the bytes there were, {} of them",
            reply.body.len()
        );
        assert!(
            closed(&mut stream).await,
            "the connection ends where the file did"
        );
    }
    assert_eq!(
        status(addr, "GET", "/healthcheck").await,
        200,
        "the server goes on"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_downloads_in_flight_finish_and_closes_idle_connections() {
    for cache in [None, Some(1u64 << 30)] {
        let mut server = start(cache).await;
        let addr = server.addr;
        let bytes = data(16 << 20, 13);
        let id = active_image(addr, &bytes).await;
        let mut idle = None;
        if cache.is_some() {
            // Cache the image, so the download below goes out with sendfile; keep this
            // connection open and idle.
            let (mut stream, mut received) = start_download(addr, &id, "").await;
            assert!(read_response(&mut stream, &mut received).await.body == bytes);
            idle = Some(stream);
        }
        // Start the download and read its first bytes, so it is surely in flight...
        let (mut stream, mut received) = start_download(addr, &id, "").await;
        // ...then ask the server to stop, and read the rest.
        let _ = server.stop.take().expect("stop").send(());
        let reply = read_response(&mut stream, &mut received).await;
        assert!(
            reply.body == bytes,
            "the download in flight completed ({cache:?})"
        );
        assert!(closed(&mut stream).await, "and then the connection closed");
        if let Some(mut idle) = idle {
            assert!(
                closed(&mut idle).await,
                "an idle connection is closed at once"
            );
        }
        tokio::time::timeout(Duration::from_secs(10), &mut server.task)
            .await
            .expect("server stopped")
            .expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_manage_and_prefetcher_work_against_glance_api() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let bytes = data(1 << 20, 21);
    let id = active_image(addr, &bytes).await;
    let port = addr.port().to_string();
    let manage = move |args: Vec<String>| {
        let port = port.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_glance-cache-manage"))
                .args(["--host", "127.0.0.1", "--port", &port, "-f"])
                .args(&args)
                .output()
                .expect("run");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
    };
    assert_eq!(
        manage(vec!["list-cached".into()]).await.expect("join"),
        (true, "No cached images.\n".into())
    );
    call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    let (ok, out) = manage(vec!["list-cached".into()]).await.expect("join");
    assert!(
        ok && out.starts_with("Found 1 cached images...") && out.contains(&id),
        "{out}"
    );
    assert!(
        manage(vec!["delete-cached-image".into(), id.clone()])
            .await
            .expect("join")
            .0
    );
    assert!(!cached_path(&server, &id).exists());

    // The prefetcher fills a second cache (another node's) from this glance-api.
    let other = tempfile::tempdir().expect("tmp");
    let conf = other.path().join("c.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}/cache\n",
            other.path().display()
        ),
    )
    .expect("write");
    let other_cache = glance_operator::cache::Cache::open(
        &other.path().join("cache"),
        glance_operator::cache::DriverKind::Sqlite,
        "cache.db",
    )
    .expect("cache");
    let image = ImageId::parse(&id).expect("id");
    assert!(other_cache.queue(&image).expect("queue"));
    let url = format!("http://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_glance-cache-prefetcher"))
            .arg("--config-file")
            .arg(&conf)
            .args(["--api-url", &url])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(other.path().join("cache").join(&id)).expect("prefetched"),
        bytes
    );
    assert!(other_cache.queued().expect("queue").is_empty());
}
