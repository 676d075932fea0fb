//! Raw data and the formats whose inspection is one fixed header: VDI, ISO 9660/UDF,
//! MBR/GPT partition tables and LUKS.

use super::inspect::Inspector;
use super::region::{Region, be_i16, be_u32, le_u16, le_u32, le_u64};
use super::{Format, FormatError};

/// Unformatted data: always matches, and its virtual size is its size.
#[derive(Debug)]
pub(crate) struct Raw;

impl Inspector for Raw {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn eat(&mut self, _chunk: &[u8], _start: u64) -> Result<(), FormatError> {
        Ok(())
    }

    fn done(&self) -> bool {
        true
    }

    fn complete(&self) -> bool {
        true
    }

    fn format_match(&self) -> bool {
        true
    }

    fn virtual_size(&self, total: u64) -> u64 {
        total
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("null", None)]
    }

    fn buffered(&self) -> usize {
        0
    }
}

/// Whether a header region whose bytes at `at` must be `magic` can still match.
fn may_hold(data: &[u8], at: usize, magic: &[u8]) -> bool {
    match data.get(at..) {
        None | Some([]) => true,
        Some(rest) => {
            let n = rest.len().min(magic.len());
            rest[..n] == magic[..n]
        }
    }
}

const VDI_HEADER: usize = 512;
const VDI_SIGNATURE: u32 = 0xbeda_107f;
pub(crate) const VDI_MAX_BUFFERED: usize = VDI_HEADER;

/// VirtualBox VDI: signature at 0x40, disk size at 0x170 (little-endian).
#[derive(Debug)]
pub(crate) struct Vdi {
    header: Region,
}

impl Vdi {
    pub(crate) fn new() -> Self {
        Vdi {
            header: Region::new(0, VDI_HEADER),
        }
    }
}

impl Inspector for Vdi {
    fn format(&self) -> Format {
        Format::Vdi
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.header.feed(chunk, start);
        Ok(())
    }

    fn done(&self) -> bool {
        self.header.is_full() || !may_hold(self.header.data(), 0x40, &VDI_SIGNATURE.to_le_bytes())
    }

    fn complete(&self) -> bool {
        self.header.is_full()
    }

    fn format_match(&self) -> bool {
        self.header.is_full() && le_u32(self.header.data(), 0x40) == VDI_SIGNATURE
    }

