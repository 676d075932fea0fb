//! glance-api with the `keystone+cachemanagement` flavor behind a mock Keystone: tokens,
//! image ownership and visibility, the members API, the cache API's policies, the
//! sendfile path for cached downloads, revoked tokens and Keystone outages.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::keystone::{HOUR, Mock};
use common::server::{Reply, Server, call, conf_with_database, data, start, start_conf};
use glance_operator::db::ListQuery;
use glance_operator::keystone::OUTAGE_HOLD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Project A's id.
const PROJECT_A: &str = "0a1b2c3d4e5f40718293a4b5c6d7e8f9";
/// Project B's id.
const PROJECT_B: &str = "f9e8d7c6b5a440392817f6e5d4c3b2a1";
/// A project without any token.
const PROJECT_C: &str = "c0c1c2c3c4c54c6c7c8c9cacbcccdcec";

/// admin, member and reader in project A.
const ADMIN_A: &str = "admin-a";
/// member and reader in project A.
const MEMBER_A: &str = "member-a";
/// member and reader in project B.
const MEMBER_B: &str = "member-b";
/// reader only in project B.
const READER_B: &str = "reader-b";
/// A token Keystone does not know.
const BOGUS: &str = "bogus-token";

const WWW_AUTHENTICATE_URI: &str = "https://keystone.example.com/v3";

/// glance-api behind a mock Keystone that knows the four tokens above.
struct Glance {
    mock: Mock,
    server: Server,
}

impl Glance {
    async fn start() -> Glance {
        Glance::with("").await
    }

