//! End to end: the real hub and CLI, checked by openssl and curl.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn first_start_creates_everything_and_second_start_reuses_it() {
    let mut hub = TestHub::start();
    for f in [
        "admin.token",
        "master.key",
        "moat.db",
        "ca-bundle.pem",
        "hub.json",
        "vault.json",
    ] {
        assert!(hub.data.join(f).exists(), "{f} missing");
    }
    assert_eq!(mode(&hub.data.join("admin.token")), 0o600);
    assert_eq!(mode(&hub.data.join("master.key")), 0o600);
    assert_eq!(mode(&hub.data), 0o700);
    let token = std::fs::read_to_string(hub.data.join("admin.token")).expect("token");
    let bundle = std::fs::read_to_string(hub.bundle()).expect("bundle");
    // The bundle is the root then the device CA, both CAs openssl accepts.
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    let text = openssl(&[
        "x509",
        "-in",
        hub.bundle().to_str().expect("p"),
        "-noout",
        "-text",
    ]);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    // The CLI prints the same bundle through the API.
    assert_eq!(hub.ok(&["ca", "bundle"]), bundle);

    hub.stop();
    hub.spawn().expect("second start");
    assert_eq!(
        std::fs::read_to_string(hub.data.join("admin.token")).expect("token"),
        token
    );
    assert_eq!(
        std::fs::read_to_string(hub.bundle()).expect("bundle"),
        bundle
    );
    assert_eq!(hub.ok(&["ca", "bundle"]), bundle);
}

