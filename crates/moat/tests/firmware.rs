//! `moat fw verify` against images signed by MCUboot's `imgtool` (installed by scripts/test):
//! accepted images print version and counter; tampered images, wrong keys and rollbacks are
//! refused with exit status 3 and the reason.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// imgtool on the PATH, else the Python module.
fn imgtool() -> Command {
    let on_path = Command::new("imgtool")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        Command::new("imgtool")
    } else {
        let mut c = Command::new("python3");
        c.args(["-m", "imgtool.main"]);
        c
    }
}

fn ok(mut cmd: Command) {
    let out = cmd.output().expect("imgtool runs (pip install imgtool)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs `payload` with a new key of `kind`; returns (image, public key PEM) paths.
fn signed(dir: &Path, kind: &str, version: &str, counter: u32) -> (String, String) {
    let key = dir.join(format!("{kind}-{version}.pem"));
    let public = dir.join(format!("{kind}-{version}.pub.pem"));
    let payload = dir.join("app.bin");
    std::fs::write(
        &payload,
        (0..20_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
    )
    .expect("payload");
    let mut c = imgtool();
    c.args(["keygen", "-t", kind, "-k"]).arg(&key);
    ok(c);
    let mut c = imgtool();
    c.args(["getpub", "-e", "pem", "-k"])
        .arg(&key)
        .arg("-o")
        .arg(&public);
    ok(c);
    let image = dir.join(format!("{kind}-{version}.signed.bin"));
    let mut c = imgtool();
    c.args(["sign", "--key"])
        .arg(&key)
        .args([
            "--version",
            version,
            "--header-size",
            "0x200",
            "--pad-header",
        ])
        .args([
            "--slot-size",
            "0x20000",
            "--security-counter",
            &counter.to_string(),
        ])
        .arg(&payload)
        .arg(&image);
    ok(c);
    (
        image.to_str().expect("utf-8").into(),
        public.to_str().expect("utf-8").into(),
    )
}

fn verify(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(MOAT)
        .args(["fw", "verify"])
        .args(args)
        .output()
        .expect("moat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn fw_verify_accepts_imgtool_images_and_refuses_tampering_wrong_keys_and_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in ["ed25519", "ecdsa-p256"] {
        let (image, key) = signed(dir.path(), kind, "1.2.3", 7);
        let (code, text) = verify(&[&image, "--key", &key, "--min-counter", "5"]);
        assert_eq!(code, Some(0), "{kind}: {text}");
        assert!(
            text.contains("accepted") && text.contains("1.2.3"),
            "{text}"
        );
        assert!(text.contains("security counter: 7"), "{text}");

        // A rollback: the device already runs counter 8.
        let (code, text) = verify(&[&image, "--key", &key, "--min-counter", "8"]);
        assert_eq!(code, Some(3), "{text}");
        assert!(text.to_lowercase().contains("counter"), "{text}");

        // One flipped byte in the payload.
        let mut bytes = std::fs::read(&image).expect("image");
        bytes[0x200 + 1000] ^= 0x01;
        let bad = format!("{image}.tampered");
        std::fs::write(&bad, &bytes).expect("write");
        let (code, text) = verify(&[&bad, "--key", &key]);
        assert_eq!(code, Some(3), "{text}");
        assert!(text.contains("refused"), "{text}");

        // Signed by another key.
        let (_, other) = signed(dir.path(), kind, "9.9.9", 1);
        let (code, text) = verify(&[&image, "--key", &other]);
        assert_eq!(code, Some(3), "{text}");
    }
    // Bad inputs get a message that says what to do.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").expect("w");
    let (code, text) = verify(&["x.bin", "--key", junk.to_str().expect("p")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("imgtool getpub"), "{text}");
}

#[test]
fn what_an_interrupted_upload_left_is_removed_at_start() {
    // An upload killed between its blob and its record leaves a blob no record names (and,
    // killed while writing, a temporary file): the next start removes both, and only them.
    let mut hub = TestHub::start();
    let dir = hub.path("rel");
    std::fs::create_dir_all(&dir).expect("dir");
    let rel = publish_release(&hub, &dir, "sensor", "1.0.0", 1, 4096);
    hub.stop();
    let fw = hub.data.join("firmware");
    let orphan = fw.join("ab".repeat(32));
    let partial = fw.join(format!(".{}.x1.tmp", "cd".repeat(32)));
    let unrelated = fw.join("README");
    for f in [&orphan, &partial, &unrelated] {
        std::fs::write(f, b"left behind").expect("plant");
    }
    hub.spawn().expect("restart");
    assert!(!orphan.exists(), "the orphan blob is removed");
    assert!(!partial.exists(), "the temporary file is removed");
    assert!(
        unrelated.exists(),
        "files that are not blobs are left alone"
    );
    assert!(
        fw.join(&rel.digest).exists(),
        "the published image's blob stays"
    );
    let listed = hub.json(&["fw", "list"]);
    assert!(listed.to_string().contains(&rel.digest), "{listed}");
}
