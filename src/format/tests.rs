//! The inspector on images synthesized here, byte by byte from the formats' specs (the
//! integration tests in tests/format_inspector.rs use images qemu-img makes).

use super::*;

const MIB: u64 = 1 << 20;

/// Inspects `data` fed in pieces of `size` bytes.
fn inspect_in(data: &[u8], size: usize) -> Inspected {
    let mut inspection = Inspection::new();
    for piece in data.chunks(size.max(1)) {
        inspection.feed(piece);
        assert!(inspection.buffered() <= MAX_BUFFERED);
    }
    inspection.finish()
}

/// What an inspection found, in a comparable form: the formats matched, their virtual
/// sizes and safety verdicts, and the decision on an upload of each disk_format.
type Summary = (Vec<Format>, Vec<(u64, String)>, Vec<String>);

fn summary(found: &Inspected) -> Summary {
    let formats = found.formats();
    let matched = formats
        .iter()
        .map(|f| {
            (
                found.virtual_size(*f),
                format!("{:?}", found.safety_check(*f)),
            )
        })
        .collect();
    let decisions = [
        "raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami", "aki",
    ]
    .iter()
    .map(|d| format!("{:?}", found.check_upload(Some(d))))
    .collect();
    (formats, matched, decisions)
}

/// Inspects `data` whole, and checks that any other cut of the stream finds the same.
fn inspect(data: &[u8]) -> Inspected {
    let whole = inspect_in(data, data.len());
    let expected = summary(&whole);
    let mut sizes = vec![3, 511, 4096, 65_536];
    if data.len() <= 64 * 1024 {
        sizes.push(1);
    }
    for size in sizes {
        assert_eq!(
            summary(&inspect_in(data, size)),
            expected,
            "cut in {size}-byte pieces"
        );
    }
    whole
}

fn put(data: &mut [u8], at: usize, bytes: &[u8]) {
    data[at..at + bytes.len()].copy_from_slice(bytes);
}

fn qcow2(version: u32, size: u64) -> Vec<u8> {
    let mut d = vec![0u8; 196_608];
    put(&mut d, 0, b"QFI\xfb");
    put(&mut d, 4, &version.to_be_bytes());
    put(&mut d, 20, &16u32.to_be_bytes());
    put(&mut d, 24, &size.to_be_bytes());
    d
}

fn vhd(size: u64) -> Vec<u8> {
    let mut d = vec![0u8; 2560];
    put(&mut d, 0, b"conectix");
    put(&mut d, 40, &size.to_be_bytes());
    put(&mut d, 48, &size.to_be_bytes());
    d
}

fn vdi(size: u64) -> Vec<u8> {
    let mut d = vec![0u8; 1024];
    put(&mut d, 0, b"<<< QEMU VM Virtual Disk Image >>>\n");
    put(&mut d, 0x40, &0xbeda_107fu32.to_le_bytes());
    put(&mut d, 0x170, &size.to_le_bytes());
    d
}

