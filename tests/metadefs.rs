//! The metadata definitions API over real HTTP, on the catalogue of
//! GLANCE_TEST_DATABASE: namespaces with their resource type associations, objects,
//! properties and tags, as Tempest's metadefs tests and the dashboard use them.

mod common;

use std::net::SocketAddr;

use common::server::{Reply, call, start};
use serde_json::{Value, json};

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Reply {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    call(
        addr,
        method,
        path,
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        bytes,
    )
    .await
}

async fn ok(addr: SocketAddr, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
    let r = send(addr, method, path, body).await;
    assert_eq!(r.status, status, "{method} {path}: {}", text(&r));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_and_their_definitions_as_upstream_keeps_them() {
    let server = start(None).await;
    let addr = server.addr;
    let ns = "OS::Compute::Test";
    let base = format!("/v2/metadefs/namespaces/{ns}");
    let made = ok(
        addr,
        "POST",
        "/v2/metadefs/namespaces",
        Some(json!({
            "namespace": ns, "display_name": "Test", "description": "Tempest",
            "visibility": "public", "protected": true,
            "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"}],
            "properties": {"cpu": {"title": "CPU", "type": "integer", "minimum": 1}},
            "objects": [{"name": "Watchdog", "required": ["action"], "properties": {"action": {"title": "Action", "type": "string"}}}],
            "tags": [{"name": "fast"}],
        })),
        201,
    )
    .await;
    assert_eq!(made["namespace"], ns);
    assert_eq!(made["self"], base.as_str());
    assert_eq!(made["properties"]["cpu"]["type"], "integer");
    assert_eq!(made["objects"][0]["name"], "Watchdog");
    assert_eq!(made["resource_type_associations"][0]["prefix"], "hw_");
    assert_eq!(made["tags"][0]["name"], "fast");
    assert_eq!(
        send(
            addr,
            "POST",
            "/v2/metadefs/namespaces",
            Some(json!({"namespace": ns}))
        )
        .await
        .status,
        409,
        "a second namespace of that name"
    );
    let types = ok(addr, "GET", "/v2/metadefs/resource_types", None, 200).await;
    assert!(
        types["resource_types"]
            .as_array()
            .expect("list")
            .iter()
            .any(|t| t["name"] == "OS::Glance::Image")
    );
    let listed = ok(
        addr,
        "GET",
        "/v2/metadefs/namespaces?resource_types=OS::Glance::Image",
        None,
        200,
    )
    .await;
    assert_eq!(listed["namespaces"].as_array().expect("list").len(), 1);
    assert_eq!(listed["namespaces"][0]["namespace"], ns);
    let none = ok(
        addr,
        "GET",
        "/v2/metadefs/namespaces?resource_types=OS::Nova::Flavor",
        None,
        200,
    )
    .await;
    assert!(none["namespaces"].as_array().expect("list").is_empty());

    // Protected: not deleted until it is not.
    assert_eq!(send(addr, "DELETE", &base, None).await.status, 403);
    let updated = ok(addr, "PUT", &base, Some(json!({"namespace": ns, "visibility": "private", "protected": false, "description": "Tempest"})), 200).await;
    assert_eq!(
        (
            updated["visibility"].as_str(),
            updated["protected"].as_bool()
        ),
        (Some("private"), Some(false))
    );

    // Objects.
    let object = ok(
        addr,
        "POST",
        &format!("{base}/objects"),
        Some(json!({"name": "Serial"})),
        201,
    )
    .await;
    assert_eq!(object["self"], format!("{base}/objects/Serial").as_str());
    let renamed = ok(
        addr,
        "PUT",
        &format!("{base}/objects/Serial"),
        Some(json!({"name": "Serial2", "description": "d"})),
        200,
    )
    .await;
    assert_eq!(renamed["name"], "Serial2");
    assert_eq!(
        ok(addr, "GET", &format!("{base}/objects/Serial2"), None, 200).await["description"],
        "d"
    );
    ok(
        addr,
        "DELETE",
        &format!("{base}/objects/Serial2"),
        None,
        204,
    )
    .await;
    let objects = ok(addr, "GET", &format!("{base}/objects"), None, 200).await;
    assert_eq!(objects["objects"].as_array().expect("objects").len(), 1);
    assert_eq!(
        send(addr, "GET", &format!("{base}/objects/Serial2"), None)
            .await
            .status,
        404
    );

    // Properties: title and type are required.
    assert_eq!(
        send(
            addr,
            "POST",
            &format!("{base}/properties"),
            Some(json!({"name": "x", "type": "string"}))
        )
        .await
        .status,
        400
    );
    let kinds = json!(["kvm", "qemu"]);
    let property = ok(
        addr,
        "POST",
        &format!("{base}/properties"),
        Some(json!({"name": "hypervisor", "title": "Hypervisor", "type": "string", "enum": kinds})),
        201,
    )
    .await;
    assert_eq!(
        (property["name"].as_str(), property["title"].as_str()),
        (Some("hypervisor"), Some("Hypervisor"))
    );
    let shown = ok(
        addr,
        "GET",
        &format!("{base}/properties/hypervisor"),
        None,
        200,
    )
    .await;
    assert_eq!(shown["enum"], kinds);
    let changed = ok(
        addr,
        "PUT",
        &format!("{base}/properties/hypervisor"),
        Some(json!({"name": "hypervisor", "title": "Other", "type": "string", "enum": kinds})),
        200,
    )
    .await;
    assert_eq!(changed["title"], "Other");
    let all = ok(addr, "GET", &format!("{base}/properties"), None, 200).await;
    assert_eq!(all["properties"]["hypervisor"]["title"], "Other");
    // As upstream, a property made or changed through the API lists its name too.
    assert_eq!(all["properties"]["hypervisor"]["name"], "hypervisor");
    ok(
        addr,
        "DELETE",
        &format!("{base}/properties/hypervisor"),
        None,
        204,
    )
    .await;
    assert!(
        ok(addr, "GET", &format!("{base}/properties"), None, 200).await["properties"]
            .get("hypervisor")
            .is_none()
    );

    // Tags: several at once replace the namespace's; one by its path; renamed; deleted.
    let tags = ok(
        addr,
        "POST",
        &format!("{base}/tags"),
        Some(json!({"tags": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})),
        201,
    )
    .await;
    assert_eq!(tags["tags"].as_array().expect("tags").len(), 3);
    let listed = ok(addr, "GET", &format!("{base}/tags"), None, 200).await;
    let names: Vec<&str> = listed["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "the earlier tag was replaced");
    ok(addr, "POST", &format!("{base}/tags/d"), None, 201).await;
    assert_eq!(
        ok(addr, "GET", &format!("{base}/tags/d"), None, 200).await["name"],
        "d"
    );
    assert_eq!(
        ok(
            addr,
            "PUT",
            &format!("{base}/tags/d"),
            Some(json!({"name": "e"})),
            200
        )
        .await["name"],
        "e"
    );
    ok(addr, "DELETE", &format!("{base}/tags/e"), None, 204).await;
    assert_eq!(
        send(addr, "GET", &format!("{base}/tags/e"), None)
            .await
            .status,
        404
    );
    ok(addr, "DELETE", &format!("{base}/tags"), None, 204).await;
    assert!(
        ok(addr, "GET", &format!("{base}/tags"), None, 200).await["tags"]
            .as_array()
            .expect("tags")
            .is_empty()
    );

    // Resource type associations.
    let made = ok(
        addr,
        "POST",
        &format!("{base}/resource_types"),
        Some(json!({"name": "OS::Nova::Flavor"})),
        201,
    )
    .await;
    assert_eq!(made["name"], "OS::Nova::Flavor");
    assert_eq!(
        send(
            addr,
            "POST",
            &format!("{base}/resource_types"),
            Some(json!({"name": "OS::Nova::Flavor"}))
        )
        .await
        .status,
        409
    );
    let associations = ok(addr, "GET", &format!("{base}/resource_types"), None, 200).await;
    assert_eq!(
        associations["resource_type_associations"]
            .as_array()
            .expect("list")
            .len(),
        2
    );
    ok(
        addr,
        "DELETE",
        &format!("{base}/resource_types/OS::Nova::Flavor"),
        None,
        204,
    )
    .await;
    assert_eq!(
        send(
            addr,
            "DELETE",
            &format!("{base}/resource_types/OS::Nova::Flavor"),
            None
        )
        .await
        .status,
        404
    );

    // The namespace goes with everything in it.
    ok(addr, "DELETE", &base, None, 204).await;
    assert_eq!(send(addr, "GET", &base, None).await.status, 404);
    assert_eq!(
        send(addr, "GET", &format!("{base}/objects"), None)
            .await
            .status,
        404
    );
    for (body, words) in [
        (json!({}), "'namespace' is a required property"),
        (
            json!({"namespace": "x", "visibility": "everyone"}),
            "everyone",
        ),
        (json!({"namespace": "x".repeat(81)}), "namespace"),
    ] {
        let r = send(addr, "POST", "/v2/metadefs/namespaces", Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", text(&r));
        assert!(text(&r).contains(words), "{body}: {}", text(&r));
    }
}
