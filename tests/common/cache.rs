//! Helpers for the tests that work on an image cache.

use std::io::Write;

use glance_operator::cache::{Cache, ImageId};
use md5::{Digest, Md5};

/// A fixed, readable image ID: 00000000-0000-4000-8000-<n, 12 digits>.
pub fn id(n: u32) -> ImageId {
    ImageId::parse(&format!("00000000-0000-4000-8000-{n:012}")).expect("id")
}

/// MD5 of `data`, hex.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// Writes `data` into the cache as `image`, checksum verified, and publishes it.
pub fn put(cache: &Cache, image: &ImageId, data: &[u8]) {
    let mut w = cache
        .open_for_write(image, Some(&md5_hex(data)))
        .expect("open")
        .expect("not cached yet");
    w.write_all(data).expect("write");
    w.commit().expect("commit");
}

/// The IDs the cache holds, in its listing order.
pub fn cached_ids(cache: &Cache) -> Vec<ImageId> {
    cache
        .cached()
        .expect("list")
        .into_iter()
        .map(|e| e.image_id)
        .collect()
}
