#!/usr/bin/env python3
"""Cross-implementation compatibility test of the s3 store: upstream OpenStack
Glance 33.0.0 (glance_store's s3 driver, boto3) and this project's glance-api on
one MariaDB database and one S3 bucket, each reading what the other wrote.

Run by tests/compat/shared_s3.sh, with the python of the upstream venv
(benches/upstream/setup.sh: glance, PyMySQL, boto3, requests). Needs the MariaDB
server of tests/db/servers.sh (GLANCE_TEST_MYSQL_URL: a user who may create
databases) and a RADOS Gateway from tests/s3/rgw.sh (GLANCE_TEST_S3_ENDPOINT,
GLANCE_TEST_S3_ACCESS_KEY, GLANCE_TEST_S3_SECRET_KEY, GLANCE_TEST_S3_REGION).
Helpers (reporting, processes, database access) come from shared_database.py.

Both glance-apis get the same stores: `enabled_backends = fast:file, ceph:s3`,
`default_backend = ceph`, one bucket made for the run (created on the first
put), path-style requests, and 5 MiB for s3_store_large_object_size and
s3_store_large_object_chunk_size, so that a 12 MiB image is written in three
parts by both; `fast` is one shared directory.

Checks, each printed as `ok: N ...` when it passes, or `FAIL: N ...` with what was
seen; a failed check does not stop the others (only those that need its result).
Exit status 0 when all passed, 1 otherwise (the failed checks are listed last).

1  both servers start on the database (upstream's glance-manage db_sync made it);
2  both answer GET /v2/info/stores with the same JSON;
3  direction A, written through upstream and read through ours, for a small image
   (one PUT) and a 12 MiB one (multipart upload):
   3a create and upload through upstream;
   3b the object in the bucket: the size, the ETag of one PUT or of three 5 MiB
      parts, the bytes;
   3c both show the image alike: active, size, checksum and os_hash_value of the
      data, stores "ceph", every other field equal;
   3d ours downloads the bytes (MD5 equal to the upload and to `checksum`);
   3e the image_locations row: s3://HOST:PORT/BUCKET/ID, meta_data exactly
      {"store": "ceph"}, active;
4  direction B, the same written through ours and read through upstream;
5  the rows each wrote for its own upload (images, image_properties, image_tags,
   image_locations) are alike, image ids aside;
6  Range requests on upstream's 12 MiB image:
   6a through ours: 206, Content-Range and the right bytes;
   6b upstream answers them alike, or with 400 StoreRandomGetNotSupported (its
      s3 driver cannot read from an offset: a known difference, printed as a note);
7  X-Image-Meta-Store:
   7a an image put into `fast` through either is read through the other
      (file://DIR/ID, {"store": "fast"}, stores "fast", nothing in the bucket);
   7c Range requests on upstream's image in `fast`: ours answers exactly like
      upstream;
   7d an unknown store name gets the same status from both, the image stays queued;
8  deletes, each image through the server that did not write it or through its
   writer: 204, the object is gone from the bucket (HEAD 404), the rows are soft
   deleted, both answer 404;
9  no multipart upload is left in the bucket, and no object.

The database compat_s3_<random> is dropped and the bucket emptied and removed
at the end; every process started here is stopped, also on failure.
"""

import argparse
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import traceback

import boto3
import botocore.config
import botocore.exceptions

import shared_database as sd

MiB = 1024 * 1024
PART = 5 * MiB  # s3_store_large_object_size and _chunk_size, in MiB: 5
S3_STORE, FILE_STORE = "ceph", "fast"
SIZES = {"small": MiB + 4099, "large": 12 * MiB + 12345}
# glance_store's StoreRandomGetNotSupported, as upstream answers a Range request on
# an image in a store that cannot read from an offset (s3).
RANDOM_GET = "Getting images randomly from this store is not supported"


# --- servers -------------------------------------------------------------------