#[test]
fn hub_server_certificate_is_trusted_by_curl_and_names_localhost() {
    let hub = TestHub::start();
    let url = format!(
        "{}/api/openapi.json",
        hub.admin_url.replace("127.0.0.1", "localhost")
    );
    let (ok, body) = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--cacert",
            hub.bundle().to_str().expect("p"),
            &url,
        ],
    );
    assert!(ok, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("openapi json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    assert!(doc["paths"]["/api/v1/devices"].is_object());
    // No token: a problem document with 401.
    let (_, body) = run(
        "curl",
        &[
            "-sS",
            "-i",
            "--cacert",
            hub.bundle().to_str().expect("p"),
            &format!("{}/api/v1/devices", hub.admin_url),
        ],
    );
    assert!(
        body.starts_with("HTTP/2 401") || body.starts_with("HTTP/1.1 401"),
        "{body}"
    );
    assert!(body.contains("application/problem+json"), "{body}");
}

#[test]
fn hub_generated_key_certificate_verifies_with_openssl() {
    let hub = TestHub::start();
    let out = hub.path("out");
    hub.ok(&[
        "device",
        "create",
        "sensor-1",
        "--out",
        out.to_str().expect("p"),
    ]);
    let crt = out.join("sensor-1.crt");
    let key = out.join("sensor-1.key");
    assert_eq!(mode(&key), 0o600);
    let (ok, text) = openssl_verify(&hub.bundle(), &crt, None);
    assert!(ok, "{text}");
    let text = openssl(&["x509", "-in", crt.to_str().expect("p"), "-noout", "-text"]);
    assert!(
        text.contains("CN=sensor-1") || text.contains("CN = sensor-1"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("URI:urn:moat:device:sensor-1"), "{text}");
    assert!(
        text.contains("/crl/devices.crl"),
        "CRL distribution point: {text}"
    );
    // The key matches the certificate.
    let pub_cert = openssl(&["x509", "-in", crt.to_str().expect("p"), "-noout", "-pubkey"]);
    let pub_key = openssl(&["pkey", "-in", key.to_str().expect("p"), "-pubout"]);
    assert_eq!(pub_cert, pub_key);
    // Serial: at least 64 random bits (we use 127).
    let serial = openssl(&["x509", "-in", crt.to_str().expect("p"), "-noout", "-serial"]);
    let hex = serial.trim().trim_start_matches("serial=");
    assert!(hex.len() >= 16, "serial {hex}");
    // The policy is deny_insecure by default, and no token was written.
    let dev = hub.json(&["device", "show", "sensor-1"]);
    assert_eq!(dev["device"]["policy"], "deny_insecure");
    assert!(!out.join("sensor-1.token").exists());
}

#[test]
fn allow_insecure_prints_and_writes_the_token_once() {
    let hub = TestHub::start();
    let out = hub.path("out");
    let stdout = hub.ok(&[
        "device",
        "create",
        "legacy-1",
        "--out",
        out.to_str().expect("p"),
        "--allow-insecure",
    ]);
    let token = std::fs::read_to_string(out.join("legacy-1.token")).expect("token file");
    assert_eq!(mode(&out.join("legacy-1.token")), 0o600);
    assert!(token.trim().starts_with("moat_dev_"));
    assert!(
        stdout.contains(token.trim()),
        "token printed once: {stdout}"
    );
    let dev = hub.json(&["device", "show", "legacy-1"]);
    assert_eq!(dev["device"]["policy"], "allow_insecure");
    // The token is nowhere in the data dir (only its hash).
    assert!(
        !grep_dir(&hub.data, token.trim().as_bytes()),
        "token stored in the clear"
    );
}

#[test]
fn csrs_of_every_supported_key_type_are_signed_and_verify() {
    let hub = TestHub::start();
    for kind in ["p256", "p384", "ed25519", "rsa2048"] {
        let id = format!("csr-{kind}");
        let csr = make_csr(hub.dir.path(), &id, kind, &[]);
        let out = hub.path(&format!("out-{kind}"));
        hub.ok(&[
            "device",
            "create",
            &id,
            "--csr",
            csr.to_str().expect("p"),
            "--out",
            out.to_str().expect("p"),
        ]);
        let crt = out.join(format!("{id}.crt"));
        assert!(
            !out.join(format!("{id}.key")).exists(),
            "no key for CSR devices"
        );
        let (ok, text) = openssl_verify(&hub.bundle(), &crt, None);
        assert!(ok, "{kind}: {text}");
        // Issued on the CSR's key.
        let pub_cert = openssl(&["x509", "-in", crt.to_str().expect("p"), "-noout", "-pubkey"]);
        let pub_csr = openssl(&["req", "-in", csr.to_str().expect("p"), "-noout", "-pubkey"]);
        assert_eq!(pub_cert, pub_csr, "{kind}");
    }
    // Without --out the certificate goes to stdout.
    let csr = make_csr(hub.dir.path(), "stdout-dev", "p256", &[]);
    let pem = hub.ok(&[
        "device",
        "create",
        "stdout-dev",
        "--csr",
        csr.to_str().expect("p"),
    ]);
    assert!(pem.contains("BEGIN CERTIFICATE"));
}

#[test]
fn bad_requests_are_refused_with_a_clear_error_and_store_nothing() {
    let hub = TestHub::start();
    let dir = hub.dir.path();
    hub.ok(&[
        "device",
        "create",
        "taken",
        "--out",
        dir.join("o").to_str().expect("p"),
    ]);
    let before = hub.device_count();
    let certs_before = hub.json(&["cert", "list"]).as_array().expect("a").len();

    // Broken signature: flip a byte inside the signature of a DER CSR, re-encode as PEM.
    let good = make_csr(dir, "broken", "p256", &[]);
    let der = dir.join("broken.der");
    openssl(&[
        "req",
        "-in",
        good.to_str().expect("p"),
        "-outform",
        "der",
        "-out",
        der.to_str().expect("p"),
    ]);
    let mut bytes = std::fs::read(&der).expect("der");
    let n = bytes.len();
    bytes[n - 5] ^= 0x01;
    std::fs::write(&der, &bytes).expect("write");
    let bad_sig = dir.join("bad-sig.csr");
    openssl(&[
        "req",
        "-inform",
        "der",
        "-in",
        der.to_str().expect("p"),
        "-out",
        bad_sig.to_str().expect("p"),
    ]);
    let e = hub.fails(&[
        "device",
        "create",
        "broken",
        "--csr",
        bad_sig.to_str().expect("p"),
    ]);
    assert!(e.contains("signature"), "{e}");

    // CA:TRUE requested.
    let ca_csr = make_csr(
        dir,
        "wants-ca",
        "p256",
        &["-addext", "basicConstraints=critical,CA:TRUE"],
    );
    let e = hub.fails(&[
        "device",
        "create",
        "wants-ca",
        "--csr",
        ca_csr.to_str().expect("p"),
    ]);
    assert!(e.contains("CA"), "{e}");

    // RSA below 2048 bits.
    let small = make_csr(dir, "small-rsa", "rsa1024", &[]);
    let e = hub.fails(&[
        "device",
        "create",
        "small-rsa",
        "--csr",
        small.to_str().expect("p"),
    ]);
    assert!(e.contains("RSA") || e.contains("key"), "{e}");

    // Oversized CSR (a valid PEM wrapper around 40 KiB).
    let big = dir.join("big.csr");
    let body = "A".repeat(40 * 1024);
    std::fs::write(
        &big,
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"),
    )
    .expect("w");
    let e = hub.fails(&["device", "create", "big", "--csr", big.to_str().expect("p")]);
    assert!(
        e.contains("limit") || e.contains("large") || e.contains("bytes"),
        "{e}"
    );

    // Garbage.
    let junk = dir.join("junk.csr");
    std::fs::write(&junk, "this is not a CSR\n").expect("w");
    let e = hub.fails(&[
        "device",
        "create",
        "junk",
        "--csr",
        junk.to_str().expect("p"),
    ]);
    assert!(e.contains("not a valid"), "{e}");

    // Duplicate device id.
    let e = hub.fails(&[
        "device",
        "create",
        "taken",
        "--out",
        dir.join("o2").to_str().expect("p"),
    ]);
    assert!(e.contains("already exists"), "{e}");

    // Bad device id.
    let e = hub.fails(&[
        "device",
        "create",
        "a/b",
        "--out",
        dir.join("o3").to_str().expect("p"),
    ]);
    assert!(e.contains("may only contain"), "{e}");

    // --cert from a CA nobody registered.
    let vendor = Vendor::new(dir, "rogue");
    let leaf = vendor.issue(dir, "rogue-dev", &[]);
    let e = hub.fails(&[
        "device",
        "create",
        "rogue-dev",
        "--cert",
        leaf.to_str().expect("p"),
    ]);
    assert!(e.contains("trusted CA"), "{e}");

    assert_eq!(hub.device_count(), before, "nothing was stored");
    assert_eq!(
        hub.json(&["cert", "list"]).as_array().expect("a").len(),
        certs_before
    );
    // The refusals are in the audit log.
    let audit = hub.json(&["audit", "--limit", "100"]);
    let refused = audit
        .as_array()
        .expect("a")
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .count();
    assert!(refused >= 7, "audit: {audit}");
}

#[test]
fn revocation_publishes_a_crl_that_openssl_honours_at_the_cdp_url() {
    let hub = TestHub::start();
    let out = hub.path("out");
    hub.ok(&[
        "device",
        "create",
        "victim",
        "--out",
        out.to_str().expect("p"),
    ]);
    hub.ok(&[
        "device",
        "create",
        "bystander",
        "--out",
        out.to_str().expect("p"),
    ]);
    let crt = out.join("victim.crt");
    let crl0 = hub.path("crl0.pem");
    std::fs::write(&crl0, hub.ok(&["crl"])).expect("w");
    let n0 = crl_number(&crl0);
    let (ok, text) = openssl_verify(&hub.bundle(), &crt, Some(&crl0));
    assert!(ok, "before revocation: {text}");

    let r = hub.json(&["device", "revoke", "victim", "--reason", "key_compromise"]);
    assert_eq!(r["revoked_serials"].as_array().expect("a").len(), 1);
    let crl1 = hub.path("crl1.pem");
    std::fs::write(&crl1, hub.ok(&["crl"])).expect("w");
    assert!(crl_number(&crl1) > n0, "CRL number increases");
    let (ok, text) = openssl_verify(&hub.bundle(), &crt, Some(&crl1));
    assert!(
        !ok && text.contains("certificate revoked"),
        "after revocation: {text}"
    );
    let crl_text = openssl(&["crl", "-in", crl1.to_str().expect("p"), "-noout", "-text"]);
    assert!(crl_text.contains("Key Compromise"), "{crl_text}");
    // The bystander still verifies against the same CRL.
    let (ok, text) = openssl_verify(&hub.bundle(), &out.join("bystander.crt"), Some(&crl1));
    assert!(ok, "{text}");

    // The URL in the certificate's CRL distribution point serves the same CRL (DER).
    let cert_text = openssl(&["x509", "-in", crt.to_str().expect("p"), "-noout", "-text"]);
    let cdp = cert_text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("URI:")
                .filter(|u| u.ends_with(".crl"))
        })
        .expect("CDP URI")
        .to_string();
    // The CDP names the host; the test reaches the same port on loopback.
    let port = hub.crl_url.rsplit(':').next().expect("port");
    assert!(cdp.ends_with(&format!(":{port}/crl/devices.crl")), "{cdp}");
    let local = format!("{}/crl/devices.crl", hub.crl_url);
    let der = hub.path("fetched.crl");
    let (ok, t) = run(
        "curl",
        &["-sS", "--fail", "-o", der.to_str().expect("p"), &local],
    );
    assert!(ok, "{t}");
    let fetched = openssl(&[
        "crl",
        "-inform",
        "der",
        "-in",
        der.to_str().expect("p"),
        "-noout",
        "-crlnumber",
    ]);
    let served = openssl(&[
        "crl",
        "-in",
        crl1.to_str().expect("p"),
        "-noout",
        "-crlnumber",
    ]);
    assert_eq!(fetched, served);
    // And the CRL's signature verifies under the device CA.
    let v = openssl(&[
        "crl",
        "-in",
        crl1.to_str().expect("p"),
        "-noout",
        "-CAfile",
        hub.bundle().to_str().expect("p"),
    ]);
    assert!(v.contains("verify OK"), "{v}");

    // The device is revoked for good.
    let dev = hub.json(&["device", "show", "victim"]);
    assert_eq!(dev["device"]["state"], "revoked");
    let e = hub.fails(&["device", "enable", "victim"]);
    assert!(e.contains("revoked"), "{e}");

    // Revoking one certificate by serial.
    let serial = hub.json(&["cert", "list", "--device", "bystander"])[0]["serial"]
        .as_str()
        .expect("s")
        .to_string();
    hub.ok(&["cert", "revoke", &serial, "--reason", "superseded"]);
    let crl2 = hub.path("crl2.pem");
    std::fs::write(&crl2, hub.ok(&["crl"])).expect("w");
    assert!(crl_number(&crl2) > crl_number(&crl1));
    let (ok, text) = openssl_verify(&hub.bundle(), &out.join("bystander.crt"), Some(&crl2));
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let e = hub.fails(&["cert", "revoke", &serial]);
    assert!(e.contains("already revoked"), "{e}");
}

