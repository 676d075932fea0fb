"""Route by route: the same HTTP requests to upstream Glance 33.0.0 and to our
glance-api, behind one Keystone, and their answers compared: the status code,
the headers in HEADERS (the media type of Content-Type, the methods of Allow
and Accept-Patch, the presence of the others, whose values hold IDs), and the
shape of a JSON body (its keys, nested, and the JSON type of each value; lists
by the union of their items' shapes).

Every route of the Image API v2 that both serve is here, with the status codes
clients meet: success, the usual 4xx, and 405. Each implementation gets the
same sequence of requests against images, a task and a metadef namespace of its
own (made by the sequence itself), so that IDs may differ but nothing else
should. A difference fails, unless the step is in DIFFERENCES, which says why
it is deliberate (the README's "Deliberate differences" lists the same).

Run by tests/keystone/compare.py (scenario 7), which starts both glance-apis.
"""

import json
import time
import uuid

HEADERS = (
    "content-type",
    "allow",
    "accept-patch",
    "location",
    "openstack-image-import-methods",
    "openstack-image-store-ids",
    "x-openstack-request-id",
    "content-md5",
    "content-range",
    "www-authenticate",
)
VALUED = {"content-type", "allow", "accept-patch"}

# step name -> why the answers differ on purpose.
DIFFERENCES = {
    "GET /": "x-openstack-request-id on every answer, the version documents too",
    "GET /versions": "x-openstack-request-id on every answer, the version documents too",
    "GET /v2/images/{active}/file, Range": (
        "no Content-MD5 on a 206: the header is the MD5 of the body sent (RFC 1864), "
        "and upstream sends the whole image's"),
    "GET /v2/images/{active}/file, bad Range": (
        "a 416 carries Content-Range: bytes */SIZE (RFC 9110, 15.5.17) and no body; "
        "upstream's has a JSON error and no Content-Range"),
    "POST /v2/images/{active} (405)": "HEAD is served wherever GET is, and Allow says so",
    "PUT /v2/images (405)": "HEAD is served wherever GET is, and Allow says so",
}

PATCH = "application/openstack-images-v2.1-json-patch"
NAMESPACE = "OS::Compat::Routes"


def shape(value):
    """The keys and JSON types of a value, nested; list items merged."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        merged = {}
        plain = set()
        for item in value:
            s = shape(item)
            if isinstance(s, dict):
                merged.update(s)
            else:
                plain.add(json.dumps(s))
        out = [merged] if merged else []
        return out + sorted(json.loads(p) for p in plain)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def answer(r):
    """What is compared of a response."""
    headers = {}
    for h in HEADERS:
        v = r.headers.get(h)
        if v is None:
            continue
        if h == "content-type":
            headers[h] = v.split(";")[0].strip().lower()
        elif h in VALUED:
            headers[h] = ",".join(sorted(p.strip().upper() if h == "allow" else p.strip()
                                         for p in v.split(",")))
        else:
            headers[h] = "present"
    body = None
    if r.content and r.headers.get("content-type", "").startswith("application/json"):
        try:
            body = shape(r.json())
        except ValueError:
            body = "not JSON"
    return {"status": r.status_code, "headers": headers, "body": body,
            "empty": not r.content}


def bodiless(a):
    """An answer without a body carries no Content-Type here; upstream's WSGI framework
    (webob) gives every answer one, text/html for a 204 too."""
    if not a["empty"]:
        return a
    return dict(a, headers={k: v for k, v in a["headers"].items() if k != "content-type"})


# Rules for whole classes of deliberate differences: (normalizer, reason). An answer
# pair that differs, and is the same once every rule has normalized both, is counted
# as deliberate, with the rule's reason.
RULES = (
    (bodiless, "an answer with no body has no media type (RFC 9110, 8.3)"),
)


def diff(a, b, names, path=""):
    """The places where two answers differ, as text."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}/{k}: only {names[1]} has it")
            elif k not in b:
                out.append(f"{path}/{k}: only {names[0]} has it")
            else:
                out += diff(a[k], b[k], names, f"{path}/{k}")
    elif a != b:
        out.append(f"{path}: {json.dumps(a)[:200]} vs {json.dumps(b)[:200]}")
    return out


