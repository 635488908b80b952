//! EST (RFC 7030) end to end over real sockets, with `curl` and `openssl` as the only client
//! tools, the way the RFC's examples work: cacerts, csrattrs, factory enrollment through a
//! station (certificate or HTTP Basic token), re-enrollment over mutual TLS (renewal and
//! re-key), server key generation, and every refusal — after each of which the registry is
//! checked to hold nothing new. Then field provisioning (`/provisioning/v1/register`) with
//! the factory certificates EST issued and with a secure-element vendor's certificates.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One EST call's outcome.
#[derive(Debug)]
struct Answer {
    /// HTTP status; 0 when TLS (or the connection) failed.
    status: u16,
    /// Response headers, lowercase.
    headers: String,
    /// Response body.
    body: Vec<u8>,
    /// curl's own error output (TLS alerts).
    stderr: String,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// The problem document's `detail`.
    fn detail(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not a problem document: {self:?}"));
        v["detail"].as_str().expect("detail").to_string()
    }
}

/// How a call authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// Mutual TLS with this certificate and key.
    Cert(&'a Path, &'a Path),
    /// HTTP Basic.
    Basic(&'a str, &'a str),
}

/// Runs curl against `/.well-known/est/{op}`; POSTs `body` (a file) if given.
fn est(hub: &TestHub, op: &str, auth: Auth<'_>, body: Option<&Path>) -> Answer {
    let body = body.map(|b| (b, "application/pkcs10"));
    call(hub, &format!("/.well-known/est/{op}"), auth, body)
}

