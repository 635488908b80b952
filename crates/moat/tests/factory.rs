//! Factory flow with the device SDK (`moat-device`) against a real hub, with a SoftHSM2
//! token standing in for the device's secure element:
//!
//! key generated inside the token → CSR signed in the token → EST simpleenroll through a
//! factory station (mutual TLS) → field provisioning over mutual TLS with the factory
//! certificate (operational certificate for the same token key + MQTT assignment) → MQTT
//! over mutual TLS to the assigned endpoint whose CertificateVerify is signed in
//! the token → a message that `mosquitto_sub` (its own certificate) receives → re-enrollment
//! through the SDK → automatic renewal inside the MQTT session and a reconnect with the new
//! certificate. Throughout, the private key stays in the token: its attributes say so, its
//! value cannot be read, and wrapping it out is refused.
//!
//! SoftHSM reads `SOFTHSM2_CONF` when the module is initialised, once per process, and setting
//! environment variables inside a test needs `unsafe`: the `#[test]` builds the token dir and
//! re-runs this binary as a child with `SOFTHSM2_CONF` set (as moat-vault's PKCS#11 tests do).
//! Without `softhsm2-util` or `mosquitto_sub` the test prints a skip message, unless `CI` is
//! set: then it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use moat_device::est::{EstClient, StationAuth};
use moat_device::identity::{Identity, RenewPolicy, roots_from_file};
use moat_device::keystore::{KeyStore, Pkcs11KeyStore, StoreSpec};
use moat_device::provision::ProvisioningClient;
use moat_device::session::{Renewal, Session, SessionConfig, SessionEvent};
use moat_testkit::softhsm::SoftHsm;

const TOKEN: &str = "device-se";
const PIN: &str = "4321";
const SO_PIN: &str = "8765";
const KEY_LABEL: &str = "device-key";
const SERIAL: &str = "FAC-0001";

fn tool_ok(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn factory_flow_with_a_token_held_key() {
    if !tool_ok("mosquitto_sub", "--help") {
        let msg = "mosquitto_sub not found (apt-get install -y mosquitto-clients)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg}; CI is set, so this is a failure, not a skip"
        );
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let Some(hsm) = SoftHsm::new(&[TOKEN], PIN, SO_PIN) else {
        return;
    };
    let out = hsm.run_child("child_factory_flow", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "factory flow failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// What the token says about the device's private key, read through a session of our own:
/// (CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE, CKA_TOKEN), whether CKA_VALUE is
/// reported sensitive, and the token's answer to wrapping the key out under an AES key.
fn inspect_private_key(module: &Path) -> (Vec<Attribute>, AttributeInfo, Result<Vec<u8>, CkError>) {
    let session = moat_testkit::softhsm::token_session(module, TOKEN, PIN, true);
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(KEY_LABEL.as_bytes().to_vec()),
        ])
        .expect("find");
    assert_eq!(
        handles.len(),
        1,
        "exactly one private key labelled {KEY_LABEL}"
    );
    let key = handles[0];
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Token,
                AttributeType::Value,
            ],
        )
        .expect("attributes");
    let value_info = session
        .get_attribute_info(key, &[AttributeType::Value])
        .expect("attribute info")
        .remove(0);
    // A session AES key that may wrap: the token must still refuse to wrap the device key.
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
            ],
        )
        .expect("AES key");
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key);
    (attrs, value_info, wrapped)
}

/// Runs `f` with a deadline.
async fn within<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {secs} s"))
}

/// Waits for the session event `want` picks, printing the others.
async fn wait_for<T>(
    session: &mut Session,
    what: &str,
    mut want: impl FnMut(&SessionEvent) -> Option<T>,
) -> T {
    within(what, 30, async {
        loop {
            let ev = session.next_event().await.expect("session running");
            eprintln!("session event: {ev:?}");
            if let Some(t) = want(&ev) {
                return t;
            }
        }
    })
    .await
}

