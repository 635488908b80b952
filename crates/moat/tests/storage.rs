//! The hub on each master-key source (file, passphrase, PKCS#11 in SoftHSM2) and on each
//! registry (SQLite, PostgreSQL).

mod common;

use common::*;
use moat_testkit::softhsm::SoftHsm;
use std::process::Command;
use std::time::{Duration, Instant};

fn is_ci() -> bool {
    std::env::var_os("CI").is_some()
}

#[test]
fn passphrase_vault_refuses_a_wrong_passphrase_and_changes_nothing() {
    let mut hub = TestHub::start_with(
        &["--vault", "passphrase"],
        &[("MOAT_MASTER_PASSPHRASE", "correct horse")],
    );
    let out = hub.path("out");
    hub.ok(&["device", "create", "p1", "--out", out.to_str().expect("p")]);
    assert!(
        !hub.data.join("master.key").exists(),
        "no key file with a passphrase"
    );
    hub.stop();
    let snapshot = snapshot(&hub.data);

    // Wrong passphrase: a clear error, exit non-zero, no file changed.
    let o = Command::new(MOAT)
        .env("MOAT_MASTER_PASSPHRASE", "battery staple")
        .args([
            "--data-dir",
            hub.data.to_str().expect("p"),
            "serve",
            "--vault",
            "passphrase",
            "--api-listen",
            "127.0.0.1:0",
            "--crl-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("master key does not open this vault"), "{err}");
    assert_eq!(
        snapshot,
        self::snapshot(&hub.data),
        "files changed after a wrong passphrase"
    );

    // The right one still works and the device is there.
    hub.spawn().expect("restart");
    let dev = hub.json(&["device", "show", "p1"]);
    assert_eq!(dev["device"]["state"], "active");
}

#[test]
fn wrong_master_key_file_is_refused() {
    let mut hub = TestHub::start();
    hub.stop();
    std::fs::write(hub.data.join("master.key"), [7u8; 32]).expect("w");
    let err = hub.spawn().expect_err("must refuse");
    assert!(err.contains("master key does not open this vault"), "{err}");
}

fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("e").path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().expect("n").to_string_lossy().into_owned(),
                std::fs::read(&p).expect("r"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn pkcs11_vault_keeps_ca_keys_in_softhsm() {
    let Some(hsm) = SoftHsm::new(&["moat"], "1234", "5678") else {
        return;
    };
    let conf_s = hsm.conf.to_str().expect("p");
    let mut hub = TestHub::start_with(
        &["--vault", "pkcs11"],
        &[("SOFTHSM2_CONF", conf_s), ("MOAT_PKCS11_PIN", "1234")],
    );
    let out = hub.path("out");
    hub.ok(&[
        "device",
        "create",
        "hsm-1",
        "--out",
        out.to_str().expect("p"),
    ]);
    let (ok, text) = openssl_verify(&hub.bundle(), &out.join("hsm-1.crt"), None);
    assert!(ok, "{text}");
    let info = hub.ok(&["--json", "device", "show", "hsm-1"]);
    assert!(info.contains("hsm-1"));
    // The registry holds token references, not keys.
    // (The registry is SQLite in WAL mode: search every file of the data dir.)
    assert!(
        grep_dir(&hub.data, b"pkcs11:v1:"),
        "CA key references point into the token"
    );
    assert!(
        !grep_dir(&hub.data, b"sealed:v1:"),
        "no sealed CA keys in PKCS#11 mode"
    );
    // Revocation signs a CRL inside the token.
    hub.ok(&["device", "revoke", "hsm-1"]);
    let crl = hub.path("crl.pem");
    std::fs::write(&crl, hub.ok(&["crl"])).expect("w");
    let (ok, text) = openssl_verify(&hub.bundle(), &out.join("hsm-1.crt"), Some(&crl));
    assert!(!ok && text.contains("certificate revoked"), "{text}");

    // A restart finds the keys in the token again; a wrong PIN is refused.
    hub.stop();
    hub.spawn().expect("restart with the token");
    hub.stop();
    let o = Command::new(MOAT)
        .env("SOFTHSM2_CONF", conf_s)
        .env("MOAT_PKCS11_PIN", "0000")
        .args([
            "--data-dir",
            hub.data.to_str().expect("p"),
            "serve",
            "--vault",
            "pkcs11",
            "--api-listen",
            "127.0.0.1:0",
            "--crl-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("PKCS#11") || err.contains("PIN") || err.contains("master key"),
        "{err}"
    );
}

#[test]
fn the_hub_runs_on_postgresql() {
    let Some(url) = moat_testkit::postgres::server_url() else {
        return;
    };
    let db = format!("moat_e2e_{}", std::process::id());
    let db_url = moat_testkit::postgres::fresh_database(&url, &db);
    let mut hub = TestHub::start_with(&["--database", &db_url], &[]);
    let out = hub.path("out");
    hub.ok(&[
        "device",
        "create",
        "pg-1",
        "--out",
        out.to_str().expect("p"),
    ]);
    hub.ok(&["device", "revoke", "pg-1"]);
    let crl = hub.path("crl.pem");
    std::fs::write(&crl, hub.ok(&["crl"])).expect("w");
    let (ok, text) = openssl_verify(&hub.bundle(), &out.join("pg-1.crt"), Some(&crl));
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    hub.stop();
    hub.spawn().expect("restart on PostgreSQL");
    assert_eq!(
        hub.json(&["device", "show", "pg-1"])["device"]["state"],
        "revoked"
    );
    assert!(
        !hub.data.join("moat.db").exists(),
        "no SQLite file when PostgreSQL is the registry"
    );
    hub.stop();
    moat_testkit::postgres::drop_database(&url, &db);
}

/// A tmpfs of `size` mounted on `dir` (owned by this user), unmounted on drop.
struct SmallDisk {
    dir: std::path::PathBuf,
    sudo: bool,
}

/// How this test may mount: as root, through passwordless sudo, or not at all.
fn can_mount() -> Option<bool> {
    if sh(std::path::Path::new("/"), "id -u").trim() == "0" {
        return Some(false);
    }
    let sudo = Command::new("sudo").args(["-n", "true"]).status();
    sudo.is_ok_and(|s| s.success()).then_some(true)
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str, sudo: bool) -> SmallDisk {
        let owner = sh(std::path::Path::new("/"), "echo uid=$(id -u),gid=$(id -g)");
        let mut cmd = Command::new(if sudo { "sudo" } else { "mount" });
        if sudo {
            cmd.args(["-n", "mount"]);
        }
        let st = cmd
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},{}", owner.trim()))
            .arg("tmpfs")
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount -t tmpfs on {}", dir.display());
        SmallDisk {
            dir: dir.to_path_buf(),
            sudo,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let mut cmd = Command::new(if self.sudo { "sudo" } else { "umount" });
        if self.sudo {
            cmd.args(["-n", "umount"]);
        }
        let _ = cmd.arg("-l").arg(&self.dir).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_full_disk_refuses_new_durable_work_loses_nothing_acknowledged_and_recovers() {
    // A real small file system needs root or passwordless sudo to mount. Without either
    // (say so loudly) the injected write failure of moat-broker's restart tests is what
    // remains of this check.
    let Some(sudo) = can_mount() else {
        eprintln!(
            "SKIPPED: mounting a small file system needs root or passwordless sudo{}",
            if is_ci() { " (CI)" } else { "" }
        );
        return;
    };
    let mut hub = TestHub::start_with(&[], &[]);
    let creds = hub.path("creds");
    let c = creds.to_str().expect("p");
    for id in ["a", "b", "c"] {
        hub.ok(&[
            "device",
            "create",
            id,
            "--out",
            c,
            "--group",
            "team",
            "--allow-insecure",
        ]);
    }
    hub.ok(&[
        "acl",
        "create",
        "team",
        "--publish",
        "groups/{device.group}/#",
        "--subscribe",
        "groups/{device.group}/#",
    ]);
    hub.ok(&["acl", "assign", "team", "--group", "team"]);
    let token = |id: &str| {
        std::fs::read_to_string(creds.join(format!("{id}.token")))
            .expect("token")
            .trim()
            .to_string()
    };
    let (ta, tb, tc) = (token("a"), token("b"), token("c"));

    // The same registry, moved onto a 24 MiB file system.
    hub.stop();
    let orig = hub.dir.path().join("data.orig");
    std::fs::rename(&hub.data, &orig).expect("rename");
    std::fs::create_dir(&hub.data).expect("mkdir");
    let _disk = SmallDisk::mount(&hub.data, "24m", sudo);
    sh(
        hub.dir.path(),
        &format!("cp -a {}/. {}/", orig.display(), hub.data.display()),
    );
    hub.spawn().expect("hub on the small disk");
    let addr = hub.mqtt_plain.clone();
    let secs = Duration::from_secs;

    // b: a persistent QoS 1 subscriber, offline from now on.
    let (mut b, first) = Paho::connect(&addr, "5", "b", ("b", &tb), true);
    assert_eq!(first, "connack 0");
    b.send("sub groups/team/chat 1");
    assert!(b.next_line(|l| l == "suback 1", secs(10)).is_some());
    b.quit();

    // a publishes until the disk is full: every message acknowledged so far is stored.
    let (mut a, first) = Paho::connect(&addr, "5", "a", ("a", &ta), false);
    assert_eq!(first, "connack 0");
    let pad = "x".repeat(8000);
    let mut acked = Vec::new();
    let mid = a.publish("groups/team/chat", &format!("before-{pad}"), 1);
    assert_eq!(a.ack(mid, secs(10)), Some(0));
    acked.push("before".to_string());
    fill(&hub.data.join("filler"));
    let mut held = None;
    for i in 0..2000 {
        let name = format!("m{i}");
        let mid = a.publish("groups/team/chat", &format!("{name}-{pad}"), 1);
        match a.ack(mid, secs(3)) {
            Some(0) => acked.push(name),
            Some(r) => panic!("{name}: PUBACK {r:#x} before any write failed"),
            None => {
                held = Some((name, mid));
                break;
            }
        }
    }
    let (held_name, held_mid) = held.expect("a write failed with the disk full");

    // While the disk is full: a new QoS 1 message is refused (v5 0x97), a v3.1.1 publisher
    // (no refusal code) is disconnected, a persistent subscription is refused, and the admin
    // API answers 507 with a problem document that says what to do.
    let (mut c5, first) = Paho::connect(&addr, "5", "c", ("c", &tc), false);
    assert_eq!(first, "connack 0");
    let mid = c5.publish("groups/team/chat", "refused-v5", 1);
    assert_eq!(c5.ack(mid, secs(10)), Some(0x97));
    c5.quit();
    let (mut c3, first) = Paho::connect(&addr, "311", "c", ("c", &tc), false);
    assert_eq!(first, "connack 0");
    let mid = c3.publish("groups/team/chat", "refused-v311", 1);
    assert_eq!(c3.ack(mid, secs(5)), None);
    assert!(
        c3.next_line(|l| l.starts_with("closed"), secs(10))
            .is_some(),
        "the v3.1.1 publisher is disconnected"
    );
    drop(c3);
    let (mut c5, _) = Paho::connect(&addr, "5", "c", ("c", &tc), true);
    c5.send("sub groups/team/other 1");
    assert!(
        c5.next_line(|l| l == "suback 151", secs(10)).is_some(),
        "SUBACK 0x97"
    );
    drop(c5);
    let out = hub.cli(&["device", "create", "late", "--out", c]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage is full"), "{err}\n{}", hub.log());
    assert!(a.ack(held_mid, secs(1)).is_none(), "held while unwritten");

    // Space returns: the held acknowledgement goes out, new work is accepted.
    std::fs::remove_file(hub.data.join("filler")).expect("free space");
    assert_eq!(
        a.ack(held_mid, secs(20)),
        Some(0),
        "{held_name} acknowledged once stored"
    );
    acked.push(held_name);
    let mid = a.publish("groups/team/chat", &format!("after-{pad}"), 1);
    assert_eq!(a.ack(mid, secs(10)), Some(0));
    acked.push("after".into());
    hub.ok(&["device", "create", "late", "--out", c]);
    drop(a);

    // Power cut, restart: b gets every acknowledged message, and none that was refused.
    hub.kill();
    hub.spawn().expect("restart");
    let (mut b, first) = Paho::connect(&hub.mqtt_plain, "5", "b", ("b", &tb), true);
    assert_eq!(first, "connack 0");
    let deadline = Instant::now() + secs(20);
    let got = loop {
        let got: Vec<String> = b
            .messages()
            .into_iter()
            .map(|(_, p, _)| p.split('-').next().unwrap_or_default().to_string())
            .collect();
        if got.len() >= acked.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for name in &acked {
        assert!(got.contains(name), "acknowledged {name} lost; got {got:?}");
    }
    assert!(
        !got.iter().any(|p| p.starts_with("refused")),
        "a refused message was delivered: {got:?}"
    );
    let late = hub.json(&["device", "show", "late"]);
    assert_eq!(late["device"]["state"], "active", "{late}");
}