fn crl_number(pem: &std::path::Path) -> u64 {
    let t = openssl(&[
        "crl",
        "-in",
        pem.to_str().expect("p"),
        "-noout",
        "-crlnumber",
    ]);
    let hex = t
        .trim()
        .trim_start_matches("crlNumber=")
        .trim_start_matches("0x");
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("crl number {t}"))
}

#[test]
fn third_party_ca_registration_needs_proof_of_possession() {
    let hub = TestHub::start();
    let dir = hub.dir.path();
    let vendor = Vendor::new(dir, "acme-se");
    let other = Vendor::new(dir, "other");

    // Signed by another key: refused, and the code is not burned.
    let code = hub.ok(&["ca", "registration-code"]).trim().to_string();
    assert_eq!(code.len(), 32, "{code}");
    let forged = other.issue(dir, &code, &[]);
    let e = hub.fails(&[
        "ca",
        "register",
        "--cert",
        vendor.cert_s(),
        "--verification-cert",
        forged.to_str().expect("p"),
    ]);
    assert!(e.contains("not signed by the CA"), "{e}");

    // Wrong code.
    let wrong = vendor.issue(dir, "0123456789abcdef0123456789abcdef", &[]);
    let e = hub.fails(&[
        "ca",
        "register",
        "--cert",
        vendor.cert_s(),
        "--verification-cert",
        wrong.to_str().expect("p"),
    ]);
    assert!(e.contains("registration code"), "{e}");

    // Right code, right key: accepted.
    let proof = vendor.issue(dir, &code, &[]);
    let ca = hub.json(&[
        "ca",
        "register",
        "--cert",
        vendor.cert_s(),
        "--verification-cert",
        proof.to_str().expect("p"),
        "--identity",
        "cn",
        "--name",
        "acme",
    ]);
    assert_eq!(ca["name"], "acme");
    assert_eq!(ca["kind"], "registered");

    // The code is burned.
    let e = hub.fails(&[
        "ca",
        "register",
        "--cert",
        other.cert_s(),
        "--verification-cert",
        proof.to_str().expect("p"),
    ]);
    assert!(e.contains("registration code"), "{e}");
    let list = hub.json(&["ca", "list"]);
    assert_eq!(list.as_array().expect("a").len(), 3, "{list}");

    // Bring your own certificate: identity must match.
    let se_cert = vendor.issue(dir, "se-0001", &["-extfile_client"]);
    hub.ok(&[
        "device",
        "create",
        "se-0001",
        "--cert",
        se_cert.to_str().expect("p"),
    ]);
    let dev = hub.json(&["device", "show", "se-0001"]);
    assert_eq!(dev["device"]["ca"], "acme");
    let se2 = vendor.issue(dir, "se-0002", &["-extfile_client"]);
    let e = hub.fails(&[
        "device",
        "create",
        "se-9999",
        "--cert",
        se2.to_str().expect("p"),
    ]);
    assert!(e.contains("identity"), "{e}");

    // explain: accepted, then each failing step.
    let ex = hub.json(&["cert", "explain", se_cert.to_str().expect("p")]);
    assert_eq!(ex["accepted"], true, "{ex}");
    let ex = explain_fail(&hub, &se2);
    assert_eq!(ex, "registration");
    let rogue = other.issue(dir, "se-0001", &["-extfile_client"]);
    assert_eq!(explain_fail(&hub, &rogue), "chain");
    hub.ok(&["device", "disable", "se-0001"]);
    assert_eq!(explain_fail(&hub, &se_cert), "device_state");
    hub.ok(&["device", "enable", "se-0001"]);
    hub.ok(&["device", "revoke", "se-0001"]);
    assert_eq!(explain_fail(&hub, &se_cert), "revocation");

    // Removal: hub CAs cannot be removed, registered ones can.
    let e = hub.fails(&["ca", "remove", "devices"]);
    assert!(e.contains("cannot be removed"), "{e}");
    hub.ok(&["ca", "remove", "acme"]);
    assert_eq!(explain_fail(&hub, &se_cert), "chain");
}

