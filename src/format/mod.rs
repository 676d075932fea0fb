//! Image format inspection of uploads, as upstream Glance 33 does it (oslo.utils'
//! `imageutils.format_inspector`, applied by `glance/location.py` `set_data`).
//!
//! An [`Inspection`] is fed the upload's chunks as they stream to the store. Every known
//! format's inspector looks at the same bytes and keeps only the few header regions its
//! format needs (see [`MAX_BUFFERED`]); nothing is read twice. When the stream ends,
//! [`Inspected::check_upload`] decides, before the image may become active, whether the
//! content matches the image's `disk_format` and is safe (no backing file, no external
//! data file, no VMDK extents in other files, ...), and finds the virtual size.

mod disk;
mod inspect;
mod policy;
mod qcow2;
mod region;
mod vhd;
mod vmdk;

use std::collections::BTreeMap;
use std::fmt;

pub use inspect::{Inspected, Inspection, MAX_BUFFERED};
pub use policy::{INSPECTED_CONTAINER_FORMAT, Refusal, inspects};

/// A format the inspector knows (upstream's `ALL_FORMATS`, in its order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// No known structure: the bytes are the disk.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// Microsoft VHD (QEMU's `vpc`).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// VMware VMDK.
    Vmdk,
    /// VirtualBox VDI.
    Vdi,
    /// QEMU enhanced disk: recognised, never allowed.
    Qed,
    /// ISO 9660 or UDF.
    Iso,
    /// A disk with an MBR or GPT partition table.
    Gpt,
    /// LUKS v1 encrypted disk.
    Luks,
}

impl Format {
    /// Every format, in upstream's order.
    pub const ALL: [Format; 10] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vhd,
        Format::Vhdx,
        Format::Vmdk,
        Format::Vdi,
        Format::Qed,
        Format::Iso,
        Format::Gpt,
        Format::Luks,
    ];

    /// The name qemu-img and Glance's `disk_format` use.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Qed => "qed",
            Format::Iso => "iso",
            Format::Gpt => "gpt",
            Format::Luks => "luks",
        }
    }

    /// The format a `disk_format` names, if it is one the inspector knows.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Content that cannot be inspected as a format, or a decision that cannot be made.
/// The messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// More than one format matched (one header hidden in another), other than an ISO
    /// with a partition table in front.
    #[error("Multiple formats detected: {}", names(.0))]
    Multiple(Vec<Format>),
    /// The stream ended before the inspector had what it needs.
    #[error("Incomplete file cannot be safety checked")]
    Incomplete,
    /// Safety checks were asked of an inspector whose format did not match.
    #[error("Unable to safety check format {0} because content does not match")]
    NotMatching(Format),
    /// A VMDK header that is neither a sparse extent header nor descriptor text.
    #[error("Signature KDMV not found: {0:?}")]
    VmdkSignature(String),
    /// A sparse VMDK of a version qemu does not read.
    #[error("Unsupported format version {0}")]
    VmdkVersion(u32),
    /// A sparse VMDK whose embedded descriptor is not right after its header.
    #[error("Wrong descriptor location")]
    VmdkDescriptorLocation,
    /// A VHDX without its region table.
    #[error("Region signature not found at {0:x}")]
    VhdxRegionSignature(u64),
    /// A VHDX region table with more entries than the format allows.
    #[error("Region count is {0} (limit 2047)")]
    VhdxRegionCount(u32),
    /// A VHDX metadata region without its signature.
    #[error("Invalid signature for metadata region: {0:?}")]
    VhdxMetadataSignature(String),
    /// A VHDX metadata table with more entries than the format allows.
    #[error("Metadata item count is {0} (limit 2047)")]
    VhdxMetadataCount(u16),
}

fn names(formats: &[Format]) -> String {
    formats
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// One or more safety checks failed: check name -> why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Safety checks failed: {}", self.failures.keys().copied().collect::<Vec<_>>().join(","))]
pub struct SafetyCheckFailed {
    /// The failed checks' names (`backing_file`, `data_file`, `unknown_features`,
    /// `descriptor`, `footer`, `mbr`, `version`, `banned`) and their reasons.
    pub failures: BTreeMap<&'static str, String>,
}

/// Why a detected format is not safe to accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetyError {
    /// The checks could not run (incomplete or inconsistent content).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Checks ran and failed.
    #[error(transparent)]
    Failed(#[from] SafetyCheckFailed),
}

#[cfg(test)]
mod tests;
