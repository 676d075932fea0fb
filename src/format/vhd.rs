//! Microsoft's formats: VHD (QEMU's `vpc`) and VHDX.

use super::inspect::Inspector;
use super::region::{Region, be_u64, le_u16, le_u32, le_u64};
use super::{Format, FormatError};

/// Whether `data` (the first bytes of a region that starts with `magic`) can still turn
/// out to start with `magic`.
fn may_start_with(data: &[u8], magic: &[u8]) -> bool {
    let n = data.len().min(magic.len());
    data[..n] == magic[..n]
}

const VHD_HEADER: usize = 512;
const VHD_MAGIC: &[u8] = b"conectix";
/// The disk's original size (big-endian) in the footer copy at the start.
const VHD_SIZE: usize = 40;

pub(crate) const VHD_MAX_BUFFERED: usize = VHD_HEADER;

/// VHD: a dynamic or differencing disk starts with a copy of its 512-byte footer. (A
/// fixed VHD has the footer only at its end and is, as upstream finds, raw.)
#[derive(Debug)]
pub(crate) struct Vhd {
    header: Region,
}

impl Vhd {
    pub(crate) fn new() -> Self {
        Vhd {
            header: Region::new(0, VHD_HEADER),
        }
    }
}

impl Inspector for Vhd {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.header.feed(chunk, start);
        Ok(())
    }

    fn done(&self) -> bool {
        self.header.is_full() || !may_start_with(self.header.data(), VHD_MAGIC)
    }

    fn complete(&self) -> bool {
        self.header.is_full()
    }

    fn format_match(&self) -> bool {
        // As upstream: the magic alone, so that a short one is found (and then refused
        // as incomplete).
        self.header.data().starts_with(VHD_MAGIC)
    }

    fn virtual_size(&self, _total: u64) -> u64 {
        if self.header.is_full() && self.format_match() {
            be_u64(self.header.data(), VHD_SIZE)
        } else {
            0
        }
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("null", None)]
    }

    fn buffered(&self) -> usize {
        self.header.data().len()
    }
}

/// A Microsoft GUID as it is stored (`<IHHBBBBBBBB`).
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// 8B7CA206-4790-4B9A-B8FE-575F050F886E: the metadata region.
const METAREGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
/// 2FA54224-CD1B-4876-B211-5DBED83BF4B8: the "virtual disk size" metadata item.
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const VHDX_MAGIC: &[u8] = b"vhdxfile";
const IDENT: usize = 32;
/// The region table: 64 KiB at 192 KiB.
const REGION_TABLE: (u64, usize) = (192 * 1024, 64 * 1024);
/// A metadata table: a 32-byte header and up to 2047 32-byte entries (qemu's limit).
const METADATA_TABLE: usize = 32 * 2048;
/// The most of a metadata item captured.
const ITEM_MAX: usize = 32 * 2048;
const REGION_SIGNATURE: u32 = 0x6967_6572; // "regi"

pub(crate) const VHDX_MAX_BUFFERED: usize = IDENT + REGION_TABLE.1 + METADATA_TABLE + ITEM_MAX;

/// VHDX: the identifier at 0, the region table at 192 KiB names the metadata region,
/// whose table names the "virtual disk size" item, a little-endian u64.
#[derive(Debug)]
pub(crate) struct Vhdx {
    ident: Region,
    regions: Region,
    /// The region table was read and has no metadata region.
    no_metadata: bool,
    metadata: Option<Region>,
    /// The metadata table was read and has no virtual disk size.
    no_size: bool,
    size: Option<Region>,
}

enum Found {
    Pending,
    Missing,
    At(Region),
}

impl Vhdx {
    pub(crate) fn new() -> Self {
        Vhdx {
            ident: Region::new(0, IDENT),
            regions: Region::new(REGION_TABLE.0, REGION_TABLE.1),
            no_metadata: false,
            metadata: None,
            no_size: false,
            size: None,
        }
    }