/// Runs `moat cert explain` on a refused certificate; returns the failing step.
fn explain_fail(hub: &TestHub, cert: &std::path::Path) -> String {
    let out = hub.cli(&["--json", "cert", "explain", cert.to_str().expect("p")]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "explain exit status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["accepted"], false);
    let steps = v["steps"].as_array().expect("steps");
    let failed: Vec<_> = steps.iter().filter(|s| s["outcome"] == "fail").collect();
    assert_eq!(failed.len(), 1, "{v}");
    failed[0]["name"].as_str().expect("name").to_string()
}

#[test]
fn explain_a_hub_certificate() {
    let hub = TestHub::start();
    let out = hub.path("out");
    hub.ok(&["device", "create", "d1", "--out", out.to_str().expect("p")]);
    let crt = out.join("d1.crt");
    let text = hub.ok(&["cert", "explain", crt.to_str().expect("p")]);
    assert!(text.contains("ACCEPTED as device d1"), "{text}");
    hub.ok(&["device", "disable", "d1"]);
    assert_eq!(explain_fail(&hub, &crt), "device_state");
    hub.ok(&["device", "delete", "d1"]);
    assert_eq!(explain_fail(&hub, &crt), "revocation");
    // A self-signed certificate with a registered device's CN does not chain.
    hub.ok(&["device", "create", "d2", "--out", out.to_str().expect("p")]);
    let ss = hub.path("selfsigned.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=d2",
        "-keyout",
        hub.path("ss.key").to_str().expect("p"),
        "-out",
        ss.to_str().expect("p"),
        "-days",
        "1",
    ]);
    assert_eq!(explain_fail(&hub, &ss), "chain");
}

