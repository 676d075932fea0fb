//! Whether an inspected upload may make its image active, and its virtual size: upstream
//! Glance 33's rules (`glance/location.py`, `ImageProxy.set_data`) with its default
//! `[image_format]` options (`require_image_format_match = True`,
//! `gpt_safety_checks_nonfatal = []`).

use tracing::{info, warn};

use super::inspect::Inspected;
use super::{Format, FormatError, SafetyCheckFailed, SafetyError};

/// Upstream inspects the data of images in this container format only.
pub const INSPECTED_CONTAINER_FORMAT: &str = "bare";

/// Whether an upload to an image with `container_format` is inspected.
pub fn inspects(container_format: Option<&str>) -> bool {
    container_format == Some(INSPECTED_CONTAINER_FORMAT)
}

/// Why an upload is refused. Upstream answers each with 415 (InvalidImageData) and
/// this message; the image goes back to queued and keeps no data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The content's format could not be decided or checked (several formats, an
    /// incomplete or broken header).
    #[error("{0}")]
    Format(#[from] FormatError),
    /// The content is of another format than the image's `disk_format` says.
    #[error("Image disk_format {disk_format} does not match stream data {detected}")]
    Mismatch {
        /// The image's disk_format (`None` when unset, as upstream prints it).
        disk_format: String,
        /// What the content is.
        detected: Format,
    },
    /// The content's format is unsafe to hand to qemu (backing file, data file, VMDK
    /// extents elsewhere, bad partition table, ...).
    #[error("Image failed safety checks")]
    Unsafe {
        /// The format checked.
        format: Format,
        /// The checks that failed.
        failed: SafetyCheckFailed,
    },
}

/// The detected formats a `raw` image may hold. Upstream 33 lets a raw image hold any
/// format (it only warns, and still runs that format's safety checks); here only the
/// layouts that are themselves raw block devices pass (a partition table, an ISO), and
/// qcow2, VMDK, VHD(X), VDI, QED or LUKS content claimed raw is refused as a mismatch.
fn raw_may_be(detected: Format) -> bool {
    matches!(detected, Format::Gpt | Format::Iso)
}

impl Inspected {
    /// Upstream's decision on this upload to an image of `disk_format`: the virtual size
    /// to record (None when unknown, which leaves it unset), or why it is refused.
    pub fn check_upload(&self, disk_format: Option<&str>) -> Result<Option<u64>, Refusal> {
        let formats = self.formats();
        let format = if formats == [Format::Iso, Format::Gpt] {
            // A bootable-as-block ISO may legitimately have a GPT in front.
            info!("detected format as ISO+GPT, allowing as ISO");
            Format::Iso
        } else {
            self.format()?
        };
        // Nothing matched, yet it starts like a disk format: a header cut short, which
        // qemu reads on as zeros. Not raw, and not checkable either.
        if format == Format::Raw
            && let Some(magic) = self.magic()
        {
            warn!(format = %magic, "content carries a format's magic but no whole header");
            return Err(Refusal::Format(FormatError::Incomplete));
        }
        let claimed = disk_format.unwrap_or("None");
        let virtual_size = if format.name() == claimed {
            let size = self.virtual_size(format);
            info!(
                virtual_size = size,
                "image format matched and virtual size computed"
            );
            size
        } else if format == Format::Raw && Format::from_name(claimed).is_none() {
            // ami, ari, aki, ploop: not inspectable, so content with no known format
            // passes (with no virtual size).
            info!(
                disk_format = claimed,
                "image format is not an inspectable type"
            );
            0
        } else if claimed == "raw" && raw_may_be(format) {
            warn!(detected = %format, "image claims raw disk_format but has a partition table or is an ISO");
            // As if the format were not recognised: the bytes are the disk.
            self.size()
        } else {
            return Err(Refusal::Mismatch {
                disk_format: claimed.to_owned(),
                detected: format,
            });
        };
        match self.safety_check(format) {
            Ok(()) => {}
            Err(SafetyError::Format(e)) => return Err(e.into()),
            Err(SafetyError::Failed(failed)) => {
                let mut fatal: Vec<&str> = failed.failures.keys().copied().collect();
                if matches!(claimed, "aki" | "ari") {
                    // Kernels and ramdisks may carry an intentionally invalid MBR.
                    fatal.retain(|name| *name != "mbr");
                }
                if format == Format::Gpt && fatal.is_empty() {
                    warn!(error = %failed, "non-fatal");
                } else {
                    warn!(format = %format, error = %failed, reasons = ?failed.failures, "image failed safety checks");
                    return Err(Refusal::Unsafe { format, failed });
                }
            }
        }
        Ok((virtual_size > 0).then_some(virtual_size))
    }
}