fn guid_bytes(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Vec<u8> {
    let mut v = d1.to_le_bytes().to_vec();
    v.extend(d2.to_le_bytes());
    v.extend(d3.to_le_bytes());
    v.extend(d4);
    v
}

/// A VHDX laid out as qemu lays it: region table at 192 KiB, metadata at 2 MiB, the
/// virtual disk size item 64 KiB into it.
fn vhdx(size: u64) -> Vec<u8> {
    let mut d = vec![0u8; 3 * MIB as usize];
    put(&mut d, 0, b"vhdxfile");
    let table = 192 * 1024;
    put(&mut d, table, b"regi");
    put(&mut d, table + 8, &2u32.to_le_bytes());
    // A BAT entry first, then the metadata region.
    let bat = guid_bytes(
        0x2DC2_7766,
        0xF623,
        0x4200,
        [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
    );
    put(&mut d, table + 16, &bat);
    put(&mut d, table + 32, &(3 * MIB).to_le_bytes());
    let meta = guid_bytes(
        0x8B7C_A206,
        0x4790,
        0x4B9A,
        [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
    );
    put(&mut d, table + 48, &meta);
    put(&mut d, table + 64, &(2 * MIB).to_le_bytes());
    put(&mut d, table + 72, &MIB.to_le_bytes());
    let m = 2 * MIB as usize;
    put(&mut d, m, b"metadata");
    put(&mut d, m + 10, &2u16.to_le_bytes());
    let file_params = guid_bytes(
        0xCAA1_6737,
        0xFA36,
        0x4D43,
        [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
    );
    put(&mut d, m + 32, &file_params);
    put(&mut d, m + 48, &0x1_0008u32.to_le_bytes());
    put(&mut d, m + 52, &8u32.to_le_bytes());
    let vds = guid_bytes(
        0x2FA5_4224,
        0xCD1B,
        0x4876,
        [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
    );
    put(&mut d, m + 64, &vds);
    put(&mut d, m + 80, &0x1_0000u32.to_le_bytes());
    put(&mut d, m + 84, &8u32.to_le_bytes());
    put(&mut d, m + 0x1_0000, &size.to_le_bytes());
    d
}

/// A sparse VMDK (`KDMV`) of `sectors` with `descriptor` embedded at sector 1.
fn vmdk(sectors: u64, descriptor: &str) -> Vec<u8> {
    let desc_sectors = descriptor.len().div_ceil(512).max(1) as u64;
    let mut d = vec![0u8; 512 * (1 + desc_sectors as usize) + 4096];
    put(&mut d, 0, b"KDMV");
    put(&mut d, 4, &1u32.to_le_bytes());
    put(&mut d, 12, &sectors.to_le_bytes());
    put(&mut d, 20, &128u64.to_le_bytes());
    put(&mut d, 28, &1u64.to_le_bytes());
    put(&mut d, 36, &desc_sectors.to_le_bytes());
    put(&mut d, 56, &(1 + desc_sectors).to_le_bytes());
    put(&mut d, 512, descriptor.as_bytes());
    d
}

fn descriptor(create_type: &str, extent: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n# Extent description\n{extent}\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n"
    )
}

/// An ISO 9660 volume of `blocks` 2 KiB blocks, `system_area` at its start.
fn iso(blocks: u32, system_area: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 64 * 1024];
    put(&mut d, 0, system_area);
    let pvd = 32 * 1024;
    d[pvd] = 1;
    put(&mut d, pvd + 1, b"CD001");
    d[pvd + 6] = 1;
    put(&mut d, pvd + 80, &blocks.to_le_bytes());
    put(&mut d, pvd + 84, &blocks.to_be_bytes());
    put(&mut d, pvd + 128, &2048u16.to_le_bytes());
    put(&mut d, pvd + 130, &2048u16.to_be_bytes());
    d
}

/// A protective MBR (one 0xEE partition from LBA 1) and the start of a GPT.
fn gpt() -> Vec<u8> {
    let mut d = vec![0u8; 64 * 1024];
    put(
        &mut d,
        446,
        &[0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF],
    );
    put(&mut d, 446 + 8, &1u32.to_le_bytes());
    put(&mut d, 446 + 12, &127u32.to_le_bytes());
    put(&mut d, 510, &[0x55, 0xAA]);
    put(&mut d, 512, b"EFI PART");
    d
}

fn luks(version: i16) -> Vec<u8> {
    let mut d = vec![0u8; 8192];
    put(&mut d, 0, b"LUKS\xba\xbe");
    put(&mut d, 6, &version.to_be_bytes());
    put(&mut d, 104, &4u32.to_be_bytes());
    d
}

fn failed_checks(found: &Inspected, format: Format) -> Vec<&'static str> {
    match found.safety_check(format) {
        Err(SafetyError::Failed(f)) => f.failures.keys().copied().collect(),
        other => panic!("{format}: expected failed checks, got {other:?}"),
    }
}

#[test]
fn raw_is_what_nothing_else_matches() {
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let found = inspect(&data);
    assert_eq!(found.formats(), [Format::Raw]);
    assert_eq!(found.check_upload(Some("raw")), Ok(Some(300_000)));
    assert_eq!(
        found.check_upload(Some("qcow2")),
        Err(Refusal::Mismatch {
            disk_format: "qcow2".into(),
            detected: Format::Raw
        })
    );
    assert_eq!(
        found.check_upload(Some("qcow2")).unwrap_err().to_string(),
        "Image disk_format qcow2 does not match stream data raw"
    );
    // Not inspectable types take unrecognised content, with no virtual size.
    for disk_format in ["ami", "ari", "aki", "ploop"] {
        assert_eq!(
            found.check_upload(Some(disk_format)),
            Ok(None),
            "{disk_format}"
        );
    }
    assert_eq!(found.check_upload(None), Ok(None));
    let empty = inspect(b"");
    assert_eq!(empty.formats(), [Format::Raw]);
    assert_eq!(empty.check_upload(Some("raw")), Ok(None), "zero is no size");
}

#[test]
fn qcow2_header_size_and_safety() {
    let found = inspect(&qcow2(3, 5 * MIB));
    assert_eq!(found.formats(), [Format::Qcow2]);
    assert_eq!(found.check_upload(Some("qcow2")), Ok(Some(5 * MIB)));
    assert_eq!(found.safety_check(Format::Qcow2), Ok(()));
    assert_eq!(
        found.check_upload(Some("raw")),
        Err(Refusal::Mismatch {
            disk_format: "raw".into(),
            detected: Format::Qcow2
        }),
        "qcow2 content is not raw"
    );
    assert!(matches!(
        found.check_upload(Some("ami")),
        Err(Refusal::Mismatch { .. })
    ));
    assert_eq!(
        inspect(&qcow2(2, MIB)).check_upload(Some("qcow2")),
        Ok(Some(MIB))
    );

    let mut backing = qcow2(3, MIB);
    put(&mut backing, 8, &0x210u64.to_be_bytes());
    put(&mut backing, 16, &8u32.to_be_bytes());
    let found = inspect(&backing);
    assert_eq!(failed_checks(&found, Format::Qcow2), ["backing_file"]);
    assert!(matches!(
        found.check_upload(Some("qcow2")),
        Err(Refusal::Unsafe {
            format: Format::Qcow2,
            ..
        })
    ));
    assert_eq!(
        found.check_upload(Some("qcow2")).unwrap_err().to_string(),
        "Image failed safety checks"
    );

    let mut data_file = qcow2(3, MIB);
    data_file[0x4f] = 0x04;
    assert_eq!(
        failed_checks(&inspect(&data_file), Format::Qcow2),
        ["data_file"]
    );

    // Dirty, corrupt and compression type are known; extended L2 (bit 4) and anything
    // above it are not.
    let mut known = qcow2(3, MIB);
    known[0x4f] = 0x0b;
    assert_eq!(inspect(&known).safety_check(Format::Qcow2), Ok(()));
    for (at, bit) in [(0x4f, 0x10), (0x4f, 0x80), (0x4e, 0x01), (0x48, 0x80)] {
        let mut unknown = qcow2(3, MIB);
        unknown[at] = bit;
        assert_eq!(
            failed_checks(&inspect(&unknown), Format::Qcow2),
            ["unknown_features"],
            "{at:#x} {bit:#x}"
        );
    }
    for version in [1, 4] {
        assert_eq!(
            failed_checks(&inspect(&qcow2(version, MIB)), Format::Qcow2),
            ["unknown_features"]
        );
    }
    // Too short for a header: raw.
    assert_eq!(inspect(&qcow2(3, MIB)[..300]).formats(), [Format::Raw]);
}

#[test]
fn vhd_vhdx_vdi_sizes() {
    let found = inspect(&vhd(1_079_296));
    assert_eq!(found.formats(), [Format::Vhd]);
    assert_eq!(found.check_upload(Some("vhd")), Ok(Some(1_079_296)));

    let found = inspect(&vhdx(7 * MIB));
    assert_eq!(found.formats(), [Format::Vhdx]);
    assert_eq!(found.check_upload(Some("vhdx")), Ok(Some(7 * MIB)));

    let found = inspect(&vdi(3 * MIB));
    assert_eq!(found.formats(), [Format::Vdi]);
    assert_eq!(found.check_upload(Some("vdi")), Ok(Some(3 * MIB)));
    assert!(matches!(
        found.check_upload(Some("raw")),
        Err(Refusal::Mismatch { .. })
    ));
}

#[test]
fn broken_vhdx_is_refused() {
    let mut no_table = vhdx(MIB);
    put(&mut no_table, 192 * 1024, b"nope");
    let found = inspect(&no_table);
    assert_eq!(found.formats(), [Format::Vhdx]);
    assert_eq!(
        found.check_upload(Some("vhdx")),
        Err(Refusal::Format(FormatError::VhdxRegionSignature(0x30000)))
    );
    // Cut before the size item: incomplete.
    let found = inspect(&vhdx(MIB)[..2 * MIB as usize + 100]);
    assert_eq!(
        found.check_upload(Some("vhdx")),
        Err(Refusal::Format(FormatError::Incomplete))
    );
    assert_eq!(
        found.check_upload(Some("vhdx")).unwrap_err().to_string(),
        "Incomplete file cannot be safety checked"
    );
}

#[test]
fn vmdk_single_file_layouts_only() {
    for create_type in ["monolithicSparse", "streamOptimized"] {
        let data = vmdk(
            2048,
            &descriptor(create_type, "RW 2048 SPARSE \"disk.vmdk\""),
        );
        let found = inspect(&data);
        assert_eq!(found.formats(), [Format::Vmdk], "{create_type}");
        assert_eq!(
            found.check_upload(Some("vmdk")),
            Ok(Some(MIB)),
            "{create_type}"
        );
    }
    let refused = |data: &[u8], check: &str| {
        let found = inspect(data);
        assert_eq!(found.formats(), [Format::Vmdk]);
        assert_eq!(failed_checks(&found, Format::Vmdk), [check]);
        assert!(matches!(
            found.check_upload(Some("vmdk")),
            Err(Refusal::Unsafe { .. })
        ));
    };
    // Extents in other files.
    refused(
        &vmdk(
            2048,
            &descriptor("monolithicFlat", "RW 2048 FLAT \"disk-flat.vmdk\" 0"),
        ),
        "descriptor",
    );
    refused(
        &vmdk(
            2048,
            &descriptor("twoGbMaxExtentSparse", "RW 2048 SPARSE \"disk-s001.vmdk\""),
        ),
        "descriptor",
    );
    refused(
        &vmdk(2048, &descriptor("vmfs", "RW 2048 VMFS \"disk-flat.vmdk\"")),
        "descriptor",
    );
    refused(
        &vmdk(
            2048,
            &descriptor("monolithicSparse", "RW 2048 FLAT \"/etc/passwd\" 0"),
        ),
        "descriptor",
    );
    // No capacity: qemu would open the descriptor's extent.
    refused(
        &vmdk(
            0,
            &descriptor("monolithicSparse", "RW 2048 FLAT \"passwd\" 0"),
        ),
        "descriptor",
    );
    refused(
        &vmdk(2048, &descriptor("monolithicSparse", "")),
        "descriptor",
    );
    refused(
        &vmdk(
            2048,
            "createType=\"monolithicSparse\"\nRW 2048 SPARSE \"x\"\nsomething odd\n",
        ),
        "descriptor",
    );
    refused(&vmdk(2048, ""), "descriptor");

    // A descriptor file alone is detected, and refused: its extents are other files.
    let text = descriptor("monolithicSparse", "RW 2048 SPARSE \"disk.vmdk\"");
    let found = inspect(text.as_bytes());
    assert_eq!(found.formats(), [Format::Vmdk]);
    assert_eq!(failed_checks(&found, Format::Vmdk), ["descriptor"]);
    let flat = descriptor("monolithicFlat", "RW 2048 FLAT \"disk-flat.vmdk\" 0");
    let found = inspect(flat.as_bytes());
    assert!(matches!(
        found.check_upload(Some("vmdk")),
        Err(Refusal::Unsafe { .. })
    ));
    assert!(matches!(
        found.check_upload(Some("raw")),
        Err(Refusal::Mismatch { .. })
    ));
    // Plain text is not a descriptor.
    let prose =
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n".repeat(20);
    assert_eq!(inspect(prose.as_bytes()).formats(), [Format::Raw]);
}

#[test]
fn broken_sparse_vmdk_headers_are_refused() {
    let good = vmdk(
        2048,
        &descriptor("monolithicSparse", "RW 2048 SPARSE \"disk.vmdk\""),
    );
    let mut version = good.clone();
    put(&mut version, 4, &7u32.to_le_bytes());
    let found = inspect(&version);
    assert_eq!(found.formats(), [Format::Vmdk]);
    assert_eq!(
        found.check_upload(Some("vmdk")),
        Err(Refusal::Format(FormatError::Incomplete))
    );
    let mut location = good.clone();
    put(&mut location, 28, &5u64.to_le_bytes());
    assert_eq!(
        inspect(&location).check_upload(Some("vmdk")),
        Err(Refusal::Format(FormatError::Incomplete))
    );
    // The descriptor is cut off.
    assert_eq!(
        inspect(&good[..700]).check_upload(Some("vmdk")),
        Err(Refusal::Format(FormatError::Incomplete))
    );
}

/// A stream-optimized VMDK whose grain directory is in a footer.
fn vmdk_with_footer() -> Vec<u8> {
    let mut data = vmdk(
        2048,
        &descriptor("streamOptimized", "RW 2048 SPARSE \"disk.vmdk\""),
    );
    put(&mut data, 56, &u64::MAX.to_le_bytes());
    let header: Vec<u8> = data[..512].to_vec();
    let mut marker = vec![0u8; 512];
    put(&mut marker, 8, &0u32.to_le_bytes());
    put(&mut marker, 12, &3u32.to_le_bytes());
    data.extend(&marker);
    let mut footer = header;
    put(&mut footer, 56, &7u64.to_le_bytes());
    data.extend(&footer);
    data.extend(vec![0u8; 512]);
    data
}

#[test]
fn vmdk_footer_must_match_its_header() {
    let data = vmdk_with_footer();
    let found = inspect(&data);
    assert_eq!(found.check_upload(Some("vmdk")), Ok(Some(MIB)));
    let n = data.len();
    let mut other_version = data.clone();
    put(&mut other_version, n - 1024 + 4, &2u32.to_le_bytes());
    assert_eq!(
        failed_checks(&inspect(&other_version), Format::Vmdk),
        ["footer"]
    );
    let mut another_footer = data.clone();
    put(&mut another_footer, n - 1024 + 56, &u64::MAX.to_le_bytes());
    assert_eq!(
        failed_checks(&inspect(&another_footer), Format::Vmdk),
        ["footer"]
    );
    let mut bad_eos = data.clone();
    bad_eos[n - 1] = 1;
    assert_eq!(failed_checks(&inspect(&bad_eos), Format::Vmdk), ["footer"]);
    let mut bad_marker = data.clone();
    put(&mut bad_marker, n - 1536 + 12, &1u32.to_le_bytes());
    assert_eq!(
        failed_checks(&inspect(&bad_marker), Format::Vmdk),
        ["footer"]
    );
}

#[test]
fn iso_and_partition_tables() {
    let found = inspect(&iso(1000, b""));
    assert_eq!(found.formats(), [Format::Iso]);
    assert_eq!(found.check_upload(Some("iso")), Ok(Some(1000 * 2048)));
    // An ISO is raw-compatible: the bytes are the disk.
    assert_eq!(found.check_upload(Some("raw")), Ok(Some(64 * 1024)));

    // A hybrid ISO with a partition table in front is an ISO.
    let hybrid = iso(1000, &gpt()[..512]);
    let found = inspect(&hybrid);
    assert_eq!(found.formats(), [Format::Iso, Format::Gpt]);
    assert_eq!(found.check_upload(Some("iso")), Ok(Some(1000 * 2048)));

    // Another format hidden in the system area is refused.
    let hidden = iso(1000, &qcow2(3, MIB)[..512]);
    let found = inspect(&hidden);
    assert_eq!(found.formats(), [Format::Qcow2, Format::Iso]);
    let refusal = found.check_upload(Some("iso")).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::Format(FormatError::Multiple(vec![Format::Qcow2, Format::Iso]))
    );
    assert_eq!(refusal.to_string(), "Multiple formats detected: qcow2,iso");

    let found = inspect(&gpt());
    assert_eq!(found.formats(), [Format::Gpt]);
    assert_eq!(found.safety_check(Format::Gpt), Ok(()));
    assert_eq!(found.check_upload(Some("raw")), Ok(Some(64 * 1024)));
    assert!(matches!(
        found.check_upload(Some("qcow2")),
        Err(Refusal::Mismatch { .. })
    ));
    // Upstream: only content with no known format passes as ami/aki/ari.
    assert!(matches!(
        found.check_upload(Some("aki")),
        Err(Refusal::Mismatch { .. })
    ));

    // An MBR disk with two partitions.
    let mut mbr = vec![0u8; 4096];
    put(&mut mbr, 446, &[0x80, 0x20, 0x21, 0x00, 0x83, 0, 0, 0]);
    put(&mut mbr, 446 + 8, &2048u32.to_le_bytes());
    put(&mut mbr, 462, &[0x00, 0x20, 0x21, 0x00, 0x82, 0, 0, 0]);
    put(&mut mbr, 510, &[0x55, 0xAA]);
    assert_eq!(inspect(&mbr).check_upload(Some("raw")), Ok(Some(4096)));

    let refused = |data: &[u8], why: &str| {
        let found = inspect(data);
        assert_eq!(found.formats(), [Format::Gpt]);
        match found.safety_check(Format::Gpt) {
            Err(SafetyError::Failed(f)) => assert_eq!(f.failures["mbr"], why),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            found.check_upload(Some("raw")),
            Err(Refusal::Unsafe { .. })
        ));
    };
    let mut boot_flag = gpt();
    boot_flag[446] = 0x12;
    refused(&boot_flag, "MBR PTE 0 has invalid boot flag");
    let mut chs = gpt();
    chs[447 + 1] = 0x03;
    refused(&chs, "GPT MBR has invalid start CHS");
    let mut lba = gpt();
    put(&mut lba, 446 + 8, &2u32.to_le_bytes());
    refused(&lba, "GPT MBR has invalid start LBA");
    let mut extra = gpt();
    extra[462 + 4] = 0x83;
    refused(&extra, "GPT MBR defines invalid extra partitions");
    let mut none = gpt();
    put(&mut none, 446, &[0u8; 16]);
    refused(&none, "GPT MBR has no partitions defined");

    // A FAT boot sector has the signature but is no partition table.
    let mut fat = vec![0u8; 4096];
    fat[0x10] = 2;
    fat[0x15] = 0xF8;
    put(&mut fat, 510, &[0x55, 0xAA]);
    assert_eq!(inspect(&fat).formats(), [Format::Raw]);
}

