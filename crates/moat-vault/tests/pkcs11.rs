//! PKCS#11 backend against SoftHSM2.
//!
//! SoftHSM reads `SOFTHSM2_CONF` when the module is initialised, once per process, and
//! setting environment variables inside a test needs `unsafe`. So each `#[test]` here builds
//! a token dir and re-runs this test binary as a child process with `SOFTHSM2_CONF` set,
//! executing one or more `#[ignore]`d `child_*` scenarios in it. Scenarios run in sequence
//! over the same token and data dir, so a later child proves what an earlier one persisted.
//!
//! Without `softhsm2-util` these tests print a skip message, unless `CI` is set: then they fail.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use moat_testkit::softhsm::SoftHsm;
use moat_vault::{Error, KeyRef, MasterKeySource, Pkcs11Config, Secret, Vault};
use rcgen::PublicKeyData;

const TOKEN: &str = "moat-test";
const OTHER_TOKEN: &str = "moat-other";
const PIN: &str = "1234";
const SO_PIN: &str = "5678";

/// Builds a fresh SoftHSM token dir with two tokens, then runs the `scenarios` (names of
/// `child_*` tests) one after another, each in its own process.
fn run_in_softhsm(scenarios: &[&str]) {
    let Some(hsm) = SoftHsm::new(&[TOKEN, OTHER_TOKEN], PIN, SO_PIN) else {
        return;
    };
    let data = hsm.dir().join("data");
    for scenario in scenarios {
        let out = hsm.run_child(
            scenario,
            &[
                ("MOAT_TEST_DATA_DIR", data.as_os_str()),
                ("MOAT_TEST_SCRATCH", hsm.dir().as_os_str()),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "scenario {scenario} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
}

/// The child's environment, or `None` when a `child_*` test is run outside `run_in_softhsm`.
struct Child {
    module: PathBuf,
    data: PathBuf,
    scratch: PathBuf,
}

fn child() -> Option<Child> {
    Some(Child {
        module: std::env::var_os("MOAT_TEST_MODULE")?.into(),
        data: std::env::var_os("MOAT_TEST_DATA_DIR")?.into(),
        scratch: std::env::var_os("MOAT_TEST_SCRATCH")?.into(),
    })
}

fn source(c: &Child, token: &str, pin: &str) -> MasterKeySource {
    MasterKeySource::Pkcs11(Pkcs11Config {
        module: c.module.clone(),
        token_label: token.to_owned(),
        pin: Secret::new(pin),
    })
}

/// Reads attributes of the private key `id` through a session of our own.
fn private_key_attributes(module: &Path, id: &[u8]) -> Vec<Attribute> {
    let session = moat_testkit::softhsm::token_session(module, TOKEN, PIN, false);
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ])
        .expect("find");
    assert_eq!(handles.len(), 1, "exactly one private key with that id");
    session
        .get_attributes(
            handles[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Token,
                AttributeType::Sign,
            ],
        )
        .expect("attributes")
}

#[test]
fn pkcs11_generate_sign_seal_and_reload_in_a_new_process() {
    run_in_softhsm(&["child_generate", "child_reload"]);
}

#[test]
fn pkcs11_wrong_pin_wrong_token_and_unknown_token() {
    run_in_softhsm(&["child_generate", "child_refusals"]);
}

#[test]
#[ignore = "run by run_in_softhsm in a child process"]
fn child_generate() {
    let Some(c) = child() else { return };
    let vault = Vault::open(&c.data, source(&c, TOKEN, PIN)).expect("open");
    assert_eq!(vault.backend(), "pkcs11");
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(c.data.join("vault.json")).expect("read")).expect("json");
    assert_eq!(json["source"], "pkcs11");

    let (key_ref, key) = vault.generate_key("hub-ca").expect("generate in token");
    assert_eq!(
        format!("{key:?}"),
        r#"HubKey { backend: "pkcs11", [redacted] }"#
    );
    let rest = key_ref
        .0
        .strip_prefix("pkcs11:v1:hub-ca-")
        .expect("pkcs11 key ref");
    let (_, id_hex) = rest.rsplit_once(':').expect("label:id");
    let id = hex::decode(id_hex).expect("hex id");
    common::sign_and_verify_cert(&key);
    assert_eq!(key.der_bytes().len(), 65);

    let attrs = private_key_attributes(&c.module, &id);
    for attr in &attrs {
        match attr {
            Attribute::Sensitive(v) => assert!(*v, "CKA_SENSITIVE must be true"),
            Attribute::Extractable(v) => assert!(!*v, "CKA_EXTRACTABLE must be false"),
            Attribute::NeverExtractable(v) => assert!(*v, "CKA_NEVER_EXTRACTABLE must be true"),
            Attribute::Token(v) => assert!(*v, "CKA_TOKEN must be true"),
            Attribute::Sign(v) => assert!(*v, "CKA_SIGN must be true"),
            other => panic!("unexpected attribute {other:?}"),
        }
    }
    assert_eq!(attrs.len(), 5);

    // Two keys with the same label prefix get distinct references.
    let (second, _) = vault.generate_key("hub-ca").expect("second key");
    assert_ne!(second, key_ref);

    let secret = b"database-password-for-the-hub";
    let sealed = vault
        .seal(secret, "store/pg")
        .expect("seal with token wrap key");
    assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    assert_eq!(
        vault
            .unseal(&sealed, "store/pg")
            .expect("unseal")
            .as_slice(),
        secret
    );
    assert!(matches!(
        vault.unseal(&sealed, "store/other"),
        Err(Error::Unseal)
    ));
    let mut tampered = sealed.clone();
    tampered[20] ^= 1; // inside the token-wrapped data key
    let result = vault.unseal(&tampered, "store/pg");
    assert!(matches!(result, Err(Error::Unseal)), "{result:?}");

    fs::write(c.scratch.join("keyref"), &key_ref.0).expect("save key ref");
    fs::write(c.scratch.join("pubkey"), key.der_bytes()).expect("save public key");
    fs::write(c.scratch.join("sealed"), &sealed).expect("save sealed");

    // A second vault in the same process over the same token also works.
    let again = Vault::open(&c.data, source(&c, TOKEN, PIN)).expect("second open");
    common::sign_and_verify_cert(&again.load_key(&key_ref).expect("load"));
}