/// Runs curl against `path` on the hub's HTTPS listener; POSTs `body` (a file, with its
/// content type) if given.
fn call(hub: &TestHub, path: &str, auth: Auth<'_>, body: Option<(&Path, &str)>) -> Answer {
    let out = hub.path(&format!("answer-{}", seq()));
    let headers = hub.path(&format!("headers-{}", seq()));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(hub.bundle())
        .arg("-o")
        .arg(&out)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"]);
    match auth {
        Auth::None => {}
        Auth::Cert(cert, key) => {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        Auth::Basic(user, pass) => {
            cmd.args(["-u", &format!("{user}:{pass}")]);
        }
    }
    if let Some((b, content_type)) = body {
        cmd.args([
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
        ])
        .arg(format!("@{}", b.display()));
    }
    cmd.arg(format!("{}{path}", hub.admin_url));
    let o = cmd.output().expect("curl runs");
    Answer {
        status: String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .to_lowercase(),
        body: std::fs::read(&out).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

/// A fresh number for temporary file names.
fn seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A CSR made by openssl, written base64 to `{name}.b64` (wrapped at 76 columns, or on one
/// line), DER to `{name}.der`. A new P-256 key goes to `{name}.key` unless `key` is given.
fn csr(dir: &Path, name: &str, subj: &str, key: Option<&str>, extra: &str, wrap: bool) -> PathBuf {
    let keyopt = match key {
        Some(k) => format!("-key {k}"),
        None => format!("-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key"),
    };
    let w = if wrap { "" } else { "-w0" };
    sh(
        dir,
        &format!(
            "openssl req -new {keyopt} -subj '{subj}' {extra} -outform DER -out {name}.der 2>/dev/null && base64 {w} {name}.der > {name}.b64"
        ),
    );
    dir.join(format!("{name}.b64"))
}

/// Writes a certs-only answer to `{name}.p7.b64` and turns it into `{name}.pem` with
/// `base64 -d | openssl pkcs7 -print_certs`.
fn certs_of(dir: &Path, name: &str, answer: &Answer) -> PathBuf {
    assert_eq!(answer.status, 200, "{answer:?} {}", answer.text());
    assert!(
        answer
            .headers
            .contains("content-type: application/pkcs7-mime; smime-type=certs-only"),
        "{}",
        answer.headers
    );
    std::fs::write(dir.join(format!("{name}.p7.b64")), &answer.body).expect("write");
    sh(
        dir,
        &format!(
            "base64 -d {name}.p7.b64 | openssl pkcs7 -inform DER -print_certs -out {name}.pem"
        ),
    );
    dir.join(format!("{name}.pem"))
}

/// What the registry holds that an EST refusal must not change.
fn snapshot(hub: &TestHub) -> (serde_json::Value, usize, serde_json::Value) {
    (
        hub.json(&["device", "list", "--limit", "1000"]),
        hub.json(&["cert", "list", "--limit", "1000"])
            .as_array()
            .expect("certs")
            .len(),
        hub.json(&["allowlist", "list", "--limit", "1000"]),
    )
}

/// A hub with an allow-list, a certificate station (line-1) and a token station (line-2).
struct Factory {
    hub: TestHub,
    dir: PathBuf,
    station_cert: PathBuf,
    station_key: PathBuf,
    token: String,
}

fn factory(hub: TestHub, serials: &str) -> Factory {
    let dir = hub.path("work");
    std::fs::create_dir_all(&dir).expect("dir");
    let csv = dir.join("serials.csv");
    std::fs::write(&csv, serials).expect("csv");
    let out = hub.ok(&["allowlist", "add", "--file", csv.to_str().expect("p")]);
    assert!(out.contains("added"), "{out}");
    let st = dir.join("stations");
    hub.ok(&[
        "station",
        "create",
        "line-1",
        "--out",
        st.to_str().expect("p"),
    ]);
    let out = hub.ok(&["station", "create", "line-2", "--token"]);
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("moat_stn_"))
        .expect("token printed")
        .to_string();
    Factory {
        station_cert: st.join("line-1.crt"),
        station_key: st.join("line-1.key"),
        hub,
        dir,
        token,
    }
}

#[test]
fn est_round_trip_with_curl_and_openssl() {
    let f = factory(
        TestHub::start(),
        "serial,mac,model\nSN-1,AA:BB:CC:00:00:01,Sensor v2\nSN-2,,Sensor v2\nSN-3\n",
    );
    let (hub, d) = (&f.hub, f.dir.as_path());
    let station = Auth::Cert(&f.station_cert, &f.station_key);
    let bundle = hub.bundle();
    let bundle = bundle.to_str().expect("p");

    // cacerts: no authentication; the root and the device CA.
    let ca = est(hub, "cacerts", Auth::None, None);
    let cas = std::fs::read_to_string(certs_of(d, "cacerts", &ca)).expect("pem");
    assert!(cas.contains("CN = Moat Root CA") && cas.contains("CN = Moat Device CA"));
    assert_eq!(cas.matches("BEGIN CERTIFICATE").count(), 2);

    // csrattrs: what to put in a CSR.
    let attrs = est(hub, "csrattrs", Auth::None, None);
    assert_eq!(attrs.status, 200);
    assert!(attrs.headers.contains("content-type: application/csrattrs"));
    std::fs::write(d.join("attrs.b64"), &attrs.body).expect("write");
    let parsed = sh(d, "base64 -d attrs.b64 | openssl asn1parse -inform DER");
    assert!(
        parsed.contains("prime256v1") && parsed.contains("ecdsa-with-SHA256"),
        "{parsed}"
    );

    // simpleenroll through the station's certificate: serial in subject serialNumber, base64
    // with line breaks.
    let c1 = csr(d, "sn1", "/serialNumber=SN-1/CN=sensor", None, "", true);
    let a = est(hub, "simpleenroll", station, Some(&c1));
    let sn1 = certs_of(d, "sn1", &a);
    let (ok, out) = run(
        "openssl",
        &["verify", "-CAfile", bundle, sn1.to_str().expect("p")],
    );
    assert!(ok, "{out}");
    let subject = sh(
        d,
        "openssl x509 -in sn1.pem -noout -subject -ext subjectAltName",
    );
    assert!(
        subject.contains("CN = SN-1") && subject.contains("URI:urn:moat:device:SN-1"),
        "{subject}"
    );
    let device = hub.json(&["device", "show", "SN-1"]);
    assert_eq!(device["device"]["serial"], "SN-1");
    assert_eq!(device["device"]["mac"], "aa:bb:cc:00:00:01");
    assert_eq!(device["device"]["model"], "Sensor v2");
    assert_eq!(device["device"]["state"], "active");

    // simpleenroll with HTTP Basic: serial in the CN, base64 on one line.
    let c2 = csr(d, "sn2", "/CN=SN-2", None, "", false);
    let a = est(
        hub,
        "simpleenroll",
        Auth::Basic("line-2", &f.token),
        Some(&c2),
    );
    let sn2 = certs_of(d, "sn2", &a);
    let (ok, out) = run(
        "openssl",
        &["verify", "-CAfile", bundle, sn2.to_str().expect("p")],
    );
    assert!(ok, "{out}");

    // The enrolled device connects to the MQTT hub with its certificate.
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let (ok, out) = run(
        "timeout",
        &[
            "15",
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            port,
            "--cafile",
            bundle,
            "--cert",
            sn1.to_str().expect("p"),
            "--key",
            d.join("sn1.key").to_str().expect("p"),
            "-i",
            "SN-1",
            "-t",
            "devices/SN-1/up",
            "-m",
            "hello",
            "-q",
            "1",
        ],
    );
    assert!(ok, "{out}");

    // simplereenroll over mutual TLS with the certificate being renewed: same subject and
    // SAN; same key = renewal.
    let keep = "-addext subjectAltName=URI:urn:moat:device:SN-1";
    let r = csr(d, "renew", "/O=Moat/CN=SN-1", Some("sn1.key"), keep, true);
    let a = est(
        hub,
        "simplereenroll",
        Auth::Cert(&sn1, &d.join("sn1.key")),
        Some(&r),
    );
    let renewed = certs_of(d, "renewed", &a);
    let (ok, out) = run(
        "openssl",
        &["verify", "-CAfile", bundle, renewed.to_str().expect("p")],
    );
    assert!(ok, "{out}");
    let pubkey = |pem: &str| sh(d, &format!("openssl x509 -in {pem} -noout -pubkey"));
    assert_eq!(
        pubkey("renewed.pem"),
        pubkey("sn1.pem"),
        "renewal keeps the key"
    );
    assert_ne!(
        sh(d, "openssl x509 -in renewed.pem -noout -serial"),
        sh(d, "openssl x509 -in sn1.pem -noout -serial")
    );
    // New key = re-key, presenting the renewed certificate this time.
    let r = csr(d, "rekey", "/O=Moat/CN=SN-1", None, keep, false);
    let a = est(
        hub,
        "simplereenroll",
        Auth::Cert(&renewed, &d.join("sn1.key")),
        Some(&r),
    );
    certs_of(d, "rekeyed", &a);
    assert_eq!(
        pubkey("rekeyed.pem"),
        sh(d, "openssl pkey -in rekey.key -pubout"),
        "re-key certifies the new key"
    );
    assert_ne!(pubkey("rekeyed.pem"), pubkey("sn1.pem"));
    let certs = hub.json(&["cert", "list", "--device", "SN-1"]);
    assert_eq!(certs.as_array().expect("certs").len(), 3, "{certs}");
    // The old certificate stays valid: it still works on MQTT.
    assert_eq!(
        hub.json(&["device", "show", "SN-1"])["device"]["state"],
        "active"
    );

    // serverkeygen: the hub makes the key; multipart/mixed with the PKCS#8 key, then the
    // certificate.
    let c3 = csr(d, "sn3", "/CN=SN-3", None, "", true);
    let a = est(hub, "serverkeygen", station, Some(&c3));
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.headers.contains("cache-control: no-store"));
    let boundary = a
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("content-type: multipart/mixed; boundary="))
        .expect("multipart boundary")
        .trim()
        .to_string();
    let text = a.text();
    let parts: Vec<&str> = text
        .split(&format!("--{boundary}"))
        .filter(|p| p.contains("Content-Type"))
        .collect();
    assert_eq!(parts.len(), 2, "{text}");
    let body_of = |part: &str| {
        part.split_once("\r\n\r\n")
            .expect("part body")
            .1
            .trim()
            .to_string()
    };
    assert!(
        parts[0].contains("Content-Type: application/pkcs8"),
        "{}",
        parts[0]
    );
    assert!(parts[1].contains("Content-Type: application/pkcs7-mime; smime-type=certs-only"));
    std::fs::write(d.join("k3.b64"), body_of(parts[0])).expect("write");
    std::fs::write(d.join("c3.p7.b64"), body_of(parts[1])).expect("write");
    sh(
        d,
        "base64 -d k3.b64 | openssl pkey -inform DER -out k3.pem && base64 -d c3.p7.b64 | openssl pkcs7 -inform DER -print_certs -out c3.pem",
    );
    assert_eq!(
        sh(d, "openssl pkey -in k3.pem -pubout"),
        pubkey("c3.pem"),
        "the key part is the certificate's key"
    );
    let (ok, out) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            bundle,
            d.join("c3.pem").to_str().expect("p"),
        ],
    );
    assert!(ok, "{out}");
    // The hub keeps no copy of the key it generated.
    let der = sh(d, "openssl pkey -in k3.pem -outform DER | base64 -w0");
    assert!(!grep_dir(&hub.data, der.trim().as_bytes()));

    // Every serial enrolled once; the audit log has each enrollment with its station.
    let list = hub.json(&["allowlist", "list"]);
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .all(|e| e["enrolled_at"].is_string()),
        "{list}"
    );
    let audit = hub.ok(&["audit", "--limit", "100"]);
    for want in [
        "station:line-1 est.enroll",
        "station:line-2 est.enroll",
        "device:SN-1 est.reenroll",
        "station:line-1 est.serverkeygen",
    ] {
        let (actor, action) = want.split_once(' ').expect("pair");
        assert!(
            audit
                .lines()
                .any(|l| l.contains(" ok ") && l.contains(actor) && l.contains(action)),
            "{want} not in\n{audit}"
        );
    }
}

