//! glance-api with an S3 store beside a file store, against a real S3 server: Ceph's
//! RADOS Gateway, started by tests/s3/rgw.sh (tests/run.sh starts it and exports
//! GLANCE_TEST_S3_*).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use common::process::rss_split;
use common::proxy::Proxy;
use common::server::{Server, call, create, data, start_conf};
use md5::{Digest, Md5};
use serde_json::json;

/// The S3 server the tests use.
struct S3 {
    endpoint: String,
    access_key: String,
    secret_key: String,
}

fn s3() -> S3 {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: start an S3 server with tests/s3/rgw.sh start DIR and source DIR/env (tests/run.sh does)")
        })
    };
    S3 {
        endpoint: var("GLANCE_TEST_S3_ENDPOINT"),
        access_key: var("GLANCE_TEST_S3_ACCESS_KEY"),
        secret_key: var("GLANCE_TEST_S3_SECRET_KEY"),
    }
}

impl S3 {
    /// A client of our own, to look at the bucket behind glance-api's back.
    fn client(&self) -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Client::from_conf(config)
    }

    fn host(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }
}

fn bucket() -> String {
    format!("glance-{}", uuid::Uuid::new_v4().simple())
}

/// A glance-api with `fast:file, ceph:s3`, ceph the default, the cache on; `ceph` holds
/// the s3 options given (host, keys, bucket and any more).
async fn start(ceph: &str) -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let d = dir.path().display();
    let connection = format!("sqlite:///{d}/glance.sqlite");
    let text = format!(
        "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 0\nenabled_backends = fast:file, ceph:s3\n\
         image_cache_dir = {d}/image-cache\nimage_cache_max_size = 1073741824\n\
         [glance_store]\ndefault_backend = ceph\n\
         [fast]\nfilesystem_store_datadir = {d}/images\nstore_description = Local disk\n\
         [ceph]\n{ceph}\
         [database]\nconnection = {connection}\n[paste_deploy]\nflavor = cachemanagement\n"
    );
    start_conf(dir, connection, &text).await
}

/// The s3 options for `bucket` on `host` (host:port), parts of 5 MiB from 5 MiB on.
fn ceph_options(s3: &S3, host: &str, bucket: &str, more: &str) -> String {
    format!(
        "s3_store_host = {host}\ns3_store_access_key = {}\ns3_store_secret_key = {}\n\
         s3_store_bucket = {bucket}\ns3_store_create_bucket_on_put = true\n\
         s3_store_bucket_url_format = path\ns3_store_large_object_size = 5\n\
         s3_store_large_object_chunk_size = 5\n{more}",
        s3.access_key, s3.secret_key
    )
}