#[test]
fn no_private_key_is_stored_anywhere() {
    let hub = TestHub::start();
    let out = hub.path("out");
    let mut keys = Vec::new();
    for i in 0..3 {
        let id = format!("k{i}");
        hub.ok(&["device", "create", &id, "--out", out.to_str().expect("p")]);
        let key = out.join(format!("{id}.key"));
        let der = hub.path(&format!("{id}.der"));
        openssl(&[
            "pkey",
            "-in",
            key.to_str().expect("p"),
            "-outform",
            "der",
            "-out",
            der.to_str().expect("p"),
        ]);
        keys.push(std::fs::read(&der).expect("der"));
    }
    for pattern in [
        b"PRIVATE KEY".as_slice(),
        // PKCS#8 and SEC1 P-256 private key DER headers.
        &[
            0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
        ],
        &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20],
    ] {
        assert!(
            !grep_dir(&hub.data, pattern),
            "private key pattern {pattern:02x?} found in the data dir"
        );
    }
    for k in &keys {
        // The 32-byte private scalar sits at a fixed place in the PKCS#8 DER; search it.
        let scalar = &k[36..68];
        assert!(
            !grep_dir(&hub.data, scalar),
            "a device private key is in the data dir"
        );
    }
}

#[test]
fn cert_list_reports_live_device_certificates_about_to_expire() {
    let hub = TestHub::start();
    let out = hub.path("creds");
    let o = out.to_str().expect("p");
    hub.ok(&["device", "create", "old-1", "--out", o]);
    hub.ok(&["device", "create", "old-2", "--out", o]);
    let within = |days: &str| -> Vec<String> {
        hub.json(&["cert", "list", "--expiring-within", days])
            .as_array()
            .expect("array")
            .iter()
            .map(|c| c["device_id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // Device certificates are valid 365 days by default.
    assert!(within("30").is_empty());
    let mut year = within("400");
    year.sort();
    assert_eq!(year, ["old-1", "old-2"]);
    hub.ok(&["device", "revoke", "old-2"]);
    assert_eq!(
        within("400"),
        ["old-1"],
        "revoked certificates need no renewal"
    );
}