    fn virtual_size(&self, _total: u64) -> u64 {
        if self.format_match() {
            le_u64(self.header.data(), 0x170)
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

/// The primary volume descriptor follows the 32 KiB system area, which may hold
/// anything (a bootloader, a partition table, or another format's header).
const ISO_DESCRIPTOR: (u64, usize) = (32 * 1024, 2 * 1024);
pub(crate) const ISO_MAX_BUFFERED: usize = ISO_DESCRIPTOR.1;

/// ISO 9660 and UDF. Upstream also buffers the system area but never looks at it; this
/// inspector only counts it.
#[derive(Debug)]
pub(crate) struct Iso {
    descriptor: Region,
}

impl Iso {
    pub(crate) fn new() -> Self {
        Iso {
            descriptor: Region::new(ISO_DESCRIPTOR.0, ISO_DESCRIPTOR.1),
        }
    }
}

impl Inspector for Iso {
    fn format(&self) -> Format {
        Format::Iso
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.descriptor.feed(chunk, start);
        Ok(())
    }

    fn done(&self) -> bool {
        self.descriptor.is_full()
    }

    fn complete(&self) -> bool {
        self.descriptor.is_full()
    }

    fn format_match(&self) -> bool {
        self.complete()
            && matches!(
                self.descriptor.data().get(1..6),
                Some(b"CD001" | b"NSR02" | b"NSR03")
            )
    }

    fn virtual_size(&self, _total: u64) -> u64 {
        let d = self.descriptor.data();
        // Only a primary volume descriptor (type 1) gives the volume's size: blocks
        // (both-endian u32 at 80) of a block size (both-endian u16 at 128).
        if !self.format_match() || d[0] != 1 {
            return 0;
        }
        u64::from(le_u32(d, 80)) * u64::from(le_u16(d, 128))
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("null", None)]
    }

    fn buffered(&self) -> usize {
        self.descriptor.data().len()
    }
}

const MBR: usize = 512;
const MBR_SIGNATURE: u16 = 0xAA55;
const MBR_PTE_START: usize = 446;
const MEDIA_TYPE_FDISK: u8 = 0xF8;
const GPT_PROTECTIVE: u8 = 0xEE;
pub(crate) const GPT_MAX_BUFFERED: usize = MBR;

/// A partitioned disk: an MBR (GPT's protective MBR included), told apart from a FAT
/// boot sector, which has the same signature.
#[derive(Debug)]
pub(crate) struct Gpt {
    mbr: Region,
}

impl Gpt {
    pub(crate) fn new() -> Self {
        Gpt {
            mbr: Region::new(0, MBR),
        }
    }

    fn is_fat(&self) -> bool {
        let b = self.mbr.data();
        // Two FATs and a fixed-disk media descriptor: a FAT volume boot record.
        b[0x10] == 2 && b[0x15] == MEDIA_TYPE_FDISK
    }

    fn check_mbr_partitions(&self) -> Option<String> {
        let mbr = self.mbr.data();
        let mut valid = Vec::new();
        let mut found_gpt = false;
        for i in 0..4 {
            let pte = &mbr[MBR_PTE_START + 16 * i..MBR_PTE_START + 16 * (i + 1)];
            let (boot, start_chs, os_type, start_lba) =
                (pte[0], &pte[1..4], pte[4], le_u32(pte, 8));
            if boot != 0x00 && boot != 0x80 {
                return Some(format!("MBR PTE {i} has invalid boot flag"));
            }
            if os_type != 0 {
                valid.push(i);
            }
            if os_type == GPT_PROTECTIVE {
                found_gpt = true;
                if start_chs != [0x00, 0x02, 0x00] {
                    return Some("GPT MBR has invalid start CHS".to_owned());
                }
                if start_lba != 1 {
                    return Some("GPT MBR has invalid start LBA".to_owned());
                }
            }
        }
        if found_gpt && valid != [0] {
            return Some("GPT MBR defines invalid extra partitions".to_owned());
        }
        if valid.is_empty() {
            return Some("GPT MBR has no partitions defined".to_owned());
        }
        None
    }
}

impl Inspector for Gpt {
    fn format(&self) -> Format {
        Format::Gpt
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.mbr.feed(chunk, start);
        Ok(())
    }

    fn done(&self) -> bool {
        self.mbr.is_full()
    }

    fn complete(&self) -> bool {
        self.mbr.is_full()
    }

    fn format_match(&self) -> bool {
        self.mbr.is_full() && le_u16(self.mbr.data(), 510) == MBR_SIGNATURE && !self.is_fat()
    }

    fn virtual_size(&self, total: u64) -> u64 {
        // As upstream: a partitioned disk is its bytes.
        total
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("mbr", self.check_mbr_partitions())]
    }

    fn buffered(&self) -> usize {
        self.mbr.data().len()
    }
}

const LUKS_HEADER: usize = 592;
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";
pub(crate) const LUKS_MAX_BUFFERED: usize = LUKS_HEADER;

/// LUKS v1: a header, then the encrypted payload at `payload_offset` sectors.
#[derive(Debug)]
pub(crate) struct Luks {
    header: Region,
}

impl Luks {
    pub(crate) fn new() -> Self {
        Luks {
            header: Region::new(0, LUKS_HEADER),
        }
    }
}

impl Inspector for Luks {
    fn format(&self) -> Format {
        Format::Luks
    }

    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError> {
        self.header.feed(chunk, start);
        Ok(())
    }

    fn done(&self) -> bool {
        self.header.is_full() || !may_hold(self.header.data(), 0, LUKS_MAGIC)
    }

    fn complete(&self) -> bool {
        self.header.is_full()
    }

    fn format_match(&self) -> bool {
        self.header.data().starts_with(LUKS_MAGIC)
    }

    fn virtual_size(&self, total: u64) -> u64 {
        let payload = u64::from(be_u32(self.header.data(), 104));
        total.saturating_sub(payload.saturating_mul(512))
    }

    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)> {
        let version = be_i16(self.header.data(), 6);
        let failure = (version != 1).then(|| format!("LUKS version {version} is not supported"));
        vec![("version", failure)]
    }

    fn buffered(&self) -> usize {
        self.header.data().len()
    }
}
