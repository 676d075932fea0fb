//! Image IDs: canonical UUIDs and nothing else, so no ID can name a path outside the cache.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// An ID that is not a canonical UUID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not an image ID (expected a UUID such as 6f1c2d3e-0000-4000-8000-000000000001)")]
pub struct InvalidImageId(pub String);

/// A validated image ID: 36 characters, lowercase hex digits in the 8-4-4-4-12 layout.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageId(String);

impl ImageId {
    /// Parses `s`. Uppercase hex is accepted and stored lowercase, as Glance does.
    pub fn parse(s: &str) -> Result<Self, InvalidImageId> {
        let bytes = s.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if well_formed {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(InvalidImageId(s.to_owned()))
        }
    }

    /// A fresh random (version 4) ID.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The ID as text; also the cache file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImageId {
    type Err = InvalidImageId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_are_ids() {
        let id = ImageId::parse("6F1C2D3E-0000-4000-8000-00000000000A").expect("uuid");
        assert_eq!(id.as_str(), "6f1c2d3e-0000-4000-8000-00000000000a");
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "6f1c2d3e-0000-4000-8000-00000000000",
            "6f1c2d3e-0000-4000-8000-00000000000a0",
            "6f1c2d3e00000-4000-8000-00000000000a",
            "6f1c2d3e-0000-4000-8000-00000000000g",
            "6f1c2d3e-0000-4000-8000-0000000/000a",
            "6f1c2d3e-0000-4000-8000-00000000000\u{e9}",
        ] {
            assert!(ImageId::parse(bad).is_err(), "{bad:?}");
        }
        assert_ne!(ImageId::random(), ImageId::random());
        assert!(ImageId::parse(ImageId::random().as_str()).is_ok());
    }
}