    fn regions(&self) -> impl Iterator<Item = &Region> {
        [
            Some(&self.ident),
            Some(&self.regions),
            self.metadata.as_ref(),
            self.size.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    fn find_metadata_region(&self) -> Result<Found, FormatError> {
        let table = self.regions.data();
        if le_u32(table, 0) != REGION_SIGNATURE {
            return Err(FormatError::VhdxRegionSignature(self.regions.offset()));
        }
        let count = le_u32(table, 8);
        if count >= 2048 {
            return Err(FormatError::VhdxRegionCount(count));
        }
        for i in 0..count as usize {
            let entry = &table[16 + i * 32..16 + (i + 1) * 32];
            if entry[..16] == METAREGION {
                // Only the table is needed, however long the region says it is.
                return Ok(Found::At(Region::new(le_u64(entry, 16), METADATA_TABLE)));
            }
        }
        Ok(Found::Missing)
    }

    fn find_size_item(&self, metadata: &Region) -> Result<Found, FormatError> {
        let table = metadata.data();
        if table.len() < 32 {
            return Ok(Found::Pending);
        }
        if &table[..8] != b"metadata" {
            return Err(FormatError::VhdxMetadataSignature(
                String::from_utf8_lossy(&table[..8]).into_owned(),
            ));
        }
        let count = le_u16(table, 10);
        if count >= 2048 {
            return Err(FormatError::VhdxMetadataCount(count));
        }
        let count = usize::from(count);
        if table.len() < 32 + count * 32 {
            return Ok(Found::Pending);
        }
        for i in 0..count {
            let entry = &table[32 + i * 32..32 + (i + 1) * 32];
            if entry[..16] == VIRTUAL_DISK_SIZE {
                let offset = u64::from(le_u32(entry, 16));
                let length = usize::try_from(le_u32(entry, 20))
                    .unwrap_or(ITEM_MAX)
                    .min(ITEM_MAX);
                return Ok(Found::At(Region::new(
                    metadata.offset().saturating_add(offset),
                    length,
                )));
            }
        }
        Ok(Found::Missing)
    }

    /// Adds the next region once the one before it is read; true if it added one.
    fn post_process(&mut self) -> Result<bool, FormatError> {
        if self.regions.is_full() && self.metadata.is_none() && !self.no_metadata {
            match self.find_metadata_region()? {
                Found::At(region) => {
                    self.metadata = Some(region);
                    return Ok(true);
                }
                Found::Missing => self.no_metadata = true,
                Found::Pending => {}
            }
        }
        if let Some(metadata) = &self.metadata
            && self.size.is_none()
            && !self.no_size
        {
            match self.find_size_item(metadata)? {
                Found::At(region) => {
                    if let Some(metadata) = &mut self.metadata {
                        metadata.truncate_here();
                    }
                    self.size = Some(region);
                    return Ok(true);
                }
                Found::Missing => self.no_size = true,
                Found::Pending => {}
            }
        }
        Ok(false)
    }
}

impl Inspector for Vhdx {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.ident.feed(chunk, start);
        if !may_start_with(self.ident.data(), VHDX_MAGIC) {
            return Ok(());
        }
        loop {
            self.regions.feed(chunk, start);
            if let Some(r) = &mut self.metadata {
                r.feed(chunk, start);
            }
            if let Some(r) = &mut self.size {
                r.feed(chunk, start);
            }
            // A region found in this chunk may start in it too.
            if !self.post_process()? {
                return Ok(());
            }
        }
    }

    fn done(&self) -> bool {
        !may_start_with(self.ident.data(), VHDX_MAGIC) || self.complete()
    }

    fn complete(&self) -> bool {
        self.regions().all(Region::is_full)
    }

    fn format_match(&self) -> bool {
        self.ident.data().starts_with(VHDX_MAGIC)
    }

    fn virtual_size(&self, _total: u64) -> u64 {
        match &self.size {
            Some(size) if size.is_full() => le_u64(size.data(), 0),
            _ => 0,
        }
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("null", None)]
    }

    fn buffered(&self) -> usize {
        self.regions().map(|r| r.data().len()).sum()
    }
}
