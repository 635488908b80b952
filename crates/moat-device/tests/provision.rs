//! The provisioning client against a small local stand-in for the hub's endpoint (mutual TLS,
//! the contract's JSON), until the hub end-to-end test covers it: the request is what the
//! contract says (JSON with a PEM CSR, over mTLS with the factory certificate), a 200 answer
//! becomes a checked `Assignment` saved to disk, and problem documents become `Refused` with
//! the hub's detail.

use std::sync::Arc;
use std::time::Duration;

use moat_device::identity::{Identity, roots_from_certs};
use moat_device::keystore::{FileKeyStore, KeyStore};
use moat_device::provision::{AssignmentFile, ProvisioningClient};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA made here.
struct Pki {
    ca: CertificateDer<'static>,
    params: CertificateParams,
    key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(vec![]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "Stub CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let ca = params.self_signed(&key).expect("ca");
        Pki {
            ca: ca.der().clone(),
            params,
            key_pem: key.serialize_pem(),
        }
    }

    fn issuer(&self) -> Issuer<'static, KeyPair> {
        Issuer::new(
            self.params.clone(),
            KeyPair::from_pem(&self.key_pem).expect("ca key"),
        )
    }
}

/// Serves one HTTP/1.1 request over mutual TLS (client certificates from the test CA);
/// `answer` maps the JSON body to (status, content type, body). Returns the port.
async fn stub(
    pki: &Pki,
    answer: impl Fn(serde_json::Value) -> (u16, &'static str, String) + Send + 'static,
) -> u16 {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &pki.issuer())
        .expect("server cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).expect("root");
    let provider = moat_device::identity::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("handshake");
        assert!(
            tls.get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty()),
            "client certificate presented"
        );
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, length) = loop {
            let n = tls.read(&mut chunk).await.expect("read");
            assert!(n > 0, "request ended early");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                assert!(
                    head.starts_with("post /provisioning/v1/register "),
                    "{head}"
                );
                assert!(head.contains("content-type: application/json"), "{head}");
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("content-length");
                break (at + 4, len);
            }
        };
        while buf.len() < head_end + length {
            let n = tls.read(&mut chunk).await.expect("read");
            assert!(n > 0, "body ended early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: serde_json::Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).expect("JSON body");
        let (status, ctype, text) = answer(body);
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        tls.write_all(resp.as_bytes()).await.expect("write");
        let _ = tls.shutdown().await;
    });
    port
}

#[tokio::test]
async fn register_round_trip_and_refusal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store =
        FileKeyStore::open(&tmp.path().join("ks"), moat_vault::Secret::new("pw")).expect("store");
    let key = store.generate("device").expect("key");
    let pki = Pki::new();

    // The factory certificate the test CA issued to the device key.
    let mut p = CertificateParams::new(vec![]).expect("params");
    p.distinguished_name.push(DnType::CommonName, "SN-9");
    let factory_cert = p.signed_by(&key, &pki.issuer()).expect("factory cert");
    let factory = Identity::new(vec![factory_cert.der().clone()], key.clone()).expect("identity");
    let roots = roots_from_certs("stub CA", [pki.ca.clone()]).expect("roots");

    // 200: sign the CSR the client sent, answer per the contract.
    let ca_pem = moat_device::files::certs_to_pem(std::slice::from_ref(&pki.ca));
    let signer = pki.issuer();
    let port = stub(&pki, move |body| {
        let csr_pem = body["csr"].as_str().expect("csr field");
        assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).expect("valid CSR");
        let cn = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .cloned();
        assert_eq!(cn, Some(rcgen::DnValue::Utf8String("SN-9".into())));
        let leaf = csr.signed_by(&signer).expect("sign");
        let answer = serde_json::json!({
            "device_id": "SN-9",
            "certificate": leaf.pem(),
            "chain": ca_pem,
            "mqtt": {"url": "mqtts://127.0.0.1:8883", "host": "127.0.0.1", "port": 8883,
                     "ca_bundle": ca_pem},
            "enrollment_group": null,
            "policy": "deny-insecure",
            "provisions": 1,
            "moved_from": null,
        });
        (200, "application/json", answer.to_string())
    })
    .await;
    let client =
        ProvisioningClient::new(&format!("https://127.0.0.1:{port}"), roots.clone()).expect("c");
    let a = tokio::time::timeout(Duration::from_secs(20), client.register(&factory, &key))
        .await
        .expect("in time")
        .expect("registered");
    assert_eq!(a.device_id, "SN-9");
    assert_eq!(a.mqtt.port, 8883);
    assert_eq!(a.policy.as_deref(), Some("deny-insecure"));
    assert_eq!(a.identity.chain.len(), 2, "leaf + chain");
    assert_eq!(
        moat_pki::cert_info(a.identity.leaf())
            .expect("info")
            .spki_der,
        key.public_key_der(),
        "the operational certificate certifies the device key"
    );
    let out = tmp.path().join("prov");
    a.save(&out).expect("save");
    let file = AssignmentFile::load(&out.join("assignment.json")).expect("load");
    assert_eq!(file.device_id, "SN-9");
    assert_eq!(
        moat_device::files::read_certs(&out.join("device.pem"))
            .expect("pem")
            .len(),
        2
    );

    // 409 problem document → Refused with status and detail.
    let port = stub(&pki, |_| {
        (
            409,
            "application/problem+json",
            serde_json::json!({"type": "about:blank", "title": "Conflict", "status": 409,
                "detail": "device SN-9 is decommissioned"})
            .to_string(),
        )
    })
    .await;
    let client = ProvisioningClient::new(&format!("https://127.0.0.1:{port}"), roots).expect("c");
    let e = tokio::time::timeout(Duration::from_secs(20), client.register(&factory, &key))
        .await
        .expect("in time")
        .expect_err("refused");
    assert!(
        matches!(&e, moat_device::Error::Refused { status: 409, detail, .. } if detail.contains("decommissioned")),
        "{e:?}"
    );
    assert!(e.to_string().contains("409"), "{e}");
}
