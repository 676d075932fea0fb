//! Bad input to the Image API gets a clear 4xx that names the field, never a 5xx, on
//! every catalogue backend (GLANCE_TEST_DATABASE): length limits, integer ranges, quotas,
//! reserved and read-only attributes, JSON pointer escapes, 4-byte characters and
//! malformed documents, each a table of cases; and a seeded fuzz test of random requests
//! (`BAD_INPUT_SEED=<n>` replays a run).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

mod common;

use common::db::backend;
use common::server::{Reply, call, conf_with_database, create, start, start_conf};
use glance_operator::db::Backend;
use serde_json::{Map, Value, json};

const PATCH_TYPE: &str = "application/openstack-images-v2.1-json-patch";
const JSON_TYPE: &str = "application/json";
/// min_ram and min_disk are INTEGER columns.
const MAX_INT: i64 = 2_147_483_647;

/// At most `max` characters of `s`, saying how long it was when cut.
fn clip(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}…({n} characters)")
}

/// The `message` of a JSON error body.
fn message(r: &Reply) -> Option<String> {
    serde_json::from_slice::<Value>(&r.body)
        .ok()?
        .get("message")?
        .as_str()
        .map(str::to_owned)
}

fn body_text(r: &Reply) -> String {
    clip(&String::from_utf8_lossy(&r.body), 400)
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An object of one member.
fn one(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

/// A JSON patch of one operation.
fn op(name: &str, path: &str, value: Option<Value>) -> Value {
    let mut o = json!({"op": name, "path": path});
    if let Some(v) = value {
        o["value"] = v;
    }
    json!([o])
}

/// A JSON pointer's key, as RFC 6901 decodes it.
fn pointer_key(path: &str) -> Option<String> {
    let key = path.strip_prefix('/')?;
    Some(key.replace("~1", "/").replace("~0", "~"))
}

/// A tag list as a sorted set, for comparing (the API keeps tags as a set).
fn tag_set(v: &Value) -> Option<Vec<String>> {
    let mut tags: Vec<String> = v
        .as_array()?
        .iter()
        .map(|t| t.as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    tags.sort();
    tags.dedup();
    Some(tags)
}

/// Whether the image as shown holds `want` under `key`.
fn shows(shown: &Value, key: &str, want: &Value) -> bool {
    match shown.get(key) {
        Some(got) if key == "tags" => tag_set(got) == tag_set(want),
        Some(got) => got == want,
        None => false,
    }
}

/// An image created for a test (201 asserted); its id.
async fn new_image(addr: SocketAddr, extra: Value) -> String {
    let mut body = json!({"name": "bad-input", "disk_format": "raw", "container_format": "bare"});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    create(addr, body).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// GET /v2/images/{id} (200 asserted).
async fn show(addr: SocketAddr, id: &str) -> Value {
    let r = call(
        addr,
        "GET",
        &format!("/v2/images/{id}"),
        &[("Accept", JSON_TYPE)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "GET {id}: {}", body_text(&r));
    r.json()
}

/// The request of a table case; those on an image act on the case's image.
enum Req {
    Post(Value),
    PostRaw(Vec<u8>),
    Patch(Value),
    PatchRaw(&'static str, Vec<u8>),
    PutTag(String),
    DeleteTag(String),
}

impl Req {
    fn parts(&self, id: &str) -> (&'static str, String, &'static str, Vec<u8>) {
        let image = format!("/v2/images/{id}");
        match self {
            Req::Post(v) => (
                "POST",
                "/v2/images".to_owned(),
                JSON_TYPE,
                v.to_string().into_bytes(),
            ),
            Req::PostRaw(b) => ("POST", "/v2/images".to_owned(), JSON_TYPE, b.clone()),
            Req::Patch(v) => ("PATCH", image, PATCH_TYPE, v.to_string().into_bytes()),
            Req::PatchRaw(ct, b) => ("PATCH", image, ct, b.clone()),
            Req::PutTag(t) => ("PUT", format!("{image}/tags/{}", encode(t)), "", vec![]),
            Req::DeleteTag(t) => ("DELETE", format!("{image}/tags/{}", encode(t)), "", vec![]),
        }
    }

    fn describe(&self, id: &str) -> String {
        let (method, path, ct, body) = self.parts(id);
        format!(
            "{method} {} [{ct}] {}",
            clip(&path, 200),
            clip(&String::from_utf8_lossy(&body), 300)
        )
    }

    async fn send(&self, addr: SocketAddr, id: &str) -> Reply {
        let (method, path, ct, body) = self.parts(id);
        let mut headers = vec![("Accept", JSON_TYPE)];
        if !ct.is_empty() {
            headers.push(("Content-Type", ct));
        }
        call(addr, method, &path, &headers, body).await
    }
}

/// A table case: a request, the status it must get, and what the error message must say.
struct Case {
    what: String,
    req: Req,
    status: u16,
    fragments: Vec<String>,
}

fn case(what: impl Into<String>, req: Req, status: u16, fragment: impl Into<String>) -> Case {
    Case {
        what: what.into(),
        req,
        status,
        fragments: vec![fragment.into()],
    }
}

impl Case {
    /// One more fragment the message must hold.
    fn and(mut self, fragment: impl Into<String>) -> Self {
        self.fragments.push(fragment.into());
        self
    }
}

/// What is wrong with answer `r` to `c`, if anything.
fn mismatch(c: &Case, r: &Reply) -> Option<String> {
    if r.status != c.status {
        return Some(format!("expected {}, got {}", c.status, r.status));
    }
    if c.status < 400 {
        return None;
    }
    let Some(m) = message(r) else {
        return Some("no JSON `message` in the error".to_owned());
    };
    if m.trim().is_empty() {
        return Some("empty error message".to_owned());
    }
    c.fragments
        .iter()
        .find(|f| !m.contains(f.as_str()))
        .map(|f| format!("message lacks {:?}", clip(f, 120)))
}

/// What a successful case must have stored, read back from the image: the members of a
/// created image, the values of a patch's adds and replaces, an added tag.
async fn read_back(addr: SocketAddr, id: &str, c: &Case, r: &Reply) -> Option<String> {
    let (image, want): (String, Vec<(String, Value)>) = match &c.req {
        Req::Post(Value::Object(m)) => (
            r.json()["id"].as_str()?.to_owned(),
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        Req::Patch(Value::Array(ops)) => {
            let mut want = BTreeMap::new();
            for o in ops {
                match (o["op"].as_str(), o["path"].as_str().and_then(pointer_key)) {
                    (Some("add" | "replace"), Some(key)) => {
                        want.insert(key, o["value"].clone());
                    }
                    (_, Some(key)) => {
                        want.remove(&key);
                    }
                    _ => {}
                }
            }
            (id.to_owned(), want.into_iter().collect())
        }
        Req::PutTag(tag) => {
            let shown = show(addr, id).await;
            let has = shown["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == tag.as_str()));
            return (!has).then(|| format!("tag {:?} not shown after the PUT", clip(tag, 40)));
        }
        _ => return None,
    };
    let shown = show(addr, &image).await;
    want.iter()
        .find(|(k, v)| !shows(&shown, k, v))
        .map(|(k, v)| {
            format!(
                "{:?} not read back as stored: sent {}, shown {}",
                clip(k, 40),
                clip(&v.to_string(), 80),
                clip(
                    &shown.get(k.as_str()).unwrap_or(&Value::Null).to_string(),
                    80
                )
            )
        })
}

/// Runs `cases` in order against image `id`; the failures, described.
async fn check(addr: SocketAddr, id: &str, cases: Vec<Case>) -> Vec<String> {
    let mut failures = Vec::new();
    for c in &cases {
        let r = c.req.send(addr, id).await;
        let problem = match mismatch(c, &r) {
            Some(p) => Some(p),
            None if c.status < 300 => read_back(addr, id, c, &r).await,
            None => None,
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "- {}: {problem}\n    request: {}\n    answer:  {} {}",
                c.what,
                c.req.describe(id),
                r.status,
                body_text(&r)
            ));
        }
    }
    failures
}

fn verdict(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed on {:?}:\n{}",
        failures.len(),
        backend(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lengths_beyond_the_columns_are_refused_by_name() {
    let server = start(None).await;
    let addr = server.addr;
    let id = new_image(addr, json!({})).await;
    let a = |n: usize| "a".repeat(n);
    let key256 = "k".repeat(256);
    let key255 = "k".repeat(255);
    let too_long_key = "Custom property should not be greater than 255 characters.";
    let cases = vec![
        case(
            "name of 256 characters, create",
            Req::Post(json!({"name": a(256)})),
            400,
            "name",
        ),
        case(
            "name of 256 two-byte characters, create",
            Req::Post(json!({"name": "é".repeat(256)})),
            400,
            "name",
        ),
        case(
            "name of 255 characters, create",
            Req::Post(json!({"name": a(255)})),
            201,
            "",
        ),
        case(
            "name of 255 two-byte characters, create",
            Req::Post(json!({"name": "é".repeat(255)})),
            201,
            "",
        ),
        case(
            "name of 256 characters, patch",
            Req::Patch(op("replace", "/name", Some(json!(a(256))))),
            400,
            "name",
        ),
        case(
            "name of 255 characters, patch",
            Req::Patch(op("replace", "/name", Some(json!(a(255))))),
            200,
            "",
        ),
        case(
            "property key of 256 characters, create",
            Req::Post(one(&key256, json!("v"))),
            400,
            too_long_key,
        ),
        case(
            "property key of 256 characters, patch add",
            Req::Patch(op("add", &format!("/{key256}"), Some(json!("v")))),
            400,
            too_long_key,
        ),
        case(
            "property key of 256 two-byte characters, patch add",
            Req::Patch(op(
                "add",
                &format!("/{}", "é".repeat(256)),
                Some(json!("v")),
            )),
            400,
            too_long_key,
        ),
        case(
            "property key of 255 characters, create",
            Req::Post(one(&key255, json!("v"))),
            201,
            "",
        ),
        case(
            "property key of 255 characters, patch add",
            Req::Patch(op("add", &format!("/{key255}"), Some(json!("v")))),
            200,
            "",
        ),
        case(
            "property value of 65536 characters, create",
            Req::Post(json!({"os_distro": a(65_536)})),
            400,
            "os_distro",
        ),
        case(
            "property value of 65536 characters, patch add",
            Req::Patch(op("add", "/hw_long", Some(json!(a(65_536))))),
            400,
            "hw_long",
        ),
        case(
            "property value of 70000 characters, patch add",
            Req::Patch(op("add", "/hw_long", Some(json!(a(70_000))))),
            400,
            "hw_long",
        ),
        case(
            "property value of 65535 characters, create",
            Req::Post(json!({"os_distro": a(65_535)})),
            201,
            "",
        ),
        case(
            "property value of 65535 characters, patch add",
            Req::Patch(op("add", "/hw_ok", Some(json!(a(65_535))))),
            200,
            "",
        ),
        case(
            "property value of 65536 characters, patch replace",
            Req::Patch(op("replace", "/hw_ok", Some(json!(a(65_536))))),
            400,
            "hw_ok",
        ),
        case(
            "tag of 256 characters, create",
            Req::Post(json!({"tags": ["ok", a(256)]})),
            400,
            "tags",
        ),
        case(
            "tag of 256 characters, patch",
            Req::Patch(op("replace", "/tags", Some(json!([a(256)])))),
            400,
            "tags",
        ),
        case(
            "tag of 256 characters, PUT",
            Req::PutTag(a(256)),
            400,
            "tags",
        ),
        case(
            "tag of 256 two-byte characters, PUT",
            Req::PutTag("é".repeat(256)),
            400,
            "tags",
        ),
        case(
            "tag of 255 characters, create",
            Req::Post(json!({"tags": [a(255)]})),
            201,
            "",
        ),
        case(
            "tag of 255 characters, patch",
            Req::Patch(op("add", "/tags", Some(json!(["x", a(255)])))),
            200,
            "",
        ),
        case(
            "tag of 255 characters, PUT",
            Req::PutTag("b".repeat(255)),
            204,
            "",
        ),
        case(
            "empty tag, create",
            Req::Post(json!({"tags": [""]})),
            400,
            "tag",
        ),
        case(
            "empty tag, patch",
            Req::Patch(op("replace", "/tags", Some(json!(["ok", ""])))),
            400,
            "tag",
        ),
    ];
    let mut failures = check(addr, &id, cases).await;
    // Nothing a refused patch carried was stored.
    let shown = show(addr, &id).await;
    if shown.get("hw_long").is_some() || shown["hw_ok"] != json!(a(65_535)) {
        failures.push("- a refused patch changed the image's properties".to_owned());
    }
    if shown["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x == ""))
    {
        failures.push("- an empty tag was stored".to_owned());
    }
    verdict(&failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn integers_out_of_range_are_refused_never_clipped() {
    let server = start(None).await;
    let addr = server.addr;
    let id = new_image(addr, json!({"name": "ints", "min_ram": 64, "min_disk": 64})).await;
    let mut failures = Vec::new();
    for field in ["min_ram", "min_disk"] {
        let range = format!("'{field}' value out of range, must not exceed 2147483647.");
        let negative =
            format!("Invalid value '-1' for parameter '{field}': Cannot be a negative value");
        let post = |v: Value| Req::Post(one(field, v));
        let path = format!("/{field}");
        let patch = |name: &str, v: Value| Req::Patch(op(name, &path, Some(v)));
        let cases = vec![
            case(
                format!("{field} 2147483648, create"),
                post(json!(MAX_INT + 1)),
                400,
                &range,
            ),
            case(
                format!("{field} 2^64-1, create"),
                post(json!(u64::MAX)),
                400,
                &range,
            ),
            case(
                format!("{field} 2^63-1, create"),
                post(json!(i64::MAX)),
                400,
                &range,
            ),
            case(
                format!("{field} -1, create"),
                post(json!(-1)),
                400,
                &negative,
            ),
            case(
                format!("{field} -2^63, create"),
                post(json!(i64::MIN)),
                400,
                "Cannot be a negative value",
            )
            .and(field),
            case(
                format!("{field} \"12\", create"),
                post(json!("12")),
                400,
                field,
            ),
            case(format!("{field} 1.5, create"), post(json!(1.5)), 400, field),
            case(
                format!("{field} 2147483647.0, create"),
                post(json!(2_147_483_647.0)),
                400,
                field,
            ),
            case(
                format!("{field} null, create"),
                post(Value::Null),
                400,
                field,
            ),
            case(
                format!("{field} true, create"),
                post(json!(true)),
                400,
                field,
            ),
            case(format!("{field} [1], create"), post(json!([1])), 400, field),
            case(
                format!("{field} 2147483647, create"),
                post(json!(MAX_INT)),
                201,
                "",
            ),
            case(format!("{field} 0, create"), post(json!(0)), 201, ""),
            case(
                format!("{field} 2147483648, patch replace"),
                patch("replace", json!(MAX_INT + 1)),
                400,
                &range,
            ),
            case(
                format!("{field} 4294967296, patch add"),
                patch("add", json!(4_294_967_296_i64)),
                400,
                &range,
            ),
            case(
                format!("{field} -1, patch add"),
                patch("add", json!(-1)),
                400,
                &negative,
            ),
            case(
                format!("{field} \"64\", patch"),
                patch("replace", json!("64")),
                400,
                field,
            ),
            case(
                format!("{field} 1e10, patch"),
                patch("replace", json!(1e10)),
                400,
                field,
            ),
            case(
                format!("{field} null, patch"),
                patch("replace", Value::Null),
                400,
                field,
            ),
            case(
                format!("{field} out of range after a valid rename, patch"),
                Req::Patch(json!([
                    {"op": "replace", "path": "/name", "value": "renamed"},
                    {"op": "replace", "path": path, "value": MAX_INT + 1}
                ])),
                400,
                &range,
            ),
            case(
                format!("{field} remove"),
                Req::Patch(op("remove", &path, None)),
                403,
                field,
            ),
        ];
        failures.extend(check(addr, &id, cases).await);
        // The refused patches left the image as it was: no clipping, no partial patch.
        let shown = show(addr, &id).await;
        if shown[field] != json!(64) || shown["name"] != json!("ints") {
            failures.push(format!(
                "- {field}: refused patches changed the image: {field} {}, name {}",
                shown[field], shown["name"]
            ));
        }
    }
    let cases = vec![
        case(
            "min_ram 2147483647, patch",
            Req::Patch(op("replace", "/min_ram", Some(json!(MAX_INT)))),
            200,
            "",
        ),
        case(
            "min_ram 2147483648 over 2147483647, patch",
            Req::Patch(op("replace", "/min_ram", Some(json!(MAX_INT + 1)))),
            400,
            "'min_ram' value out of range, must not exceed 2147483647.",
        ),
    ];
    failures.extend(check(addr, &id, cases).await);
    if show(addr, &id).await["min_ram"] != json!(MAX_INT) {
        failures.push("- min_ram 2147483647 not kept after a refused patch".to_owned());
    }
    verdict(&failures);
}

/// `n` extra properties p000, p001, …
fn properties(n: usize) -> Map<String, Value> {
    (0..n).map(|i| (format!("p{i:03}"), json!("v"))).collect()
}

/// `n` tags t000, t001, …
fn tags(n: usize) -> Value {
    json!((0..n).map(|i| format!("t{i:03}")).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_on_properties_and_tags() {
    let server = start(None).await;
    let addr = server.addr;
    let props = |what: usize, quota: usize| {
        format!(
            "The limit has been exceeded on the number of allowed image properties. Attempted: {what}, Maximum: {quota}"
        )
    };
    let tag_limit = |what: usize, quota: usize| {
        format!(
            "The limit has been exceeded on the number of allowed image tags. Attempted: {what}, Maximum: {quota}"
        )
    };
    let mut with_props = properties(129);
    with_props.insert("name".to_owned(), json!("q"));
    let mut failures = check(
        addr,
        "",
        vec![
            case(
                "129 properties, create",
                Req::Post(Value::Object(with_props)),
                413,
                props(129, 128),
            ),
            case(
                "129 tags, create",
                Req::Post(json!({"tags": tags(129)})),
                413,
                tag_limit(129, 128),
            ),
            case(
                "128 tags, create",
                Req::Post(json!({"tags": tags(128)})),
                201,
                "",
            ),
        ],
    )
    .await;
    let full = new_image(addr, Value::Object(properties(128))).await;
    let tagged = new_image(addr, json!({"tags": tags(128)})).await;
    let add = |key: &str| Req::Patch(op("add", &format!("/{key}"), Some(json!("v"))));
    failures.extend(
        check(
            addr,
            &full,
            vec![
                case(
                    "129th property, patch add",
                    add("extra"),
                    413,
                    props(129, 128),
                ),
                case(
                    "replace a property at the quota",
                    Req::Patch(op("replace", "/p000", Some(json!("changed")))),
                    200,
                    "",
                ),
                case(
                    "remove a property at the quota",
                    Req::Patch(op("remove", "/p000", None)),
                    200,
                    "",
                ),
                case("add one back to the quota", add("p000"), 200, ""),
                case(
                    "swap one property for another at the quota",
                    Req::Patch(json!([
                        {"op": "add", "path": "/swapped", "value": "v"},
                        {"op": "remove", "path": "/p001"}
                    ])),
                    200,
                    "",
                ),
                case(
                    "two more properties in one patch",
                    Req::Patch(json!([
                        {"op": "add", "path": "/more1", "value": "v"},
                        {"op": "add", "path": "/more2", "value": "v"}
                    ])),
                    413,
                    props(130, 128),
                ),
            ],
        )
        .await,
    );
    let tag_put = format!("Image tag limit exceeded for image {tagged}:");
    failures.extend(
        check(
            addr,
            &tagged,
            vec![
                case("129th tag, PUT", Req::PutTag("t128".into()), 413, &tag_put)
                    .and(tag_limit(129, 128)),
                case(
                    "existing tag at the quota, PUT",
                    Req::PutTag("t000".into()),
                    204,
                    "",
                ),
                case(
                    "129 tags, patch replace",
                    Req::Patch(op("replace", "/tags", Some(tags(129)))),
                    413,
                    tag_limit(129, 128),
                ),
                case(
                    "129 tags, patch add",
                    Req::Patch(op("add", "/tags", Some(tags(129)))),
                    413,
                    tag_limit(129, 128),
                ),
                case(
                    "a tag removed at the quota",
                    Req::DeleteTag("t000".into()),
                    204,
                    "",
                ),
                case(
                    "a tag back to the quota",
                    Req::PutTag("t128".into()),
                    204,
                    "",
                ),
            ],
        )
        .await,
    );

    // A second server on the same catalogue with lower quotas: images over them can still
    // lose properties and tags, and change values, but not gain any.
    let text = conf_with_database(server.dir.path(), 0, None, "", &server.connection).replace(
        "[DEFAULT]\n",
        "[DEFAULT]\nimage_property_quota = 100\nimage_tag_quota = 100\n",
    );
    let lowered = start_conf(server.dir.clone(), server.connection.clone(), &text).await;
    let low = lowered.addr;
    failures.extend(
        check(
            low,
            &full,
            vec![
                case(
                    "remove a property over a lowered quota",
                    Req::Patch(op("remove", "/p002", None)),
                    200,
                    "",
                ),
                case(
                    "add a property over a lowered quota",
                    add("q"),
                    413,
                    props(128, 100),
                ),
                case(
                    "replace a property over a lowered quota",
                    Req::Patch(op("replace", "/p003", Some(json!("x")))),
                    200,
                    "",
                ),
            ],
        )
        .await,
    );
    failures.extend(
        check(
            low,
            &tagged,
            vec![
                case(
                    "remove a tag over a lowered quota",
                    Req::DeleteTag("t001".into()),
                    204,
                    "",
                ),
                case(
                    "add a tag over a lowered quota",
                    Req::PutTag("t001".into()),
                    413,
                    tag_limit(128, 100),
                ),
                case(
                    "existing tag over a lowered quota",
                    Req::PutTag("t002".into()),
                    204,
                    "",
                ),
            ],
        )
        .await,
    );
    let shown = show(addr, &full).await;
    if shown.get("extra").is_some() || shown.get("q").is_some() || shown.get("more1").is_some() {
        failures.push("- a property refused by the quota was stored".to_owned());
    }
    if shown["tags"].as_array().is_some_and(|t| !t.is_empty()) {
        failures.push("- the properties image has tags".to_owned());
    }
    let shown = show(addr, &tagged).await;
    if tag_set(&shown["tags"]).map(|t| t.len()) != Some(127) {
        failures.push(format!(
            "- expected 127 tags after the quota cases, got {}",
            clip(&shown["tags"].to_string(), 200)
        ));
    }
    verdict(&failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_and_read_only_attributes() {
    let server = start(None).await;
    let addr = server.addr;
    let id = new_image(addr, json!({"os_distro": "cirros"})).await;
    let reserved = [
        "location",
        "deleted",
        "deleted_at",
        "os_glance_import_task",
        "os_glance_stage_host",
        "os_glance_foo",
    ];
    let read_only = [
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "size",
        "virtual_size",
        "status",
        "created_at",
        "updated_at",
        "stores",
        "self",
        "file",
        "schema",
        "direct_url",
    ];
    let mut cases = Vec::new();
    for (keys, word) in [(&reserved[..], "reserved"), (&read_only[..], "read-only")] {
        for key in keys {
            let msg = format!("Attribute '{key}' is {word}.");
            let path = format!("/{key}");
            cases.push(case(
                format!("{key}, create"),
                Req::Post(one(key, json!("x"))),
                403,
                &msg,
            ));
            for name in ["add", "replace"] {
                cases.push(case(
                    format!("{key}, patch {name}"),
                    Req::Patch(op(name, &path, Some(json!("x")))),
                    403,
                    &msg,
                ));
            }
            cases.push(case(
                format!("{key}, patch remove"),
                Req::Patch(op("remove", &path, None)),
                403,
                &msg,
            ));
        }
    }
    for name in ["add", "replace"] {
        cases.push(case(
            format!("id, patch {name}"),
            Req::Patch(op(
                name,
                "/id",
                Some(json!("6f1c2d3e-0000-4000-8000-00000000abcd")),
            )),
            403,
            "Attribute 'id' is read-only.",
        ));
    }
    cases.push(case(
        "id, patch remove",
        Req::Patch(op("remove", "/id", None)),
        403,
        "Attribute 'id' is read-only.",
    ));
    cases.push(case(
        "a reserved key after a valid op, patch",
        Req::Patch(json!([
            {"op": "replace", "path": "/os_distro", "value": "changed"},
            {"op": "add", "path": "/deleted", "value": "true"}
        ])),
        403,
        "Attribute 'deleted' is reserved.",
    ));
    let mut failures = check(addr, &id, cases).await;
    let shown = show(addr, &id).await;
    if shown["os_distro"] != json!("cirros") || shown["status"] != json!("queued") {
        failures.push(format!(
            "- a refused patch changed the image: {}",
            clip(&shown.to_string(), 400)
        ));
    }
    for key in reserved {
        if shown.get(key).is_some() {
            failures.push(format!("- reserved {key} shown after refused requests"));
        }
    }
    verdict(&failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_pointer_escapes() {
    let server = start(None).await;
    let addr = server.addr;
    let id = new_image(addr, json!({})).await;
    let bad_escape = |path: &str| {
        format!("Pointer `{path}` contains \"~\" not part of a recognized escape sequence.")
    };
    let mut cases = Vec::new();
    for path in ["/a~2b", "/a~", "/~", "/a~b", "/~~", "/a~1~", "/~3"] {
        for name in ["add", "replace", "remove"] {
            let value = (name != "remove").then(|| json!("v"));
            cases.push(case(
                format!("pointer {path}, {name}"),
                Req::Patch(op(name, path, value)),
                400,
                bad_escape(path),
            ));
        }
    }
    cases.extend([
        case(
            "~1 is /",
            Req::Patch(op("add", "/x~1y", Some(json!("slash")))),
            200,
            "",
        ),
        case(
            "~0 is ~",
            Req::Patch(op("add", "/x~0y", Some(json!("tilde")))),
            200,
            "",
        ),
        case(
            "~01 is ~1",
            Req::Patch(op("add", "/x~01", Some(json!("tilde-one")))),
            200,
            "",
        ),
        case(
            "~10 is /0",
            Req::Patch(op("add", "/x~10", Some(json!("slash-zero")))),
            200,
            "",
        ),
        case(
            "replace through ~0",
            Req::Patch(op("replace", "/x~0y", Some(json!("tilde2")))),
            200,
            "",
        ),
        case(
            "remove through ~1",
            Req::Patch(op("remove", "/x~1y", None)),
            200,
            "",
        ),
    ]);
    let mut failures = check(addr, &id, cases).await;
    let shown = show(addr, &id).await;
    let want = [
        ("x~y", Some("tilde2")),
        ("x~1", Some("tilde-one")),
        ("x/0", Some("slash-zero")),
        ("x/y", None),
    ];
    for (key, value) in want {
        if shown.get(key).and_then(Value::as_str) != value {
            failures.push(format!(
                "- property {key:?}: expected {value:?}, shown {:?}",
                shown.get(key)
            ));
        }
    }
    verdict(&failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn four_byte_characters_per_backend() {
    let server = start(None).await;
    let addr = server.addr;
    let id = new_image(addr, json!({"name": "plain", "os_distro": "plain"})).await;
    let refused = backend() == Backend::MySql;
    // 400 with upstream's words on MySQL/MariaDB (utf8mb3 tables); stored elsewhere.
    let expect = |what: &str, req: Req, ok: u16, words: &str| {
        let what = format!("4-byte {what}");
        if refused {
            case(what, req, 400, words)
        } else {
            case(what, req, ok, "")
        }
    };
    let name = "Name can't contain 4 byte unicode characters.";
    let key = "Property names can't contain 4 byte unicode.";
    let value = "can't contain 4 byte unicode characters.";
    let tag = "Param values can't contain 4 byte unicode.";
    let cases = vec![
        // Characters of the Basic Multilingual Plane are fine on every backend.
        case(
            "3-byte characters everywhere, create",
            Req::Post(json!({"name": "中文 €", "ключ": "値", "tags": ["标签"]})),
            201,
            "",
        ),
        expect(
            "name, create",
            Req::Post(json!({"name": "smile 😀"})),
            201,
            name,
        ),
        expect(
            "property key, create",
            Req::Post(json!({"k😀": "v"})),
            201,
            key,
        ),
        expect(
            "property value, create",
            Req::Post(json!({"os_distro": "v😀"})),
            201,
            value,
        ),
        expect(
            "tag, create",
            Req::Post(json!({"tags": ["ok", "t😀"]})),
            201,
            tag,
        ),
        expect(
            "name, patch",
            Req::Patch(op("replace", "/name", Some(json!("clef 𝄞")))),
            200,
            name,
        ),
        expect(
            "property key, patch",
            Req::Patch(op("add", "/k𝄞", Some(json!("v")))),
            200,
            key,
        ),
        expect(
            "property value, patch",
            Req::Patch(op("replace", "/os_distro", Some(json!("v𝄞")))),
            200,
            value,
        ),
        expect(
            "tags, patch",
            Req::Patch(op("add", "/tags", Some(json!(["t𝄞"])))),
            200,
            tag,
        ),
        expect("tag, PUT", Req::PutTag("t😀".into()), 204, tag),
    ];
    let mut failures = check(addr, &id, cases).await;
    let shown = show(addr, &id).await;
    if refused && (shown["name"] != json!("plain") || shown["os_distro"] != json!("plain")) {
        failures.push(format!(
            "- a refused patch changed the image: {}",
            clip(&shown.to_string(), 400)
        ));
    }
    if !refused && tag_set(&shown["tags"]) != tag_set(&json!(["t𝄞", "t😀"])) {
        failures.push(format!("- tags not kept: {}", shown["tags"]));
    }
    verdict(&failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_documents() {
    let server = start(None).await;
    let addr = server.addr;
    let id = new_image(addr, json!({"os_distro": "cirros"})).await;
    let raw = |b: &[u8]| Req::PatchRaw(PATCH_TYPE, b.to_vec());
    let mut cases = Vec::new();
    for name in ["move", "copy", "test", "ADD", "frob"] {
        cases.push(case(
            format!("op {name}"),
            Req::Patch(json!([{"op": name, "path": "/name", "value": "x", "from": "/os_distro"}])),
            400,
            name,
        ));
    }
    for name in ["add", "replace"] {
        cases.push(case(
            format!("{name} without a value"),
            Req::Patch(op(name, "/os_distro", None)),
            400,
            "value",
        ));
    }
    cases.extend([
        case(
            "empty op",
            Req::Patch(op("", "/name", Some(json!("x")))),
            400,
            "",
        ),
        case(
            "no op",
            Req::Patch(json!([{"path": "/name", "value": "x"}])),
            400,
            "",
        ),
        case(
            "op not a string",
            Req::Patch(json!([{"op": 5, "path": "/name", "value": "x"}])),
            400,
            "",
        ),
        case(
            "no path",
            Req::Patch(json!([{"op": "add", "value": "x"}])),
            400,
            "",
        ),
        case(
            "path not a string",
            Req::Patch(json!([{"op": "add", "path": 5, "value": "x"}])),
            400,
            "",
        ),
        case(
            "empty path",
            Req::Patch(op("add", "", Some(json!("x")))),
            400,
            "",
        ),
        case(
            "path /",
            Req::Patch(op("add", "/", Some(json!("x")))),
            400,
            "",
        ),
        case(
            "path without /",
            Req::Patch(op("add", "name", Some(json!("x")))),
            400,
            "name",
        ),
        case(
            "nested path",
            Req::Patch(op("add", "/a/b", Some(json!("x")))),
            400,
            "/a/b",
        ),
        case(
            "path into tags",
            Req::Patch(op("add", "/tags/-", Some(json!("x")))),
            400,
            "/tags/-",
        ),
        case(
            "a valid op then an invalid one",
            Req::Patch(json!([
                {"op": "replace", "path": "/os_distro", "value": "changed"},
                {"op": "frob", "path": "/name", "value": "x"}
            ])),
            400,
            "frob",
        ),
        case(
            "property value a number",
            Req::Patch(op("add", "/hw_x", Some(json!(5)))),
            400,
            "hw_x",
        ),
        case(
            "property value an object",
            Req::Patch(op("add", "/hw_x", Some(json!({"a": 1})))),
            400,
            "hw_x",
        ),
        case(
            "name a list",
            Req::Patch(op("replace", "/name", Some(json!(["x"])))),
            400,
            "name",
        ),
        case(
            "tags a string",
            Req::Patch(op("replace", "/tags", Some(json!("x")))),
            400,
            "tags",
        ),
        case(
            "tags of numbers",
            Req::Patch(op("replace", "/tags", Some(json!([1])))),
            400,
            "tags",
        ),
        case(
            "visibility bogus",
            Req::Patch(op("replace", "/visibility", Some(json!("bogus")))),
            400,
            "visibility",
        ),
        case(
            "disk_format bogus",
            Req::Patch(op("replace", "/disk_format", Some(json!("floppy")))),
            400,
            "disk_format",
        ),
        case(
            "protected a string",
            Req::Patch(op("replace", "/protected", Some(json!("yes")))),
            400,
            "protected",
        ),
        case("patch an object", raw(b"{}"), 400, ""),
        case("patch a string", raw(b"\"x\""), 400, ""),
        case("patch null", raw(b"null"), 400, ""),
        case("patch not JSON", raw(b"nope"), 400, ""),
        case("patch empty", raw(b""), 400, ""),
        case("patch of numbers", raw(b"[1]"), 400, ""),
        case("patch of lists", raw(b"[[]]"), 400, ""),
        case("patch truncated", raw(b"[{\"op\": \"add\", "), 400, ""),
        case(
            "patch not UTF-8",
            raw(b"[{\"op\": \"add\", \"path\": \"/a\xff\", \"value\": \"x\"}]"),
            400,
            "",
        ),
        case(
            "patch with a lone surrogate",
            raw(b"[{\"op\": \"add\", \"path\": \"/a\", \"value\": \"\\ud800\"}]"),
            400,
            "",
        ),
        case("patch nested 10000 deep", raw(&[b'['; 10_000]), 400, ""),
        case(
            "patch as application/json",
            Req::PatchRaw(JSON_TYPE, b"[]".to_vec()),
            415,
            "",
        ),
        case("create from a list", Req::PostRaw(b"[1]".to_vec()), 400, ""),
        case(
            "create from a string",
            Req::PostRaw(b"\"x\"".to_vec()),
            400,
            "",
        ),
        case("create from null", Req::PostRaw(b"null".to_vec()), 400, ""),
        case("create from nothing", Req::PostRaw(vec![]), 400, ""),
        case(
            "create from not JSON",
            Req::PostRaw(b"{name: x}".to_vec()),
            400,
            "",
        ),
        case(
            "create from not UTF-8",
            Req::PostRaw(b"{\"name\": \"\xff\xfe\"}".to_vec()),
            400,
            "",
        ),
        case(
            "create with min_ram 1e400",
            Req::PostRaw(b"{\"min_ram\": 1e400}".to_vec()),
            400,
            "",
        ),
        case(
            "create nested 10000 deep",
            Req::PostRaw([b'{'; 10_000].to_vec()),
            400,
            "",
        ),
        case(
            "create with an id not a UUID",
            Req::Post(json!({"id": "not-a-uuid"})),
            400,
            "",
        ),
        case(
            "create with an id a number",
            Req::Post(json!({"id": 5})),
            400,
            "id",
        ),
        case(
            "create with a property a number",
            Req::Post(json!({"hw_x": 5})),
            400,
            "hw_x",
        ),
        case(
            "create with a property null",
            Req::Post(json!({"hw_x": null})),
            400,
            "hw_x",
        ),
        case(
            "create with an empty key",
            Req::Post(json!({"": "x"})),
            400,
            "",
        ),
    ]);
    let mut failures = check(addr, &id, cases).await;
    if show(addr, &id).await["os_distro"] != json!("cirros") {
        failures.push("- a refused patch changed os_distro".to_owned());
    }
    verdict(&failures);
}

// ---------------------------------------------------------------------------------------
// Fuzz: random requests, none of which may get a 5xx.

const FUZZ_REQUESTS: usize = 300;
const DEFAULT_SEED: u64 = 0x0BAD_1A9E_5EED_2025;
/// The longest string a body may carry (once per request); URLs carry at most 300.
const BODY_MAX: usize = 70_000;

/// xorshift64*, seeded through SplitMix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(z.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 0..n
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// lo..=hi
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Building blocks of random strings.
const PIECES: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "-",
    "_",
    " ",
    ".",
    "\"",
    "'",
    "\\",
    "%",
    "%25",
    "%2F",
    "/",
    "~",
    "~0",
    "~1",
    "~2",
    "&",
    "=",
    "?",
    "#",
    "+",
    ";",
    ":",
    ",",
    "<",
    ">",
    "{",
    "}",
    "[",
    "]",
    "\0",
    "\t",
    "\n",
    "\r",
    "\u{1b}",
    "\u{7f}",
    "\u{85}",
    "é",
    "ß",
    "中",
    "\u{200b}",
    "\u{feff}",
    "\u{202e}",
    "\u{301}",
    "\u{fffd}",
    "\u{ffff}",
    "😀",
    "𝄞",
    "\u{10ffff}",
    "cirros",
    "'; DROP TABLE images; --",
    "%s",
    "{0}",
    "null",
    "NaN",
    "..",
];
/// Characters that fill long strings.
const CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    ' ',
    '"',
    '\'',
    '\\',
    '%',
    '/',
    '~',
    '&',
    '=',
    '?',
    '#',
    '+',
    '\0',
    '\t',
    '\n',
    '\r',
    '\u{1b}',
    '\u{7f}',
    '\u{85}',
    'é',
    '中',
    '\u{200b}',
    '\u{feff}',
    '\u{202e}',
    '\u{301}',
    '\u{ffff}',
    '😀',
    '𝄞',
    '\u{10ffff}',
];
const WORDS: &[&str] = &[
    "cirros",
    "raw",
    "qcow2",
    "bare",
    "public",
    "private",
    "shared",
    "community",
    "all",
    "true",
    "false",
    "1",
    "0",
    "-1",
    "queued",
    "active",
    "name",
    "asc",
    "desc",
];
/// Attribute names: core, read-only, reserved, and some property names.
const KEYS: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "owner",
    "tags",
    "id",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "stores",
    "location",
    "deleted",
    "deleted_at",
    "os_glance_import_task",
    "os_glance_stage_host",
    "os_glance_",
    "os_glancex",
    "os_distro",
    "hw_disk_bus",
    "x/y",
    "a~b",
    "",
    " ",
    "Name",
    "NAME",
    "image_id",
    "value",
];
const INTS: &[i64] = &[
    0,
    1,
    -1,
    64,
    255,
    256,
    65_535,
    2_147_483_647,
    2_147_483_648,
    -2_147_483_648,
    4_294_967_296,
    i64::MAX,
    i64::MIN,
];
const FLOATS: &[f64] = &[
    0.5,
    -0.0,
    1.5,
    1e300,
    -1e-300,
    2_147_483_647.0,
    2_147_483_648.0,
];
const VISIBILITIES: &[&str] = &[
    "public",
    "private",
    "shared",
    "community",
    "all",
    "",
    "PUBLIC",
];
const DISK_FORMATS: &[&str] = &["raw", "qcow2", "iso", "vmdk", "ploop", "floppy", "", "RAW"];
const CONTAINER_FORMATS: &[&str] = &["bare", "ovf", "docker", "compressed", "box", ""];
const SORT_KEYS: &[&str] = &[
    "name",
    "created_at",
    "updated_at",
    "size",
    "id",
    "status",
    "min_ram",
    "min_disk",
    "disk_format",
    "container_format",
    "visibility",
    "virtual_size",
    "owner",
    "tags",
    "",
    "name;drop",
    "os_distro",
    "NAME",
];
const SORT_DIRS: &[&str] = &["asc", "desc", "ASC", "sideways", ""];
const LIST_NAMES: &[&str] = &[
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "sort",
    "tag",
    "size_min",
    "size_max",
    "os_hidden",
    "member_status",
    "protected",
    "visibility",
    "name",
    "status",
    "disk_format",
    "container_format",
    "owner",
    "id",
    "os_distro",
    "min_ram",
    "checksum",
    "created_at",
];
/// Path segments whose percent escapes decode to what is not UTF-8, or that mean a path.
const RAW_SEGMENTS: &[&str] = &[
    "%FF",
    "%C3%28",
    "%00",
    "..",
    "%2E%2E",
    "%2F",
    "a%2Fb",
    "%ED%A0%80",
];
const RAW_BODIES: &[&[u8]] = &[
    b"",
    b"nope",
    b"[1]",
    b"[]",
    b"{}",
    b"\"x\"",
    b"null",
    b"12",
    b"{\"name\": \"\\ud800\"}",
    b"{\"min_ram\": 1e400}",
    b"{\"min_ram\": 99999999999999999999999}",
    b"{\"min_ram\": -0}",
    b"{\"name\":\"a\",\"name\":\"b\"}",
    b"\xef\xbb\xbf{}",
    b"{\"name\": \"\xff\xfe\"}",
    b"{\"a\":",
    b"[{\"op\": \"add\", \"path\": \"/a\", \"value\": \"\\ud83d\"}]",
    b"[{\"op\": \"add\", \"path\": \"/\xc3\", \"value\": \"x\"}]",
    b"[{\"op\":\"add\",\"path\":\"/a\",\"value\":\"x\"},]",
];

/// One random request.
struct Sent {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    accept_json: bool,
    body: Vec<u8>,
}

impl Sent {
    fn new(method: &'static str, path: String) -> Self {
        Self {
            method,
            path,
            content_type: None,
            accept_json: true,
            body: vec![],
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} [Content-Type: {}; Accept JSON: {}] body of {} bytes: {}",
            self.method,
            clip(&self.path, 400),
            self.content_type.unwrap_or("-"),
            self.accept_json,
            self.body.len(),
            clip(&String::from_utf8_lossy(&self.body), 600)
        )
    }

    async fn send(&self, addr: SocketAddr) -> Reply {
        let mut headers = Vec::new();
        if let Some(ct) = self.content_type {
            headers.push(("Content-Type", ct));
        }
        if self.accept_json {
            headers.push(("Accept", JSON_TYPE));
        }
        call(addr, self.method, &self.path, &headers, self.body.clone()).await
    }
}

/// Random requests, against the images in `pool`.
struct Gen {
    rng: Rng,
    /// How many strings of 65,535 characters or more the request may still get.
    huge_left: usize,
    pool: Vec<String>,
}

impl Gen {
    fn long(&mut self, n: usize) -> String {
        match self.rng.below(7) {
            0 | 1 => "a".repeat(n),
            2 => "é".repeat(n),
            3 => "😀".repeat(n),
            4 => self.rng.pick(&["~", "%", "/", "\0", "中"]).repeat(n),
            _ => (0..n).map(|_| *self.rng.pick(CHARS)).collect(),
        }
    }

    /// A random string of at most `max` characters.
    fn string(&mut self, max: usize) -> String {
        let s = match self.rng.below(200) {
            0..=9 => String::new(),
            10..=109 => {
                let n = self.rng.range(1, 12);
                (0..n).map(|_| *self.rng.pick(PIECES)).collect()
            }
            110..=139 => {
                let n = self.rng.range(13, 64);
                (0..n).map(|_| *self.rng.pick(PIECES)).collect()
            }
            140..=179 => {
                let n = *self.rng.pick(&[255, 256, 300]);
                self.long(n)
            }
            180..=198 => (*self.rng.pick(WORDS)).to_owned(),
            _ if self.huge_left > 0 && max >= BODY_MAX => {
                self.huge_left -= 1;
                let n = *self.rng.pick(&[65_535, 65_536, 70_000]);
                self.long(n)
            }
            _ => self.long(300),
        };
        if s.chars().count() > max {
            s.chars().take(max).collect()
        } else {
            s
        }
    }

    fn key(&mut self) -> String {
        if self.rng.percent(45) {
            (*self.rng.pick(KEYS)).to_owned()
        } else {
            self.string(300)
        }
    }

    fn uuid(&mut self) -> String {
        let a = self.rng.next_u64();
        let b = self.rng.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    fn int(&mut self) -> Value {
        if self.rng.percent(8) {
            json!(u64::MAX)
        } else {
            json!(*self.rng.pick(INTS))
        }
    }

    /// A random JSON value, nested at most 3 deep.
    fn value(&mut self, depth: usize) -> Value {
        match self.rng.below(12) {
            0 => Value::Null,
            1 => Value::Bool(self.rng.percent(50)),
            2 | 3 => self.int(),
            4 => json!(*self.rng.pick(FLOATS)),
            5..=8 => Value::String(self.string(BODY_MAX)),
            9 if depth < 3 => {
                let n = self.rng.below(4);
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            10 if depth < 3 => {
                let n = self.rng.below(4);
                Value::Object(
                    (0..n)
                        .map(|_| (self.key(), self.value(depth + 1)))
                        .collect(),
                )
            }
            _ => Value::String(self.string(300)),
        }
    }

    fn tags(&mut self) -> Value {
        let n = if self.rng.percent(4) {
            self.rng.range(120, 140)
        } else {
            self.rng.range(0, 5)
        };
        Value::Array((0..n).map(|_| Value::String(self.string(300))).collect())
    }

    /// A value of the type `key` takes, or near it.
    fn plausible(&mut self, key: &str) -> Value {
        match key {
            "name" | "owner" => Value::String(self.string(BODY_MAX)),
            "visibility" => json!(*self.rng.pick(VISIBILITIES)),
            "protected" | "os_hidden" if self.rng.percent(80) => json!(self.rng.percent(50)),
            "protected" | "os_hidden" => json!(*self.rng.pick(&["true", "false", "1"])),
            "disk_format" => json!(*self.rng.pick(DISK_FORMATS)),
            "container_format" => json!(*self.rng.pick(CONTAINER_FORMATS)),
            "min_ram" | "min_disk" => self.int(),
            "tags" => self.tags(),
            "id" if self.rng.percent(70) => Value::String(self.uuid()),
            _ => Value::String(self.string(BODY_MAX)),
        }
    }

    fn member_value(&mut self, key: &str) -> Value {
        if self.rng.percent(60) {
            self.plausible(key)
        } else {
            self.value(0)
        }
    }

    fn raw_body(&mut self) -> Vec<u8> {
        match self.rng.below(10) {
            0 => vec![b'['; self.rng.range(100, 3_000)],
            1 => {
                let depth = self.rng.range(100, 300);
                let mut b = "{\"a\":".repeat(depth).into_bytes();
                b.extend("}".repeat(depth).bytes());
                b
            }
            _ => self.rng.pick(RAW_BODIES).to_vec(),
        }
    }

    /// An image to act on: mostly one of the pool, else one that does not exist.
    fn target(&mut self) -> String {
        if self.rng.percent(90) {
            return self.rng.pick(&self.pool).clone();
        }
        match self.rng.below(3) {
            0 => self.uuid(),
            1 => (*self.rng.pick(RAW_SEGMENTS)).to_owned(),
            _ => encode(&self.string(300)),
        }
    }

    fn post(&mut self) -> Sent {
        let mut sent = Sent::new("POST", "/v2/images".to_owned());
        sent.content_type = Some(JSON_TYPE);
        if self.rng.percent(12) {
            sent.body = self.raw_body();
            return sent;
        }
        let mut body = Map::new();
        for _ in 0..self.rng.range(0, 6) {
            let key = self.key();
            let value = self.member_value(&key);
            body.insert(key, value);
        }
        if self.rng.percent(4) {
            for i in 0..self.rng.range(120, 140) {
                body.insert(format!("p{i}"), Value::String(self.string(300)));
            }
        }
        sent.body = Value::Object(body).to_string().into_bytes();
        sent
    }

    fn path(&mut self) -> String {
        let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
        match self.rng.below(100) {
            0..=59 => format!("/{}", escape(&self.key())),
            60..=69 => {
                // A stray `~`, or one of the two escapes, somewhere in the key.
                let key = self.string(300);
                let at = self.rng.below(key.chars().count() + 1);
                let cut = key.char_indices().nth(at).map_or(key.len(), |(i, _)| i);
                let tilde = *self
                    .rng
                    .pick(&["~", "~2", "~~", "~a", "~0", "~1", "~01", "~10"]);
                format!("/{}{tilde}{}", &key[..cut], &key[cut..])
            }
            70..=77 => format!("/{}/{}", escape(&self.key()), escape(&self.key())),
            78..=82 => String::new(),
            83..=87 => "/".to_owned(),
            88..=92 => self.key(),
            _ => (*self
                .rng
                .pick(&["/tags/-", "/tags/0", "/locations/0", "/name/", "//", "/-"]))
            .to_owned(),
        }
    }

    fn patch_op(&mut self) -> Value {
        if self.rng.percent(4) {
            return self.value(1);
        }
        let mut o = Map::new();
        let name = if self.rng.percent(85) {
            json!(
                *self
                    .rng
                    .pick(&["add", "add", "replace", "replace", "remove"])
            )
        } else if self.rng.percent(80) {
            json!(
                *self
                    .rng
                    .pick(&["test", "move", "copy", "", "ADD", "Add", "delete"])
            )
        } else {
            self.value(1)
        };
        if !self.rng.percent(3) {
            o.insert("op".to_owned(), name);
        }
        let path = if self.rng.percent(92) {
            Value::String(self.path())
        } else {
            self.value(1)
        };
        let key = path.as_str().and_then(pointer_key).unwrap_or_default();
        if !self.rng.percent(3) {
            o.insert("path".to_owned(), path);
        }
        if self.rng.percent(85) {
            let value = self.member_value(&key);
            o.insert("value".to_owned(), value);
        }
        if self.rng.percent(5) {
            o.insert("from".to_owned(), json!("/name"));
        }
        Value::Object(o)
    }

    fn patch(&mut self) -> Sent {
        let id = self.target();
        let mut sent = Sent::new("PATCH", format!("/v2/images/{id}"));
        sent.content_type = Some(match self.rng.below(100) {
            0..=91 => PATCH_TYPE,
            92..=94 => "application/openstack-images-v2.0-json-patch",
            95..=96 => "application/openstack-images-v2.1-json-patch; charset=UTF-8",
            _ => JSON_TYPE,
        });
        sent.body = if self.rng.percent(12) {
            self.raw_body()
        } else {
            let ops: Vec<Value> = (0..self.rng.range(0, 4)).map(|_| self.patch_op()).collect();
            Value::Array(ops).to_string().into_bytes()
        };
        sent
    }

    fn tag(&mut self) -> Sent {
        let id = self.target();
        let tag = if self.rng.percent(90) {
            encode(&self.string(300))
        } else {
            (*self.rng.pick(RAW_SEGMENTS)).to_owned()
        };
        let method = if self.rng.percent(65) {
            "PUT"
        } else {
            "DELETE"
        };
        Sent::new(method, format!("/v2/images/{id}/tags/{tag}"))
    }

    fn list(&mut self) -> Sent {
        let mut params = Vec::new();
        for _ in 0..self.rng.range(0, 5) {
            let name = if self.rng.percent(75) {
                (*self.rng.pick(LIST_NAMES)).to_owned()
            } else {
                self.string(300)
            };
            let value = match name.as_str() {
                "limit" => (*self.rng.pick(&[
                    "0",
                    "1",
                    "3",
                    "-1",
                    "abc",
                    "",
                    "1000",
                    "1001",
                    "18446744073709551615",
                    "99999999999999999999999",
                    "1.5",
                    " 1",
                ]))
                .to_owned(),
                "marker" => match self.rng.below(3) {
                    0 => self.rng.pick(&self.pool).clone(),
                    1 => self.uuid(),
                    _ => self.string(300),
                },
                "sort_key" => (*self.rng.pick(SORT_KEYS)).to_owned(),
                "sort_dir" => (*self.rng.pick(SORT_DIRS)).to_owned(),
                "sort" => {
                    let parts: Vec<String> = (0..self.rng.range(1, 3))
                        .map(|_| {
                            let key = *self.rng.pick(SORT_KEYS);
                            match self.rng.below(3) {
                                0 => key.to_owned(),
                                1 => format!("{key}:{}", self.rng.pick(SORT_DIRS)),
                                _ => format!("{key}:{}:", self.string(12)),
                            }
                        })
                        .collect();
                    parts.join(",")
                }
                "size_min" | "size_max" => (*self.rng.pick(&[
                    "0",
                    "-1",
                    "9223372036854775807",
                    "9223372036854775808",
                    "-9223372036854775808",
                    "abc",
                    "",
                    "1e3",
                ]))
                .to_owned(),
                "os_hidden" | "protected" => {
                    (*self.rng.pick(&["true", "false", "yes", "", "TRUE"])).to_owned()
                }
                "visibility" => (*self.rng.pick(VISIBILITIES)).to_owned(),
                "member_status" => (*self
                    .rng
                    .pick(&["accepted", "pending", "rejected", "all", "bogus"]))
                .to_owned(),
                _ => self.string(300),
            };
            let value = if self.rng.percent(4) {
                (*self.rng.pick(RAW_SEGMENTS)).to_owned()
            } else {
                encode(&value)
            };
            params.push(format!("{}={value}", encode(&name)));
        }
        Sent::new("GET", format!("/v2/images?{}", params.join("&")))
    }

    fn show(&mut self) -> Sent {
        let id = self.target();
        Sent::new("GET", format!("/v2/images/{id}"))
    }

    fn request(&mut self) -> Sent {
        self.huge_left = 1;
        let mut sent = match self.rng.below(100) {
            0..=29 => self.post(),
            30..=59 => self.patch(),
            60..=79 => self.tag(),
            80..=94 => self.list(),
            _ => self.show(),
        };
        sent.accept_json = self.rng.percent(90);
        sent
    }
}

/// BAD_INPUT_SEED, decimal or 0x-hexadecimal, or the fixed default.
fn seed() -> u64 {
    match std::env::var("BAD_INPUT_SEED") {
        Ok(s) if !s.trim().is_empty() => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => s.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|e| panic!("BAD_INPUT_SEED={s}: {e}"))
        }
        _ => DEFAULT_SEED,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fuzz_never_answers_5xx() {
    let seed = seed();
    println!("bad_input fuzz seed: {seed:#x} (BAD_INPUT_SEED replays it)");
    let server = start(None).await;
    let addr = server.addr;
    let mut pool = Vec::new();
    for extra in [
        json!({}),
        json!({"os_distro": "cirros", "tags": ["a", "b"]}),
        json!({"hw_disk_bus": "scsi", "min_ram": 64}),
    ] {
        pool.push(new_image(addr, extra).await);
    }
    let mut fuzz = Gen {
        rng: Rng::new(seed),
        huge_left: 1,
        pool,
    };
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for i in 0..FUZZ_REQUESTS {
        let sent = fuzz.request();
        // Shown if the client itself fails (a connection the server dropped).
        println!("#{i}: {}", clip(&sent.describe(), 300));
        let r = sent.send(addr).await;
        *statuses.entry(r.status).or_default() += 1;
        if r.status >= 500 {
            failures.push(format!(
                "- #{i}: {}\n    answer: {} {}",
                sent.describe(),
                r.status,
                body_text(&r)
            ));
        }
        if sent.method == "POST"
            && r.status == 201
            && fuzz.pool.len() < 12
            && let Some(id) = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
        {
            fuzz.pool.push(id);
        }
    }
    println!(
        "{FUZZ_REQUESTS} requests in {:.1?}, statuses {statuses:?}",
        started.elapsed()
    );
    // Whatever was stored can be read back, one by one and listed.
    for id in &fuzz.pool {
        let r = call(
            addr,
            "GET",
            &format!("/v2/images/{id}"),
            &[("Accept", JSON_TYPE)],
            vec![],
        )
        .await;
        if r.status != 200 {
            failures.push(format!(
                "- GET /v2/images/{id} after the fuzz: {} {}",
                r.status,
                body_text(&r)
            ));
        }
    }
    let r = call(
        addr,
        "GET",
        "/v2/images?limit=1000",
        &[("Accept", JSON_TYPE)],
        vec![],
    )
    .await;
    if r.status != 200 {
        failures.push(format!(
            "- GET /v2/images?limit=1000 after the fuzz: {} {}",
            r.status,
            body_text(&r)
        ));
    }
    assert!(
        failures.is_empty(),
        "seed {seed:#x} on {:?}: {} request(s) failed:\n{}",
        backend(),
        failures.len(),
        failures.join("\n")
    );
}