#[test]
fn luks_and_qed() {
    let found = inspect(&luks(1));
    assert_eq!(found.formats(), [Format::Luks]);
    assert_eq!(found.safety_check(Format::Luks), Ok(()));
    assert_eq!(found.virtual_size(Format::Luks), 8192 - 4 * 512);
    assert!(matches!(
        found.check_upload(Some("raw")),
        Err(Refusal::Mismatch { .. })
    ));
    assert_eq!(failed_checks(&inspect(&luks(2)), Format::Luks), ["version"]);

    let mut qed = vec![0u8; 4096];
    put(&mut qed, 0, b"QED\0");
    let found = inspect(&qed);
    assert_eq!(found.formats(), [Format::Qed]);
    assert_eq!(failed_checks(&found, Format::Qed), ["banned"]);
}

#[test]
fn memory_stays_bounded() {
    // Binary data: a few KiB, whatever its length.
    let mut inspection = Inspection::new();
    let chunk = vec![0xa5u8; 1 << 20];
    for _ in 0..32 {
        inspection.feed(&chunk);
    }
    assert!(
        inspection.buffered() <= 8 * 1024,
        "{}",
        inspection.buffered()
    );
    // Text that qemu takes for a VMDK descriptor: capped at the descriptor's limit.
    let mut inspection = Inspection::new();
    inspection.feed(b"version=1\n");
    let text = vec![b'a'; 1 << 20];
    for _ in 0..8 {
        inspection.feed(&text);
        assert!(inspection.buffered() <= MAX_BUFFERED);
    }
    assert!(
        inspection.buffered() > 1 << 19,
        "the descriptor region fills"
    );
    const { assert!(MAX_BUFFERED < 3 << 20) };
    let found = inspection.finish();
    // Without a createType it is no VMDK qemu would open.
    assert_eq!(found.formats(), [Format::Raw]);
    assert_eq!(found.size(), (8 << 20) + 10);
}