#[test]
fn est_refusals_are_clear_and_store_nothing() {
    let f = factory(TestHub::start(), "SN-1\nSN-2\nline-1\n");
    let (hub, d) = (&f.hub, f.dir.as_path());
    let station = Auth::Cert(&f.station_cert, &f.station_key);

    // A first, legitimate enrollment to have a device certificate to misuse.
    let c1 = csr(d, "sn1", "/CN=SN-1", None, "", true);
    let sn1 = certs_of(
        d,
        "sn1",
        &est(
            hub,
            "simpleenroll",
            Auth::Cert(&f.station_cert, &f.station_key),
            Some(&c1),
        ),
    );
    let sn1_key = d.join("sn1.key");

    let mut before = snapshot(hub);
    let mut refused = |what: &str, a: Answer, status: u16, reason: &str| {
        assert_eq!(a.status, status, "{what}: {a:?} {}", a.text());
        assert!(
            a.headers.contains("content-type: application/problem+json"),
            "{what}: {}",
            a.headers
        );
        let detail = a.detail();
        assert!(
            detail.contains(reason),
            "{what}: {detail:?} lacks {reason:?}"
        );
        if status == 401 {
            assert!(a.headers.contains("www-authenticate: basic"), "{what}");
        }
        let after = snapshot(hub);
        assert_eq!(after, before, "{what}: the registry changed");
        before = after;
    };

    // Not on the allow-list.
    let unknown = csr(d, "sn9", "/CN=SN-9", None, "", true);
    refused(
        "unknown serial",
        est(
            hub,
            "simpleenroll",
            Auth::Cert(&f.station_cert, &f.station_key),
            Some(&unknown),
        ),
        403,
        "\"SN-9\" is not on the allow-list",
    );
    // Twice.
    let again = csr(d, "again", "/CN=SN-1", None, "", true);
    refused(
        "double enrollment",
        est(
            hub,
            "simpleenroll",
            Auth::Cert(&f.station_cert, &f.station_key),
            Some(&again),
        ),
        409,
        "\"SN-1\" has already enrolled",
    );
    // A CSR whose signature does not verify (one byte of the signature flipped).
    let bad = csr(d, "bad", "/CN=SN-2", None, "", false);
    sh(
        d,
        "python3 -c \"import sys;b=bytearray(open('bad.der','rb').read());b[-1]^=1;open('bad.der','wb').write(b)\" && base64 -w0 bad.der > bad.b64",
    );
    refused(
        "bad CSR signature",
        est(
            hub,
            "simpleenroll",
            Auth::Cert(&f.station_cert, &f.station_key),
            Some(&bad),
        ),
        400,
        "CSR signature does not verify",
    );
    // Not base64 at all.
    std::fs::write(d.join("junk.b64"), "this is not base64!").expect("write");
    refused(
        "junk body",
        est(
            hub,
            "simpleenroll",
            Auth::Cert(&f.station_cert, &f.station_key),
            Some(&d.join("junk.b64")),
        ),
        400,
        "not base64",
    );
    // Unauthorised stations: a device certificate, an unknown token, a wrong token, nothing.
    let c2 = csr(d, "sn2", "/CN=SN-2", None, "", true);
    refused(
        "device certificate as a station",
        est(hub, "simpleenroll", Auth::Cert(&sn1, &sn1_key), Some(&c2)),
        403,
        "is not a station certificate",
    );
    refused(
        "unknown station",
        est(
            hub,
            "simpleenroll",
            Auth::Basic("line-9", &f.token),
            Some(&c2),
        ),
        401,
        "unknown station \"line-9\" or wrong token",
    );
    refused(
        "wrong token",
        est(
            hub,
            "simpleenroll",
            Auth::Basic("line-2", "moat_stn_nope"),
            Some(&c2),
        ),
        401,
        "wrong token",
    );
    refused(
        "no credentials",
        est(hub, "simpleenroll", Auth::None, Some(&c2)),
        401,
        "no credentials",
    );
    refused(
        "no credentials (serverkeygen)",
        est(hub, "serverkeygen", Auth::None, Some(&c2)),
        401,
        "no credentials",
    );

    // Re-enrollment: a changed subject, a missing SAN, a station certificate, no certificate.
    let keep = "-addext subjectAltName=URI:urn:moat:device:SN-1";
    let other = csr(
        d,
        "other",
        "/O=Moat/CN=SN-2",
        Some("sn1.key"),
        "-addext subjectAltName=URI:urn:moat:device:SN-2",
        true,
    );
    refused(
        "re-enroll with a changed subject",
        est(
            hub,
            "simplereenroll",
            Auth::Cert(&sn1, &sn1_key),
            Some(&other),
        ),
        400,
        "must keep the certificate's subject",
    );
    let nosan = csr(d, "nosan", "/O=Moat/CN=SN-1", Some("sn1.key"), "", true);
    refused(
        "re-enroll without the SAN",
        est(
            hub,
            "simplereenroll",
            Auth::Cert(&sn1, &sn1_key),
            Some(&nosan),
        ),
        400,
        "subjectAltName",
    );
    let same = csr(d, "same", "/O=Moat/CN=SN-1", Some("sn1.key"), keep, true);
    refused(
        "re-enroll with a station certificate",
        est(hub, "simplereenroll", station, Some(&same)),
        403,
        "station certificate",
    );
    refused(
        "re-enroll without a certificate",
        est(
            hub,
            "simplereenroll",
            Auth::Basic("line-2", &f.token),
            Some(&same),
        ),
        403,
        "presented over mutual TLS",
    );

    // A revoked certificate cannot re-enroll: the handshake refuses it (the verifier follows
    // the revocation without a restart).
    let serial = sh(d, "openssl x509 -in sn1.pem -noout -serial");
    let serial = serial.trim().trim_start_matches("serial=").to_lowercase();
    hub.ok(&["cert", "revoke", &serial, "--reason", "key_compromise"]);
    before = snapshot(hub);
    let a = est(
        hub,
        "simplereenroll",
        Auth::Cert(&sn1, &sn1_key),
        Some(&same),
    );
    assert_eq!(a.status, 0, "{a:?}");
    assert!(a.stderr.contains("certificate revoked"), "{}", a.stderr);
    assert_eq!(
        snapshot(hub),
        before,
        "revoked re-enrollment stored something"
    );

    // A station certificate is no device on MQTT, even with a device of its name enrolled.
    let named = csr(d, "named", "/CN=line-1", None, "", true);
    certs_of(
        d,
        "named",
        &est(
            hub,
            "simpleenroll",
            Auth::Basic("line-2", &f.token),
            Some(&named),
        ),
    );
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let bundle = hub.bundle();
    let (ok, out) = run(
        "timeout",
        &[
            "15",
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            port,
            "--cafile",
            bundle.to_str().expect("p"),
            "--cert",
            f.station_cert.to_str().expect("p"),
            "--key",
            f.station_key.to_str().expect("p"),
            "-i",
            "line-1",
            "-t",
            "devices/line-1/up",
            "-m",
            "x",
            "-q",
            "1",
        ],
    );
    assert!(!ok, "a station certificate got onto MQTT: {out}");
    assert!(out.to_lowercase().contains("not authori"), "{out}");
    // While the device's own certificate works.
    let (ok, out) = run(
        "timeout",
        &[
            "15",
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            port,
            "--cafile",
            bundle.to_str().expect("p"),
            "--cert",
            d.join("named.pem").to_str().expect("p"),
            "--key",
            d.join("named.key").to_str().expect("p"),
            "-i",
            "line-1",
            "-t",
            "devices/line-1/up",
            "-m",
            "x",
            "-q",
            "1",
        ],
    );
    assert!(ok, "{out}");

    // Every refusal is in the audit log with its reason.
    let audit: Vec<serde_json::Value> =
        serde_json::from_value(hub.json(&["audit", "--limit", "200"])).expect("audit");
    let refusals: Vec<String> = audit
        .iter()
        .filter(|e| {
            e["outcome"] == "refused" && e["action"].as_str().unwrap_or("").starts_with("est.")
        })
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect();
    for want in [
        "not on the allow-list",
        "already enrolled",
        "CSR signature does not verify",
        "not a station certificate",
        "wrong token",
        "no credentials",
        "must keep the certificate's subject",
    ] {
        assert!(
            refusals.iter().any(|r| r.contains(want)),
            "{want} not audited: {refusals:#?}"
        );
    }

    // An admin reset allows one more enrollment of SN-1 (onto the same device).
    hub.ok(&["allowlist", "reset", "SN-1"]);
    let a = est(
        hub,
        "simpleenroll",
        Auth::Cert(&f.station_cert, &f.station_key),
        Some(&again),
    );
    certs_of(d, "sn1-again", &a);
    let a = est(
        hub,
        "simpleenroll",
        Auth::Cert(&f.station_cert, &f.station_key),
        Some(&again),
    );
    assert_eq!(a.status, 409, "{}", a.text());
}