#[test]
#[ignore = "run by factory_flow_with_a_token_held_key in a child process"]
fn child_factory_flow() {
    let Some(module) = std::env::var_os("MOAT_TEST_MODULE").map(PathBuf::from) else {
        return;
    };

    // The hub: SERIAL on the allow-list, a factory station with a certificate, and a
    // back-end application that may read what devices publish.
    let hub = TestHub::start();
    let work = hub.path("work");
    std::fs::create_dir_all(&work).expect("dir");
    std::fs::write(work.join("serials.csv"), format!("serial\n{SERIAL}\n")).expect("csv");
    hub.ok(&[
        "allowlist",
        "add",
        "--file",
        work.join("serials.csv").to_str().expect("p"),
    ]);
    let creds = work.join("creds");
    let c = creds.to_str().expect("p");
    hub.ok(&["station", "create", "line-1", "--out", c]);
    hub.ok(&[
        "app",
        "create",
        "backend",
        "--out",
        c,
        "--subscribe",
        "devices/+/up",
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // The key, generated inside the token; a second generate under the same label is refused.
    let spec = StoreSpec::parse(&format!(
        "pkcs11:token={TOKEN};object={KEY_LABEL}?module-path={}&pin-value={PIN}",
        module.display()
    ))
    .expect("spec");
    let StoreSpec::Pkcs11(p11) = &spec else {
        panic!("a PKCS#11 spec")
    };
    let store = Pkcs11KeyStore::open(p11, None).expect("open the token");
    let key = store.generate(KEY_LABEL).expect("generate in the token");
    assert_eq!(key.backend(), "pkcs11");
    assert!(matches!(
        store.generate(KEY_LABEL),
        Err(moat_device::Error::KeyExists { .. })
    ));
    assert!(matches!(
        Pkcs11KeyStore::open(
            &moat_device::keystore::Pkcs11Spec {
                pin: Some(moat_vault::Secret::new("0000")),
                ..p11.clone()
            },
            None
        ),
        Err(moat_device::Error::WrongPin(_))
    ));

    // EST: cacerts, then simpleenroll through the station (mutual TLS with its certificate).
    let roots = roots_from_file(&hub.bundle()).expect("hub bundle");
    let est = EstClient::new(&hub.admin_url, roots.clone()).expect("EST client");
    let cas = rt
        .block_on(within("cacerts", 30, est.cacerts()))
        .expect("cacerts");
    assert_eq!(cas.len(), 2, "root and device CA");
    let station = StationAuth::from_pem_files(
        roots.clone(),
        &creds.join("line-1.crt"),
        &creds.join("line-1.key"),
    )
    .expect("station credential");
    let cert = rt
        .block_on(within(
            "simpleenroll",
            30,
            est.enroll(&key, SERIAL, &station),
        ))
        .expect("enrolled through the station");
    let factory = Identity::new(vec![cert], key.clone()).expect("identity");
    let enrolled = factory.info().expect("info");
    assert_eq!(enrolled.common_name.as_deref(), Some(SERIAL));
    assert_eq!(
        hub.json(&["device", "show", SERIAL])["device"]["state"],
        "active"
    );
    // Enrolling the same serial twice is refused, with the hub's reason.
    let again = rt.block_on(est.enroll(&key, SERIAL, &station));
    assert!(
        matches!(&again, Err(moat_device::Error::Refused { status: 409, .. })),
        "{again:?}"
    );

    // Field provisioning with the factory certificate: the operational certificate is for the
    // same token key (the CSR is signed in the token), the assignment is this hub's MQTT
    // listener (the default without enrollment groups).
    let prov = ProvisioningClient::new(&hub.admin_url, roots.clone()).expect("client");
    let assignment = rt
        .block_on(within("provisioning", 30, prov.register(&factory, &key)))
        .expect("provisioned");
    assert_eq!(assignment.device_id, SERIAL);
    assert_eq!(assignment.mqtt.url, format!("mqtts://{}", hub.mqtt_tls));
    assert_eq!(assignment.provisions, Some(1));
    let operational = assignment.identity.clone();
    let op = operational.info().expect("info");
    assert_ne!(op.serial, enrolled.serial, "a new certificate");
    assert_eq!(op.spki_der, enrolled.spki_der, "for the token key");
    let saved = work.join("provisioned");
    assignment.save(&saved).expect("save the assignment");
    let cert_file = saved.join("device.pem");
    let mqtt_roots = roots_from_file(&saved.join("mqtt-ca.pem")).expect("MQTT CA bundle");

    // A subscriber with its own certificate.
    let topic = format!("devices/{SERIAL}/up");
    let sub = hub.mqtt_sub(
        "backend",
        &creds.join("backend.crt"),
        &creds.join("backend.key"),
        &["-t", &topic, "-q", "1", "-C", "2", "-W", "60"],
    );

    let mqtt_config = || {
        let mut c = SessionConfig::from_url(
            &assignment.mqtt.url,
            &assignment.device_id,
            mqtt_roots.clone(),
        )
        .expect("mqtt url");
        c.keep_alive = Duration::from_secs(30);
        c
    };

    rt.block_on(async {
        // MQTT over mutual TLS, the handshake signed in the token; publish, wait for PUBACK.
        let mut session = Session::start(mqtt_config(), operational.clone()).expect("session");
        let serial = wait_for(&mut session, "first CONNACK", |e| match e {
            SessionEvent::Connected { serial } => Some(serial.clone()),
            _ => None,
        })
        .await;
        assert_eq!(serial, op.serial);
        session
            .publish(
                &format!("devices/{SERIAL}/up"),
                "from-the-token",
                moat_device::session::QoS::AtLeastOnce,
            )
            .await
            .expect("publish");
        wait_for(&mut session, "PUBACK", |e| {
            matches!(e, SessionEvent::Acked { .. }).then_some(())
        })
        .await;
        session.close(Duration::from_secs(2)).await;

        // Re-enrollment through the SDK with the token key: same key, new certificate.
        let renewed = within("simplereenroll", 30, est.reenroll(&operational, &key))
            .await
            .expect("re-enrolled");
        let r = renewed.info().expect("info");
        assert_ne!(r.serial, op.serial);
        assert_eq!(r.spki_der, op.spki_der, "renewal keeps the token key");
        assert_eq!(r.subject, op.subject);
        moat_device::files::write_certs(&cert_file, &renewed.chain).expect("store");

        // Automatic renewal in the session: a policy under which the certificate is always
        // due renews at start, stores the new chain and reconnects with it.
        let mut config = mqtt_config();
        config.renewal = Some(Renewal {
            est: est.clone(),
            policy: RenewPolicy {
                fraction_left: 1.0,
                min_left: Duration::ZERO,
            },
            check_every: Duration::from_secs(3600),
            retry_after: Duration::from_secs(3600),
            cert_path: Some(cert_file.clone()),
        });
        let mut session = Session::start(config, renewed.clone()).expect("session");
        let new_serial = wait_for(&mut session, "renewal", |e| match e {
            SessionEvent::Renewed { serial, .. } => Some(serial.clone()),
            SessionEvent::RenewalFailed { reason } => panic!("renewal failed: {reason}"),
            _ => None,
        })
        .await;
        assert_ne!(new_serial, r.serial);
        wait_for(
            &mut session,
            "CONNACK with the renewed certificate",
            |e| match e {
                SessionEvent::Connected { serial } if *serial == new_serial => Some(()),
                _ => None,
            },
        )
        .await;
        let stored = moat_device::files::read_certs(&cert_file).expect("stored chain");
        assert_eq!(
            moat_pki::cert_info(&stored[0]).expect("info").serial,
            new_serial,
            "the renewed certificate is stored"
        );
        assert_eq!(session.identity().info().expect("info").serial, new_serial);
        session
            .publish(
                &format!("devices/{SERIAL}/up"),
                "after-renewal",
                moat_device::session::QoS::AtLeastOnce,
            )
            .await
            .expect("publish");
        wait_for(&mut session, "PUBACK", |e| {
            matches!(e, SessionEvent::Acked { .. }).then_some(())
        })
        .await;
        session.close(Duration::from_secs(2)).await;
    });

    let out = sub.wait_with_output().expect("subscriber output");
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["from-the-token", "after-renewal"],
        "subscriber: {got:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = hub.json(&["cert", "list", "--device", SERIAL]);
    // Factory, operational, re-enrolled, renewed.
    assert_eq!(certs.as_array().expect("certs").len(), 4, "{certs}");

    // The private key was never readable outside the token.
    let (attrs, value_info, wrapped) = inspect_private_key(&module);
    for want in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Token(true),
    ] {
        assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
    }
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
        "CKA_VALUE came back: {attrs:?}"
    );
    assert!(
        matches!(value_info, AttributeInfo::Sensitive),
        "CKA_VALUE is {value_info:?}"
    );
    assert!(
        matches!(
            wrapped,
            Err(CkError::Pkcs11(
                RvError::KeyUnextractable | RvError::KeyNotWrappable,
                _
            ))
        ),
        "wrapping the key out: {wrapped:?}"
    );
}

