//! The streaming wrapper: every format's inspector sees every chunk, as upstream's
//! `InspectWrapper` does, until it has what it needs.

use std::collections::BTreeMap;

use tracing::debug;

use super::{Format, FormatError, SafetyCheckFailed, SafetyError, disk, qcow2, vhd, vmdk};

/// The most bytes an [`Inspection`] holds at once, whatever the stream: the sum of the
/// regions every inspector may capture, each capped as upstream caps it (the VMDK
/// descriptor at 1 MiB - 1 is most of it; an upload that is not a VMDK descriptor holds a
/// few KiB).
pub const MAX_BUFFERED: usize = qcow2::MAX_BUFFERED
    + qcow2::QED_MAX_BUFFERED
    + vhd::VHD_MAX_BUFFERED
    + vhd::VHDX_MAX_BUFFERED
    + vmdk::MAX_BUFFERED
    + disk::VDI_MAX_BUFFERED
    + disk::ISO_MAX_BUFFERED
    + disk::GPT_MAX_BUFFERED
    + disk::LUKS_MAX_BUFFERED;

/// One format's inspector (upstream's `FileInspector`).
pub(crate) trait Inspector: Send + std::fmt::Debug {
    /// The format it looks for.
    fn format(&self) -> Format;

    /// Takes `chunk`, which starts at stream offset `start`. An error means the content
    /// is broken for this format; the inspector is fed no more, but what it found still
    /// counts (a VMDK header with a bad descriptor location is still a VMDK).
    fn eat(&mut self, chunk: &[u8], start: u64) -> Result<(), FormatError>;

    /// The stream ended after `total` bytes. An inspector that may refuse here must not
    /// be [`Inspector::done`] before the end (see [`Inspection::settled`]).
    fn finish(&mut self, _total: u64) -> Result<(), FormatError> {
        Ok(())
    }

    /// Nothing more to take: the wrapper stops feeding it.
    fn done(&self) -> bool;

    /// It has everything it needs to decide and check.
    fn complete(&self) -> bool;

    /// The content is of this format.
    fn format_match(&self) -> bool;

    /// The virtual disk size in bytes, 0 when unknown; `total` is the stream's size.
    fn virtual_size(&self, total: u64) -> u64;

    /// Each safety check's name and, when it failed, why.
    fn safety_checks(&self) -> Vec<(&'static str, Option<String>)>;

    /// Bytes held.
    fn buffered(&self) -> usize;
}

#[derive(Debug)]
struct Slot {
    inspector: Box<dyn Inspector>,
    /// Set when the inspector failed; it is then fed no more.
    error: Option<FormatError>,
}

fn inspectors() -> Vec<Slot> {
    Format::ALL
        .into_iter()
        .map(|format| {
            let inspector: Box<dyn Inspector> = match format {
                Format::Raw => Box::new(disk::Raw),
                Format::Qcow2 => Box::new(qcow2::Qcow2::new()),
                Format::Vhd => Box::new(vhd::Vhd::new()),
                Format::Vhdx => Box::new(vhd::Vhdx::new()),
                Format::Vmdk => Box::new(vmdk::Vmdk::new()),
                Format::Vdi => Box::new(disk::Vdi::new()),
                Format::Qed => Box::new(qcow2::Qed::new()),
                Format::Iso => Box::new(disk::Iso::new()),
                Format::Gpt => Box::new(disk::Gpt::new()),
                Format::Luks => Box::new(disk::Luks::new()),
            };
            Slot {
                inspector,
                error: None,
            }
        })
        .collect()
}

/// An inspection in progress: feed it the stream with [`Inspection::feed`], then call
/// [`Inspection::finish`] at its end. Once [`Inspection::settled`], what it found is
/// final and may be judged before the end ([`Inspection::found`]).
#[derive(Debug)]
pub struct Inspection {
    /// What was found so far.
    found: Inspected,
}

/// Bytes kept from the start of the stream: enough for every magic number below.
const HEAD: usize = 0x44;

/// The magic numbers by which qemu recognises a format even in a file too short for its
/// whole header (it reads past the end as zeros): offset, bytes, format.
const MAGICS: &[(usize, &[u8], Format)] = &[
    (0, b"QFI\xfb", Format::Qcow2),
    (0, b"QED\0", Format::Qed),
    (0, b"KDMV", Format::Vmdk),
    (0, b"COWD", Format::Vmdk),
    (0, b"vhdxfile", Format::Vhdx),
    (0, b"conectix", Format::Vhd),
    (0, b"LUKS\xba\xbe", Format::Luks),
    (0x40, b"\x7f\x10\xda\xbe", Format::Vdi),
];

impl Default for Inspection {
    fn default() -> Self {
        Self::new()
    }
}

impl Inspection {
    /// An inspection for every known format.
    pub fn new() -> Self {
        Inspection {
            found: Inspected {
                slots: inspectors(),
                total: 0,
                head: Vec::with_capacity(HEAD),
            },
        }
    }

