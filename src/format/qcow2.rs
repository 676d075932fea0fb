//! QEMU's own formats: qcow2 (inspected and checked) and QED (recognised, never allowed).
//!
//! qcow2 header (big-endian): magic `QFI\xfb` at 0, version at 4, backing file offset at
//! 8, virtual size at 24, incompatible feature bits at 72 (version 3).
//! <https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.txt>

use super::inspect::Inspector;
use super::region::{Region, be_u32, be_u64};
use super::{Format, FormatError};

const HEADER: usize = 512;
const MAGIC: &[u8] = b"QFI\xfb";
const BACKING_FILE_OFFSET: usize = 0x08;
const SIZE: usize = 0x18;
const INCOMPATIBLE_FEATURES: usize = 0x48;
/// Incompatible feature bit 2: an external data file holds the guest data.
const DATA_FILE_BIT: u8 = 1 << 2;
/// The incompatible feature bits upstream knows (dirty, corrupt, external data file,
/// compression type); any other set bit is refused.
const KNOWN_FEATURES: u8 = 0x0f;

pub(crate) const MAX_BUFFERED: usize = HEADER;
pub(crate) const QED_MAX_BUFFERED: usize = HEADER;

#[derive(Debug)]
pub(crate) struct Qcow2 {
    header: Region,
}

impl Qcow2 {
    pub(crate) fn new() -> Self {
        Qcow2 {
            header: Region::new(0, HEADER),
        }
    }

    fn header(&self) -> &[u8] {
        self.header.data()
    }

    fn version(&self) -> u32 {
        be_u32(self.header(), 4)
    }

    fn features(&self) -> &[u8] {
        &self.header()[INCOMPATIBLE_FEATURES..INCOMPATIBLE_FEATURES + 8]
    }

    fn check_backing_file(&self) -> Option<String> {
        (be_u64(self.header(), BACKING_FILE_OFFSET) != 0)
            .then(|| "Image has a backing file".to_owned())
    }

    fn check_data_file(&self) -> Option<String> {
        // As upstream, whatever the version: the bit sits in the last byte of the field.
        (self.features()[7] & DATA_FILE_BIT != 0).then(|| "Image has data_file set".to_owned())
    }

    fn check_unknown_features(&self) -> Option<String> {
        match self.version() {
            // Version 2 has no feature bits.
            2 => None,
            3 => {
                let features = self.features();
                let unknown =
                    features[..7].iter().any(|b| *b != 0) || features[7] & !KNOWN_FEATURES != 0;
                unknown.then(|| "Unknown QCOW2 features found".to_owned())
            }
            _ => Some("Unsupported qcow2 version".to_owned()),
        }
    }
}

impl Inspector for Qcow2 {
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.header.feed(chunk, start);
        Ok(())
    }

    fn done(&self) -> bool {
        self.header.is_full()
            || !self.header().is_empty()
                && !MAGIC.starts_with(&self.header()[..self.header().len().min(4)])
    }

    fn complete(&self) -> bool {
        self.header.is_full()
    }

    fn format_match(&self) -> bool {
        self.header.is_full() && self.header().starts_with(MAGIC)
    }

    fn virtual_size(&self, _total: u64) -> u64 {
        if self.format_match() {
            be_u64(self.header(), SIZE)
        } else {
            0
        }
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("backing_file", self.check_backing_file()),
            ("data_file", self.check_data_file()),
            ("unknown_features", self.check_unknown_features()),
        ]
    }

    fn buffered(&self) -> usize {
        self.header().len()
    }
}

/// QED: no one supports it; recognised so that it is refused.
#[derive(Debug)]
pub(crate) struct Qed {
    header: Region,
}

impl Qed {
    pub(crate) fn new() -> Self {
        Qed {
            header: Region::new(0, HEADER),
        }
    }
}

impl Inspector for Qed {
    fn format(&self) -> Format {
        Format::Qed
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.header.feed(chunk, start);
        Ok(())
    }

    fn done(&self) -> bool {
        let h = self.header.data();
        self.header.is_full() || !h.is_empty() && !b"QED\0".starts_with(&h[..h.len().min(4)])
    }

    fn complete(&self) -> bool {
        self.header.is_full()
    }

    fn format_match(&self) -> bool {
        self.header.is_full() && self.header.data().starts_with(b"QED\0")
    }

    fn virtual_size(&self, total: u64) -> u64 {
        // Upstream's QED inspector does not read the header's size.
        total
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("banned", Some("This file format is not allowed".to_owned()))]
    }

    fn buffered(&self) -> usize {
        self.header.data().len()
    }
}
