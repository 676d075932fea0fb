//! Upload format inspection (upstream Glance 33's format_inspector): images made by
//! qemu-img, inspected directly and uploaded through glance-api. A matching upload
//! becomes active with its virtual size; a mismatched or unsafe one is refused with 415,
//! as upstream refuses it, and leaves the image queued with no data in the store.
//!
//! Needs `qemu-img` (Debian package qemu-utils). ISOs come from genisoimage or xorriso
//! when one is installed, else a minimal ISO 9660 volume is synthesized; partition tables
//! are synthesized.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::{Server, call, create, start};
use glance_operator::format::{Format, FormatError, Inspected, Inspection, Refusal};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// Runs qemu-img in `dir`; a missing qemu-img fails the test saying what to install.
fn qemu_img(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "qemu-img could not run ({e}): install qemu-utils (apt-get install -y --no-install-recommends qemu-utils)"
            )
        });
    assert!(
        out.status.success(),
        "qemu-img {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Test images in a temporary directory.
struct Images {
    dir: tempfile::TempDir,
}

impl Images {
    /// Makes every image the tests use.
    fn new() -> Self {
        let images = Images {
            dir: tempfile::tempdir().expect("tmp"),
        };
        let dir = images.dir.path();
        // Raw data that is not all zeros, and images of it.
        let data: Vec<u8> = (0..MIB as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.join("disk.raw"), &data).expect("write");
        for args in [
            &["convert", "-O", "qcow2", "disk.raw", "disk.qcow2"][..],
            &[
                "create",
                "-f",
                "qcow2",
                "-b",
                "disk.raw",
                "-F",
                "raw",
                "backing.qcow2",
            ],
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "data_file=datafile.data",
                "datafile.qcow2",
                "1M",
            ],
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "extended_l2=on",
                "extl2.qcow2",
                "1M",
            ],
            &["convert", "-O", "vmdk", "disk.raw", "sparse.vmdk"],
            &[
                "convert",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                "disk.raw",
                "stream.vmdk",
            ],
            &[
                "create",
                "-f",
                "vmdk",
                "-o",
                "subformat=monolithicFlat",
                "flat.vmdk",
                "1M",
            ],
            &[
                "create",
                "-f",
                "vmdk",
                "-o",
                "subformat=twoGbMaxExtentSparse",
                "split.vmdk",
                "1M",
            ],
            &["convert", "-O", "vpc", "disk.raw", "disk.vhd"],
            &["convert", "-O", "vhdx", "disk.raw", "disk.vhdx"],
            &["convert", "-O", "vdi", "disk.raw", "disk.vdi"],
        ] {
            qemu_img(dir, args);
        }
        images
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// What `qemu-img info` says the virtual size is.
    fn qemu_virtual_size(&self, name: &str) -> u64 {
        let out = qemu_img(self.dir.path(), &["info", "--output=json", name]);
        let info: Value = serde_json::from_slice(&out).expect("qemu-img info JSON");
        info["virtual-size"].as_u64().expect("virtual-size")
    }

    /// An ISO 9660 image and its volume size in bytes.
    fn iso(&self) -> (Vec<u8>, u64) {
        let content = self.path("iso-content");
        std::fs::create_dir_all(&content).expect("mkdir");
        std::fs::write(content.join("README.TXT"), vec![b'x'; 100_000]).expect("write");
        let made = [
            (
                "genisoimage",
                &["-quiet", "-o", "tool.iso", "iso-content"][..],
            ),
            (
                "xorriso",
                &["-as", "mkisofs", "-quiet", "-o", "tool.iso", "iso-content"],
            ),
        ]
        .iter()
        .any(|(tool, args)| {
            Command::new(tool)
                .args(*args)
                .current_dir(self.dir.path())
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if made {
            let iso = self.read("tool.iso");
            // The primary volume descriptor: blocks at 80, block size at 128.
            let pvd = &iso[32768..34816];
            let blocks = u32::from_le_bytes(pvd[80..84].try_into().expect("4 bytes"));
            let block = u16::from_le_bytes(pvd[128..130].try_into().expect("2 bytes"));
            (iso, u64::from(blocks) * u64::from(block))
        } else {
            (synthesized_iso(200, &[]), 200 * 2048)
        }
    }
}

/// A minimal ISO 9660 volume of `blocks` 2 KiB blocks with `system_area` at its start.
fn synthesized_iso(blocks: u32, system_area: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; blocks as usize * 2048];
    d[..system_area.len()].copy_from_slice(system_area);
    let pvd = 16 * 2048;
    d[pvd] = 1;
    d[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
    d[pvd + 6] = 1;
    d[pvd + 80..pvd + 84].copy_from_slice(&blocks.to_le_bytes());
    d[pvd + 84..pvd + 88].copy_from_slice(&blocks.to_be_bytes());
    d[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
    d[pvd + 130..pvd + 132].copy_from_slice(&2048u16.to_be_bytes());
    // The volume descriptor set terminator.
    d[pvd + 2048] = 255;
    d[pvd + 2049..pvd + 2054].copy_from_slice(b"CD001");
    d
}

/// A 1 MiB disk with a GPT: protective MBR, then the GPT header at LBA 1. With
/// `boot_flag`, its MBR entry has that (invalid unless 0 or 0x80) boot flag.
fn gpt_disk(boot_flag: u8) -> Vec<u8> {
    let mut d = vec![0u8; MIB as usize];
    d[446..454].copy_from_slice(&[boot_flag, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF]);
    d[454..458].copy_from_slice(&1u32.to_le_bytes());
    d[458..462].copy_from_slice(&2047u32.to_le_bytes());
    d[510..512].copy_from_slice(&[0x55, 0xAA]);
    d[512..520].copy_from_slice(b"EFI PART");
    d
}

/// Inspects `data` as an upload would, fed in `size`-byte chunks.
fn inspect_in(data: &[u8], size: usize) -> Inspected {
    let mut inspection = Inspection::new();
    for chunk in data.chunks(size.max(1)) {
        inspection.feed(chunk);
    }
    inspection.finish()
}

fn inspect(data: &[u8]) -> Inspected {
    inspect_in(data, 64 * 1024)
}

/// The decision on an upload of `data` to a bare image of `disk_format`.
fn check(data: &[u8], disk_format: &str) -> Result<Option<u64>, Refusal> {
    inspect(data).check_upload(Some(disk_format))
}

/// The names of the safety checks that fail on `data` as `format`.
fn failed_checks(data: &[u8], format: Format) -> Vec<&'static str> {
    match inspect(data).safety_check(format) {
        Err(glance_operator::format::SafetyError::Failed(f)) => f.failures.into_keys().collect(),
        other => panic!("{format}: expected failed safety checks, got {other:?}"),
    }
}

#[test]
fn qemu_img_images_are_detected_with_qemus_virtual_size() {
    let images = Images::new();
    for (name, disk_format, format) in [
        ("disk.raw", "raw", Format::Raw),
        ("disk.qcow2", "qcow2", Format::Qcow2),
        ("sparse.vmdk", "vmdk", Format::Vmdk),
        ("stream.vmdk", "vmdk", Format::Vmdk),
        ("disk.vhd", "vhd", Format::Vhd),
        ("disk.vhdx", "vhdx", Format::Vhdx),
        ("disk.vdi", "vdi", Format::Vdi),
    ] {
        let data = images.read(name);
        let found = inspect(&data);
        assert_eq!(found.formats(), [format], "{name}");
        let qemu = images.qemu_virtual_size(name);
        assert!(qemu >= MIB, "{name}: {qemu}");
        assert_eq!(
            found.virtual_size(format),
            qemu,
            "{name}: qemu-img's virtual size"
        );
        assert_eq!(found.safety_check(format), Ok(()), "{name}");
        assert_eq!(check(&data, disk_format), Ok(Some(qemu)), "{name}");
    }
    let (iso, size) = images.iso();
    assert_eq!(inspect(&iso).formats(), [Format::Iso]);
    assert_eq!(check(&iso, "iso"), Ok(Some(size)));
}

#[test]
fn inspection_does_not_depend_on_how_the_stream_is_cut() {
    let images = Images::new();
    for name in [
        "disk.qcow2",
        "backing.qcow2",
        "sparse.vmdk",
        "stream.vmdk",
        "flat.vmdk",
        "disk.vhd",
        "disk.vhdx",
        "disk.vdi",
    ] {
        let data = images.read(name);
        let whole = inspect_in(&data, data.len());
        for size in [1, 13, 512, 4096, 1 << 20] {
            if size == 1 && data.len() > 300_000 {
                continue;
            }
            let cut = inspect_in(&data, size);
            assert_eq!(
                cut.formats(),
                whole.formats(),
                "{name} in {size}-byte chunks"
            );
            for disk_format in ["raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "ami"] {
                assert_eq!(
                    cut.check_upload(Some(disk_format)),
                    whole.check_upload(Some(disk_format)),
                    "{name} as {disk_format} in {size}-byte chunks"
                );
            }
        }
    }
}

/// The decision an upload gets as soon as its inspection settles (None when it never
/// settles before the end), fed in `size`-byte chunks, and how many bytes it took.
fn settled_decision(
    data: &[u8],
    size: usize,
    disk_format: &str,
) -> Option<(Result<Option<u64>, Refusal>, u64)> {
    let mut inspection = Inspection::new();
    for chunk in data.chunks(size.max(1)) {
        inspection.feed(chunk);
        if let Some(found) = inspection.found() {
            return Some((found.check_upload(Some(disk_format)), inspection.size()));
        }
    }
    None
}

#[test]
fn a_refusal_found_once_the_inspection_settles_is_the_refusal_at_the_end() {
    let images = Images::new();
    let (iso, _) = images.iso();
    let mut samples: Vec<(String, Vec<u8>)> = [
        "disk.raw",
        "disk.qcow2",
        "backing.qcow2",
        "sparse.vmdk",
        "stream.vmdk",
        "flat.vmdk",
        "disk.vhd",
        "disk.vhdx",
        "disk.vdi",
    ]
    .iter()
    .map(|name| ((*name).to_owned(), images.read(name)))
    .collect();
    samples.push(("iso".to_owned(), iso));
    samples.push(("gpt".to_owned(), gpt_disk(0)));
    samples.push(("zeros".to_owned(), vec![0; 4 << 20]));
    let mut early = 0;
    for (name, data) in &samples {
        for size in [512, 4096, 1 << 20] {
            for disk_format in ["raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami"] {
                let end = inspect_in(data, size).check_upload(Some(disk_format));
                let Some((now, after)) = settled_decision(data, size, disk_format) else {
                    continue;
                };
                if let Err(refusal) = now {
                    assert_eq!(
                        Err(refusal),
                        end,
                        "{name} as {disk_format} in {size}-byte chunks, judged after {after} bytes"
                    );
                    if after < data.len() as u64 {
                        early += 1;
                    }
                }
            }
        }
    }
    assert!(early > 0, "some refusals come before the end of the data");
    // Plain data claimed to be qcow2 is refused within the first 64 KiB.
    let zeros = vec![0u8; 64 << 20];
    let (decision, after) = settled_decision(&zeros, 4096, "qcow2").expect("settles");
    assert!(
        matches!(decision, Err(Refusal::Mismatch { .. })),
        "{decision:?}"
    );
    assert!(after <= 64 * 1024, "judged after {after} bytes");
}

#[test]
fn qcow2_backing_file_data_file_and_unknown_features_are_refused() {
    let images = Images::new();
    let backing = images.read("backing.qcow2");
    assert_eq!(failed_checks(&backing, Format::Qcow2), ["backing_file"]);
    let refusal = check(&backing, "qcow2").expect_err("backing file");
    assert!(
        matches!(
            refusal,
            Refusal::Unsafe {
                format: Format::Qcow2,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert_eq!(refusal.to_string(), "Image failed safety checks");

    let data_file = images.read("datafile.qcow2");
    assert_eq!(failed_checks(&data_file, Format::Qcow2), ["data_file"]);
    assert!(matches!(
        check(&data_file, "qcow2"),
        Err(Refusal::Unsafe { .. })
    ));

    // Extended L2 entries (incompatible feature bit 4) are beyond what upstream knows.
    let extl2 = images.read("extl2.qcow2");
    assert_eq!(failed_checks(&extl2, Format::Qcow2), ["unknown_features"]);
    let mut version = images.read("disk.qcow2");
    version[4..8].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(failed_checks(&version, Format::Qcow2), ["unknown_features"]);

    // qcow2 content claimed raw (or anything else) does not pass.
    for claimed in ["raw", "vmdk", "ami", "iso"] {
        assert_eq!(
            check(&images.read("disk.qcow2"), claimed),
            Err(Refusal::Mismatch {
                disk_format: claimed.to_owned(),
                detected: Format::Qcow2
            }),
            "{claimed}"
        );
    }
}

/// `sparse.vmdk` with its embedded descriptor replaced by `text`, and its capacity by
/// `sectors`.
fn patched_sparse_vmdk(images: &Images, text: &str, sectors: u64) -> Vec<u8> {
    let mut data = images.read("sparse.vmdk");
    assert_eq!(&data[..4], b"KDMV");
    let desc_sectors = u64::from_le_bytes(data[36..44].try_into().expect("8 bytes"));
    let area = &mut data[512..512 + desc_sectors as usize * 512];
    area.fill(0);
    area[..text.len()].copy_from_slice(text.as_bytes());
    data[12..20].copy_from_slice(&sectors.to_le_bytes());
    data
}

#[test]
fn vmdk_with_extents_in_other_files_is_refused() {
    let images = Images::new();
    // Descriptor files: the extents are other files.
    for name in ["flat.vmdk", "split.vmdk"] {
        let data = images.read(name);
        assert!(data.starts_with(b"# Disk DescriptorFile"), "{name}");
        assert_eq!(inspect(&data).formats(), [Format::Vmdk], "{name}");
        assert_eq!(failed_checks(&data, Format::Vmdk), ["descriptor"], "{name}");
        assert!(
            matches!(check(&data, "vmdk"), Err(Refusal::Unsafe { .. })),
            "{name}"
        );
        assert!(
            matches!(check(&data, "raw"), Err(Refusal::Mismatch { .. })),
            "{name}"
        );
    }
    // An extent of a split VMDK alone: its descriptor area is empty.
    let extent = images.read("split-s001.vmdk");
    assert_eq!(inspect(&extent).formats(), [Format::Vmdk]);
    match inspect(&extent).safety_check(Format::Vmdk) {
        Err(glance_operator::format::SafetyError::Failed(f)) => {
            assert_eq!(f.failures["descriptor"], "No descriptor found")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        check(&extent, "vmdk"),
        Err(Refusal::Unsafe { .. })
    ));
    // One whose header puts the descriptor elsewhere than qemu reads it is never
    // complete.
    let mut moved = extent.clone();
    moved[28..36].copy_from_slice(&2u64.to_le_bytes());
    assert_eq!(
        check(&moved, "vmdk"),
        Err(Refusal::Format(FormatError::Incomplete))
    );

    let sparse = images.read("sparse.vmdk");
    let original = String::from_utf8_lossy(&sparse[512..1024]).into_owned();
    assert!(
        original.contains("createType=\"monolithicSparse\""),
        "{original}"
    );
    let text = original.trim_end_matches('\0');
    // The same descriptor, patched in place, passes: the patching is not what fails.
    assert_eq!(
        check(&patched_sparse_vmdk(&images, text, 2048), "vmdk"),
        Ok(Some(MIB))
    );
    let elsewhere = text.replace("\"sparse.vmdk\"", "\"/etc/passwd\"");
    assert_ne!(elsewhere, text);
    let refused = [
        // A host file as an extent.
        patched_sparse_vmdk(&images, &elsewhere, 2048),
        // A layout whose extents are other files.
        patched_sparse_vmdk(
            &images,
            &text.replace("monolithicSparse", "monolithicFlat"),
            2048,
        ),
        // No capacity: qemu opens the embedded descriptor's extents.
        patched_sparse_vmdk(&images, text, 0),
        // Lines the descriptor parser does not know.
        patched_sparse_vmdk(&images, &format!("{text}\nrm -rf /\n"), 2048),
    ];
    for (i, data) in refused.iter().enumerate() {
        assert_eq!(
            failed_checks(data, Format::Vmdk),
            ["descriptor"],
            "case {i}"
        );
        assert!(
            matches!(check(data, "vmdk"), Err(Refusal::Unsafe { .. })),
            "case {i}"
        );
    }
}

#[test]
fn iso_gpt_and_formats_hidden_in_one_another() {
    let images = Images::new();
    let (iso, _) = images.iso();
    // An ISO is raw-compatible; its virtual size is then its length, as upstream has it.
    assert_eq!(check(&iso, "raw"), Ok(Some(iso.len() as u64)));
    assert!(matches!(
        check(&iso, "qcow2"),
        Err(Refusal::Mismatch { .. })
    ));

    // A bootable-as-disk ISO with a partition table in front is an ISO.
    let hybrid = synthesized_iso(200, &gpt_disk(0)[..512]);
    assert_eq!(inspect(&hybrid).formats(), [Format::Iso, Format::Gpt]);
    assert_eq!(check(&hybrid, "iso"), Ok(Some(200 * 2048)));

    // A qcow2 or VMDK header in the ISO's system area: two formats, refused.
    for name in ["disk.qcow2", "sparse.vmdk"] {
        let hidden = synthesized_iso(200, &images.read(name)[..4096]);
        let found = inspect(&hidden);
        assert_eq!(found.formats().len(), 2, "{name}: {:?}", found.formats());
        for claimed in ["iso", "raw", "qcow2", "vmdk"] {
            let refusal = found.check_upload(Some(claimed)).expect_err(name);
            assert!(
                matches!(refusal, Refusal::Format(FormatError::Multiple(_))),
                "{name} as {claimed}: {refusal:?}"
            );
            assert!(
                refusal
                    .to_string()
                    .starts_with("Multiple formats detected: "),
                "{refusal}"
            );
        }
    }

    // A GPT disk is raw-compatible; a broken protective MBR is not safe.
    let gpt = gpt_disk(0);
    assert_eq!(inspect(&gpt).formats(), [Format::Gpt]);
    assert_eq!(check(&gpt, "raw"), Ok(Some(MIB)));
    let broken = gpt_disk(0x42);
    assert_eq!(failed_checks(&broken, Format::Gpt), ["mbr"]);
    assert!(matches!(
        check(&broken, "raw"),
        Err(Refusal::Unsafe {
            format: Format::Gpt,
            ..
        })
    ));
    // Upstream lets ami/ari/aki hold only content of no known format.
    assert!(matches!(check(&gpt, "ami"), Err(Refusal::Mismatch { .. })));
    assert_eq!(check(&images.read("disk.raw"), "aki"), Ok(None));
}

// --- Through glance-api ----------------------------------------------------------------

/// Creates a bare image of `disk_format` (container_format `container` when given).
async fn image(server: &Server, disk_format: &str, container: Option<&str>) -> String {
    let mut body = json!({"name": format!("inspected-{disk_format}"), "disk_format": disk_format});
    if let Some(container) = container {
        body["container_format"] = json!(container);
    }
    let image = create(server.addr, body).await;
    image["id"].as_str().expect("id").to_owned()
}

/// PUTs `data` as the image's data: status and JSON body (if any).
async fn put(server: &Server, id: &str, data: &[u8]) -> (u16, Option<Value>) {
    let reply = call(
        server.addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Accept", "application/json"),
        ],
        data.to_vec(),
    )
    .await;
    let body = serde_json::from_slice(&reply.body).ok();
    (reply.status, body)
}

async fn show(server: &Server, id: &str) -> Value {
    call(server.addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
        .await
        .json()
}

/// The files in the store (and any partial upload) that belong to image `id`.
fn stored(server: &Server, id: &str) -> Vec<String> {
    let dir = server.dir.path().join("images");
    match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(id))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Uploads `data` to a new bare image of `disk_format` and checks that it is refused
/// with 415 and `message`, stays queued with no data, and keeps nothing in the store.
async fn refused(server: &Server, data: &[u8], disk_format: &str, message: &str) -> String {
    let id = image(server, disk_format, Some("bare")).await;
    let (status, body) = put(server, &id, data).await;
    assert_eq!(status, 415, "{disk_format}: {body:?}");
    let body = body.expect("a JSON error");
    assert_eq!(body["message"], json!(message), "{disk_format}");
    let shown = show(server, &id).await;
    assert_eq!(shown["status"], json!("queued"), "{disk_format}");
    for field in ["size", "virtual_size", "checksum", "os_hash_value"] {
        assert_eq!(shown[field], Value::Null, "{disk_format}: {field}");
    }
    assert_eq!(
        stored(server, &id),
        Vec::<String>::new(),
        "{disk_format}: no data left"
    );
    let file = call(
        server.addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(file.status, 204, "no data to download");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn matching_uploads_become_active_with_their_virtual_size() {
    let images = Images::new();
    let server = start(None).await;
    let (iso, iso_size) = images.iso();
    let mut cases: Vec<(Vec<u8>, &str, u64)> = Vec::new();
    for (name, disk_format) in [
        ("disk.raw", "raw"),
        ("disk.qcow2", "qcow2"),
        ("sparse.vmdk", "vmdk"),
        ("stream.vmdk", "vmdk"),
        ("disk.vhd", "vhd"),
        ("disk.vhdx", "vhdx"),
        ("disk.vdi", "vdi"),
    ] {
        cases.push((
            images.read(name),
            disk_format,
            images.qemu_virtual_size(name),
        ));
    }
    cases.push((iso, "iso", iso_size));
    // A GPT disk and an ISO as raw: the bytes are the disk.
    let gpt = gpt_disk(0);
    let gpt_len = gpt.len() as u64;
    cases.push((gpt, "raw", gpt_len));
    for (data, disk_format, virtual_size) in cases {
        let id = image(&server, disk_format, Some("bare")).await;
        let (status, body) = put(&server, &id, &data).await;
        assert_eq!(status, 204, "{disk_format}: {body:?}");
        let shown = show(&server, &id).await;
        assert_eq!(shown["status"], json!("active"), "{disk_format}");
        assert_eq!(shown["size"], json!(data.len()), "{disk_format}");
        assert_eq!(shown["virtual_size"], json!(virtual_size), "{disk_format}");
        assert_eq!(stored(&server, &id), vec![id.clone()], "{disk_format}");
        let file = call(&server, &id).await;
        assert_eq!(file, data, "{disk_format}: the data as uploaded");
    }

    async fn call(server: &Server, id: &str) -> Vec<u8> {
        common::server::call(
            server.addr,
            "GET",
            &format!("/v2/images/{id}/file"),
            &[],
            vec![],
        )
        .await
        .body
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_uploads_are_refused_and_leave_no_data() {
    let images = Images::new();
    let server = start(None).await;
    let raw = images.read("disk.raw");
    let qcow2 = images.read("disk.qcow2");
    for (data, disk_format, detected) in [
        (&raw, "qcow2", "raw"),
        (&raw, "vmdk", "raw"),
        (&qcow2, "raw", "qcow2"),
        (&qcow2, "vmdk", "qcow2"),
        (&qcow2, "ami", "qcow2"),
        (&images.read("disk.vhd"), "vhdx", "vhd"),
        (&images.read("stream.vmdk"), "raw", "vmdk"),
    ] {
        let message =
            format!("Image disk_format {disk_format} does not match stream data {detected}");
        refused(&server, data, disk_format, &message).await;
    }
    // The refused image takes the right data afterwards.
    let id = refused(
        &server,
        &raw,
        "qcow2",
        "Image disk_format qcow2 does not match stream data raw",
    )
    .await;
    assert_eq!(put(&server, &id, &qcow2).await.0, 204);
    let shown = show(&server, &id).await;
    assert_eq!(shown["status"], json!("active"));
    assert_eq!(shown["virtual_size"], json!(MIB));
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_uploads_are_refused_and_leave_no_data() {
    let images = Images::new();
    let server = start(None).await;
    let unsafe_ = "Image failed safety checks";
    for (name, disk_format) in [
        ("backing.qcow2", "qcow2"),
        ("datafile.qcow2", "qcow2"),
        ("extl2.qcow2", "qcow2"),
        ("flat.vmdk", "vmdk"),
        ("split.vmdk", "vmdk"),
    ] {
        refused(&server, &images.read(name), disk_format, unsafe_).await;
    }
    refused(&server, &gpt_disk(0x42), "raw", unsafe_).await;
    refused(&server, &images.read("split-s001.vmdk"), "vmdk", unsafe_).await;
    let mut moved = images.read("split-s001.vmdk");
    moved[28..36].copy_from_slice(&2u64.to_le_bytes());
    refused(
        &server,
        &moved,
        "vmdk",
        "Incomplete file cannot be safety checked",
    )
    .await;
    let hidden = synthesized_iso(200, &images.read("disk.qcow2")[..4096]);
    refused(
        &server,
        &hidden,
        "iso",
        "Multiple formats detected: qcow2,iso",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_upstream_does_not_inspect_pass() {
    let images = Images::new();
    let server = start(None).await;
    let backing = images.read("backing.qcow2");
    // Upstream inspects bare images only (and takes no data without a container_format).
    for container in [Some("ovf"), Some("docker")] {
        let id = image(&server, "raw", container).await;
        assert_eq!(put(&server, &id, &backing).await.0, 204, "{container:?}");
        let shown = show(&server, &id).await;
        assert_eq!(shown["status"], json!("active"));
        assert_eq!(
            shown["virtual_size"],
            Value::Null,
            "{container:?}: not inspected"
        );
    }
    // ami, ari, aki: content of no known format passes, with no virtual size.
    for disk_format in ["ami", "ari", "aki"] {
        let id = image(&server, disk_format, Some("bare")).await;
        assert_eq!(put(&server, &id, &images.read("disk.raw")).await.0, 204);
        let shown = show(&server, &id).await;
        assert_eq!(shown["status"], json!("active"));
        assert_eq!(shown["virtual_size"], Value::Null, "{disk_format}");
    }
}

/// PATCHes `key` to `value`; the status and the body.
async fn relabel(server: &Server, id: &str, key: &str, value: &str) -> (u16, String) {
    let reply = call(
        server.addr,
        "PATCH",
        &format!("/v2/images/{id}"),
        &[(
            "content-type",
            "application/openstack-images-v2.1-json-patch",
        )],
        serde_json::to_vec(&json!([{"op": "replace", "path": format!("/{key}"), "value": value}]))
            .expect("patch"),
    )
    .await;
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

#[tokio::test]
async fn the_formats_cannot_be_relabelled_once_the_data_is_in() {
    let images = Images::new();
    let server = start(None).await;
    let id = image(&server, "raw", Some("bare")).await;
    // While queued, the claim may change: the upload is checked against the last one.
    assert_eq!(relabel(&server, &id, "disk_format", "qcow2").await.0, 200);
    let (status, body) = put(&server, &id, &images.read("disk.qcow2")).await;
    assert_eq!(status, 204, "{body:?}");
    for (key, value) in [("disk_format", "raw"), ("container_format", "ovf")] {
        let (status, body) = relabel(&server, &id, key, value).await;
        assert_eq!(status, 403, "{key}: {body}");
        assert!(
            body.contains(&format!(
                "Attribute {key} can be only replaced for a queued image."
            )),
            "{body}"
        );
    }
    assert_eq!(show(&server, &id).await["disk_format"], json!("qcow2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mismatch_stops_storing_once_the_header_is_seen_not_at_the_end_of_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(None).await;
    let id = image(&server, "qcow2", Some("bare")).await;
    let total: usize = 64 << 20;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nAccept: application/json\r\nContent-Length: {total}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![0u8; 1 << 20];
    stream.write_all(&chunk).await.expect("first MiB");
    // The upload is refused after the first MiB: its partial file is gone while the
    // client is still sending.
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if stored(&server, &id).is_empty() {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "partial upload still stored: {:?}",
        stored(&server, &id)
    );
    for _ in 1..(total >> 20) {
        stream.write_all(&chunk).await.expect("the rest is read");
    }
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&reply).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("reply");
        assert!(n > 0, "closed without an answer");
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 415"), "{reply}");
    assert_eq!(show(&server, &id).await["status"], json!("queued"));
    assert!(stored(&server, &id).is_empty());
}