    /// Takes the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        let found = &mut self.found;
        let start = found.total;
        let room = HEAD - found.head.len();
        found
            .head
            .extend_from_slice(&chunk[..room.min(chunk.len())]);
        for slot in &mut found.slots {
            if slot.error.is_some() || slot.inspector.done() {
                continue;
            }
            if let Err(e) = slot.inspector.eat(chunk, start) {
                debug!(format = %slot.inspector.format(), error = %e, "format inspector does not match, excluding it");
                slot.error = Some(e);
            }
        }
        found.total += chunk.len() as u64;
    }

    /// Bytes read so far.
    pub fn size(&self) -> u64 {
        self.found.total
    }

    /// Bytes the inspectors hold; never more than [`MAX_BUFFERED`].
    pub fn buffered(&self) -> usize {
        self.found
            .slots
            .iter()
            .map(|s| s.inspector.buffered())
            .sum()
    }

    /// Whether more data can no longer change what was found (but the stream's size):
    /// the head holds every magic number's place, and every inspector has given up or
    /// taken all it needs. No inspector decides anything in [`Inspector::finish`] once it
    /// is done, so a refusal found now is the refusal at the end.
    pub fn settled(&self) -> bool {
        self.found.head.len() == HEAD
            && self
                .found
                .slots
                .iter()
                .all(|s| s.error.is_some() || s.inspector.done())
    }

    /// What was found so far, once [`Inspection::settled`]: to refuse an upload without
    /// waiting for the rest of its data. Its size is the size so far.
    pub fn found(&self) -> Option<&Inspected> {
        self.settled().then_some(&self.found)
    }

    /// The stream ended: what was found.
    pub fn finish(self) -> Inspected {
        let mut found = self.found;
        let total = found.total;
        for slot in &mut found.slots {
            if slot.error.is_none()
                && let Err(e) = slot.inspector.finish(total)
            {
                debug!(format = %slot.inspector.format(), error = %e, "format inspector does not match, excluding it");
                slot.error = Some(e);
            }
        }
        found
    }
}

/// What an inspection of a whole stream found.
#[derive(Debug)]
pub struct Inspected {
    slots: Vec<Slot>,
    total: u64,
    head: Vec<u8>,
}

impl Inspected {
    /// The stream's size in bytes.
    pub fn size(&self) -> u64 {
        self.total
    }

    fn slot(&self, format: Format) -> &Slot {
        // Invariant: `inspectors()` makes one slot per format, in Format::ALL order,
        // which is the order of Format's variants.
        &self.slots[format as usize]
    }

    /// The formats the content matched (upstream's `InspectWrapper.formats`): the
    /// specific ones, or just [`Format::Raw`] when none matched. More than one means a
    /// header hides in another.
    pub fn formats(&self) -> Vec<Format> {
        let matched: Vec<Format> = self
            .slots
            .iter()
            .filter(|s| s.inspector.format() != Format::Raw && s.inspector.format_match())
            .map(|s| s.inspector.format())
            .collect();
        if matched.is_empty() {
            vec![Format::Raw]
        } else {
            matched
        }
    }

    /// A format whose magic number the content starts with, even when its header is
    /// too short to match: qemu still opens such a file as that format.
    pub fn magic(&self) -> Option<Format> {
        MAGICS.iter().find_map(|(at, magic, format)| {
            let found = self.head.get(*at..at + magic.len()) == Some(*magic);
            found.then_some(*format)
        })
    }

    /// The one format the content matched (upstream's `InspectWrapper.format`).
    pub fn format(&self) -> Result<Format, FormatError> {
        match self.formats().as_slice() {
            [one] => Ok(*one),
            many => Err(FormatError::Multiple(many.to_vec())),
        }
    }

    /// The virtual size `format`'s inspector found, 0 when unknown.
    pub fn virtual_size(&self, format: Format) -> u64 {
        self.slot(format).inspector.virtual_size(self.total)
    }

    /// Runs `format`'s safety checks (upstream's `FileInspector.safety_check`).
    pub fn safety_check(&self, format: Format) -> Result<(), SafetyError> {
        let slot = self.slot(format);
        let inspector = &slot.inspector;
        if !inspector.complete() {
            return Err(FormatError::Incomplete.into());
        }
        if !inspector.format_match() {
            return Err(FormatError::NotMatching(format).into());
        }
        // Stricter than upstream, which checks what a failed inspector had found so far:
        // content this format's inspector could not parse is not safe as this format.
        if let Some(e) = &slot.error {
            return Err(e.clone().into());
        }
        let failures: BTreeMap<&'static str, String> = inspector
            .safety_checks()
            .into_iter()
            .filter_map(|(name, failure)| failure.map(|why| (name, why)))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SafetyCheckFailed { failures }.into())
        }
    }
}