def store_conf(s3, bucket, fast_dir):
    """The backend sections, the same for both servers."""
    region = f"s3_store_region_name = {s3['region']}\n" if s3["region"] else ""
    return f"""[{FILE_STORE}]
filesystem_store_datadir = {fast_dir}
store_description = Shared directory

[{S3_STORE}]
store_description = Ceph RADOS Gateway
s3_store_host = {s3['endpoint']}
s3_store_access_key = {s3['access_key']}
s3_store_secret_key = {s3['secret_key']}
s3_store_bucket = {bucket}
s3_store_create_bucket_on_put = true
s3_store_bucket_url_format = path
{region}s3_store_large_object_size = {PART // MiB}
s3_store_large_object_chunk_size = {PART // MiB}
"""


def child_env(extra):
    """The environment of a server: no OS_* (a client's credentials) nor AWS_*
    (boto3 would read an endpoint, a profile or a CA bundle from them)."""
    env = dict(os.environ, **extra)
    return {k: v for k, v in env.items() if not k.startswith(("OS_", "AWS_"))}


class UpstreamApi(sd.UpstreamApi):
    """benches/upstream/glance_api.sh with the stores of store_conf()."""

    def __init__(self, script, directory, db_url, conf, procs):
        self.dir = directory
        self.port = sd.free_port()
        env = child_env({
            "GLANCE_API_DB_URL": db_url,
            "GLANCE_API_ENABLED_BACKENDS": f"{FILE_STORE}:file, {S3_STORE}:s3",
            "GLANCE_API_DEFAULT_BACKEND": S3_STORE,
            "GLANCE_API_STORE_CONF": conf,
            "GLANCE_API_PROCESSES": "1",
            "GLANCE_API_TIMEOUT": str(sd.START_TIMEOUT),
        })
        self.popen = subprocess.Popen(
            [script, directory, str(self.port)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        procs.add(self.popen.pid, self.popen)
        self.procs = procs
        self.base = None


class OurApi(sd.OurApi):
    def __init__(self, binary, directory, db_url, conf, procs):
        os.makedirs(directory, exist_ok=True)
        self.port = sd.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(directory, "glance-api.log")
        path = os.path.join(directory, "glance-api.conf")
        with open(path, "w") as f:
            f.write(f"""[DEFAULT]
bind_host = 127.0.0.1
bind_port = {self.port}
enabled_backends = {FILE_STORE}:file, {S3_STORE}:s3

[glance_store]
default_backend = {S3_STORE}

[database]
connection = {db_url}

[paste_deploy]
flavor =

{conf}""")
        with open(self.log, "w") as log:
            self.popen = subprocess.Popen([binary, "--config-file", path], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, env=child_env({}))
        procs.add(self.popen.pid, self.popen)


# --- S3 ----------------------------------------------------------------------


def s3_client(s3):
    # Checksums only where an operation needs them: Ceph 16's gateway does not
    # know S3's flexible checksums.
    config = botocore.config.Config(
        s3={"addressing_style": "path"}, retries={"max_attempts": 2},
        request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return boto3.session.Session().client(
        "s3", endpoint_url=s3["endpoint"], region_name=s3["region"] or "us-east-1",
        aws_access_key_id=s3["access_key"], aws_secret_access_key=s3["secret_key"], config=config)


def client_error_code(e):
    return str(e.response.get("Error", {}).get("Code"))


def head(client, bucket, key):
    """head_object's answer, or the error code (404 when there is no such key)."""
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        return client_error_code(e)


def expected_etag(data):
    """The ETag S3 gives an object: the MD5 of one PUT, or of three 5 MiB parts."""
    if len(data) < PART:
        return f'"{hashlib.md5(data).hexdigest()}"'
    parts = [data[i:i + PART] for i in range(0, len(data), PART)]
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def empty_bucket(client, bucket):
    """Aborts the multipart uploads of `bucket`, deletes its objects and the bucket."""
    try:
        for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        if client_error_code(e) != "NoSuchBucket":
            raise


# --- the test ----------------------------------------------------------------


class Image:
    """One image: who wrote it, what was uploaded, its id once created."""

    def __init__(self, writer, size_name, data, store=S3_STORE):
        self.writer, self.size_name, self.data, self.store = writer, size_name, data, store
        self.md5 = hashlib.md5(data).hexdigest()
        self.sha512 = hashlib.sha512(data).hexdigest()
        self.id = None
        self.rows = None  # the rows after the upload


class SharedS3:
    def __init__(self, report, server, db, client, bucket, endpoint, fast_dir, upstream, ours):
        self.report, self.server, self.db = report, server, db
        self.s3, self.bucket, self.fast_dir = client, bucket, fast_dir
        self.apis = {"upstream": upstream, "ours": ours}
        self.prefix = f"s3://{re.sub(r'^https?://', '', endpoint).strip('/')}/{bucket}"
        self.images = {}  # (writer, size name) -> Image

    def other(self, api):
        return self.apis["ours" if api.name == "upstream" else "upstream"]

    def run(self):
        rep = self.report
        with sd.section(rep, "2. GET /v2/info/stores"):
            self.info_stores()
        for num, d, writer in (("3", "A", "upstream"), ("4", "B", "ours")):
            for size_name, size in SIZES.items():
                img = Image(writer, size_name, os.urandom(size))
                reader = self.other(self.apis[writer])
                with sd.section(rep, f"{num}. direction {d}, {size_name} image ({size} bytes, "
                                     f"{'multipart' if size >= PART else 'one PUT'}): written through "
                                     f"{writer}, read through {reader.name}"):
                    self.direction(num, img, self.apis[writer], reader)
        with sd.section(rep, "5. rows each server wrote for its own upload"):
            self.compare_rows()
        with sd.section(rep, "6. Range requests through ours on upstream's multipart image"):
            self.ranges()
        with sd.section(rep, "7. X-Image-Meta-Store"):
            self.store_header()
        with sd.section(rep, "8. deletes"):
            self.deletes()
        with sd.section(rep, "9. the bucket at the end"):
            self.bucket_at_end()

    # 2
    def info_stores(self):
        answers = {n: api.req("GET", "/v2/info/stores") for n, api in self.apis.items()}
        problems = []
        for n, r in answers.items():
            problems += sd.status_is(self.apis[n], r, 200, "GET /v2/info/stores")
        if not problems:
            up, ours = answers["upstream"].json(), answers["ours"].json()
            if up != ours:
                problems.append(f"upstream: {json.dumps(up, sort_keys=True)}\n"
                                f"ours:     {json.dumps(ours, sort_keys=True)}")
        detail = answers["upstream"].text.strip() if not problems else None
        self.report.check("2 both answer GET /v2/info/stores with the same JSON", problems, detail)

    # 3 and 4
    def create_upload(self, api, img, name, headers=None):
        """Creates the image and uploads its data through `api`: problems, or []."""
        r = api.create({"name": name, "disk_format": "raw", "container_format": "bare"})
        problems = sd.status_is(api, r, 201, "POST /v2/images")
        if problems:
            return problems
        img.id = r.json()["id"]
        r = api.req("PUT", f"/v2/images/{img.id}/file", data=img.data,
                    headers={"Content-Type": "application/octet-stream", **(headers or {})})
        return sd.status_is(api, r, 204, f"PUT /v2/images/{img.id}/file ({len(img.data)} bytes)")

    def direction(self, num, img, writer, reader):
        rep = self.report
        pre = f"{num}{{}} [{img.size_name}] {writer.name}→{reader.name}:"
        rep.require(pre.format("a") + f" create and upload {len(img.data)} bytes through {writer.name}",
                    self.create_upload(writer, img, f"compat-s3-{img.size_name}-{secrets.token_hex(3)}"))
        self.images[(writer.name, img.size_name)] = img

        # The object in the bucket.
        problems = []
        h = head(self.s3, self.bucket, img.id)
        if isinstance(h, str):
            problems.append(f"HEAD {self.bucket}/{img.id}: error {h}")
        else:
            want = expected_etag(img.data)
            if h.get("ContentLength") != len(img.data):
                problems.append(f"ContentLength {h.get('ContentLength')}, expected {len(img.data)}")
            if h.get("ETag") != want:
                problems.append(f"ETag {h.get('ETag')}, expected {want} "
                                f"({'three 5 MiB parts' if '-' in want else 'one PUT'})")
            body = self.s3.get_object(Bucket=self.bucket, Key=img.id)["Body"].read()
            if body != img.data:
                problems.append(f"GET {self.bucket}/{img.id}: {len(body)} bytes, md5 "
                                f"{hashlib.md5(body).hexdigest()}, not the upload (md5 {img.md5})")
        how = "three 5 MiB parts" if len(img.data) >= PART else "one PUT"
        rep.check(pre.format("b") + f" the object {self.bucket}/<id> holds the upload, ETag of {how}", problems)

        # Both show it.
        docs, problems = {}, []
        for api in (writer, reader):
            r = api.show(img.id)
            p = sd.status_is(api, r, 200, f"GET /v2/images/{img.id}")
            if not p:
                docs[api.name] = doc = r.json()
                want = {"status": "active", "size": len(img.data), "checksum": img.md5,
                        "os_hash_algo": "sha512", "os_hash_value": img.sha512, "stores": S3_STORE}
                p = [f"{api.name}: {k} is {json.dumps(doc.get(k))}, expected {json.dumps(v)}"
                     for k, v in want.items() if doc.get(k) != v]
            problems += p
        if len(docs) == 2:
            diffs = sd.doc_differences(docs["upstream"], docs["ours"])
            if diffs:
                problems += [f"GET /v2/images/{img.id}, field by field (upstream, then ours):"] + \
                    ["  " + x for x in diffs]
        rep.check(pre.format("c") + " both show it alike: active, size, checksum and os_hash_value of the "
                  "data, stores \"ceph\", every other field equal", problems)

        # The reader downloads it.
        r = reader.download(img.id)
        problems = sd.status_is(reader, r, 200, f"GET /v2/images/{img.id}/file")
        if not problems:
            got = hashlib.md5(r.content).hexdigest()
            if got != img.md5 or r.content != img.data:
                problems.append(f"{len(r.content)} bytes with md5 {got}; uploaded {len(img.data)} "
                                f"bytes with md5 {img.md5}")
            checksum = docs.get(reader.name, {}).get("checksum")
            if got != checksum:
                problems.append(f"md5 {got} is not the image's checksum {checksum}")
            if r.headers.get("Content-MD5") != img.md5:
                problems.append(f"Content-MD5: {r.headers.get('Content-MD5')!r}, expected {img.md5}")
        rep.check(pre.format("d") + f" {reader.name} downloads it: md5 equal to the upload's and to "
                  f"checksum ({img.md5})", problems)

        # The location row.
        img.rows = sd.snapshot(self.server, self.db, img.id)
        rep.check(pre.format("e") + f" the image_locations row {writer.name} wrote: "
                  f"{self.prefix}/<id>, meta_data {{\"store\": \"{S3_STORE}\"}}, active",
                  self.location_problems(img.rows, f"{self.prefix}/{img.id}", S3_STORE))

    def location_problems(self, rows, value, store):
        locs = rows["image_locations"]
        if len(locs) != 1:
            return [f"expected one image_locations row, found {len(locs)}:\n{sd.rows_text(locs)}"]
        row = {k: sd.bool_int(v) for k, v in locs[0].items()}
        want = {"value": value, "meta_data": json.dumps({"store": store}), "status": "active",
                "deleted": 0, "deleted_at": None}
        return [f"image_locations.{k}: expected {v!r}, found {row.get(k)!r}"
                for k, v in want.items() if row.get(k) != v]

    # 5
    def compare_rows(self):
        for size_name in SIZES:
            a, b = self.images.get(("upstream", size_name)), self.images.get(("ours", size_name))
            check = (f"5 [{size_name}] the images, image_properties, image_tags and image_locations rows "
                     f"upstream wrote for its upload equal ours (ids, names, hashes and timestamp values aside)")
            if a is None or b is None or a.rows is None or b.rows is None:
                self.report.fail(check, "not compared: a step before it failed")
                continue
            views = []
            for img in (a, b):
                view = sd.snapshot_view(img.rows)
                # The location's value with the image id replaced, the rest as it is.
                for row, raw in zip(view["image_locations"], img.rows["image_locations"]):
                    row["value"] = raw["value"].replace(img.id, "<id>")
                views.append(view)
            problems = []
            for table in views[0]:
                if views[0][table] != views[1][table]:
                    problems.append(f"{table}:\n  upstream: {sd.rows_text(views[0][table])}\n"
                                    f"  ours:     {sd.rows_text(views[1][table])}")
            self.report.check(check, problems)

    # 6
    def range_answers(self, img, cases):
        """Each case's Range request through ours, then through upstream: problems with
        ours (206, Content-Range, the bytes), and the cases where upstream answers
        otherwise, as (case, upstream's response, ours)."""
        ours, up = self.apis["ours"], self.apis["upstream"]
        n = len(img.data)
        problems, unlike = [], []
        for what, rng, start, end in cases:
            r = ours.req("GET", f"/v2/images/{img.id}/file", headers={"Range": rng})
            want_cr = f"bytes {start}-{end - 1}/{n}"
            if r.status_code != 206:
                problems.append(f"{what}: Range: {rng}: expected 206, got:\n{sd.seen(r)}")
            else:
                if r.content != img.data[start:end]:
                    problems.append(f"{what}: Range: {rng}: {len(r.content)} bytes that are not "
                                    f"bytes {start}..{end - 1} of the image")
                if r.headers.get("Content-Range") != want_cr:
                    problems.append(f"{what}: Range: {rng}: Content-Range "
                                    f"{r.headers.get('Content-Range')!r}, expected {want_cr!r}")
            u = up.req("GET", f"/v2/images/{img.id}/file", headers={"Range": rng})
            keys = ("Content-Range", "Content-Length")
            if (u.status_code, *(u.headers.get(k) for k in keys)) != \
                    (r.status_code, *(r.headers.get(k) for k in keys)) or u.content != r.content:
                unlike.append(((what, rng), u, r))
        return problems, unlike

    @staticmethod
    def unlike_text(image_id, unlike):
        def one(resp):
            return (f"{resp.status_code}, Content-Range {resp.headers.get('Content-Range')!r}, "
                    f"Content-Length {resp.headers.get('Content-Length')!r}, "
                    + (f"{len(resp.content)} bytes" if resp.status_code == 206 else
                       f"body {' '.join(resp.text.split())[:160]!r}"))
        return "\n".join(f"GET /v2/images/{image_id}/file, Range: {rng} ({what}):\n"
                         f"  upstream: {one(u)}\n  ours:     {one(o)}" for (what, rng), u, o in unlike)

    def ranges(self):
        img = self.images.get(("upstream", "large"))
        if img is None or img.id is None:
            self.report.fail("6 Range requests", "not tried: upstream's multipart upload failed")
            return
        n = len(img.data)
        cases = [
            ("across the first part boundary", f"bytes={PART - 100}-{PART + 99}", PART - 100, PART + 100),
            ("the first byte", "bytes=0-0", 0, 1),
            ("within the last part", f"bytes={2 * PART + 10}-{2 * PART + 65545}", 2 * PART + 10, 2 * PART + 65546),
            ("from an offset to the end", f"bytes={n - 70000}-", n - 70000, n),
            ("the last 1000 bytes (suffix)", "bytes=-1000", n - 1000, n),
        ]
        problems, unlike = self.range_answers(img, cases)
        self.report.check(f"6a Range requests through ours on upstream's multipart image: 206, "
                          f"Content-Range and the bytes ({len(cases)} ranges)", problems)
        # glance_store's s3 driver has no random access (its capabilities lack
        # READ_OFFSET and READ_CHUNK): upstream answers a Range request on an image in
        # S3 with 400 StoreRandomGetNotSupported, where ours serves the range.
        refused = [x for x in unlike if x[1].status_code == 400 and RANDOM_GET in x[1].text]
        others = [x for x in unlike if x not in refused]
        detail = None
        if refused:
            detail = (f"upstream answers {len(refused)} of them 400 ('{RANDOM_GET}'), see the note")
            self.report.note("Range on an image in the s3 store: upstream's s3 driver cannot read from an offset, "
                             "so upstream answers 400 where ours answers 206 with the range:\n"
                             + self.unlike_text(img.id, refused))
        self.report.check("6b upstream answers the same Range requests like ours (status, Content-Range, "
                          "Content-Length, bytes), or with 400 because its s3 driver has no random access",
                          [self.unlike_text(img.id, others)] if others else [], detail)

    # 7
    def store_header(self):
        rep = self.report
        for writer in (self.apis["upstream"], self.apis["ours"]):
            reader = self.other(writer)
            img = Image(writer.name, "small", os.urandom(SIZES["small"]), FILE_STORE)
            pre = f"7a [{FILE_STORE}] {writer.name}→{reader.name}:"
            problems = self.create_upload(writer, img, f"compat-s3-fast-{secrets.token_hex(3)}",
                                          {"X-Image-Meta-Store": FILE_STORE})
            if img.id is not None:
                self.images[(writer.name, FILE_STORE)] = img
            if not problems:
                path = os.path.join(self.fast_dir, img.id)
                try:
                    with open(path, "rb") as f:
                        if f.read() != img.data:
                            problems.append(f"{path} does not hold the upload")
                except OSError as e:
                    problems.append(f"no data file in the shared directory: {e}")
                h = head(self.s3, self.bucket, img.id)
                if h != "404":
                    problems.append(f"HEAD {self.bucket}/{img.id}: expected 404, got "
                                    f"{h if isinstance(h, str) else 200}")
                img.rows = sd.snapshot(self.server, self.db, img.id)
                problems += self.location_problems(img.rows, f"file://{path}", FILE_STORE)
                for api in (writer, reader):
                    r = api.show(img.id)
                    p = sd.status_is(api, r, 200, "show")
                    if not p and r.json().get("stores") != FILE_STORE:
                        p = [f"{api.name} shows stores {r.json().get('stores')!r}, expected {FILE_STORE!r}"]
                    problems += p
                r = reader.download(img.id)
                p = sd.status_is(reader, r, 200, f"GET /v2/images/{img.id}/file")
                if not p and r.content != img.data:
                    p = [f"{reader.name} downloads {len(r.content)} bytes with md5 "
                         f"{hashlib.md5(r.content).hexdigest()}, not the upload's {img.md5}"]
                problems += p
            rep.check(f"{pre} upload with X-Image-Meta-Store: {FILE_STORE} through {writer.name} goes to the "
                      f"shared directory (file://<dir>/<id>, {{\"store\": \"{FILE_STORE}\"}}, stores "
                      f"\"{FILE_STORE}\" on both, not in the bucket); {reader.name} downloads it", problems)

        img = self.images.get(("upstream", FILE_STORE))
        if img is None or img.id is None:
            rep.fail("7c Range requests on upstream's image in fast", "not tried: its upload failed")
        else:
            n = len(img.data)
            cases = [("a middle range", "bytes=1000-66535", 1000, 66536),
                     ("from an offset to the end", f"bytes={n - 5000}-", n - 5000, n),
                     ("the last 1000 bytes (suffix)", "bytes=-1000", n - 1000, n)]
            problems, unlike = self.range_answers(img, cases)
            if unlike:
                problems.append("upstream answers otherwise:\n" + self.unlike_text(img.id, unlike))
            rep.check(f"7c Range requests on upstream's image in {FILE_STORE}: ours answers 206 with the "
                      f"bytes, and exactly like upstream ({len(cases)} ranges)", problems)

        answers, problems = {}, []
        for api in self.apis.values():
            r = api.create({"name": f"compat-s3-nostore-{secrets.token_hex(3)}", "disk_format": "raw",
                            "container_format": "bare"})
            p = sd.status_is(api, r, 201, "POST /v2/images")
            if p:
                problems += p
                continue
            image_id = r.json()["id"]
            u = api.req("PUT", f"/v2/images/{image_id}/file", data=b"x" * 1000,
                        headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": "nosuch"})
            answers[api.name] = u
            s = api.show(image_id)
            if s.status_code != 200 or s.json().get("status") != "queued":
                problems.append(f"after that PUT {api.name} shows the image as {sd.seen(s)}")
            api.delete(image_id)
        if len(answers) == 2:
            u, o = answers["upstream"], answers["ours"]
            if u.status_code != o.status_code:
                problems.append(f"PUT /v2/images/ID/file with X-Image-Meta-Store: nosuch:\n"
                                f"  upstream: {sd.seen(u)}\n  ours:     {sd.seen(o)}")
        detail = f"both {answers['upstream'].status_code}" if not problems and answers else None
        rep.check("7d an upload with X-Image-Meta-Store: nosuch gets the same status from both, the image "
                  "stays queued", problems, detail)

    # 8
    def deletes(self):
        plan = [
            (("upstream", "small"), "ours"),
            (("ours", "small"), "upstream"),
            (("upstream", "large"), "upstream"),
            (("ours", "large"), "ours"),
            (("upstream", FILE_STORE), "ours"),
            (("ours", FILE_STORE), "upstream"),
        ]
        for key, deleter_name in plan:
            img = self.images.get(key)
            deleter = self.apis[deleter_name]
            gone = ("its file gone from the shared directory" if key[1] == FILE_STORE
                    else "the object gone from the bucket (HEAD 404)")
            check = (f"8 [{key[1]}] image written by {key[0]}, deleted through {deleter_name}: 204, "
                     f"{gone}, rows soft-deleted, 404 from both")
            if img is None or img.id is None:
                self.report.fail(check, "not tried: its upload failed")
                continue
            r = deleter.delete(img.id)
            problems = sd.status_is(deleter, r, 204, f"DELETE /v2/images/{img.id}")
            if not problems:
                if img.store == S3_STORE:
                    h = head(self.s3, self.bucket, img.id)
                    if h != "404":
                        problems.append(f"HEAD {self.bucket}/{img.id}: expected 404, got "
                                        f"{h if isinstance(h, str) else '200 (the object is still there)'}")
                elif os.path.exists(os.path.join(self.fast_dir, img.id)):
                    problems.append(f"{os.path.join(self.fast_dir, img.id)} is still there")
                snap = sd.snapshot(self.server, self.db, img.id)
                if len(snap["images"]) != 1:
                    problems.append(f"expected the images row to stay, found {len(snap['images'])} rows")
                else:
                    row = snap["images"][0]
                    if sd.bool_int(row["deleted"]) != 1 or row["status"] != "deleted" or row["deleted_at"] is None:
                        problems.append(f"images row: expected deleted=1, status 'deleted', deleted_at set; "
                                        f"found deleted={row['deleted']!r}, status={row['status']!r}, "
                                        f"deleted_at={row['deleted_at']!r}")
                locs = snap["image_locations"]
                bad = [r for r in locs if sd.bool_int(r["deleted"]) != 1 or r["status"] != "deleted"
                       or r["deleted_at"] is None]
                if not locs or bad:
                    problems.append(f"image_locations: expected its row with deleted=1, status 'deleted', "
                                    f"deleted_at set; found:\n{sd.rows_text(locs)}")
                for api in self.apis.values():
                    problems += sd.status_is(api, api.show(img.id), 404, f"GET /v2/images/{img.id}")
                    problems += sd.status_is(api, api.download(img.id), 404, f"GET /v2/images/{img.id}/file")
            self.report.check(check, problems)

    # 9
    def bucket_at_end(self):
        problems = []
        try:
            uploads = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
            if uploads:
                problems.append("multipart uploads left:\n" + "\n".join(
                    f"  {u['Key']} {u['UploadId']} (initiated {u.get('Initiated')})" for u in uploads))
        except botocore.exceptions.ClientError as e:
            problems.append(f"list_multipart_uploads: {e}")
        self.report.check(f"9a no multipart upload is left in the bucket {self.bucket}", problems)
        problems = []
        try:
            objs = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
            if objs:
                problems.append("objects left: " + ", ".join(o["Key"] for o in objs))
        except botocore.exceptions.ClientError as e:
            problems.append(f"list_objects_v2: {e}")
        self.report.check(f"9b no object is left in the bucket {self.bucket} (every image was deleted)", problems)


# --- main ------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", required=True, help="directory with our glance-api")
    p.add_argument("--glance-api-sh", required=True, help="benches/upstream/glance_api.sh")
    p.add_argument("--workdir", required=True, help="an empty scratch directory")
    return p.parse_args()


def main():
    args = parse_args()
    report = sd.Report()
    procs = sd.Processes()
    cleanups = []  # (what, function) to run at the end, last first

    def on_term(*_):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)

    with open(os.path.join(args.workdir, "pgid"), "w") as f:
        f.write(f"{os.getpgrp()}\n")
    # Every server is on 127.0.0.1: no proxy for boto3 (here and in upstream's glance-api).
    for var in ("no_proxy", "NO_PROXY"):
        os.environ[var] = ",".join(x for x in (os.environ.get(var), "127.0.0.1", "localhost") if x)

    try:
        missing = [v for v in ("GLANCE_TEST_MYSQL_URL", "GLANCE_TEST_S3_ENDPOINT", "GLANCE_TEST_S3_ACCESS_KEY",
                               "GLANCE_TEST_S3_SECRET_KEY") if not os.environ.get(v)]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not set (tests/db/servers.sh and tests/s3/rgw.sh "
                               f"write them to DIR/env)")
        test(report, args, procs, cleanups)
    except KeyboardInterrupt as e:
        report.fail("run", f"interrupted ({e or 'SIGINT'})")
    except Exception:
        report.fail("setup", traceback.format_exc())
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        t = time.monotonic()
        sd.kill_running()
        procs.stop()
        for what, fn in reversed(cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                print(f"warning: could not {what}: {e}", file=sys.stderr)
        print(f"\n(stopped the servers, dropped the database and removed the bucket in "
              f"{time.monotonic() - t:.1f}s)")

    print(f"\n{report.passed} checks passed, {len(report.failed)} failed "
          f"({time.monotonic() - report.t0:.0f}s)")
    if report.notes:
        print(f"{len(report.notes)} notes, see 'note:' above")
    if report.failed:
        print("failed checks:")
        for n in report.failed:
            print(f"  - {n}")
        return 1
    return 0


def test(report, args, procs, cleanups):
    work = args.workdir
    s3 = {"endpoint": os.environ["GLANCE_TEST_S3_ENDPOINT"].rstrip("/"),
          "access_key": os.environ["GLANCE_TEST_S3_ACCESS_KEY"],
          "secret_key": os.environ["GLANCE_TEST_S3_SECRET_KEY"],
          "region": os.environ.get("GLANCE_TEST_S3_REGION", "")}
    server = sd.MariaDB(os.environ["GLANCE_TEST_MYSQL_URL"], None)
    tag = secrets.token_hex(4)
    db, bucket = f"compat_s3_{tag}", f"glance-compat-{tag}"
    fast_dir = os.path.join(work, "fast")
    os.makedirs(fast_dir)
    client = s3_client(s3)

    print(f"== 1. setup: database {db} on MariaDB, bucket {bucket} on {s3['endpoint']} "
          f"(made by the first upload)", flush=True)
    server.create(db)
    cleanups.append((f"drop the database {db}", lambda: server.drop(db)))
    cleanups.append((f"empty and remove the bucket {bucket}", lambda: empty_bucket(client, bucket)))
    r = head(client, bucket, "x")
    if r != "404":
        raise RuntimeError(f"the gateway at {s3['endpoint']} does not answer as expected "
                           f"(HEAD {bucket}/x: {r if isinstance(r, str) else 200}, expected 404)")

    conf = store_conf(s3, bucket, fast_dir)
    with sd.section(report, "1. both servers up"):
        up = UpstreamApi(args.glance_api_sh, os.path.join(work, "upstream"), server.url(db), conf, procs)
        try:
            up.wait()
            problems = []
            if "Database is synced successfully." not in up.sync_log():
                problems.append(f"glance_api.sh's db_sync.log:\n{up.sync_log()[-2000:]}")
        except Exception as e:  # noqa: BLE001
            problems = [str(e)]
        report.require(f"1 upstream glance-api starts (glance_api.sh: glance-manage db_sync on {db}, "
                       f"then uWSGI)", problems)
        ours = OurApi(os.path.join(args.ours, "glance-api"), os.path.join(work, "ours"), server.url(db),
                      conf, procs)
        try:
            ours.wait()
            problems = []
        except Exception as e:  # noqa: BLE001
            problems = [str(e), f"log tail:\n{ours.log_tail()}"]
        report.require(f"1 our glance-api starts on the same database and stores (upstream's on {up.base}, "
                       f"ours on {ours.base})", problems)
        failed_before = len(report.failed)
        SharedS3(report, server, db, client, bucket, s3["endpoint"], fast_dir,
                 sd.Api("upstream", up.base), sd.Api("ours", ours.base)).run()
        if len(report.failed) > failed_before:
            print(f"--- tail of our glance-api log:\n{ours.log_tail(20)}"
                  f"--- tail of upstream's uwsgi.log:\n{up.log_tail(20)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
