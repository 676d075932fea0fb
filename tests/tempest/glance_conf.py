"""The configurations of the Tempest runs (tests/tempest/harness.py): the
profiles, each one glance-api.conf for both implementations (only the paths
and the port differ) and one tempest.conf; upstream's uWSGI settings.

glance-api.conf, as tests/keystone/compare.py writes it (keystone paste
flavor with cache management, [keystone_authtoken] for the service user glance,
a SQLite catalogue, the image cache with the sqlite driver, upstream's default
policies), plus what Tempest's image tests exercise:
  - stores: two file stores, `fast` (the default, weight 50) and `cheap`
    (weight 100: Glance lists an image's stores by weight, and Tempest's
    waiter compares them with the store ids sorted by name);
  - image import: glance-direct, web-download and copy-image, with the
    reserved staging and tasks stores;
  - locations: show_multiple_locations and show_image_direct_url on;
  - [import_filtering_opts]: 127.0.0.1 and the port of the harness's file
    server allowed (Glance refuses loopback hosts and ports other than 80
    and 443 by default, for web-download and for http locations alike).

The profiles (PROFILES) differ in what Tempest's location tests need: an http
store `web` in enabled_backends (Glance takes http locations only with one)
with [image-feature-enabled] manage_locations and http_store_enabled, and
do_secure_hash on or off (Tempest has a test for each). Each test runs in
exactly one profile.
"""

import os
import re

TOKEN_CACHE_TIME = 60
STORES = ("fast", "cheap")


class Profile:
    """A configuration of glance-api and Tempest, and the tests run under it:
    those whose ids `select` matches (re.search)."""

    def __init__(self, name, select, http_store, do_secure_hash, max_workers=None):
        self.name, self.select = name, select
        self.http_store, self.do_secure_hash = http_store, do_secure_hash
        self.max_workers = max_workers

    def wants(self, test_id):
        return self.select(test_id)


# Tempest's location tests. HashCalculationRemoteDeletionTest is not among
# them: it serves its data on a non-loopback address of this host, so it stays
# in the main profile, where it skips for want of http_store_enabled.
LOCATION_TESTS = re.compile(
    r"^tempest\.api\.image\.v2\.(test_images\.(ImageLocationsTest|LocationImportTest|"
    r"MultistoreLocationImportTest)|admin\.test_images\.ImageLocationsAdminTest)\.")
# The ones that want do_secure_hash off (they skip when it is on, and the
# others with do_secure_hash in their names skip when it is off).
NO_HASH_TESTS = re.compile(r"\.test_add_location_with_do_secure_hash_false$")

# The location profiles run one test at a time: two location_import tasks at
# once make upstream's SQLite catalogue refuse writes (`database is locked`)
# and its tasks fail.
PROFILES = (
    Profile("main", lambda t: not LOCATION_TESTS.search(t),
            http_store=False, do_secure_hash=True),
    Profile("locations", lambda t: bool(LOCATION_TESTS.search(t))
            and not NO_HASH_TESTS.search(t),
            http_store=True, do_secure_hash=True, max_workers=1),
    Profile("locations-nohash", lambda t: bool(LOCATION_TESTS.search(t))
            and bool(NO_HASH_TESTS.search(t)),
            http_store=True, do_secure_hash=False, max_workers=1),
)


