//! File and passphrase master keys: sealing, hub keys, refusing the wrong key.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use moat_vault::{Error, KeyRef, MasterKeySource, Secret, Vault};

fn file_source(dir: &Path) -> MasterKeySource {
    MasterKeySource::File(dir.join("master.key"))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn vault_and_keys_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Vault>();
    assert_send_sync::<moat_vault::HubKey>();
}

#[test]
fn file_source_round_trip_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path(), file_source(dir.path())).expect("open new");
    assert_eq!(vault.backend(), "file");
    let key_path = dir.path().join("master.key");
    assert_eq!(fs::metadata(&key_path).expect("key file").len(), 32);
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&dir.path().join("vault.json")), 0o600);
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("vault.json")).expect("read"))
            .expect("json");
    assert_eq!(json["version"], 1);
    assert_eq!(json["source"], "file");
    assert!(json["check"].is_string());

    let plaintext = b"mqtt-bridge-password-0123456789";
    let sealed = vault.seal(plaintext, "bridge/password").expect("seal");
    assert!(
        !sealed.windows(plaintext.len()).any(|w| w == plaintext),
        "sealed bytes contain the plaintext"
    );
    assert!(
        !sealed.windows(6).any(|w| w == b"bridge"),
        "sealed bytes contain the context"
    );
    assert_eq!(
        vault
            .unseal(&sealed, "bridge/password")
            .expect("unseal")
            .as_slice(),
        plaintext
    );
    assert!(matches!(
        vault.unseal(&sealed, "bridge/other"),
        Err(Error::Unseal)
    ));

    let (key_ref, key) = vault.generate_key("ca-root").expect("generate");
    assert!(key_ref.0.starts_with("sealed:v1:"), "{}", key_ref.0);
    assert_eq!(
        format!("{key:?}"),
        r#"HubKey { backend: "software", [redacted] }"#
    );
    common::sign_and_verify_cert(&key);
    drop(vault);

    let reopened = Vault::open(dir.path(), file_source(dir.path())).expect("reopen");
    assert_eq!(
        reopened
            .unseal(&sealed, "bridge/password")
            .expect("unseal")
            .as_slice(),
        plaintext
    );
    let loaded = reopened.load_key(&key_ref).expect("load key");
    common::sign_and_verify_cert(&loaded);
    use rcgen::PublicKeyData;
    assert_eq!(loaded.der_bytes(), key.der_bytes());
}

#[test]
fn different_key_file_is_wrong_master_key_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path(), file_source(dir.path())).expect("open");
    let sealed = vault.seal(b"secret", "ctx").expect("seal");
    drop(vault);
    let json_before = fs::read(dir.path().join("vault.json")).expect("read");

    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_key = other_dir.path().join("other.key");
    Vault::open(other_dir.path(), MasterKeySource::File(other_key.clone())).expect("other vault");

    let err = Vault::open(dir.path(), MasterKeySource::File(other_key)).expect_err("must refuse");
    assert!(matches!(err, Error::WrongMasterKey), "{err:?}");
    assert_eq!(
        fs::read(dir.path().join("vault.json")).expect("read"),
        json_before
    );
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "no new files: {names:?}");

    // The right key still opens it.
    let vault = Vault::open(dir.path(), file_source(dir.path())).expect("reopen");
    assert_eq!(
        vault.unseal(&sealed, "ctx").expect("unseal").as_slice(),
        b"secret"
    );
}

#[test]
fn missing_key_file_for_existing_vault_is_not_recreated() {
    let dir = tempfile::tempdir().expect("tempdir");
    Vault::open(dir.path(), file_source(dir.path())).expect("open");
    fs::remove_file(dir.path().join("master.key")).expect("rm");
    let err = Vault::open(dir.path(), file_source(dir.path())).expect_err("must refuse");
    assert!(matches!(err, Error::BadKeyFile { .. }), "{err:?}");
    assert!(!dir.path().join("master.key").exists());
}

