//! VMware VMDK. Only single-file layouts are allowed, as upstream allows them: a hosted
//! sparse extent (`KDMV` header) whose embedded descriptor says `monolithicSparse` or
//! `streamOptimized`. Anything else names extents in other files, which qemu would open
//! on the host that reads the image.
//!
//! Sparse header (little-endian): magic at 0, version at 4, capacity in sectors at 12,
//! descriptor offset and size in sectors at 28 and 36, grain directory offset at 56
//! (all ones: the real header is in a footer before the end-of-stream marker).

use super::inspect::Inspector;
use super::region::{Region, Tail, le_u32, le_u64};
use super::{Format, FormatError};

const HEADER: usize = 512;
/// What a sparse header needs to be read.
const MIN_SPARSE_HEADER: usize = 64;
const MAGIC: &[u8] = b"KDMV";
/// Where qemu expects the embedded descriptor, and at most how long it is.
const DESC_OFFSET: u64 = 0x200;
const DESC_MAX: usize = (1 << 20) - 1;
/// What qemu reads of an embedded descriptor (`vmdk_open_vmdk4`, 10 KiB).
const QEMU_DESC_READ: usize = 10 * 1024;
const GD_AT_END: u64 = u64::MAX;
/// Footer marker, footer (a copy of the header) and end-of-stream marker.
const FOOTER: usize = 1536;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;
/// The `createType`s upstream allows.
const ALLOWED_TYPES: &[&str] = &["monolithicsparse", "streamoptimized"];
const EXTENT_ACCESS: &[&str] = &["rw", "rdonly", "noaccess"];

pub(crate) const MAX_BUFFERED: usize = HEADER + DESC_MAX + FOOTER;

#[derive(Debug)]
enum Kind {
    /// The first 512 bytes are not all in yet.
    Undecided,
    /// A hosted sparse extent: header, embedded descriptor, maybe a footer.
    Sparse,
    /// Descriptor text alone: its extents are other files.
    Text,
    /// Not a VMDK.
    Not,
}

/// A parsed descriptor.
#[derive(Debug)]
struct Descriptor {
    /// Its text, lowercased (the descriptor is case-insensitive); None if not ASCII.
    text: Option<String>,
    /// `createType`, lowercased; None if missing.
    create_type: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Vmdk {
    header: Region,
    kind: Kind,
    descriptor: Option<Region>,
    /// How much of a text descriptor was scanned for its end (a NUL) or a non-ASCII byte.
    scanned: usize,
    /// A text descriptor's end was found.
    text_ended: bool,
    parsed: Option<Descriptor>,
    footer: Option<Tail>,
    ended: bool,
}

/// Python's `str.isspace()` for ASCII.
fn is_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ')
}

/// Whether qemu's VMDK probe takes `data` for a descriptor file: comment lines (any
/// bytes) and blank lines, then `version=1`, `2` or `3` on a line of its own.
fn probes_as_descriptor(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some(first) = rest.first() {
        let line_end = rest.iter().position(|b| *b == b'\n');
        match first {
            b'#' => {
                let Some(end) = line_end else { return false };
                rest = &rest[end + 1..];
            }
            b' ' | b'\r' | b'\n' => {
                let spaces = rest.iter().take_while(|b| **b == b' ').count();
                let after = &rest[spaces..];
                let after = after.strip_prefix(b"\r").unwrap_or(after);
                match after.first() {
                    Some(b'\n') => rest = &after[1..],
                    _ => return false,
                }
            }
            _ => {
                return [b'1', b'2', b'3'].iter().any(|v| {
                    let line = [b"version=".as_slice(), &[*v]].concat();
                    rest.starts_with(&[line.as_slice(), b"\n"].concat())
                        || rest.starts_with(&[line.as_slice(), b"\r\n"].concat())
                });
            }
        }
    }
    false
}

fn parse_descriptor(data: &[u8]) -> Descriptor {
    // A descriptor is NUL-padded: its text ends at the first NUL. Other bytes are read
    // as qemu reads them: its parser searches the text for keys, whatever surrounds them.
    let data = data
        .iter()
        .position(|b| *b == 0)
        .map_or(data, |n| &data[..n]);
    let text = String::from_utf8_lossy(data).to_ascii_lowercase();
    // As qemu's vmdk_parse_description: the key, two characters skipped (`="`), then
    // the value up to the next quote.
    const KEY: &str = "createtype";
    let create_type = text.find(KEY).and_then(|at| {
        let rest = text[at + KEY.len()..].get(2..)?;
        // A huge value is not a type (and is not logged).
        rest.find('"')
            .filter(|end| *end < 64)
            .map(|end| rest[..end].to_owned())
    });
    Descriptor {
        text: Some(text),
        create_type,
    }
}