#[test]
fn an_expired_certificate_cannot_reenroll() {
    // Device certificates valid for 3 s: a real configuration option of the hub.
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("moat.toml");
    std::fs::write(&cfg, "[ca]\ndevice_cert_validity = \"3s\"\n").expect("config");
    let f = factory(
        TestHub::start_with(&["--config", cfg.to_str().expect("p")], &[]),
        "SN-1\n",
    );
    let (hub, d) = (&f.hub, f.dir.as_path());
    let c1 = csr(d, "sn1", "/CN=SN-1", None, "", true);
    let a = est(
        hub,
        "simpleenroll",
        Auth::Basic("line-2", &f.token),
        Some(&c1),
    );
    let sn1 = certs_of(d, "sn1", &a);
    let keep = "-addext subjectAltName=URI:urn:moat:device:SN-1";
    let r = csr(d, "renew", "/O=Moat/CN=SN-1", Some("sn1.key"), keep, true);
    std::thread::sleep(Duration::from_secs(4));
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-in",
            sn1.to_str().expect("p"),
            "-noout",
            "-checkend",
            "0",
        ],
    );
    assert!(!ok, "the certificate should have expired: {out}");
    let before = snapshot(hub);
    let a = est(
        hub,
        "simplereenroll",
        Auth::Cert(&sn1, &d.join("sn1.key")),
        Some(&r),
    );
    assert_eq!(a.status, 0, "{a:?}");
    assert!(a.stderr.contains("certificate expired"), "{}", a.stderr);
    assert_eq!(snapshot(hub), before);
}