#[test]
#[ignore = "run by run_in_softhsm in a child process"]
fn child_reload() {
    let Some(c) = child() else { return };
    let key_ref = KeyRef(fs::read_to_string(c.scratch.join("keyref")).expect("key ref"));
    let vault = Vault::open(&c.data, source(&c, TOKEN, PIN)).expect("reopen");
    let key = vault.load_key(&key_ref).expect("load by key ref");
    assert_eq!(
        key.der_bytes(),
        fs::read(c.scratch.join("pubkey"))
            .expect("pubkey")
            .as_slice()
    );
    common::sign_and_verify_cert(&key);
    let sealed = fs::read(c.scratch.join("sealed")).expect("sealed");
    assert_eq!(
        vault
            .unseal(&sealed, "store/pg")
            .expect("unseal after restart")
            .as_slice(),
        b"database-password-for-the-hub"
    );
    // An unknown object is KeyNotFound.
    let (label, _) = key_ref.0.rsplit_once(':').expect("id");
    let missing = KeyRef(format!("{label}:00112233"));
    assert!(matches!(
        vault.load_key(&missing),
        Err(Error::KeyNotFound(_))
    ));
}

#[test]
#[ignore = "run by run_in_softhsm in a child process"]
fn child_refusals() {
    let Some(c) = child() else { return };
    let json_before = fs::read(c.data.join("vault.json")).expect("vault.json");

    // Wrong PIN before any login in this process.
    let err = Vault::open(&c.data, source(&c, TOKEN, "0000")).expect_err("wrong pin");
    assert!(matches!(err, Error::WrongMasterKey), "{err:?}");
    assert!(err.to_string().contains("token"), "{err}");

    // Wrong PIN after a good login in this process (the token says "already logged in").
    let _good = Vault::open(&c.data, source(&c, TOKEN, PIN)).expect("right pin");
    let err = Vault::open(&c.data, source(&c, TOKEN, "9999")).expect_err("wrong pin after login");
    assert!(matches!(err, Error::WrongMasterKey), "{err:?}");

    // The other token logs in fine but holds no wrapping key for this vault.
    let err = Vault::open(&c.data, source(&c, OTHER_TOKEN, PIN)).expect_err("other token");
    assert!(matches!(err, Error::WrongMasterKey), "{err:?}");

    let err = Vault::open(&c.data, source(&c, "no-such-token", PIN)).expect_err("unknown token");
    assert!(
        matches!(err, Error::TokenNotFound(ref l) if l == "no-such-token"),
        "{err:?}"
    );

    let err =
        Vault::open(&c.data, MasterKeySource::Passphrase(Secret::new(PIN))).expect_err("mismatch");
    assert!(matches!(err, Error::SourceMismatch { .. }), "{err:?}");

    let bad_module = MasterKeySource::Pkcs11(Pkcs11Config {
        module: c.scratch.join("no-such-module.so"),
        token_label: TOKEN.to_owned(),
        pin: Secret::new(PIN),
    });
    let err = Vault::open(&c.data, bad_module).expect_err("bad module");
    assert!(matches!(err, Error::Pkcs11 { .. }), "{err:?}");

    assert_eq!(
        fs::read(c.data.join("vault.json")).expect("vault.json"),
        json_before
    );
}