/// The fields of a sparse header at `at` in `data`: magic, version, descriptor sector,
/// descriptor sectors, grain directory offset.
fn sparse_header(data: &[u8], at: usize) -> ([u8; 4], u32, u64, u64, u64) {
    let h = data.get(at..at + MIN_SPARSE_HEADER).unwrap_or(&[]);
    let mut magic = [0u8; 4];
    if let Some(m) = h.get(..4) {
        magic.copy_from_slice(m);
    }
    (
        magic,
        le_u32(h, 4),
        le_u64(h, 28),
        le_u64(h, 36),
        le_u64(h, 56),
    )
}

impl Vmdk {
    pub(crate) fn new() -> Self {
        Vmdk {
            header: Region::new(0, HEADER),
            kind: Kind::Undecided,
            descriptor: None,
            scanned: 0,
            text_ended: false,
            parsed: None,
            footer: None,
            ended: false,
        }
    }

    /// Decides from the header what kind of file this is.
    fn decide(&mut self) -> Result<(), FormatError> {
        let h = self.header.data();
        if h.len() < MIN_SPARSE_HEADER {
            self.kind = Kind::Not;
            return Ok(());
        }
        if h.starts_with(MAGIC) {
            self.kind = Kind::Sparse;
            let (_, version, desc_sector, desc_sectors, gd_offset) = sparse_header(h, 0);
            if !(1..=3).contains(&version) {
                return Err(FormatError::VmdkVersion(version));
            }
            if gd_offset == GD_AT_END {
                // The header that counts is in the footer: it is checked against this one.
                self.footer = Some(Tail::new(FOOTER));
            }
            if desc_sector.checked_mul(512) != Some(DESC_OFFSET) {
                return Err(FormatError::VmdkDescriptorLocation);
            }
            // qemu reads the embedded descriptor up to its first NUL, at least 10 KiB of
            // it, whatever the header's descriptor size says.
            let size = usize::try_from(desc_sectors.saturating_mul(512))
                .unwrap_or(DESC_MAX)
                .clamp(QEMU_DESC_READ, DESC_MAX);
            self.descriptor = Some(Region::new(DESC_OFFSET, size));
        } else if probes_as_descriptor(h) {
            // A descriptor file: kept from the start, header included.
            self.kind = Kind::Text;
            let mut descriptor = Region::new(0, DESC_MAX);
            descriptor.feed(h, 0);
            self.descriptor = Some(descriptor);
        } else {
            self.kind = Kind::Not;
        }
        Ok(())
    }

    /// Whether the descriptor is all in.
    fn descriptor_in(&self) -> bool {
        match (&self.kind, &self.descriptor) {
            // qemu reads the embedded descriptor up to its first NUL. One cut off by the
            // end of the file stays incomplete, as upstream has it.
            (Kind::Sparse, Some(d)) => d.is_full() || d.data().contains(&0),
            (Kind::Text, Some(d)) => d.is_full() || self.text_ended || self.ended,
            _ => false,
        }
    }

    /// Looks for the end of a text descriptor in what came since the last look: a NUL
    /// ends it, as it ends qemu's reading.
    fn scan_text(&mut self) {
        if let (Kind::Text, Some(d)) = (&self.kind, &self.descriptor) {
            let data = d.data();
            if data[self.scanned..].contains(&0) {
                self.text_ended = true;
            }
            self.scanned = data.len();
        }
    }

    fn parse_when_in(&mut self) {
        if self.parsed.is_none() && self.descriptor_in() {
            let data = self.descriptor.as_ref().map_or(&[][..], Region::data);
            self.parsed = Some(parse_descriptor(data));
        }
    }

    fn allowed_type(&self) -> bool {
        self.parsed
            .as_ref()
            .and_then(|p| p.create_type.as_deref())
            .is_some_and(|t| ALLOWED_TYPES.contains(&t))
    }