#[test]
fn allowlist_files_are_refused_whole_with_line_numbers() {
    let hub = TestHub::start();
    let csv = hub.path("serials.csv");
    std::fs::write(
        &csv,
        "serial,mac,model\nSN-1,aa:bb:cc:dd:ee:01,M1\nSN 2\nSN-3,12:34\nSN-1\nSN-4,,M4\n",
    )
    .expect("csv");
    let f = csv.to_str().expect("p");
    let line = hub.fails(&["allowlist", "add", "--file", f]);
    for want in [
        "line 3: serial \"SN 2\"",
        "line 4: MAC \"12:34\"",
        "line 5: serial \"SN-1\" repeats line 2",
        "nothing stored",
    ] {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
    assert!(!line.contains("line 6"), "{line}");
    assert_eq!(hub.json(&["allowlist", "list"]), serde_json::json!([]));

    // A good file, then one that repeats a listed serial: refused whole, naming its line.
    std::fs::write(&csv, "SN-1,AA-BB-CC-DD-EE-01,M1\nSN-2\n").expect("csv");
    assert!(
        hub.ok(&["allowlist", "add", "--file", f])
            .contains("added 2")
    );
    std::fs::write(&csv, "SN-3\n\nSN-2\n").expect("csv");
    let line = hub.fails(&["allowlist", "add", "--file", f]);
    assert!(
        line.contains("line 3: serial \"SN-2\" is already on the allow-list"),
        "{line}"
    );
    let list = hub.json(&["allowlist", "list"]);
    let serials: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["serial"].as_str().expect("serial"))
        .collect();
    assert_eq!(serials, ["SN-1", "SN-2"]);
    assert_eq!(list[0]["mac"], "aa:bb:cc:dd:ee:01");

    // Resetting a serial that never enrolled, or one not listed, says so.
    assert!(
        hub.fails(&["allowlist", "reset", "SN-1"])
            .contains("has not enrolled yet")
    );
    assert!(
        hub.fails(&["allowlist", "reset", "SN-404"])
            .contains("not found")
    );
    // A missing or non-UTF-8 file names the file.
    let missing = hub.fails(&["allowlist", "add", "--file", "/nonexistent/x.csv"]);
    assert!(missing.contains("/nonexistent/x.csv"), "{missing}");
    std::fs::write(&csv, [0xff, 0xfe, 0x00]).expect("csv");
    assert!(
        hub.fails(&["allowlist", "add", "--file", f])
            .contains("not UTF-8")
    );

    // Station credentials are written once and never overwritten.
    let out = hub.path("st");
    let o = out.to_str().expect("p");
    hub.ok(&["station", "create", "line-1", "--out", o]);
    assert_eq!(
        std::fs::metadata(out.join("line-1.key"))
            .expect("key")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let line = hub.fails(&["station", "create", "line-1", "--out", o]);
    assert!(line.contains("already exists"), "{line}");
    let line = hub.fails(&["station", "create", "line-1", "--token"]);
    assert!(line.contains("station \"line-1\" already exists"), "{line}");
    let list = hub.json(&["station", "list"]);
    assert_eq!(list.as_array().expect("list").len(), 1);
    hub.ok(&["station", "delete", "line-1"]);
    assert_eq!(hub.json(&["station", "list"]), serde_json::json!([]));
}

/// The HTTPS listener trusts client certificates of a CA from the moment it is registered,
/// without a restart (the verifier it shares with the MQTT listener follows the event), and
/// EST still refuses to renew a registered CA's certificate.
#[test]
fn the_https_listener_follows_ca_registration_live() {
    let hub = TestHub::start();
    let dir = hub.path("vendor");
    std::fs::create_dir_all(&dir).expect("dir");
    let vendor = Vendor::new(&dir, "acme-se");
    let leaf = vendor.issue(&dir, "vendor-dev-1", &["-extfile_client"]);
    let key = dir.join("acme-se-ca-vendor-dev-1.key");
    let r = csr(
        &dir,
        "r",
        "/CN=vendor-dev-1",
        Some(key.to_str().expect("p")),
        "",
        true,
    );

    let a = est(&hub, "simplereenroll", Auth::Cert(&leaf, &key), Some(&r));
    assert_eq!(a.status, 0, "an unregistered CA got through: {a:?}");
    assert!(a.stderr.contains("unknown ca"), "{}", a.stderr);

    vendor.register(&hub, &dir, "acme-se", &[]);
    // Trusted now, but no device has it: the one certificate check refuses at registration.
    let a = est(&hub, "simplereenroll", Auth::Cert(&leaf, &key), Some(&r));
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.detail().contains("not registered"), "{}", a.detail());

    hub.ok(&[
        "device",
        "create",
        "vendor-dev-1",
        "--cert",
        leaf.to_str().expect("p"),
    ]);
    let before = snapshot(&hub);
    let a = est(&hub, "simplereenroll", Auth::Cert(&leaf, &key), Some(&r));
    assert_eq!(a.status, 403, "{a:?}");
    assert!(
        a.detail().contains("renew it with that CA"),
        "{}",
        a.detail()
    );
    assert_eq!(snapshot(&hub), before);
}

