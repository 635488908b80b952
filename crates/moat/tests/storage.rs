//! The hub on each master-key source (file, passphrase, PKCS#11 in SoftHSM2) and on each
//! registry (SQLite, PostgreSQL).

mod common;

use common::*;
use moat_testkit::softhsm::SoftHsm;
use std::process::Command;

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
    let Ok(url) = std::env::var("MOAT_TEST_DATABASE_URL") else {
        assert!(
            !is_ci(),
            "MOAT_TEST_DATABASE_URL must be set in CI (scripts/test sets it)"
        );
        eprintln!("skipping: MOAT_TEST_DATABASE_URL not set");
        return;
    };
    let db = format!("moat_e2e_{}", std::process::id());
    let (ok, t) = run(
        "psql",
        &[&url, "-q", "-c", &format!("DROP DATABASE IF EXISTS {db}")],
    );
    assert!(ok, "{t}");
    let (ok, t) = run(
        "psql",
        &[&url, "-q", "-c", &format!("CREATE DATABASE {db}")],
    );
    assert!(ok, "{t}");
    let base = url.rsplit_once('/').expect("url has a database").0;
    let db_url = format!("{base}/{db}");
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
    let _ = run(
        "psql",
        &[
            &url,
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        ],
    );
}