    fn check_descriptor(&self) -> Option<String> {
        let Some(text) = self
            .parsed
            .as_ref()
            .and_then(|p| p.text.as_deref())
            .filter(|t| !t.is_empty())
        else {
            return Some("No descriptor found".to_owned());
        };
        if !self.allowed_type() {
            return Some("Unsupported subformat".to_owned());
        }
        // qemu takes a parent (backing) file from this key in any descriptor.
        if text.contains("parentfilenamehint") {
            return Some("Parent file name hint found".to_owned());
        }
        // Every line must be one that is understood.
        let mut extents = Vec::new();
        for line in text.split('\n').map(|l| l.trim_matches(is_space)) {
            if line.is_empty() || line.starts_with('#') || line.starts_with("ddb") {
                continue;
            }
            let key = line.split('=').next().unwrap_or_default();
            if line.contains('=') && !key.contains(' ') {
                continue;
            }
            if EXTENT_ACCESS.contains(&line.split(' ').next().unwrap_or_default()) {
                extents.push(line);
                continue;
            }
            return Some("Invalid VMDK descriptor data".to_owned());
        }
        if extents.iter().any(|e| e.contains('/')) {
            return Some("Invalid extent filenames found".to_owned());
        }
        if extents.is_empty() {
            return Some("No extents found".to_owned());
        }
        // Stricter than upstream (whose text-only case fails on an exception instead):
        // the extents of a descriptor file are other files; and qemu opens the extents
        // an embedded descriptor names when the sparse header has no capacity.
        match self.kind {
            Kind::Text => Some("Descriptor file names extents in other files".to_owned()),
            _ if le_u64(self.header.data(), 12) == 0 => Some(
                "Sparse header has no capacity: its descriptor's extents would be opened"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    fn check_footer(&self, footer: &Tail) -> Option<String> {
        let (h_magic, h_version, h_desc, h_desc_n, _) = sparse_header(self.header.data(), 0);
        let data = footer.data();
        let (f_magic, f_version, f_desc, f_desc_n, f_gd) = sparse_header(data, 512);
        if h_magic != f_magic {
            return Some("Header and footer signature do not match".to_owned());
        }
        if h_version != f_version {
            return Some("Header and footer versions do not match".to_owned());
        }
        if h_desc != f_desc || h_desc_n != f_desc_n {
            return Some("Footer specifies a different descriptor than header".to_owned());
        }
        if f_gd == GD_AT_END {
            return Some("Footer indicates another footer".to_owned());
        }
        // A marker: value (u64), size (u32), type (u32), 496 zero bytes.
        let marker = |at: usize| {
            let m = data.get(at..at + 512).unwrap_or(&[]);
            let zero = m.len() == 512 && m[16..].iter().all(|b| *b == 0);
            (le_u64(m, 0), le_u32(m, 8), le_u32(m, 12), zero)
        };
        let (_, size, kind, zero) = marker(0);
        if size != 0 || kind != MARKER_FOOTER || !zero {
            return Some("Footer marker is invalid".to_owned());
        }
        let (value, size, kind, zero) = marker(1024);
        if value != 0 || size != 0 || kind != MARKER_EOS || !zero {
            return Some("End-of-stream marker is invalid".to_owned());
        }
        None
    }
}

impl Inspector for Vmdk {
    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        if let Kind::Undecided = self.kind {
            self.header.feed(chunk, start);
            if !self.header.is_full() {
                return Ok(());
            }
            self.decide()?;
        }
        if let Some(d) = &mut self.descriptor
            && self.parsed.is_none()
        {
            d.feed(chunk, start);
            self.scan_text();
            self.parse_when_in();
        }
        if let Some(footer) = &mut self.footer {
            footer.feed(chunk, start);
        }
        Ok(())
    }

    fn finish(&mut self, _total: u64) -> Result<(), FormatError> {
        self.ended = true;
        if let Kind::Undecided = self.kind {
            // Shorter than a header: decide on what there is.
            self.decide()?;
        }
        self.parse_when_in();
        Ok(())
    }

    fn done(&self) -> bool {
        match self.kind {
            Kind::Undecided => false,
            Kind::Not => true,
            _ => self.parsed.is_some() && self.footer.is_none(),
        }
    }

    fn complete(&self) -> bool {
        match self.kind {
            Kind::Sparse => {
                self.header.is_full()
                    && self.descriptor_in()
                    && self
                        .footer
                        .as_ref()
                        .is_none_or(|f| self.ended && f.is_full())
            }
            Kind::Text => self.parsed.is_some(),
            Kind::Undecided | Kind::Not => false,
        }
    }

    fn format_match(&self) -> bool {
        match self.kind {
            Kind::Text => self
                .parsed
                .as_ref()
                .is_some_and(|p| p.create_type.is_some()),
            _ => self.header.data().starts_with(MAGIC),
        }
    }

    fn virtual_size(&self, _total: u64) -> u64 {
        match self.kind {
            Kind::Sparse if self.allowed_type() => {
                le_u64(self.header.data(), 12).saturating_mul(512)
            }
            _ => 0,
        }
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        let mut checks = vec![("descriptor", self.check_descriptor())];
        if let Some(footer) = &self.footer {
            checks.push(("footer", self.check_footer(footer)));
        }
        checks
    }

    fn buffered(&self) -> usize {
        self.header.data().len()
            + self.descriptor.as_ref().map_or(0, |d| d.data().len())
            + self.footer.as_ref().map_or(0, |f| f.data().len())
    }
}