/// Guessing station tokens is rate limited: after 20 failures a minute from one address,
/// even the right token is answered 429 until the window passes; nothing is enrolled.
#[test]
fn failed_station_logins_are_rate_limited() {
    let f = factory(TestHub::start(), "SN-1\n");
    let (hub, d) = (&f.hub, f.dir.as_path());
    let c1 = csr(d, "sn1", "/CN=SN-1", None, "", true);
    for i in 0..20 {
        let a = est(
            hub,
            "simpleenroll",
            Auth::Basic("line-2", &format!("guess-{i}")),
            Some(&c1),
        );
        assert_eq!(a.status, 401, "attempt {i}: {}", a.text());
    }
    let a = est(
        hub,
        "simpleenroll",
        Auth::Basic("line-2", &f.token),
        Some(&c1),
    );
    assert_eq!(a.status, 429, "{}", a.text());
    assert!(
        a.detail()
            .contains("too many failed station authentications")
    );
    assert!(
        hub.json(&["device", "list"])
            .as_array()
            .expect("list")
            .is_empty()
    );
}

/// `POST /provisioning/v1/register` with `auth`, asking for a certificate for the key of the
/// PEM CSR `csr_pem` (a file).
fn provision(hub: &TestHub, auth: Auth<'_>, csr_pem: &Path) -> Answer {
    let csr = std::fs::read_to_string(csr_pem).expect("csr");
    let req = hub.path(&format!("provision-{}.json", seq()));
    std::fs::write(&req, serde_json::json!({ "csr": csr }).to_string()).expect("write");
    call(
        hub,
        "/provisioning/v1/register",
        auth,
        Some((&req, "application/json")),
    )
}

/// A PEM CSR for a new P-256 key (`{name}.key`), or for `key`.
fn pem_csr(dir: &Path, name: &str, key: Option<&str>) -> PathBuf {
    let keyopt = match key {
        Some(k) => format!("-key {k}"),
        None => format!("-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key"),
    };
    sh(
        dir,
        &format!("openssl req -new {keyopt} -subj '/CN=ignored' -out {name}.csr 2>/dev/null"),
    );
    dir.join(format!("{name}.csr"))
}

