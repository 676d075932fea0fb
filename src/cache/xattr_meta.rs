//! The xattr driver: hits in the file's `user.hits` attribute, last access and last
//! modification from its atime and mtime, as upstream Glance's xattr driver keeps them.

use std::fs::{File, FileTimes};
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Attribute holding the hit count, as decimal text.
pub const HITS: &str = "user.hits";
const PROBE: &str = "user.glance-cache-probe";

/// Fails unless the filesystem under `dir` stores user extended attributes.
pub fn check_supported(dir: &Path) -> io::Result<()> {
    xattr::set(dir, PROBE, b"1")?;
    xattr::remove(dir, PROBE)
}

/// The hit count of a cached file (0 when never set).
pub fn hits(path: &Path) -> io::Result<u64> {
    Ok(xattr::get(path, HITS)?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Sets the hit count.
pub fn set_hits(path: &Path, hits: u64) -> io::Result<()> {
    xattr::set(path, HITS, hits.to_string().as_bytes())
}

/// Counts a read: one more hit, and atime set to now (mounts with noatime would not).
pub fn hit(file: &File, path: &Path) -> io::Result<()> {
    set_hits(path, hits(path)?.saturating_add(1))?;
    file.set_times(FileTimes::new().set_accessed(SystemTime::now()))
}