#[test]
fn what_qemu_would_still_open_is_refused() {
    // A parent file named in an embedded descriptor is a backing file to qemu.
    let parent = descriptor("monolithicSparse", "RW 2048 SPARSE \"disk.vmdk\"").replace(
        "parentCID=ffffffff\n",
        "parentCID=ffffffff\nparentFileNameHint=\"/etc/shadow\"\n",
    );
    assert!(matches!(
        inspect(&vmdk(2048, &parent)).check_upload(Some("vmdk")),
        Err(Refusal::Unsafe { .. })
    ));
    // A descriptor file that qemu's probe takes, whatever its comment lines hold,
    // uploaded as raw.
    let mut flat = b"#\xff\xfe comment\n".to_vec();
    flat.extend_from_slice(
        b"version=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"/etc/passwd\" 0\n",
    );
    assert!(inspect(&flat).check_upload(Some("raw")).is_err());
    // A qcow2 header cut short: qemu reads on as zeros; neither raw nor checkable.
    let mut short = vec![0u8; 200];
    put(&mut short, 0, b"QFI\xfb");
    put(&mut short, 4, &3u32.to_be_bytes());
    put(&mut short, 8, &104u64.to_be_bytes());
    put(&mut short, 16, &20u32.to_be_bytes());
    put(&mut short, 104, b"/etc/shadow");
    for claimed in ["raw", "aki", "qcow2"] {
        assert_eq!(
            inspect(&short).check_upload(Some(claimed)),
            Err(Refusal::Format(FormatError::Incomplete)),
            "{claimed}"
        );
    }
    // Plain data of the same length still passes as raw.
    assert!(inspect(&[0x5au8; 200]).check_upload(Some("raw")).is_ok());
}