/// Runs the `moat-device` binary (built beside `moat` by `cargo test --workspace`) with
/// `SOFTHSM2_CONF`; requires success and returns its JSON report.
fn device_cli(conf: &Path, args: &[&str]) -> serde_json::Value {
    let bin = Path::new(MOAT).with_file_name("moat-device");
    assert!(
        bin.exists(),
        "build it first: cargo build -p moat-device ({})",
        bin.display()
    );
    let out = Command::new(&bin)
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .env("MOAT_DEVICE_PIN", PIN)
        .stdin(Stdio::null())
        .output()
        .expect("run moat-device");
    assert!(
        out.status.success(),
        "moat-device {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// The same flow from the command line, as a factory station and a device would run it:
/// `key generate` in the token, `cacerts`, `est-enroll` with a station token (HTTP Basic),
/// `provision`, and `run` (publish, automatic renewal stored in the certificate file).
#[test]
fn factory_flow_from_the_command_line() {
    let Some(hsm) = SoftHsm::new(&[TOKEN], PIN, SO_PIN) else {
        return;
    };
    let (module, conf) = (hsm.module.clone(), hsm.conf.clone());
    let hub = TestHub::start();
    let work = hub.path("cli");
    std::fs::create_dir_all(&work).expect("dir");
    let serial = "CLI-0001";
    std::fs::write(work.join("serials.csv"), format!("serial\n{serial}\n")).expect("csv");
    hub.ok(&[
        "allowlist",
        "add",
        "--file",
        work.join("serials.csv").to_str().expect("p"),
    ]);
    let printed = hub.ok(&["station", "create", "line-2", "--token"]);
    let token = printed
        .split_whitespace()
        .find(|w| w.starts_with("moat_stn_"))
        .expect("token printed");

    let store = format!(
        "pkcs11:token={TOKEN};object=cli-key?module-path={}",
        module.display()
    );
    let bundle = hub.bundle();
    let bundle = bundle.to_str().expect("p");
    let s = |p: &Path| p.to_str().expect("p").to_owned();

    let key = device_cli(&conf, &["key", "generate", "--store", &store]);
    assert_eq!(key["backend"], "pkcs11");
    assert_eq!(key["label"], "cli-key");
    let cas = device_cli(&conf, &["cacerts", "--est", &hub.admin_url, "--ca", bundle]);
    assert_eq!(cas["subjects"].as_array().expect("subjects").len(), 2);
    let factory_pem = work.join("factory.pem");
    let enrolled = device_cli(
        &conf,
        &[
            "est-enroll",
            "--est",
            &hub.admin_url,
            "--ca",
            bundle,
            "--store",
            &store,
            "--serial",
            serial,
            "--station-token",
            &format!("line-2:{token}"),
            "--out",
            &s(&factory_pem),
        ],
    );
    assert!(
        enrolled["subject"]
            .as_str()
            .expect("subject")
            .contains(serial),
        "{enrolled}"
    );
    let dir = work.join("device");
    let prov = device_cli(
        &conf,
        &[
            "provision",
            "--url",
            &hub.admin_url,
            "--ca",
            bundle,
            "--store",
            &store,
            "--cert",
            &s(&factory_pem),
            "--out",
            &s(&dir),
        ],
    );
    assert_eq!(prov["device_id"], serial);
    let provisioned_serial = moat_pki::cert_info(
        &moat_device::files::read_certs(&dir.join("device.pem")).expect("pem")[0],
    )
    .expect("info")
    .serial;

    // Two messages two seconds apart; the renewal (due at once under --renew-fraction 1)
    // happens meanwhile and is written to device.pem.
    let ran = device_cli(
        &conf,
        &[
            "run",
            "--store",
            &store,
            "--cert",
            &s(&dir.join("device.pem")),
            "--assignment",
            &s(&dir.join("assignment.json")),
            "--count",
            "2",
            "--interval",
            "2",
            "--connect-timeout",
            "20",
            "--est",
            &hub.admin_url,
            "--ca",
            bundle,
            "--renew-fraction",
            "1",
            "--renew-before",
            "0",
        ],
    );
    assert_eq!(ran["acked"], 2, "{ran}");
    assert_eq!(ran["topic"], format!("devices/{serial}/up"));
    let renewed = ran["renewed"].as_array().expect("renewed");
    assert_eq!(renewed.len(), 1, "{ran}");
    let stored = moat_pki::cert_info(
        &moat_device::files::read_certs(&dir.join("device.pem")).expect("pem")[0],
    )
    .expect("info")
    .serial;
    assert_eq!(
        renewed[0],
        stored.as_str(),
        "the renewed certificate is stored"
    );
    assert_ne!(stored, provisioned_serial);
    assert_eq!(ran["serial"], stored.as_str());
    let certs = hub.json(&["cert", "list", "--device", serial]);
    assert_eq!(certs.as_array().expect("certs").len(), 3, "{certs}");
}