    /// With more configuration text (`extra`) after `[keystone_authtoken]`.
    async fn with(extra: &str) -> Glance {
        let mock = Mock::start().await;
        let all = vec!["admin", "member", "reader"];
        mock.add_user_in(ADMIN_A, "user-admin-a", PROJECT_A, all, HOUR);
        let members = vec!["member", "reader"];
        mock.add_user_in(MEMBER_A, "user-member-a", PROJECT_A, members.clone(), HOUR);
        mock.add_user_in(MEMBER_B, "user-member-b", PROJECT_B, members, HOUR);
        mock.add_user_in(READER_B, "user-reader-b", PROJECT_B, vec!["reader"], HOUR);
        let dir = Arc::new(tempfile::tempdir().expect("tmp"));
        let connection = common::db::fresh_catalogue(dir.path()).await;
        let mut text = conf_with_database(
            dir.path(),
            0,
            Some(1 << 30),
            "keystone+cachemanagement",
            &connection,
        );
        text.push_str(&mock.authtoken_section(
            WWW_AUTHENTICATE_URI,
            "token_cache_time = 2\nhttp_request_max_retries = 0\n",
        ));
        text.push_str(extra);
        let server = start_conf(dir, connection, &text).await;
        Glance { mock, server }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// A request asking for JSON, with `token` and a body of `content_type`.
    async fn send(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut headers = vec![("Accept", "application/json")];
        if let Some(token) = token {
            headers.push(("X-Auth-Token", token));
        }
        if !body.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        call(self.addr(), method, path, &headers, body).await
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        self.send(Some(token), "GET", path, "", vec![]).await
    }

    async fn delete(&self, token: &str, path: &str) -> Reply {
        self.send(Some(token), "DELETE", path, "", vec![]).await
    }

    /// A request with a JSON body (none for `Value::Null`).
    async fn json(&self, token: &str, method: &str, path: &str, body: Value) -> Reply {
        let bytes = match body {
            Value::Null => vec![],
            body => body.to_string().into_bytes(),
        };
        self.send(Some(token), method, path, "application/json", bytes)
            .await
    }

    async fn patch(&self, token: &str, id: &str, ops: Value) -> Reply {
        let path = format!("/v2/images/{id}");
        let content_type = "application/openstack-images-v2.1-json-patch";
        self.send(
            Some(token),
            "PATCH",
            &path,
            content_type,
            ops.to_string().into_bytes(),
        )
        .await
    }

    /// An image created by `token` (201 asserted), with `body`'s fields besides a name
    /// and raw/bare formats.
    async fn create(&self, token: &str, name: &str, body: Value) -> Value {
        let mut fields = json!({"name": name, "disk_format": "raw", "container_format": "bare"});
        for (k, v) in body.as_object().expect("an object") {
            fields[k] = v.clone();
        }
        let r = self.json(token, "POST", "/v2/images", fields).await;
        assert_eq!(r.status, 201, "{}", text(&r));
        r.json()
    }

    /// The id of an image created by `token`.
    async fn create_id(&self, token: &str, name: &str, body: Value) -> String {
        id_of(&self.create(token, name, body).await)
    }

    async fn upload(&self, token: &str, id: &str, bytes: &[u8]) -> Reply {
        let path = format!("/v2/images/{id}/file");
        self.send(
            Some(token),
            "PUT",
            &path,
            "application/octet-stream",
            bytes.to_vec(),
        )
        .await
    }

    /// The ids `token` lists with the query `query` (200 asserted).
    async fn list(&self, token: &str, query: &str) -> Vec<String> {
        let r = self.get(token, &format!("/v2/images{query}")).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        r.json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(id_of)
            .collect()
    }

    /// Whether `token` may GET image `id`: its status.
    async fn show(&self, token: &str, id: &str) -> u16 {
        self.get(token, &format!("/v2/images/{id}")).await.status
    }

    /// The ids of the images the cache holds, as the admin lists them.
    async fn cached(&self) -> Vec<String> {
        let r = self.get(ADMIN_A, "/v2/cache").await;
        assert_eq!(r.status, 200, "{}", text(&r));
        r.json()["cached_images"]
            .as_array()
            .expect("cached_images")
            .iter()
            .map(|e| e["image_id"].as_str().expect("image_id").to_owned())
            .collect()
    }
}

fn id_of(image: &Value) -> String {
    image["id"].as_str().expect("id").to_owned()
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// (status, message) of an error answer.
fn refused(r: &Reply) -> (u16, String) {
    let message = r.json()["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {}", text(r)))
        .to_owned();
    (r.status, message)
}

fn not_authorized(action: &str) -> (u16, String) {
    (
        403,
        format!("You are not authorized to complete {action} action."),
    )
}

/// The keystonemiddleware answer to a request without a valid token.
fn assert_unauthorized(r: &Reply) {
    assert_eq!(r.status, 401, "{}", text(r));
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(format!("Keystone uri=\"{WWW_AUTHENTICATE_URI}\"").as_str())
    );
    assert_eq!(
        r.json(),
        json!({"error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_401_but_versions_and_health_are_open() {
    let g = Glance::start().await;
    let addr = g.addr();
    // Without Accept too: keystonemiddleware's body is always JSON.
    let bare = call(addr, "GET", "/v2/images", &[], vec![]).await;
    assert_unauthorized(&bare);
    assert_unauthorized(&g.send(None, "GET", "/v2/images", "", vec![]).await);
    assert_unauthorized(&g.get(BOGUS, "/v2/images").await);
    assert_unauthorized(&g.get("", "/v2/images").await);
    assert_unauthorized(&g.get(BOGUS, "/v2/schemas/image").await);
    let post = g
        .json(BOGUS, "POST", "/v2/images", json!({"name": "x"}))
        .await;
    assert_unauthorized(&post);
    assert_unauthorized(&g.send(None, "GET", "/v2/cache", "", vec![]).await);
    assert_unauthorized(&g.send(None, "GET", "/v2/no-such-route", "", vec![]).await);
    // Nothing was created by the refused POST.
    assert!(g.list(ADMIN_A, "").await.is_empty());

    assert_eq!(call(addr, "GET", "/", &[], vec![]).await.status, 300);
    assert_eq!(
        call(addr, "GET", "/versions", &[], vec![]).await.status,
        200
    );
    assert_eq!(
        call(addr, "GET", "/healthcheck", &[], vec![]).await.status,
        200
    );
    // A bogus token on the open paths is not looked at either.
    assert_eq!(g.get(BOGUS, "/versions").await.status, 200);
    assert_eq!(g.get(MEMBER_A, "/v2/images").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_belong_to_the_callers_project_and_are_seen_by_visibility() {
    let g = Glance::start().await;
    let shared = g.create(MEMBER_A, "shared-a", json!({})).await;
    assert_eq!(shared["owner"], PROJECT_A);
    assert_eq!(shared["visibility"], "shared");
    let shared = id_of(&shared);
    let private = g
        .create_id(MEMBER_A, "private-a", json!({"visibility": "private"}))
        .await;
    let community = g
        .create_id(MEMBER_A, "community-a", json!({"visibility": "community"}))
        .await;
    let private_b = g
        .create_id(MEMBER_B, "private-b", json!({"visibility": "private"}))
        .await;

    // The owner's project sees its own images, community ones included.
    let mut a = g.list(MEMBER_A, "").await;
    a.sort();
    let mut own = vec![shared.clone(), private.clone(), community.clone()];
    own.sort();
    assert_eq!(a, own);
    for id in [&shared, &private, &community] {
        assert_eq!(g.show(MEMBER_A, id).await, 200);
    }
    assert_eq!(g.show(MEMBER_A, &private_b).await, 404);

    // Project B: not the shared (no membership) nor the private image.
    let r = g.get(MEMBER_B, &format!("/v2/images/{shared}")).await;
    assert_eq!(
        refused(&r),
        (404, format!("No image found with ID {shared}"))
    );
    assert_eq!(g.show(MEMBER_B, &private).await, 404);
    assert_eq!(g.list(MEMBER_B, "").await, vec![private_b.clone()]);
    for query in [
        "?visibility=private",
        "?visibility=shared",
        "?visibility=all",
    ] {
        let listed = g.list(MEMBER_B, query).await;
        assert!(
            !listed.contains(&shared) && !listed.contains(&private),
            "{query}: {listed:?}"
        );
    }
    // A community image: B may get it, and lists it only when asking for community ones.
    assert_eq!(g.show(MEMBER_B, &community).await, 200);
    assert_eq!(g.show(READER_B, &community).await, 200);
    assert!(!g.list(MEMBER_B, "").await.contains(&community));
    assert_eq!(
        g.list(MEMBER_B, "?visibility=community").await,
        vec![community.clone()]
    );
    assert!(
        g.list(MEMBER_B, "?visibility=all")
            .await
            .contains(&community)
    );

    // An administrator sees every image of every project.
    let admin = g.list(ADMIN_A, "?visibility=all").await;
    for id in [&shared, &private, &community, &private_b] {
        assert!(admin.contains(id), "{id} not in {admin:?}");
        assert_eq!(g.show(ADMIN_A, id).await, 200);
    }
    assert!(g.list(ADMIN_A, "").await.contains(&private_b));

    // Public images are for administrators to make.
    let r = g
        .json(
            MEMBER_A,
            "POST",
            "/v2/images",
            json!({"name": "public-a", "visibility": "public"}),
        )
        .await;
    assert_eq!(refused(&r), not_authorized("publicize_image"));
    let public = g
        .create_id(ADMIN_A, "public", json!({"visibility": "public"}))
        .await;
    assert_eq!(g.show(READER_B, &public).await, 200);
    assert!(g.list(MEMBER_B, "").await.contains(&public));
    let r = g
        .patch(
            MEMBER_A,
            &shared,
            json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
        )
        .await;
    assert_eq!(refused(&r), not_authorized("publicize_image"));

    // No creating for another project, and no giving an image away, unless admin.
    let r = g
        .json(
            MEMBER_A,
            "POST",
            "/v2/images",
            json!({"name": "for-b", "owner": PROJECT_B}),
        )
        .await;
    assert_eq!(
        refused(&r),
        (
            403,
            format!("You are not permitted to create images owned by '{PROJECT_B}'")
        )
    );
    let r = g
        .json(READER_B, "POST", "/v2/images", json!({"name": "by-reader"}))
        .await;
    assert_eq!(refused(&r), not_authorized("add_image"));
    let give = json!([{"op": "replace", "path": "/owner", "value": PROJECT_B}]);
    let r = g.patch(MEMBER_A, &private, give.clone()).await;
    assert_eq!(
        refused(&r),
        (403, "Owner can't be updated by non admin.".to_owned())
    );
    let r = g.patch(ADMIN_A, &private, give).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["owner"], PROJECT_B);
    assert_eq!(g.show(MEMBER_B, &private).await, 200);
    assert_eq!(g.show(MEMBER_A, &private).await, 404);

    // B may see A's community image but not change or delete it; what it cannot see is 404.
    let rename = json!([{"op": "replace", "path": "/name", "value": "taken"}]);
    let r = g.patch(MEMBER_B, &community, rename.clone()).await;
    assert_eq!(refused(&r), not_authorized("modify_image"));
    let r = g.delete(MEMBER_B, &format!("/v2/images/{community}")).await;
    assert_eq!(refused(&r), not_authorized("delete_image"));
    let r = g
        .send(
            Some(MEMBER_B),
            "PUT",
            &format!("/v2/images/{community}/tags/mine"),
            "",
            vec![],
        )
        .await;
    assert_eq!(refused(&r), not_authorized("modify_image"));
    assert_eq!(g.patch(MEMBER_B, &shared, rename.clone()).await.status, 404);
    assert_eq!(
        g.delete(MEMBER_B, &format!("/v2/images/{shared}"))
            .await
            .status,
        404
    );
    let unchanged = g.get(MEMBER_A, &format!("/v2/images/{community}")).await;
    assert_eq!(unchanged.json()["name"], "community-a");
    assert_eq!(unchanged.json()["tags"], json!([]));
    // Its owner may.
    assert_eq!(g.patch(MEMBER_A, &community, rename).await.status, 200);
    let r = g.delete(MEMBER_A, &format!("/v2/images/{community}")).await;
    assert_eq!(r.status, 204, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_by_the_owner_and_accept_for_themselves() {
    let g = Glance::start().await;
    let id = g.create_id(MEMBER_A, "shared-a", json!({})).await;
    let members = format!("/v2/images/{id}/members");
    let member_b = format!("{members}/{PROJECT_B}");

    let r = g
        .json(MEMBER_A, "POST", &members, json!({"member": PROJECT_B}))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let row = r.json();
    assert_eq!(row["member_id"], PROJECT_B);
    assert_eq!(row["image_id"], id.as_str());
    assert_eq!(row["status"], "pending");
    assert_eq!(row["schema"], "/v2/schemas/member");
    let r = g
        .json(MEMBER_A, "POST", &members, json!({"member": PROJECT_B}))
        .await;
    assert_eq!(
        refused(&r),
        (
            409,
            format!("Member {PROJECT_B} is duplicated for image {id}")
        )
    );
    let r = g
        .json(MEMBER_A, "POST", &members, json!({"member": PROJECT_C}))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));

    // Pending: B may get the image, lists it only when asking for pending ones.
    assert_eq!(g.show(MEMBER_B, &id).await, 200);
    assert!(!g.list(MEMBER_B, "").await.contains(&id));
    assert_eq!(
        g.list(MEMBER_B, "?member_status=pending").await,
        vec![id.clone()]
    );
    assert!(g.list(MEMBER_B, "?member_status=all").await.contains(&id));
    assert!(
        !g.list(MEMBER_B, "?member_status=accepted")
            .await
            .contains(&id)
    );

    // Only the owner adds members; only the member itself (with role member) answers.
    let r = g
        .json(
            MEMBER_B,
            "POST",
            &members,
            json!({"member": "someone-else"}),
        )
        .await;
    assert_eq!(refused(&r), not_authorized("add_member"));
    let accept = json!({"status": "accepted"});
    let r = g.json(MEMBER_A, "PUT", &member_b, accept.clone()).await;
    assert_eq!(refused(&r), not_authorized("modify_member"));
    let r = g.json(READER_B, "PUT", &member_b, accept.clone()).await;
    assert_eq!(refused(&r), not_authorized("modify_member"));
    let r = g
        .json(MEMBER_B, "PUT", &member_b, json!({"status": "maybe"}))
        .await;
    assert_eq!(r.status, 400, "{}", text(&r));
    let r = g
        .json(
            MEMBER_B,
            "PUT",
            &format!("{members}/{PROJECT_C}"),
            accept.clone(),
        )
        .await;
    assert_eq!(
        refused(&r),
        (
            404,
            format!("{PROJECT_C} not found in the member list of the image {id}.")
        )
    );
    assert_eq!(g.get(MEMBER_B, &member_b).await.json()["status"], "pending");
    let r = g.json(MEMBER_B, "PUT", &member_b, accept).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["status"], "accepted");
    assert_eq!(g.list(MEMBER_B, "").await, vec![id.clone()]);
    assert_eq!(g.list(READER_B, "").await, vec![id.clone()]);

    // An accepted member still may not change or delete the image.
    let rename = json!([{"op": "replace", "path": "/name", "value": "taken"}]);
    let r = g.patch(MEMBER_B, &id, rename).await;
    assert_eq!(refused(&r), not_authorized("modify_image"));
    let r = g.delete(MEMBER_B, &format!("/v2/images/{id}")).await;
    assert_eq!(refused(&r), not_authorized("delete_image"));

    // The owner sees every member, a member only itself.
    let listed = |r: Reply| -> Vec<(String, String)> {
        assert_eq!(r.status, 200, "{}", text(&r));
        let body = r.json();
        assert_eq!(body["schema"], "/v2/schemas/members");
        body["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["member_id"].as_str().expect("member_id").to_owned(),
                    m["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect()
    };
    let b_row = (PROJECT_B.to_owned(), "accepted".to_owned());
    let c_row = (PROJECT_C.to_owned(), "pending".to_owned());
    assert_eq!(
        listed(g.get(MEMBER_A, &members).await),
        vec![b_row.clone(), c_row.clone()]
    );
    assert_eq!(
        listed(g.get(ADMIN_A, &members).await),
        vec![b_row.clone(), c_row]
    );
    assert_eq!(listed(g.get(MEMBER_B, &members).await), vec![b_row.clone()]);
    assert_eq!(listed(g.get(READER_B, &members).await), vec![b_row]);
    let r = g.get(MEMBER_B, &format!("{members}/{PROJECT_C}")).await;
    assert_eq!(r.status, 404, "{}", text(&r));

    // Only the owner removes members; then the image is gone for B.
    let r = g.delete(MEMBER_B, &member_b).await;
    assert_eq!(refused(&r), not_authorized("delete_member"));
    assert_eq!(g.delete(MEMBER_A, &member_b).await.status, 204);
    assert_eq!(g.show(MEMBER_B, &id).await, 404);
    assert!(g.list(MEMBER_B, "?member_status=all").await.is_empty());
    let r = g.get(MEMBER_B, &members).await;
    assert_eq!(refused(&r), (404, format!("Image {id} not found.")));

    // Only shared images have members.
    let private = g
        .create_id(MEMBER_A, "private-a", json!({"visibility": "private"}))
        .await;
    let r = g
        .json(
            MEMBER_A,
            "POST",
            &format!("/v2/images/{private}/members"),
            json!({"member": PROJECT_B}),
        )
        .await;
    assert_eq!(
        refused(&r),
        (
            403,
            format!("Not allowed to create members for image {private}.")
        )
    );

    for schema in ["/v2/schemas/member", "/v2/schemas/members"] {
        let r = g.get(MEMBER_B, schema).await;
        assert_eq!(r.status, 200, "{schema}: {}", text(&r));
        assert!(r.json()["properties"].is_object(), "{schema}: {}", text(&r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_api_is_for_administrators() {
    let g = Glance::start().await;
    let id = g
        .create_id(MEMBER_A, "private-a", json!({"visibility": "private"}))
        .await;
    assert_eq!(g.upload(MEMBER_A, &id, &data(4096, 1)).await.status, 204);
    let one = format!("/v2/cache/{id}");

    let r = g.get(MEMBER_A, "/v2/cache").await;
    assert_eq!(refused(&r), not_authorized("cache_list"));
    let r = g.get(ADMIN_A, "/v2/cache").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({"cached_images": [], "queued_images": []}));

    let r = g.send(Some(MEMBER_A), "PUT", &one, "", vec![]).await;
    assert_eq!(refused(&r), not_authorized("cache_image"));
    // An image the caller cannot see is not found, before any rule.
    let r = g.send(Some(MEMBER_B), "PUT", &one, "", vec![]).await;
    assert_eq!(refused(&r), (404, format!("Image {id} not found.")));
    let r = g.send(Some(ADMIN_A), "PUT", &one, "", vec![]).await;
    assert_eq!(r.status, 202, "{}", text(&r));

    for (path, rule) in [
        ("/v2/cache/prune", "cache_prune"),
        ("/v2/cache/clean", "cache_clean"),
    ] {
        let r = g.send(Some(MEMBER_A), "POST", path, "", vec![]).await;
        assert_eq!(refused(&r), not_authorized(rule), "{path}");
        let r = g.send(Some(ADMIN_A), "POST", path, "", vec![]).await;
        assert_eq!(r.status, 200, "{path}: {}", text(&r));
    }
    let r = g.delete(MEMBER_A, &one).await;
    assert_eq!(refused(&r), not_authorized("cache_delete"));
    let r = g.delete(MEMBER_A, "/v2/cache").await;
    assert_eq!(refused(&r), not_authorized("cache_delete"));
    let r = g.get(MEMBER_A, "/v2/cached_images").await;
    assert_eq!(refused(&r), not_authorized("manage_image_cache"));
    let r = g.get(READER_B, "/v2/cache").await;
    assert_eq!(refused(&r), not_authorized("cache_list"));
    assert_eq!(g.delete(ADMIN_A, &one).await.status, 204);
}

/// A download over a connection of its own (`Connection: close`): status and body.
async fn raw_download(addr: SocketAddr, id: &str, token: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {}", String::from_utf8_lossy(&received)))
        + 4;
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let length: usize = head
        .split("\r\n")
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("length"))
        .expect("content-length");
    let body = received[head_end..].to_vec();
    assert_eq!(body.len(), length, "{head}");
    (status, body)
}

/// How many times the server logged that it sent image `id` with sendfile.
fn sendfile_count(id: &str) -> usize {
    common::server::log()
        .lines()
        .filter(|l| l.contains("sent with sendfile") && l.contains(id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_cached_ones_too_need_the_right_token() {
    let g = Glance::start().await;
    let bytes = data(3 << 20, 7);
    let id = g
        .create_id(MEMBER_A, "private-a", json!({"visibility": "private"}))
        .await;
    let r = g.upload(MEMBER_B, &id, &bytes).await;
    assert_eq!(refused(&r), (404, format!("No image found with ID {id}")));
    let r = g.upload(READER_B, &id, &bytes).await;
    assert_eq!(r.status, 404, "{}", text(&r));
    let r = g.upload(MEMBER_A, &id, &bytes).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    let file = format!("/v2/images/{id}/file");
    let r = g.get(MEMBER_B, &file).await;
    assert_eq!(refused(&r), (404, format!("No image found with ID {id}")));

    let r = g
        .send(Some(ADMIN_A), "PUT", &format!("/v2/cache/{id}"), "", vec![])
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !g.cached().await.contains(&id) {
        assert!(Instant::now() < deadline, "not cached within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sendfile_count(&id), 0);

    let (status, body) = raw_download(g.addr(), &id, BOGUS).await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let (status, body) = raw_download(g.addr(), &id, MEMBER_B).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert_eq!(sendfile_count(&id), 0, "no refused download is sent");
    let (status, body) = raw_download(g.addr(), &id, MEMBER_A).await;
    assert_eq!(status, 200);
    assert!(body == bytes, "the image's bytes");
    assert_eq!(sendfile_count(&id), 1, "sent from the cached copy");
    let r = g.get(MEMBER_B, &file).await;
    assert_eq!(r.status, 404, "{}", text(&r));
    let r = g.get(ADMIN_A, &file).await;
    assert_eq!(r.status, 200);
    assert!(r.body == bytes);

    // Project B may download A's community image, but only with the member role.
    let community = g
        .create_id(MEMBER_A, "community-a", json!({"visibility": "community"}))
        .await;
    let small = data(1000, 9);
    assert_eq!(g.upload(MEMBER_A, &community, &small).await.status, 204);
    let file = format!("/v2/images/{community}/file");
    let r = g.get(READER_B, &file).await;
    assert_eq!(refused(&r), not_authorized("download_image"));
    let r = g.get(MEMBER_B, &file).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.body == small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_stop_working_and_an_unreachable_keystone_is_503() {
    let g = Glance::start().await;
    let mock = &g.mock;
    // Revoked: still accepted from the cache until token_cache_time (2 s) has passed.
    mock.add_user_in(
        "short-a",
        "user-short",
        PROJECT_A,
        vec!["member", "reader"],
        HOUR,
    );
    assert_eq!(g.get("short-a", "/v2/images").await.status, 200);
    let asked = mock.counts();
    mock.revoke("short-a");
    assert_eq!(g.get("short-a", "/v2/images").await.status, 200);
    assert_eq!(mock.counts(), asked, "answered from the cache");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_unauthorized(&g.get("short-a", "/v2/images").await);

    // Keystone answering 500: a token never seen is 503, never let through; one
    // validated a moment ago still works.
    assert_eq!(g.get(MEMBER_A, "/v2/images").await.status, 200);
    mock.fail_with(Some(500));
    let r = g.get(MEMBER_B, "/v2/images").await;
    assert_eq!(r.status, 503, "{}", text(&r));
    let r = g
        .json(
            MEMBER_B,
            "POST",
            "/v2/images",
            json!({"name": "during-outage"}),
        )
        .await;
    assert_eq!(r.status, 503, "{}", text(&r));
    assert_eq!(g.get(BOGUS, "/v2/images").await.status, 503);
    assert_eq!(g.get(MEMBER_A, "/v2/images").await.status, 200);

    // Keystone gone: the same (once the last outage is no longer held).
    mock.fail_with(None);
    tokio::time::sleep(OUTAGE_HOLD + Duration::from_millis(100)).await;
    assert_eq!(g.get(ADMIN_A, "/v2/images").await.status, 200);
    mock.stop();
    assert_eq!(g.get(ADMIN_A, "/v2/images").await.status, 200);
    let r = g.get(READER_B, "/v2/images").await;
    assert_eq!(r.status, 503, "{}", text(&r));
    let r = g
        .json(
            READER_B,
            "POST",
            "/v2/images",
            json!({"name": "during-outage"}),
        )
        .await;
    assert_eq!(r.status, 503, "{}", text(&r));
    let (images, _) = g
        .server
        .state
        .db
        .list(&ListQuery::new(100))
        .await
        .expect("list");
    assert!(images.is_empty(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_overrides_only_the_rules_it_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "\"cache_list\": \"role:member\"\n").expect("policy.yaml");
    let g = Glance::with(&format!(
        "[oslo_policy]\npolicy_file = {}\n",
        policy.display()
    ))
    .await;
    let id = g.create_id(MEMBER_A, "shared-a", json!({})).await;
    assert_eq!(g.upload(MEMBER_A, &id, &data(1024, 3)).await.status, 204);
    let r = g.get(MEMBER_A, "/v2/cache").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = g.get(READER_B, "/v2/cache").await;
    assert_eq!(refused(&r), not_authorized("cache_list"));
    let r = g
        .send(
            Some(MEMBER_A),
            "PUT",
            &format!("/v2/cache/{id}"),
            "",
            vec![],
        )
        .await;
    assert_eq!(refused(&r), not_authorized("cache_image"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keystone_everyone_is_served_and_images_have_no_owner() {
    let server = start(Some(1 << 30)).await;
    let addr = server.addr;
    let json_headers = [("Content-Type", "application/json")];
    let mut ids = Vec::new();
    for visibility in ["private", "shared", "community", "public"] {
        let body = json!({"name": visibility, "visibility": visibility});
        let r = call(
            addr,
            "POST",
            "/v2/images",
            &json_headers,
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", text(&r));
        assert_eq!(r.json()["owner"], Value::Null);
        ids.push(id_of(&r.json()));
    }
    // A token is not looked at.
    let with_token = [("X-Auth-Token", BOGUS)];
    let listed = |r: Reply| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", text(&r));
        let mut ids: Vec<String> = r.json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(id_of)
            .collect();
        ids.sort();
        ids
    };
    let mut all = ids.clone();
    all.sort();
    for headers in [&[][..], &with_token[..]] {
        let every = call(addr, "GET", "/v2/images?visibility=all", headers, vec![]).await;
        assert_eq!(listed(every), all);
        let default = listed(call(addr, "GET", "/v2/images", headers, vec![]).await);
        for (visibility, id) in ["private", "shared", "community", "public"]
            .iter()
            .zip(&ids)
        {
            if *visibility != "community" {
                assert!(default.contains(id), "{visibility} image not listed");
            }
        }
        let r = call(addr, "GET", "/v2/cache", headers, vec![]).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        let r = call(
            addr,
            "GET",
            &format!("/v2/images/{}", ids[0]),
            headers,
            vec![],
        )
        .await;
        assert_eq!(r.status, 200, "{}", text(&r));
    }
    let r = call(
        addr,
        "DELETE",
        &format!("/v2/images/{}", ids[0]),
        &with_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, 204, "{}", text(&r));
}

#[tokio::test]
async fn no_image_without_an_owner_no_write_without_a_change_and_no_project_no_access() {
    let g = Glance::start().await;
    // An explicit null owner is another project's image to a member.
    let r = g
        .json(
            MEMBER_A,
            "POST",
            "/v2/images",
            json!({"name": "nobody", "owner": null}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert!(
        text(&r).contains("You are not permitted to create images owned by 'None'"),
        "{}",
        text(&r)
    );

    // An empty patch of a visible image of another project writes nothing.
    let id = g
        .create_id(MEMBER_A, "community", json!({"visibility": "community"}))
        .await;
    let before = g.get(MEMBER_A, &format!("/v2/images/{id}")).await.json();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = g.patch(MEMBER_B, &id, json!([])).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let after = g.get(MEMBER_A, &format!("/v2/images/{id}")).await.json();
    assert_eq!(before["updated_at"], after["updated_at"]);
    let r = g
        .patch(
            MEMBER_B,
            &id,
            json!([{"op": "replace", "path": "/name", "value": "mine"}]),
        )
        .await;
    assert_eq!(r.status, 403, "{}", text(&r));

    // A token scoped to a domain, not a project, is refused by every rule, even an admin's.
    g.mock.add_domain_user(
        "domain-admin",
        "user-domain-admin",
        vec!["admin", "member", "reader"],
        HOUR,
    );
    // (A refused get_image is 404, as upstream answers it.)
    for (path, status) in [
        ("/v2/images".to_owned(), 403),
        ("/v2/cache".to_owned(), 403),
        (format!("/v2/images/{id}"), 404),
    ] {
        let r = g.get("domain-admin", &path).await;
        assert_eq!(r.status, status, "GET {path}: {}", text(&r));
    }
    let r = g
        .json(
            "domain-admin",
            "POST",
            "/v2/images",
            json!({"name": "scoped"}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", text(&r));
}

#[tokio::test]
async fn a_property_never_stands_in_for_a_core_attribute_and_policies_see_them_all() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "\"download_image\": \"role:admin or not 'aki':%(container_format)s\"\n",
    )
    .expect("policy");
    let g = Glance::with(&format!(
        "[oslo_policy]\npolicy_file = {}\n",
        policy.display()
    ))
    .await;
    // The owner cannot pose as the member through a property named member_id.
    let id = g.create_id(MEMBER_A, "shared", json!({})).await;
    let r = g
        .json(
            MEMBER_A,
            "POST",
            &format!("/v2/images/{id}/members"),
            json!({"member": PROJECT_B}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = g
        .patch(
            MEMBER_A,
            &id,
            json!([{"op": "add", "path": "/member_id", "value": PROJECT_A}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = g
        .json(
            MEMBER_A,
            "PUT",
            &format!("/v2/images/{id}/members/{PROJECT_B}"),
            json!({"status": "accepted"}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert!(!g.list(MEMBER_B, "").await.contains(&id));

    // A rule on a core attribute sees it on the download path too.
    let bytes = data(4096, 3);
    for (container, status) in [("aki", 403), ("bare", 200)] {
        let id = g
            .create_id(
                MEMBER_A,
                container,
                json!({"disk_format": container.replace("bare", "raw"), "container_format": container}),
            )
            .await;
        let r = g.upload(MEMBER_A, &id, &bytes).await;
        assert_eq!(r.status, 204, "{}", text(&r));
        let r = g.get(MEMBER_A, &format!("/v2/images/{id}/file")).await;
        assert_eq!(r.status, status, "{container}: {}", text(&r));
    }
}

#[tokio::test]
async fn a_member_removed_and_offered_again_at_once_is_one_row_revived() {
    let g = Glance::start().await;
    let id = g.create_id(MEMBER_A, "shared", json!({})).await;
    let members = format!("/v2/images/{id}/members");
    for _ in 0..3 {
        let r = g
            .json(MEMBER_A, "POST", &members, json!({"member": PROJECT_B}))
            .await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_eq!(r.json()["status"], "pending");
        let r = g.delete(MEMBER_A, &format!("{members}/{PROJECT_B}")).await;
        assert_eq!(r.status, 204, "{}", text(&r));
    }
    let r = g
        .json(MEMBER_A, "POST", &members, json!({"member": PROJECT_B}))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = g.get(MEMBER_A, &members).await;
    assert_eq!(r.json()["members"].as_array().map(Vec::len), Some(1));
    let r = g.delete(MEMBER_A, &format!("/v2/images/{id}")).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    // Bad bodies are 400 before anything else, as upstream's deserializer answers.
    let r = g
        .json(MEMBER_B, "POST", &members, json!({"nothing": 1}))
        .await;
    assert_eq!(
        refused(&r),
        (400, "Member to be added not specified".to_owned())
    );
    let r = g
        .send(
            Some(MEMBER_B),
            "POST",
            &members,
            "application/json",
            b"{".to_vec(),
        )
        .await;
    assert_eq!(
        refused(&r),
        (400, "Malformed JSON in request body.".to_owned())
    );
    // Every visibility and member_status value of a listing is checked.
    let r = g
        .get(MEMBER_A, "/v2/images?visibility=public&visibility=bogus")
        .await;
    assert_eq!(
        refused(&r),
        (400, "Invalid visibility value: bogus".to_owned())
    );
    let r = g.get(MEMBER_A, "/v2/images?member_status=maybe").await;
    assert_eq!(refused(&r), (400, "Invalid status: maybe".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivated_images_are_downloaded_by_administrators_only_until_reactivated() {
    let g = Glance::start().await;
    let bytes = data(2 << 20, 11);
    let id = g
        .create_id(
            MEMBER_A,
            "deactivate-me",
            json!({"visibility": "community"}),
        )
        .await;
    let action = |token: &'static str, verb: &'static str| {
        let path = format!("/v2/images/{id}/actions/{verb}");
        let g = &g;
        async move { g.send(Some(token), "POST", &path, "", vec![]).await }
    };
    // Only an active image can be deactivated.
    let r = action(ADMIN_A, "deactivate").await;
    assert_eq!(
        refused(&r),
        (
            403,
            "Not allowed to deactivate image in status 'queued'".to_owned()
        )
    );
    assert_eq!(g.upload(MEMBER_A, &id, &bytes).await.status, 204);
    // Upstream's default rule: an administrator, or a member of the image's project.
    let r = action(MEMBER_B, "deactivate").await;
    assert_eq!(refused(&r), not_authorized("deactivate"));
    let r = action(MEMBER_A, "deactivate").await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_eq!(
        g.get(ADMIN_A, &format!("/v2/images/{id}")).await.json()["status"],
        "deactivated"
    );
    // Again: nothing to do, and no error.
    assert_eq!(action(ADMIN_A, "deactivate").await.status, 204);

    let file = format!("/v2/images/{id}/file");
    let forbidden = (
        403,
        "The requested image has been deactivated. Image data download is forbidden.".to_owned(),
    );
    for token in [MEMBER_A, MEMBER_B] {
        assert_eq!(refused(&g.get(token, &file).await), forbidden, "{token}");
        let (status, _) = raw_download(g.addr(), &id, token).await;
        assert_eq!(status, 403, "{token} on the connection loop");
    }
    let r = g.get(ADMIN_A, &file).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(r.body == bytes);
    // That download cached it: the cached copy is refused alike.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !g.cached().await.contains(&id) {
        assert!(Instant::now() < deadline, "not cached within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sendfile_count(&id);
    let (status, _) = raw_download(g.addr(), &id, MEMBER_B).await;
    assert_eq!(status, 403, "a cached copy on the connection loop");
    assert_eq!(sendfile_count(&id), sent, "nothing sent");

    let r = action(MEMBER_B, "reactivate").await;
    assert_eq!(refused(&r), not_authorized("reactivate"));
    assert_eq!(action(ADMIN_A, "reactivate").await.status, 204);
    assert_eq!(
        action(MEMBER_A, "reactivate").await.status,
        204,
        "already active"
    );
    let (status, body) = raw_download(g.addr(), &id, MEMBER_B).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    assert!(
        sendfile_count(&id) > sent,
        "active again, sent from the cached copy"
    );
    let missing = "6f1c2d3e-0000-4000-8000-000000000077";
    let r = g
        .send(
            Some(ADMIN_A),
            "POST",
            &format!("/v2/images/{missing}/actions/deactivate"),
            "",
            vec![],
        )
        .await;
    assert_eq!(r.status, 404, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_details_are_for_administrators() {
    let g = Glance::start().await;
    let r = g.get(MEMBER_A, "/v2/info/stores/detail").await;
    assert_eq!(refused(&r), not_authorized("stores_info_detail"));
    let r = g.get(ADMIN_A, "/v2/info/stores/detail").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["stores"][0]["type"], "file");
    assert_eq!(g.get(MEMBER_A, "/v2/info/stores").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_project_stages_imports_or_copies_into_another_projects_image() {
    let g = Glance::start().await;
    let id = g
        .create_id(
            MEMBER_A,
            "theirs",
            json!({"visibility": "community", "disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    let stage = |token: &'static str| {
        let path = format!("/v2/images/{id}/stage");
        let g = &g;
        async move {
            g.send(
                Some(token),
                "PUT",
                &path,
                "application/octet-stream",
                b"data".to_vec(),
            )
            .await
        }
    };
    let import = |token: &'static str, body: Value| {
        let path = format!("/v2/images/{id}/import");
        let g = &g;
        async move { g.json(token, "POST", &path, body).await }
    };
    assert_eq!(
        refused(&stage(MEMBER_B).await),
        not_authorized("modify_image")
    );
    let direct = json!({"method": {"name": "glance-direct"}});
    assert_eq!(stage(MEMBER_A).await.status, 204);
    assert_eq!(
        refused(&import(MEMBER_B, direct.clone()).await),
        not_authorized("modify_image")
    );
    let r = import(MEMBER_A, direct).await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let deadline = Instant::now() + Duration::from_secs(30);
    while g.get(MEMBER_A, &format!("/v2/images/{id}")).await.json()["status"] != "active" {
        assert!(Instant::now() < deadline, "not imported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Copies are the copy_image rule's: administrators only by default.
    let copy = json!({"method": {"name": "copy-image"}, "all_stores": true});
    assert_eq!(
        refused(&import(MEMBER_A, copy.clone()).await),
        not_authorized("copy_image")
    );
    assert_eq!(import(ADMIN_A, copy).await.status, 202);
    // The tasks API is for administrators (tasks_api_access).
    assert_eq!(
        refused(&g.get(MEMBER_A, "/v2/tasks").await),
        not_authorized("tasks_api_access")
    );
    let tasks = g.get(ADMIN_A, "/v2/tasks").await;
    assert_eq!(tasks.status, 200, "{}", text(&tasks));
    assert_eq!(tasks.json()["tasks"][0]["owner"], PROJECT_A);
    // The image's own tasks, to whoever may see the image.
    let r = g.get(MEMBER_B, &format!("/v2/images/{id}/tasks")).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["tasks"][0]["type"], "api_image_import");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadefs_are_written_by_administrators_and_read_by_visibility() {
    let g = Glance::start().await;
    let create = |token: &'static str, name: &'static str, visibility: &'static str| {
        let g = &g;
        async move {
            g.json(
                token,
                "POST",
                "/v2/metadefs/namespaces",
                json!({"namespace": name, "visibility": visibility}),
            )
            .await
        }
    };
    assert_eq!(
        refused(&create(MEMBER_A, "mine", "public").await),
        not_authorized("add_metadef_namespace")
    );
    assert_eq!(create(ADMIN_A, "open", "public").await.status, 201);
    assert_eq!(create(ADMIN_A, "closed", "private").await.status, 201);
    // A reader sees public namespaces and its own project's private ones.
    let names = |r: Reply| -> Vec<String> {
        r.json()["namespaces"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|n| n["namespace"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut seen = names(g.get(MEMBER_A, "/v2/metadefs/namespaces").await);
    seen.sort();
    assert_eq!(seen, ["closed", "open"]);
    assert_eq!(
        names(g.get(READER_B, "/v2/metadefs/namespaces").await),
        ["open"]
    );
    assert_eq!(
        g.get(READER_B, "/v2/metadefs/namespaces/closed")
            .await
            .status,
        404
    );
    assert_eq!(
        g.get(READER_B, "/v2/metadefs/namespaces/open").await.status,
        200
    );
    let r = g
        .json(
            MEMBER_A,
            "POST",
            "/v2/metadefs/namespaces/open/tags/t",
            Value::Null,
        )
        .await;
    assert_eq!(refused(&r), not_authorized("add_metadef_tag"));
    assert_eq!(
        g.json(
            ADMIN_A,
            "POST",
            "/v2/metadefs/namespaces/open/tags/t",
            Value::Null
        )
        .await
        .status,
        201
    );
    assert_eq!(
        g.get(READER_B, "/v2/metadefs/namespaces/open/tags/t")
            .await
            .status,
        200
    );
}