#[test]
fn key_file_with_wide_mode_or_wrong_length_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("master.key");
    Vault::open(dir.path(), file_source(dir.path())).expect("open");
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Vault::open(dir.path(), file_source(dir.path())).expect_err("0644 must be refused");
    assert!(matches!(err, Error::BadKeyFile { .. }), "{err:?}");
    assert!(err.to_string().contains("0644"), "{err}");

    // A fresh data dir with a pre-existing, too-short key file.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let short = dir2.path().join("master.key");
    fs::write(&short, [1u8; 16]).expect("write");
    fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).expect("chmod");
    let err =
        Vault::open(dir2.path(), file_source(dir2.path())).expect_err("short key must be refused");
    assert!(matches!(err, Error::BadKeyFile { .. }), "{err:?}");
    assert!(!dir2.path().join("vault.json").exists());
}

#[test]
fn passphrase_round_trip_and_wrong_passphrase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = || MasterKeySource::Passphrase(Secret::new("correct horse battery staple"));
    let vault = Vault::open(dir.path(), pass()).expect("open");
    assert_eq!(vault.backend(), "passphrase");
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("vault.json")).expect("read"))
            .expect("json");
    assert_eq!(json["source"], "passphrase");
    assert_eq!(json["argon2"]["m_cost"], 65536);
    assert!(json["argon2"]["salt"].is_string());
    assert!(!dir.path().join("master.key").exists());

    let sealed = vault.seal(b"db-password", "store/postgres").expect("seal");
    let (key_ref, _key) = vault.generate_key("manifest").expect("generate");
    drop(vault);
    let json_before = fs::read(dir.path().join("vault.json")).expect("read");

    let err = Vault::open(
        dir.path(),
        MasterKeySource::Passphrase(Secret::new("wrong")),
    )
    .expect_err("wrong");
    assert!(matches!(err, Error::WrongMasterKey), "{err:?}");
    assert_eq!(
        fs::read(dir.path().join("vault.json")).expect("read"),
        json_before
    );

    let vault = Vault::open(dir.path(), pass()).expect("reopen");
    assert_eq!(
        vault
            .unseal(&sealed, "store/postgres")
            .expect("unseal")
            .as_slice(),
        b"db-password"
    );
    common::sign_and_verify_cert(&vault.load_key(&key_ref).expect("load"));
}

#[test]
fn source_mismatch_is_refused_without_side_effects() {
    let dir = tempfile::tempdir().expect("tempdir");
    Vault::open(dir.path(), MasterKeySource::Passphrase(Secret::new("pw"))).expect("open");
    let err = Vault::open(dir.path(), file_source(dir.path())).expect_err("mismatch");
    match err {
        Error::SourceMismatch { expected, given } => {
            assert_eq!(expected, "passphrase");
            assert_eq!(given, "file");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        !dir.path().join("master.key").exists(),
        "key file must not be created"
    );
}

#[test]
fn key_refs_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path(), file_source(dir.path())).expect("open");
    for bad in ["", "nonsense", "pkcs11:v1:label:00ff", "sealed:v2:AAAA"] {
        assert!(
            matches!(vault.load_key(&KeyRef(bad.into())), Err(Error::BadKeyRef)),
            "{bad}"
        );
    }
    assert!(matches!(
        vault.load_key(&KeyRef("sealed:v1:!!".into())),
        Err(Error::Unseal)
    ));
    // A secret sealed for another purpose is not accepted as a key.
    let sealed = vault.seal(b"not a key", "x").expect("seal");
    use base64::Engine as _;
    let fake = KeyRef(format!(
        "sealed:v1:{}",
        base64::engine::general_purpose::STANDARD.encode(sealed)
    ));
    assert!(matches!(vault.load_key(&fake), Err(Error::Unseal)));
    // A key sealed by another vault does not open here.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let other = Vault::open(dir2.path(), file_source(dir2.path())).expect("open");
    let (foreign, _) = other.generate_key("x").expect("generate");
    assert!(matches!(vault.load_key(&foreign), Err(Error::Unseal)));
}

#[test]
fn corrupt_vault_json_is_an_error_not_a_new_vault() {
    let dir = tempfile::tempdir().expect("tempdir");
    Vault::open(dir.path(), file_source(dir.path())).expect("open");
    fs::write(dir.path().join("vault.json"), b"{not json").expect("write");
    let err = Vault::open(dir.path(), file_source(dir.path())).expect_err("corrupt");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(
        fs::read(dir.path().join("vault.json")).expect("read"),
        b"{not json"
    );
}