class Sequence:
    """The requests of the comparison, in order, against one glance-api."""

    def __init__(self, http, server, tokens, project_ids):
        self.http, self.server = http, server
        self.tokens, self.project_ids = tokens, project_ids
        self.vars = {"missing": str(uuid.UUID(int=1)), "ns": NAMESPACE}
        self.answers = {}
        self.raw = {}  # step -> the start of the body, to show when the step fails

    def path(self, template):
        return template.format(**self.vars)

    def send(self, name, method, template, user="member", body=None, raw=None,
             content_type=None, headers=None):
        h = dict(headers or {})
        if content_type:
            h["Content-Type"] = content_type
        kw = {}
        if body is not None:
            kw["data"] = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        elif raw is not None:
            kw["data"] = raw
        token = self.tokens[user] if user else None
        r = self.http(self.server, method, self.path(template), token=token,
                      headers=h, allow_redirects=False, **kw)
        self.answers[name] = answer(r)
        self.raw[name] = r.text[:700]
        return r

    def wait_for_import(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http(self.server, "GET", self.path("/v2/images/{imported}"),
                          token=self.tokens["member"])
            if r.ok and r.json().get("status") in ("active", "queued", "killed"):
                tasks = self.http(self.server, "GET", self.path("/v2/images/{imported}/tasks"),
                                  token=self.tokens["member"])
                if tasks.ok and all(t.get("status") in ("success", "failure")
                                    for t in tasks.json().get("tasks", [])):
                    return
            time.sleep(0.5)

    def run(self):
        s = self.send
        beta = self.project_ids["beta"]
        # Discovery and schemas.
        s("GET /", "GET", "/", user=None)
        s("GET /versions", "GET", "/versions", user=None)
        s("GET /v2", "GET", "/v2")
        for schema in ("image", "images", "member", "members", "task", "tasks",
                       "metadefs/namespace", "metadefs/namespaces", "metadefs/object",
                       "metadefs/objects", "metadefs/property", "metadefs/properties",
                       "metadefs/tag", "metadefs/tags", "metadefs/resource_type",
                       "metadefs/resource_types"):
            s(f"GET /v2/schemas/{schema}", "GET", f"/v2/schemas/{schema}")
        s("GET /v2/schemas/bogus", "GET", "/v2/schemas/bogus")
        s("GET /v2/info/import", "GET", "/v2/info/import")
        s("GET /v2/info/stores", "GET", "/v2/info/stores")
        s("GET /v2/info/stores/detail (member)", "GET", "/v2/info/stores/detail")
        s("GET /v2/info/stores/detail (admin)", "GET", "/v2/info/stores/detail", user="admin")
        s("GET /v2/info/usage", "GET", "/v2/info/usage")
        # Images.
        r = s("POST /v2/images", "POST", "/v2/images",
              body={"name": "routes-active", "disk_format": "raw", "container_format": "bare",
                    "tags": ["t1"], "routes_prop": "x"})
        self.vars["active"] = r.json().get("id", "-")
        r = s("POST /v2/images (queued)", "POST", "/v2/images", body={"name": "routes-queued"})
        self.vars["queued"] = r.json().get("id", "-")
        s("POST /v2/images, bad disk_format", "POST", "/v2/images",
          body={"name": "x", "disk_format": "floppy"})
        s("POST /v2/images, reserved property", "POST", "/v2/images",
          body={"name": "x", "os_glance_foo": "y"})
        s("POST /v2/images, not JSON", "POST", "/v2/images", raw=b"{",
          content_type="application/json")
        s("PUT /v2/images/{active}/file", "PUT", "/v2/images/{active}/file",
          raw=b"route data\n" * 100, content_type="application/octet-stream")
        s("GET /v2/images/{active}", "GET", "/v2/images/{active}")
        s("GET /v2/images/{missing}", "GET", "/v2/images/{missing}")
        s("GET /v2/images/not-a-uuid", "GET", "/v2/images/not-a-uuid")
        s("GET /v2/images/{active}/file", "GET", "/v2/images/{active}/file")
        s("GET /v2/images/{active}/file, Range", "GET", "/v2/images/{active}/file",
          headers={"Range": "bytes=0-9"})
        s("GET /v2/images/{active}/file, bad Range", "GET", "/v2/images/{active}/file",
          headers={"Range": "bytes=5000-6000"})
        s("GET /v2/images/{queued}/file", "GET", "/v2/images/{queued}/file")
        s("GET /v2/images/{missing}/file", "GET", "/v2/images/{missing}/file")
        s("GET /v2/images", "GET", "/v2/images")
        s("GET /v2/images?limit=1", "GET", "/v2/images?limit=1&name=routes-active")
        s("GET /v2/images?name=routes-active", "GET", "/v2/images?name=routes-active")
        s("GET /v2/images?sort_key=bogus", "GET", "/v2/images?sort_key=bogus")
        s("GET /v2/images?limit=x", "GET", "/v2/images?limit=x")
        s("GET /v2/images?size_min=x", "GET", "/v2/images?size_min=x")
        s("GET /v2/images?marker={missing}", "GET", "/v2/images?marker={missing}")
        s("PATCH /v2/images/{queued}", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"op": "replace", "path": "/name", "value": "renamed"},
                          {"op": "add", "path": "/routes_prop", "value": "y"}]),
          content_type=PATCH)
        s("PATCH /v2/images/{queued}, v2.0 patch", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"replace": "/name", "value": "renamed again"}]),
          content_type="application/openstack-images-v2.0-json-patch")
        s("PATCH /v2/images/{queued}, wrong media type", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"op": "replace", "path": "/name", "value": "x"}]),
          content_type="application/json")
        s("PATCH /v2/images/{queued}, reserved property", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"op": "add", "path": "/os_glance_foo", "value": "x"}]),
          content_type=PATCH)
        s("PATCH /v2/images/{queued}, read-only", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"op": "replace", "path": "/status", "value": "active"}]),
          content_type=PATCH)
        s("PATCH /v2/images/{queued}, bad op", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"op": "frobnicate", "path": "/name", "value": "x"}]),
          content_type=PATCH)
        s("POST /v2/images/{active} (405)", "POST", "/v2/images/{active}", body={})
        s("PUT /v2/images (405)", "PUT", "/v2/images", body={})
        # Tags.
        s("PUT /v2/images/{active}/tags/t2", "PUT", "/v2/images/{active}/tags/t2")
        s("DELETE /v2/images/{active}/tags/t2", "DELETE", "/v2/images/{active}/tags/t2")
        s("DELETE /v2/images/{active}/tags/none", "DELETE", "/v2/images/{active}/tags/none")
        # Members.
        s("POST /v2/images/{active}/members (private image)", "POST",
          "/v2/images/{active}/members", body={"member": beta})
        s("PATCH /v2/images/{active} visibility shared", "PATCH", "/v2/images/{active}",
          raw=json.dumps([{"op": "replace", "path": "/visibility", "value": "shared"}]),
          content_type=PATCH)
        s("POST /v2/images/{active}/members", "POST", "/v2/images/{active}/members",
          body={"member": beta})
        s("POST /v2/images/{active}/members again", "POST", "/v2/images/{active}/members",
          body={"member": beta})
        s("GET /v2/images/{active}/members", "GET", "/v2/images/{active}/members")
        self.vars["beta"] = beta
        s("GET /v2/images/{active}/members/{beta}", "GET", "/v2/images/{active}/members/{beta}")
        s("PUT /v2/images/{active}/members/{beta} (owner)", "PUT",
          "/v2/images/{active}/members/{beta}", body={"status": "accepted"})
        s("PUT /v2/images/{active}/members/{beta} (member)", "PUT",
          "/v2/images/{active}/members/{beta}", user="beta", body={"status": "accepted"})
        s("PUT /v2/images/{active}/members/{beta}, bad status", "PUT",
          "/v2/images/{active}/members/{beta}", user="beta", body={"status": "maybe"})
        s("DELETE /v2/images/{active}/members/{beta}", "DELETE",
          "/v2/images/{active}/members/{beta}")
        # Deactivate and reactivate.
        s("POST .../actions/deactivate (member)", "POST",
          "/v2/images/{active}/actions/deactivate")
        s("GET /v2/images/{active}/file, deactivated", "GET", "/v2/images/{active}/file",
          user="beta")
        s("POST .../actions/reactivate (member)", "POST",
          "/v2/images/{active}/actions/reactivate")
        s("POST .../actions/deactivate (queued)", "POST",
          "/v2/images/{queued}/actions/deactivate")
        s("POST .../actions/bogus", "POST", "/v2/images/{active}/actions/bogus")
        # Import.
        r = s("POST /v2/images (to import)", "POST", "/v2/images",
              body={"name": "routes-import", "disk_format": "raw", "container_format": "bare"})
        self.vars["imported"] = r.json().get("id", "-")
        s("POST .../import, not staged", "POST", "/v2/images/{imported}/import",
          body={"method": {"name": "glance-direct"}})
        s("PUT /v2/images/{imported}/stage", "PUT", "/v2/images/{imported}/stage",
          raw=b"staged data\n" * 100, content_type="application/octet-stream")
        s("POST .../import, bad method", "POST", "/v2/images/{imported}/import",
          body={"method": {"name": "teleport"}})
        s("POST .../import, unknown store", "POST", "/v2/images/{imported}/import",
          body={"method": {"name": "glance-direct"}, "stores": ["nowhere"]})
        s("POST /v2/images/{imported}/import", "POST", "/v2/images/{imported}/import",
          body={"method": {"name": "glance-direct"}})
        # The import runs on; the rest waits for it (upstream's SQLite catalogue is
        # locked while its import task writes, and the task's fields change as it ends).
        self.wait_for_import()
        r = s("GET /v2/images/{imported}/tasks", "GET", "/v2/images/{imported}/tasks")
        tasks = r.json().get("tasks", []) if r.ok else []
        self.vars["task"] = tasks[0]["id"] if tasks else "-"
        s("GET /v2/tasks", "GET", "/v2/tasks", user="admin")
        s("GET /v2/tasks/{task}", "GET", "/v2/tasks/{task}", user="admin")
        s("GET /v2/tasks/{missing}", "GET", "/v2/tasks/{missing}", user="admin")
        s("GET /v2/tasks?sort_dir=sideways", "GET", "/v2/tasks?sort_dir=sideways",
          user="admin")
        # Metadefs.
        s("GET /v2/metadefs/namespaces", "GET", "/v2/metadefs/namespaces")
        s("POST /v2/metadefs/namespaces (member)", "POST", "/v2/metadefs/namespaces",
          body={"namespace": NAMESPACE})
        s("POST /v2/metadefs/namespaces", "POST", "/v2/metadefs/namespaces", user="admin",
          body={"namespace": NAMESPACE, "display_name": "Routes", "visibility": "public",
                "protected": False})
        s("POST /v2/metadefs/namespaces again", "POST", "/v2/metadefs/namespaces",
          user="admin", body={"namespace": NAMESPACE})
        s("GET /v2/metadefs/namespaces/{ns}", "GET", "/v2/metadefs/namespaces/{ns}")
        s("PUT /v2/metadefs/namespaces/{ns}", "PUT", "/v2/metadefs/namespaces/{ns}",
          user="admin", body={"namespace": NAMESPACE, "description": "d",
                              "visibility": "public"})
        s("POST .../objects", "POST", "/v2/metadefs/namespaces/{ns}/objects", user="admin",
          body={"name": "obj", "properties": {"p": {"type": "string", "title": "P"}}})
        s("GET .../objects", "GET", "/v2/metadefs/namespaces/{ns}/objects")
        s("GET .../objects/obj", "GET", "/v2/metadefs/namespaces/{ns}/objects/obj")
        s("POST .../properties", "POST", "/v2/metadefs/namespaces/{ns}/properties",
          user="admin", body={"name": "prop", "type": "integer", "title": "Prop"})
        s("POST .../properties, bad type", "POST", "/v2/metadefs/namespaces/{ns}/properties",
          user="admin", body={"name": "prop2", "type": "colour", "title": "Prop"})
        s("GET .../properties", "GET", "/v2/metadefs/namespaces/{ns}/properties")
        s("GET .../properties/prop", "GET", "/v2/metadefs/namespaces/{ns}/properties/prop")
        s("POST .../tags/tag1", "POST", "/v2/metadefs/namespaces/{ns}/tags/tag1",
          user="admin")
        s("POST .../tags", "POST", "/v2/metadefs/namespaces/{ns}/tags", user="admin",
          body={"tags": [{"name": "tag2"}, {"name": "tag3"}]})
        s("GET .../tags", "GET", "/v2/metadefs/namespaces/{ns}/tags")
        s("GET /v2/metadefs/resource_types", "GET", "/v2/metadefs/resource_types")
        s("POST .../resource_types", "POST", "/v2/metadefs/namespaces/{ns}/resource_types",
          user="admin", body={"name": "OS::Glance::Image", "prefix": "routes_"})
        s("GET .../resource_types", "GET", "/v2/metadefs/namespaces/{ns}/resource_types")
        s("DELETE .../tags", "DELETE", "/v2/metadefs/namespaces/{ns}/tags", user="admin")
        s("DELETE .../objects/obj", "DELETE", "/v2/metadefs/namespaces/{ns}/objects/obj",
          user="admin")
        s("DELETE /v2/metadefs/namespaces/{ns}", "DELETE", "/v2/metadefs/namespaces/{ns}",
          user="admin")
        s("GET /v2/metadefs/namespaces/{ns}, deleted", "GET", "/v2/metadefs/namespaces/{ns}")
        # Cache.
        s("GET /v2/cache (member)", "GET", "/v2/cache")
        s("PUT /v2/cache/{active}", "PUT", "/v2/cache/{active}", user="admin")
        s("PUT /v2/cache/{missing}", "PUT", "/v2/cache/{missing}", user="admin")
        s("GET /v2/cache", "GET", "/v2/cache", user="admin")
        s("DELETE /v2/cache/{active}", "DELETE", "/v2/cache/{active}", user="admin")
        s("DELETE /v2/cache", "DELETE", "/v2/cache", user="admin")
        # Stores and deletion.
        s("DELETE /v2/stores/file1/{active}, last location", "DELETE",
          "/v2/stores/file1/{active}", user="admin")
        s("DELETE /v2/stores/nowhere/{active}", "DELETE", "/v2/stores/nowhere/{active}",
          user="admin")
        s("PATCH /v2/images/{queued} protected", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"op": "replace", "path": "/protected", "value": True}]),
          content_type=PATCH)
        s("DELETE /v2/images/{queued}, protected", "DELETE", "/v2/images/{queued}")
        s("PATCH /v2/images/{queued} unprotected", "PATCH", "/v2/images/{queued}",
          raw=json.dumps([{"op": "replace", "path": "/protected", "value": False}]),
          content_type=PATCH)
        for image in ("queued", "active", "imported"):
            s(f"DELETE /v2/images/{{{image}}}", "DELETE", f"/v2/images/{{{image}}}")
        s("DELETE /v2/images/{missing}", "DELETE", "/v2/images/{missing}")
        s("GET /v2/images/{active}, deleted", "GET", "/v2/images/{active}")
        return self


def compare(sequences):
    """sequences: implementation -> its Sequence, run. Yields (step, ok, detail)."""
    impls = list(sequences)
    first, second = sequences[impls[0]].answers, sequences[impls[1]].answers
    for step in first:
        a, b = first[step], second.get(step)
        if b is None:
            yield step, False, f"no answer from {impls[1]}"
            continue
        if a == b:
            yield step, step not in DIFFERENCES, (
                "" if step not in DIFFERENCES else "listed as a difference but the same")
            continue
        na, nb = a, b
        reasons = []
        for normalize, reason in RULES:
            na2, nb2 = normalize(na), normalize(nb)
            if (na2, nb2) != (na, nb):
                reasons.append(reason)
            na, nb = na2, nb2
        if na == nb:
            yield step, True, "deliberate (" + "; ".join(reasons) + ")"
            continue
        where = diff(a, b, impls)
        text = f"{impls[0]} vs {impls[1]}: " + "; ".join(where[:6])
        if step not in DIFFERENCES:
            text += "".join(f"\n{i} answered {sequences[i].raw.get(step, '')!r}" for i in impls)
        if step in DIFFERENCES:
            yield step, True, f"deliberate ({DIFFERENCES[step]}): {text}"
        else:
            yield step, False, text
