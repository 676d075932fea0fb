#!/usr/bin/env python3
"""Build an image cache directory in upstream Glance's sqlite-driver layout.

Usage: python3 make_cache.py DIR N SIZE_BYTES

Creates DIR (which must not exist, or be empty) containing:

* the subdirectories ``incomplete/``, ``invalid/`` and ``queue/``;
* N sparse files of SIZE_BYTES bytes each, named by uuid4-format ids drawn
  from ``random.Random(42)`` (so every run yields the same names);
* ``cache.db``, a sqlite database with upstream's ``cached_images`` table
  (glance/image_cache/drivers/sqlite.py) and one row per file, where entry i
  (in generation order) has last_accessed = last_modified = 1700000000.0 + i,
  size = SIZE_BYTES and hits = 0. Entry 0 is thus the least recently used.

Prints the total size of the image files in bytes (N * SIZE_BYTES) on
stdout. Uses the standard library only; does not import glance.
"""

import os
import random
import sqlite3
import sys
import uuid

SCHEMA = """
CREATE TABLE cached_images (
    image_id TEXT PRIMARY KEY,
    last_accessed REAL DEFAULT 0.0,
    last_modified REAL DEFAULT 0.0,
    size INTEGER DEFAULT 0,
    hits INTEGER DEFAULT 0,
    checksum TEXT
);
"""

DB_NAME = "cache.db"  # upstream's default for image_cache_sqlite_db
BASE_TIME = 1700000000.0
SEED = 42


def image_ids(n):
    """Return n distinct uuid4-format ids, deterministic for a given n."""
    rng = random.Random(SEED)
    ids = []
    seen = set()
    while len(ids) < n:
        image_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if image_id not in seen:
            seen.add(image_id)
            ids.append(image_id)
    return ids


def make_cache(base_dir, n, size):
    if os.path.exists(base_dir) and os.listdir(base_dir):
        raise SystemExit("error: %s exists and is not empty" % base_dir)
    os.makedirs(base_dir, exist_ok=True)
    for sub in ("incomplete", "invalid", "queue"):
        os.mkdir(os.path.join(base_dir, sub))

    rows = []
    for i, image_id in enumerate(image_ids(n)):
        with open(os.path.join(base_dir, image_id), "wb") as f:
            f.truncate(size)
        ts = BASE_TIME + i
        rows.append((image_id, ts, ts, size, 0))

    conn = sqlite3.connect(os.path.join(base_dir, DB_NAME))
    try:
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO cached_images"
            " (image_id, last_accessed, last_modified, size, hits)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        conn.commit()
    finally:
        conn.close()
    return n * size


def main(argv):
    if len(argv) != 4:
        sys.stderr.write("usage: %s DIR N SIZE_BYTES\n" % argv[0])
        return 2
    try:
        n = int(argv[2])
        size = int(argv[3])
    except ValueError:
        sys.stderr.write("error: N and SIZE_BYTES must be integers\n")
        return 2
    if n < 0 or size < 0:
        sys.stderr.write("error: N and SIZE_BYTES must be non-negative\n")
        return 2
    print(make_cache(argv[1], n, size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