/// A provisioning answer's JSON (status 200 required); writes its certificate and CA
/// bundle to `{name}.pem` and `{name}-ca.pem`.
fn provisioned(dir: &Path, name: &str, a: &Answer) -> serde_json::Value {
    assert_eq!(a.status, 200, "{a:?} {}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).expect("json");
    let cert = v["certificate"].as_str().expect("certificate");
    let chain = v["chain"].as_str().expect("chain");
    std::fs::write(dir.join(format!("{name}.pem")), format!("{cert}{chain}")).expect("write");
    let bundle = v["mqtt"]["ca_bundle"].as_str().expect("ca_bundle");
    std::fs::write(dir.join(format!("{name}-ca.pem")), bundle).expect("write");
    v
}

/// mosquitto (v5) as `id` with a certificate: publish `msg` retained to `topic`, or (msg
/// None) wait up to 5 s for one message on `topic`. Returns (success, output).
fn mosquitto(
    hub: &TestHub,
    cert: &Path,
    key: &Path,
    id: &str,
    topic: &str,
    msg: Option<&str>,
) -> (bool, String) {
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let bundle = hub.bundle();
    let mut args = vec![
        "15",
        if msg.is_some() {
            "mosquitto_pub"
        } else {
            "mosquitto_sub"
        },
        "-V",
        "mqttv5",
        "-h",
        host,
        "-p",
        port,
        "--cafile",
        bundle.to_str().expect("p"),
        "--cert",
        cert.to_str().expect("p"),
        "--key",
        key.to_str().expect("p"),
        "-i",
        id,
        "-t",
        topic,
        "-q",
        "1",
    ];
    match msg {
        Some(m) => args.extend(["-r", "-m", m]),
        None => args.extend(["-C", "1", "-W", "5"]),
    }
    run("timeout", &args)
}

#[test]
fn field_provisioning_gives_the_operational_certificate_and_the_hub() {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("moat.toml");
    std::fs::write(
        &cfg,
        "[provisioning]\nhubs = [\"mqtts://hub-a.example:8883\", \"mqtts://hub-b.example:8883\"]\n",
    )
    .expect("config");
    let f = factory(
        TestHub::start_with(&["--config", cfg.to_str().expect("p")], &[]),
        "SN-1,,Sensor v2\nSN-2,,Gateway\n",
    );
    let (hub, d) = (&f.hub, f.dir.as_path());
    let station = Auth::Cert(&f.station_cert, &f.station_key);
    let real_hub = format!("mqtts://{}", hub.mqtt_tls);

    // Factory: EST gives SN-1 and SN-2 their factory certificates.
    let c1 = csr(d, "sn1", "/CN=SN-1", None, "", true);
    let sn1 = certs_of(d, "sn1", &est(hub, "simpleenroll", station, Some(&c1)));
    let c2 = csr(d, "sn2", "/CN=SN-2", None, "", true);
    let sn2 = certs_of(d, "sn2", &est(hub, "simpleenroll", station, Some(&c2)));

    // Enrollment groups: sensors of the hub's own CA go to this hub, in group fleet-a, with a
    // topic policy of their own; everything else is spread over the configured hubs.
    hub.ok(&[
        "acl",
        "create",
        "sensor",
        "--publish",
        "fleet/{device.group}/{device.id}",
        "--subscribe",
        "fleet/{device.group}/#",
    ]);
    hub.ok(&[
        "enrollment-group",
        "create",
        "sensors",
        "--ca",
        "devices",
        "--model",
        "Sensor v2",
        "--endpoint",
        &real_hub,
        "--group",
        "fleet-a",
        "--acl-policy",
        "sensor",
    ]);
    hub.ok(&[
        "enrollment-group",
        "create",
        "spread",
        "--allocation",
        "hashed",
    ]);
    let e = hub.fails(&[
        "enrollment-group",
        "create",
        "bad",
        "--allocation",
        "hashed",
        "--endpoint",
        &real_hub,
    ]);
    assert!(e.contains("fixed allocation"), "{e}");
    let e = hub.fails(&["enrollment-group", "create", "bad", "--acl-policy", "nope"]);
    assert!(e.contains("nope"), "{e}");
    let e = hub.fails(&[
        "enrollment-group",
        "create",
        "bad",
        "--endpoint",
        "http://x",
    ]);
    assert!(e.contains("mqtts"), "{e}");
    let groups = hub.json(&["enrollment-group", "list"]);
    assert_eq!(groups.as_array().expect("groups").len(), 2, "{groups}");

    // SN-1 provisions with its factory certificate and a new key: one round trip.
    let op_csr = pem_csr(d, "op1", None);
    let v = provisioned(
        d,
        "op1",
        &provision(hub, Auth::Cert(&sn1, &d.join("sn1.key")), &op_csr),
    );
    assert_eq!(v["device_id"], "SN-1");
    assert_eq!(v["mqtt"]["url"], real_hub.as_str());
    assert_eq!(v["enrollment_group"], "sensors");
    assert_eq!(v["provisions"], 1);
    let shown = hub.json(&["device", "show", "SN-1"]);
    assert_eq!(shown["device"]["stage"], "provisioned", "{shown}");
    let (ok, out) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            d.join("op1-ca.pem").to_str().expect("p"),
            d.join("op1.pem").to_str().expect("p"),
        ],
    );
    assert!(ok, "{out}");
    assert_ne!(
        sh(d, "openssl x509 -in op1.pem -noout -serial"),
        sh(d, "openssl x509 -in sn1.pem -noout -serial")
    );
    // Its operational certificate connects, under the group's topic policy.
    let (op1, op1_key) = (d.join("op1.pem"), d.join("op1.key"));
    let (ok, out) = mosquitto(
        hub,
        &op1,
        &op1_key,
        "SN-1",
        "fleet/fleet-a/SN-1",
        Some("up"),
    );
    assert!(ok, "{out}");
    let (ok, out) = mosquitto(hub, &op1, &op1_key, "SN-1", "fleet/fleet-a/#", None);
    assert!(ok && out.contains("up"), "{out}");
    let (_, out) = mosquitto(hub, &op1, &op1_key, "SN-1", "devices/SN-1/#", None);
    assert!(out.contains("denied"), "outside the group's policy: {out}");

    // SN-2 (another model) is hashed over the configured hubs, the same one every time.
    let op2 = pem_csr(d, "op2", None);
    let v2 = provisioned(
        d,
        "op2",
        &provision(hub, Auth::Cert(&sn2, &d.join("sn2.key")), &op2),
    );
    let first = v2["mqtt"]["url"].as_str().expect("url").to_string();
    assert!(first.ends_with(".example:8883"), "{v2}");
    assert_eq!(v2["enrollment_group"], "spread");
    let v2 = provisioned(
        d,
        "op2b",
        &provision(hub, Auth::Cert(&sn2, &d.join("sn2.key")), &op2),
    );
    assert_eq!(v2["mqtt"]["url"], first.as_str());
    assert_eq!(v2["provisions"], 2);
    assert!(v2["moved_from"].is_null(), "{v2}");

    // Moving SN-2 to this hub: re-provisioning is allowed and audited with where from.
    hub.ok(&["enrollment-group", "delete", "spread"]);
    hub.ok(&[
        "enrollment-group",
        "create",
        "all-here",
        "--endpoint",
        &real_hub,
    ]);
    let v2 = provisioned(
        d,
        "op2c",
        &provision(hub, Auth::Cert(&sn2, &d.join("sn2.key")), &op2),
    );
    assert_eq!(v2["mqtt"]["url"], real_hub.as_str());
    assert_eq!(v2["moved_from"], first.as_str());
    let audit = hub.ok(&["audit", "--limit", "20"]);
    assert!(
        audit.contains("device.reprovision") && audit.contains(&format!("moved from {first}")),
        "{audit}"
    );

    // A suspended (disabled) device cannot provision.
    hub.ok(&["device", "disable", "SN-1"]);
    let a = provision(hub, Auth::Cert(&sn1, &d.join("sn1.key")), &op_csr);
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.detail().contains("disabled"), "{}", a.detail());
    hub.ok(&["device", "enable", "SN-1"]);
    // Refusals, each storing nothing.
    let before = snapshot(hub);
    let certs_before = hub.json(&["cert", "list", "--limit", "1000"]);
    let a = provision(hub, Auth::None, &op_csr);
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.detail().contains("mutual TLS"), "{}", a.detail());
    let a = provision(hub, station, &op_csr);
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.detail().contains("station certificate"), "{}", a.detail());
    std::fs::write(
        d.join("garbage.csr"),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .expect("write");
    let a = provision(
        hub,
        Auth::Cert(&sn1, &d.join("sn1.key")),
        &d.join("garbage.csr"),
    );
    assert_eq!(a.status, 400, "{}", a.text());
    // A certificate from a CA the hub does not trust: the handshake refuses it.
    let stranger = Vendor::new(d, "stranger");
    let s_cert = stranger.issue(d, "SN-1", &["-extfile_client"]);
    let s_key = d.join("stranger-ca-SN-1.key");
    let a = provision(hub, Auth::Cert(&s_cert, &s_key), &op_csr);
    assert_eq!(a.status, 0, "TLS must refuse an unregistered CA: {a:?}");
    assert_eq!(snapshot(hub), before);
    assert_eq!(hub.json(&["cert", "list", "--limit", "1000"]), certs_before);
    // A revoked device's factory certificate: refused at the handshake.
    hub.ok(&["device", "revoke", "SN-1"]);
    let a = provision(hub, Auth::Cert(&sn1, &d.join("sn1.key")), &op_csr);
    assert!(a.status == 0 || a.status == 403, "{a:?}");
    // Refused calls are limited per address: 429 before long.
    let limited = (0..30).any(|_| provision(hub, Auth::None, &op_csr).status == 429);
    assert!(limited, "refused provisioning calls must be rate limited");
}

