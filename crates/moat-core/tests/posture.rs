//! Posture checks that cannot be produced through the hub's own flows: a CA with a weak key or
//! a SHA-1 signature (registration verifies proofs with modern algorithms only, so such a CA
//! arrives from an older deployment's registry). The CA certificates are made by openssl.

mod common;

use moat_core::{Observations, PostureOptions};
use moat_store::{CaKind, CaRecord};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &str) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl {args}"))
        .current_dir(dir)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        o.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn der(dir: &Path, pem: &str) -> Vec<u8> {
    openssl(dir, &format!("x509 -in {pem} -outform DER -out {pem}.der"));
    std::fs::read(dir.join(format!("{pem}.der"))).expect("der")
}

fn record(name: &str, cert_der: Vec<u8>) -> CaRecord {
    CaRecord {
        name: name.into(),
        kind: CaKind::Registered,
        fingerprint: hex_sha256(&cert_der),
        cert_der,
        key_ref: None,
        identity_rule: "cn".into(),
        auto_register: false,
        created_at: time::OffsetDateTime::now_utc(),
    }
}

fn hex_sha256(b: &[u8]) -> String {
    moat_pki::cert_info(b).expect("cert").fingerprint_sha256
}

#[tokio::test]
async fn weak_ca_keys_and_sha1_signatures_are_findings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ext = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign";
    openssl(
        d,
        &format!(
            "req -x509 -newkey rsa:1024 -nodes -keyout rsa.key -subj /CN=Old-RSA -days 3650 {ext} -out rsa.pem 2>/dev/null"
        ),
    );
    openssl(
        d,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout good.key -subj /CN=Good -days 3650 {ext} -out good.pem 2>/dev/null"
        ),
    );
    // A P-256 intermediate the good root signed with SHA-1.
    openssl(
        d,
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout sha1.key -subj /CN=Sha1-Sub -out sha1.csr 2>/dev/null",
    );
    std::fs::write(
        d.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
    )
    .expect("ext");
    openssl(
        d,
        "x509 -req -in sha1.csr -CA good.pem -CAkey good.key -set_serial 7 -days 3650 -sha1 -extfile ca.ext -out sha1.pem 2>/dev/null",
    );

    let (hub, store) = common::hub_and_registry(d, moat_core::CoreConfig::default()).await;
    for (name, pem) in [
        ("old-rsa", "rsa.pem"),
        ("good", "good.pem"),
        ("sha1-sub", "sha1.pem"),
    ] {
        store
            .insert_ca(&record(name, der(d, pem)))
            .await
            .expect("insert");
    }
    let findings = hub
        .posture(&Observations::default(), &PostureOptions::default())
        .await
        .expect("posture");
    let weak: Vec<(&str, &str)> = findings
        .iter()
        .filter(|f| f.check == "weak_ca_key")
        .map(|f| (f.subject.as_str(), f.detail.as_str()))
        .collect();
    assert_eq!(weak.len(), 2, "{findings:?}");
    assert!(
        weak.iter()
            .any(|(s, d)| *s == "old-rsa" && d.contains("RSA 1024")),
        "{weak:?}"
    );
    assert!(
        weak.iter()
            .any(|(s, d)| *s == "sha1-sub" && d.contains("SHA-1")),
        "{weak:?}"
    );
    assert!(findings.iter().all(|f| f.subject != "good"), "{findings:?}");
}