def glance_api_conf(directory, port, ks, files_port, profile):
    backends = "fast:file, cheap:file" + (", web:http" if profile.http_store else "")
    web = ("\n[web]\nstore_description = Read-only http store\n"
           if profile.http_store else "")
    return f"""[DEFAULT]
bind_host = 127.0.0.1
bind_port = {port}
enabled_backends = {backends}
enabled_import_methods = [glance-direct,web-download,copy-image]
show_multiple_locations = True
show_image_direct_url = True
do_secure_hash = {profile.do_secure_hash}
image_cache_dir = {directory}/cache
image_cache_driver = sqlite
image_cache_max_size = 1073741824
image_cache_stall_time = 86400
debug = false
use_stderr = true

[database]
connection = sqlite:///{directory}/glance.db

[paste_deploy]
flavor = keystone+cachemanagement
config_file = {directory}/etc/glance-api-paste.ini

[glance_store]
default_backend = fast

[fast]
filesystem_store_datadir = {directory}/fast
store_description = Fast file store
weight = 50

[cheap]
filesystem_store_datadir = {directory}/cheap
store_description = Cheap file store
weight = 100
{web}
[os_glance_staging_store]
filesystem_store_datadir = {directory}/staging

[os_glance_tasks_store]
filesystem_store_datadir = {directory}/tasks

[import_filtering_opts]
allowed_hosts = [127.0.0.1]
allowed_ports = [{files_port}]

[oslo_concurrency]
lock_path = {directory}/locks

[keystone_authtoken]
auth_type = password
auth_url = {ks["KEYSTONE_URL"]}
www_authenticate_uri = {ks["KEYSTONE_URL"]}
username = {ks["GLANCE_SERVICE_USER"]}
password = {ks["GLANCE_SERVICE_PASSWORD"]}
project_name = {ks["GLANCE_SERVICE_PROJECT"]}
user_domain_name = Default
project_domain_name = Default
region_name = {ks["KEYSTONE_REGION"]}
token_cache_time = {TOKEN_CACHE_TIME}
"""


def prepare_dir(directory, port, ks, files_port, profile):
    """Makes the directories and etc/glance-api.conf; returns its path."""
    for d in ("etc", "cache", "staging", "tasks", "locks") + STORES:
        os.makedirs(os.path.join(directory, d), exist_ok=True)
    conf = os.path.join(directory, "etc", "glance-api.conf")
    with open(conf, "w") as f:
        f.write(glance_api_conf(directory, port, ks, files_port, profile))
    return conf


def uwsgi_ini(directory, port):
    """Upstream under uWSGI: devstack's settings and one worker, as compare.py
    has them (the catalogue is one SQLite file)."""
    return f"""[uwsgi]
http-socket = 127.0.0.1:{port}
module = glance.wsgi.api:application
chdir = {directory}
master = true
processes = 1
threads = 1
enable-threads = true
lazy-apps = true
die-on-term = true
need-app = true
http-raw-body = true
http-chunked-input = true
http-auto-chunked = true
chunked-input-limit = 16777216
buffer-size = 65535
http-keepalive = false
add-header = Connection: close
"""


def tempest_conf(run_dir, ks, files_base, profile):
    """Dynamic credentials made with Keystone's admin; only glance available."""
    locations = str(profile.http_store).lower()
    services_off = "\n".join(f"{s} = False" for s in (
        "cinder", "neutron", "nova", "swift", "horizon", "placement", "keystone_v2"))
    return f"""[DEFAULT]
log_dir = {run_dir}
log_file = tempest.log
debug = true

[oslo_concurrency]
lock_path = {run_dir}/locks

[auth]
use_dynamic_credentials = true
create_isolated_networks = false
admin_username = {ks["KEYSTONE_ADMIN_USER"]}
admin_password = {ks["KEYSTONE_ADMIN_PASSWORD"]}
admin_project_name = {ks["KEYSTONE_ADMIN_PROJECT"]}
admin_domain_name = Default
default_credentials_domain_name = Default

[identity]
uri_v3 = {ks["KEYSTONE_URL"]}
auth_version = v3
region = {ks["KEYSTONE_REGION"]}
v3_endpoint_type = public

[identity-feature-enabled]
api_v2 = false
api_v3 = true

[service_available]
glance = true
{services_off}

[enforce_scope]
glance = true

[validation]
run_validation = false

[image]
region = {ks["KEYSTONE_REGION"]}
endpoint_type = public
http_image = {files_base}/cirros.tar.gz
http_qcow2_image = {files_base}/cirros.qcow2
image_caching_enabled = true
build_timeout = 60
build_interval = 1

[image-feature-enabled]
api_v2 = true
import_image = true
os_glance_reserved = true
manage_locations = {locations}
http_store_enabled = {locations}
do_secure_hash = {str(profile.do_secure_hash).lower()}
image_conversion = false
image_format_enforcement = true
store_weight_enabled = true
"""