#[test]
fn vendor_certificates_provision_with_auto_register() {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("moat.toml");
    std::fs::write(
        &cfg,
        "[provisioning]\nhubs = [\"mqtts://hub-a.example:8883\", \"mqtts://hub-b.example:8883\", \"mqtts://hub-c.example:8883\"]\n",
    )
    .expect("config");
    let hub = TestHub::start_with(&["--config", cfg.to_str().expect("p")], &[]);
    let d = hub.path("work");
    std::fs::create_dir_all(&d).expect("dir");
    let d = d.as_path();
    let acme = Vendor::new(d, "acme");
    acme.register(&hub, d, "acme", &["--auto-register"]);
    let beta = Vendor::new(d, "beta");
    beta.register(&hub, d, "beta", &[]);
    hub.ok(&[
        "enrollment-group",
        "create",
        "acme-se",
        "--ca",
        "acme",
        "--allocation",
        "hashed",
    ]);

    // A secure element's vendor certificate provisions: the device is registered on the way
    // and gets a hub-issued operational certificate for a key it chose.
    let se = acme.issue(d, "se-0001", &["-extfile_client"]);
    let se_key = d.join("acme-ca-se-0001.key");
    let op = pem_csr(d, "op", None);
    let v = provisioned(d, "op", &provision(&hub, Auth::Cert(&se, &se_key), &op));
    assert_eq!(v["device_id"], "se-0001");
    assert_eq!(v["enrollment_group"], "acme-se");
    let url = v["mqtt"]["url"].as_str().expect("url");
    assert!(
        url.starts_with("mqtts://hub-") && url.ends_with(".example:8883"),
        "{v}"
    );
    let device = hub.json(&["device", "show", "se-0001"]);
    assert_eq!(device["device"]["ca"], "acme", "{device}");
    // Both certificates connect as the device: the vendor's and the hub-issued one.
    let (ok, out) = mosquitto(
        &hub,
        &d.join("op.pem"),
        &d.join("op.key"),
        "se-0001",
        "devices/se-0001/up",
        Some("1"),
    );
    assert!(ok, "{out}");
    let (ok, out) = mosquitto(
        &hub,
        &se,
        &se_key,
        "se-0001",
        "devices/se-0001/up",
        Some("2"),
    );
    assert!(ok, "{out}");
    // The key can stay in the secure element: a CSR for the vendor certificate's own key.
    let same = pem_csr(d, "same", Some("acme-ca-se-0001.key"));
    let v = provisioned(
        d,
        "op-same",
        &provision(&hub, Auth::Cert(&se, &se_key), &same),
    );
    assert_eq!(v["provisions"], 2);
    assert_eq!(v["mqtt"]["url"], url, "hashing is stable");

    // Revoking the vendor-registered device republishes the hub device CA's CRL with its
    // hub-issued operational certificates (the device's own CA is the vendor's).
    hub.ok(&["device", "revoke", "se-0001"]);
    let crl = d.join("devices.crl.pem");
    std::fs::write(&crl, hub.ok(&["crl"])).expect("write CRL");
    for op in ["op.pem", "op-same.pem"] {
        let (ok, text) = openssl_verify(&hub.bundle(), &d.join(op), Some(&crl));
        assert!(!ok && text.contains("certificate revoked"), "{op}: {text}");
    }

    // A CA that does not auto-register: its unknown devices are refused, nothing stored.
    let count = hub.device_count();
    let b = beta.issue(d, "be-0001", &["-extfile_client"]);
    let a = provision(&hub, Auth::Cert(&b, &d.join("beta-ca-be-0001.key")), &op);
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.detail().contains("not registered"), "{}", a.detail());
    assert_eq!(hub.device_count(), count);
}