async fn new_image(addr: SocketAddr) -> String {
    let image = create(
        addr,
        json!({"name": "img", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    image["id"].as_str().expect("id").to_owned()
}

fn put(
    addr: SocketAddr,
    id: &str,
    bytes: &[u8],
    store: Option<&str>,
) -> impl std::future::Future<Output = common::server::Reply> + Send + use<> {
    let mut headers = vec![
        ("Content-Type", "application/octet-stream"),
        ("Accept", "application/json"),
    ];
    if let Some(store) = store {
        headers.push(("X-Image-Meta-Store", store));
    }
    call(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &headers,
        bytes.to_vec(),
    )
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> common::server::Reply {
    let mut headers = headers.to_vec();
    headers.push(("Accept", "application/json"));
    call(addr, "GET", path, &headers, vec![]).await
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// The image's location rows (value, meta_data), read from the catalogue.
fn locations(server: &Server, id: &str) -> Vec<(String, String)> {
    let path = server.dir.path().join("glance.sqlite");
    let db = rusqlite::Connection::open(path).expect("sqlite");
    let mut stmt = db
        .prepare("SELECT value, meta_data FROM image_locations WHERE image_id = ?1 AND deleted = 0")
        .expect("prepare");
    stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

async fn object(client: &Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Some(
            out.body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .to_vec(),
        ),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
        Err(e) => panic!("GetObject: {e:?}"),
    }
}

/// The multipart uploads in progress in `bucket` (an error when it does not exist).
async fn multipart_uploads(client: &Client, bucket: &str) -> Result<usize, String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| format!("ListMultipartUploads: {e:?}"))?;
    Ok(out.uploads().len())
}

/// Empties and removes `bucket`: the S3 server keeps objects in memory, and the whole
/// test run shares it.
async fn remove_bucket(client: &Client, bucket: &str) {
    if let Ok(out) = client.list_objects_v2().bucket(bucket).send().await {
        for object in out.contents() {
            if let Some(key) = object.key() {
                let _ = client.delete_object().bucket(bucket).key(key).send().await;
            }
        }
    }
    let _ = client.delete_bucket().bucket(bucket).send().await;
}

fn cached(server: &Server, id: &str) -> bool {
    server.dir.path().join("image-cache").join(id).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn a_multipart_upload_is_recorded_as_glance_store_records_it_and_downloads_through_the_cache()
{
    let s3 = s3();
    let bucket = bucket();
    let server = start(&ceph_options(&s3, s3.host(), &bucket, "")).await;
    let id = new_image(server.addr).await;
    let bytes = data(12 << 20, 7); // three parts of 5, 5 and 2 MiB
    let reply = put(server.addr, &id, &bytes, None).await;
    assert_eq!(
        reply.status,
        204,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    let image = get(server.addr, &format!("/v2/images/{id}"), &[])
        .await
        .json();
    assert_eq!(image["status"], "active");
    assert_eq!(image["stores"], "ceph");
    assert_eq!(image["size"], 12 << 20);
    assert_eq!(image["checksum"], md5_hex(&bytes));
    assert_eq!(
        image["os_hash_value"],
        hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&bytes))
    );
    assert_eq!(
        locations(&server, &id),
        vec![(
            format!("s3://{}/{bucket}/{id}", s3.host()),
            "{\"store\": \"ceph\"}".to_owned()
        )]
    );
    let client = s3.client();
    let stored = object(&client, &bucket, &id).await.expect("the object");
    assert_eq!(md5_hex(&stored), md5_hex(&bytes));
    // A multipart object's ETag is the MD5 of the parts' MD5s, with the part count.
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(&id)
        .send()
        .await
        .expect("head");
    assert!(
        head.e_tag().unwrap_or_default().ends_with("-3\""),
        "{:?}",
        head.e_tag()
    );
    assert_eq!(multipart_uploads(&client, &bucket).await, Ok(0));

    // Uncached: S3 to the client and into the cache at once; then a hit.
    assert!(!cached(&server, &id));
    let first = get(server.addr, &format!("/v2/images/{id}/file"), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-md5"), Some(md5_hex(&bytes).as_str()));
    assert!(first.body == bytes, "the download differs from the upload");
    assert!(cached(&server, &id), "the full read did not fill the cache");
    // The object gone from S3, the cached copy still serves it.
    client
        .delete_object()
        .bucket(&bucket)
        .key(&id)
        .send()
        .await
        .expect("delete");
    let second = get(server.addr, &format!("/v2/images/{id}/file"), &[]).await;
    assert_eq!(second.status, 200);
    assert!(second.body == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn a_range_of_an_uncached_image_is_a_ranged_get_and_never_caches() {
    let s3 = s3();
    let bucket = bucket();
    let server = start(&ceph_options(&s3, s3.host(), &bucket, "")).await;
    let id = new_image(server.addr).await;
    let bytes = data(3 << 20, 11); // below 5 MiB: one PUT
    assert_eq!(put(server.addr, &id, &bytes, None).await.status, 204);
    let head = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key(&id)
        .send()
        .await
        .expect("head");
    assert!(
        !head.e_tag().unwrap_or_default().contains('-'),
        "not a single PUT: {:?}",
        head.e_tag()
    );

    let start = 1_000_000u64;
    let end = 2_500_000u64;
    let range = format!("bytes={start}-{end}");
    let reply = get(
        server.addr,
        &format!("/v2/images/{id}/file"),
        &[("Range", &range)],
    )
    .await;
    assert_eq!(reply.status, 206);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes {start}-{end}/{}", bytes.len()).as_str())
    );
    assert!(reply.body == bytes[start as usize..=end as usize]);
    assert!(!cached(&server, &id), "a range filled the cache");
    let tail = get(
        server.addr,
        &format!("/v2/images/{id}/file"),
        &[("Range", "bytes=-10")],
    )
    .await;
    assert_eq!(tail.status, 206);
    assert!(tail.body == bytes[bytes.len() - 10..]);
    remove_bucket(&s3.client(), &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn stores_are_listed_chosen_by_header_and_deleted_with_the_image() {
    let s3 = s3();
    let bucket = bucket();
    let server = start(&ceph_options(&s3, s3.host(), &bucket, "")).await;
    let info = get(server.addr, "/v2/info/stores", &[]).await;
    assert_eq!(info.status, 200);
    assert_eq!(
        info.json(),
        json!({"stores": [
            {"id": "fast", "description": "Local disk"},
            {"id": "ceph", "default": "true"},
        ]})
    );

    let local = new_image(server.addr).await;
    let bytes = data(100_000, 3);
    assert_eq!(
        put(server.addr, &local, &bytes, Some("fast")).await.status,
        204
    );
    let image = get(server.addr, &format!("/v2/images/{local}"), &[])
        .await
        .json();
    assert_eq!(image["stores"], "fast");
    let path = server.dir.path().join("images").join(&local);
    assert_eq!(
        locations(&server, &local),
        vec![(
            format!("file://{}", path.display()),
            "{\"store\": \"fast\"}".to_owned()
        )]
    );

    let unknown = new_image(server.addr).await;
    let reply = put(server.addr, &unknown, &bytes, Some("swift")).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("'swift'")
    );
    let image = get(server.addr, &format!("/v2/images/{unknown}"), &[])
        .await
        .json();
    assert_eq!(image["status"], "queued");

    let remote = new_image(server.addr).await;
    assert_eq!(put(server.addr, &remote, &bytes, None).await.status, 204);
    let client = s3.client();
    assert!(object(&client, &bucket, &remote).await.is_some());
    for id in [&local, &remote] {
        assert_eq!(
            call(
                server.addr,
                "DELETE",
                &format!("/v2/images/{id}"),
                &[],
                vec![]
            )
            .await
            .status,
            204
        );
    }
    assert!(!path.exists(), "the file store kept the data");
    assert_eq!(
        object(&client, &bucket, &remote).await,
        None,
        "S3 kept the object"
    );
    remove_bucket(&s3.client(), &bucket).await;
}

/// Asserts a 5xx JSON answer whose message names the store.
fn store_error(reply: &common::server::Reply, status: u16, mentions: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("store \"ceph\""), "{message}");
    assert!(
        message.contains(mentions),
        "{message} does not mention {mentions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn wrong_credentials_and_a_missing_bucket_are_named_and_leave_the_image_queued() {
    let s3 = s3();
    let bucket = bucket();
    let wrong = ceph_options(&s3, s3.host(), &bucket, "").replace(&s3.secret_key, "0000wrong0000");
    let server = start(&wrong).await;
    let id = new_image(server.addr).await;
    let reply = put(server.addr, &id, &data(1 << 20, 1), None).await;
    store_error(&reply, 502, "s3_store_secret_key");
    // JSON also for a client that did not ask for it (store failures, like 503s).
    let plain = call(
        server.addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[("Content-Type", "application/octet-stream")],
        data(1000, 1),
    )
    .await;
    store_error(&plain, 502, "s3_store_secret_key");
    assert!(!String::from_utf8_lossy(&reply.body).contains("0000wrong0000"));
    let image = get(server.addr, &format!("/v2/images/{id}"), &[])
        .await
        .json();
    assert_eq!(image["status"], "queued");

    let no_create = ceph_options(&s3, s3.host(), &bucket, "").replace(
        "s3_store_create_bucket_on_put = true",
        "s3_store_create_bucket_on_put = false",
    );
    let server = start(&no_create).await;
    let id = new_image(server.addr).await;
    let reply = put(server.addr, &id, &data(1 << 20, 1), None).await;
    store_error(&reply, 502, "s3_store_create_bucket_on_put");
    let image = get(server.addr, &format!("/v2/images/{id}"), &[])
        .await
        .json();
    assert_eq!(image["status"], "queued");
    remove_bucket(&s3.client(), &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn s3_down_answers_503_naming_the_store_and_caches_nothing() {
    let s3 = s3();
    let bucket = bucket();
    let target = s3.host().parse::<SocketAddr>().expect("host:port");
    let proxy = Proxy::start(target).await;
    let options = ceph_options(
        &s3,
        &proxy.addr.to_string(),
        &bucket,
        "s3_store_connect_timeout = 2\ns3_store_read_timeout = 2\ns3_store_max_retries = 1\n",
    );
    let server = start(&options).await;
    let id = new_image(server.addr).await;
    let bytes = data(2 << 20, 5);
    assert_eq!(put(server.addr, &id, &bytes, None).await.status, 204);

    proxy.cut();
    let reply = get(server.addr, &format!("/v2/images/{id}/file"), &[]).await;
    store_error(&reply, 503, "GetObject");
    assert!(reply.header("retry-after").is_some());
    assert!(!cached(&server, &id));
    let other = new_image(server.addr).await;
    let reply = put(server.addr, &other, &bytes, None).await;
    store_error(&reply, 503, "HeadBucket");
    let image = get(server.addr, &format!("/v2/images/{other}"), &[])
        .await
        .json();
    assert_eq!(image["status"], "queued");

    proxy.restore();
    let reply = get(server.addr, &format!("/v2/images/{id}/file"), &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body == bytes);
    assert_eq!(put(server.addr, &other, &bytes, None).await.status, 204);
    remove_bucket(&s3.client(), &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn a_hanging_s3_times_out_as_configured_with_503_naming_the_store() {
    let s3 = s3();
    let bucket = bucket();
    let target = s3.host().parse::<SocketAddr>().expect("host:port");
    let proxy = Proxy::start(target).await;
    let options = ceph_options(
        &s3,
        &proxy.addr.to_string(),
        &bucket,
        "s3_store_connect_timeout = 1\ns3_store_read_timeout = 1\ns3_store_max_retries = 1\n",
    );
    let server = start(&options).await;
    let id = new_image(server.addr).await;
    let bytes = data(1 << 20, 21);
    assert_eq!(put(server.addr, &id, &bytes, None).await.status, 204);

    proxy.stall();
    let started = std::time::Instant::now();
    let reply = get(server.addr, &format!("/v2/images/{id}/file"), &[]).await;
    let waited = started.elapsed();
    store_error(&reply, 503, "GetObject");
    assert!(!cached(&server, &id));
    // Two attempts of a one-second read timeout, not the defaults' minutes.
    assert!(
        waited < Duration::from_secs(30),
        "answered after {waited:?}"
    );
    let other = new_image(server.addr).await;
    store_error(
        &put(server.addr, &other, &bytes, None).await,
        503,
        "HeadBucket",
    );

    proxy.restore();
    let reply = get(server.addr, &format!("/v2/images/{id}/file"), &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body == bytes);
    remove_bucket(&s3.client(), &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn a_download_cut_mid_object_resumes_from_the_next_byte() {
    let s3 = s3();
    let bucket = bucket();
    let target = s3.host().parse::<SocketAddr>().expect("host:port");
    let proxy = Arc::new(Proxy::start(target).await);
    let server = start(&ceph_options(&s3, &proxy.addr.to_string(), &bucket, "")).await;
    let id = new_image(server.addr).await;
    let bytes = data(64 << 20, 9);
    assert_eq!(put(server.addr, &id, &bytes, None).await.status, 204);

    // Cut every connection to S3 (then let new ones through) while the client reads
    // slowly, so that the cut lands inside the object.
    let (addr, path) = (server.addr, format!("/v2/images/{id}/file"));
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut all = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            std::thread::sleep(Duration::from_millis(2));
        }
        all
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    proxy.restore();
    let response = reader.await.expect("reader");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    assert!(response.starts_with(b"HTTP/1.1 200"));
    assert_eq!(response.len() - split, bytes.len(), "the body is short");
    assert!(response[split..] == bytes[..], "the resumed body differs");
    assert!(
        cached(&server, &id),
        "a complete read should fill the cache"
    );
    remove_bucket(&s3.client(), &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn a_download_whose_store_stays_away_is_cut_and_caches_nothing() {
    let s3 = s3();
    let bucket = bucket();
    let target = s3.host().parse::<SocketAddr>().expect("host:port");
    let proxy = Arc::new(Proxy::start(target).await);
    let options = ceph_options(
        &s3,
        &proxy.addr.to_string(),
        &bucket,
        "s3_store_connect_timeout = 1\ns3_store_read_timeout = 1\ns3_store_max_retries = 1\n",
    );
    let server = start(&options).await;
    let id = new_image(server.addr).await;
    let bytes = data(128 << 20, 13);
    assert_eq!(put(server.addr, &id, &bytes, None).await.status, 204);

    let (addr, path) = (server.addr, format!("/v2/images/{id}/file"));
    let filling = server
        .dir
        .path()
        .join("image-cache")
        .join("incomplete")
        .join(&id);
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut all = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            std::thread::sleep(Duration::from_millis(2));
        }
        all
    });
    // The fill reads the store on its own, at the store's pace: the store goes away as
    // soon as the fill has begun.
    let started = std::time::Instant::now();
    while !filling.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "no fill");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    proxy.cut();
    let response = reader.await.expect("reader");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    assert!(
        response.len() - split < bytes.len(),
        "the body should be cut short"
    );
    assert!(!cached(&server, &id), "a partial read entered the cache");
    let incomplete = server.dir.path().join("image-cache").join("incomplete");
    let left = std::fs::read_dir(&incomplete)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        left,
        0,
        "a partial file was left in {}",
        incomplete.display()
    );
    remove_bucket(&s3.client(), &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn an_upload_cut_by_the_client_aborts_its_multipart_upload() {
    let s3 = s3();
    let bucket = bucket();
    let server = start(&ceph_options(&s3, s3.host(), &bucket, "")).await;
    let id = new_image(server.addr).await;
    // Promise 40 MiB, send 17 (three parts go out), then hang up.
    let addr = server.addr;
    let path = format!("/v2/images/{id}/file");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            stream,
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            40 << 20
        )
        .expect("head");
        stream.write_all(&data(17 << 20, 2)).expect("body");
        std::thread::sleep(Duration::from_millis(500));
    })
    .await
    .expect("client");
    let client = s3.client();
    let mut status = String::new();
    for _ in 0..100 {
        let image = get(server.addr, &format!("/v2/images/{id}"), &[])
            .await
            .json();
        status = image["status"].as_str().unwrap_or_default().to_owned();
        if status == "queued" && multipart_uploads(&client, &bucket).await == Ok(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "queued");
    assert_eq!(
        multipart_uploads(&client, &bucket).await,
        Ok(0),
        "parts were left behind"
    );
    assert_eq!(object(&client, &bucket, &id).await, None);
    remove_bucket(&s3.client(), &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn an_upload_whose_store_goes_away_fails_and_its_parts_are_aborted_once_it_is_back() {
    let s3 = s3();
    let bucket = bucket();
    let target = s3.host().parse::<SocketAddr>().expect("host:port");
    let proxy = Arc::new(Proxy::start(target).await);
    let options = ceph_options(
        &s3,
        &proxy.addr.to_string(),
        &bucket,
        "s3_store_connect_timeout = 1\ns3_store_read_timeout = 2\ns3_store_max_retries = 1\n",
    );
    let server = start(&options).await;
    let id = new_image(server.addr).await;
    let bytes = data(400 << 20, 4);
    // Once the multipart upload has started, S3 goes away for the rest of it.
    let upload = tokio::spawn(put(server.addr, &id, &bytes, None));
    let client = s3.client();
    for _ in 0..500 {
        if multipart_uploads(&client, &bucket).await.unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    let reply = upload.await.expect("upload");
    store_error(&reply, 503, "");
    let image = get(server.addr, &format!("/v2/images/{id}"), &[])
        .await
        .json();
    assert_eq!(image["status"], "queued");

    proxy.restore();
    let mut left = usize::MAX;
    for _ in 0..150 {
        left = multipart_uploads(&client, &bucket).await.expect("list");
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(left, 0, "parts were left behind");
    assert_eq!(object(&client, &bucket, &id).await, None);
    remove_bucket(&s3.client(), &bucket).await;
}

/// Pseudo-random bytes, `len` of them, made on the fly.
struct Generated {
    left: u64,
    state: u64,
}

impl std::io::Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX))
            & !7;
        for word in buf[..n].chunks_exact_mut(8) {
            self.state = self
                .state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            word.copy_from_slice(&self.state.to_le_bytes());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// glance-api's peak resident memory (VmHWM), everything counted.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("kB");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Ceph's RADOS Gateway (GLANCE_TEST_S3_*), which tests/run.sh starts"]
async fn uploading_2_gib_to_s3_holds_its_memory_to_the_part_buffers() {
    let s3 = s3();
    let bucket = bucket();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    // Upstream's defaults: 10 MiB parts from 100 MiB on; the size is not announced
    // (chunked), as when an image is piped in.
    let conf = format!(
        "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = {port}\nenabled_backends = ceph:s3\n\
         [glance_store]\ndefault_backend = ceph\n\
         [ceph]\ns3_store_host = {}\ns3_store_access_key = {}\ns3_store_secret_key = {}\n\
         s3_store_bucket = {bucket}\ns3_store_create_bucket_on_put = true\n\
         s3_store_bucket_url_format = path\n\
         [database]\nconnection = sqlite:///{d}/glance.sqlite\n",
        s3.host(),
        s3.access_key,
        s3.secret_key
    );
    let path = dir.path().join("glance-api.conf");
    std::fs::write(&path, conf).expect("conf");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_glance-api"))
        .arg("--config-file")
        .arg(&path)
        .spawn()
        .expect("glance-api");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = new_image(addr).await;
    let size: u64 = 2 << 30;
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (pid, keep) = (child.id(), sampling.clone());
    let exe = env!("CARGO_BIN_EXE_glance-api").to_owned();
    let sampler = std::thread::spawn(move || {
        let (mut code, mut peak) = (0, 0);
        while keep.load(std::sync::atomic::Ordering::SeqCst) {
            let (own, data) = rss_split(pid, &exe);
            code = code.max(own);
            peak = peak.max(data);
            std::thread::sleep(Duration::from_millis(50));
        }
        (code, peak)
    });
    let url = format!("http://{addr}/v2/images/{id}/file");
    let status = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut body = Generated {
            left: size,
            state: 1,
        };
        agent
            .put(&url)
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut body))
            .expect("upload")
            .status()
            .as_u16()
    })
    .await
    .expect("client");
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (code, data_peak) = sampler.join().expect("sampler");
    let peak = peak_rss(child.id());
    let image = get(addr, &format!("/v2/images/{id}"), &[]).await.json();
    let _ = call(addr, "DELETE", &format!("/v2/images/{id}"), &[], vec![]).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 204);
    assert_eq!(image["size"], size);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "uploading 2 GiB: peak RSS {:.1} MiB, of which at most {:.1} MiB outside the executable's own pages",
        mib(peak),
        mib(data_peak)
    );
    // 64 MiB in all besides the executable's own pages (several times a release
    // build's in this unoptimised one, and growing with the code): the upload's own
    // memory (the part buffers, 20 MiB, and everything else) stays within 48 MiB.
    assert!(
        peak <= (64 << 20) + code,
        "glance-api peaked at {:.1} MiB, {:.1} MiB of it its executable's pages",
        mib(peak),
        mib(code)
    );
    assert!(
        data_peak <= 48 << 20,
        "glance-api held {:.1} MiB besides its code",
        mib(data_peak)
    );
    remove_bucket(&s3.client(), &bucket).await;
}
