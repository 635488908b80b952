//! Certificate fuzz target: the certificate files users give the CLI and the API
//! (`device create --cert`, `ca register --cert --verification-cert`, a vendor chain) — PEM
//! with one or more certificates, or DER — must parse or be refused, never panic; every
//! certificate that parses has its fields read (`cert_info`) and an identity taken by each
//! rule.
//!
//! Run: `cargo +nightly fuzz run cert_chain fuzz/corpus/cert_chain fuzz/seeds/cert_chain` from the repository
//! root (new inputs go to the first, ignored directory; the seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_pki::IdentityRule;

fn read(der: &[u8]) {
    if moat_pki::cert_info(der).is_ok() {
        for rule in ["cn", "san-uri", "san-dns"] {
            if let Some(rule) = IdentityRule::parse(rule) {
                let _ = moat_pki::identity_of(der, rule);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(chain) = moat_pki::parse_cert_chain_pem(data) {
        for cert in &chain {
            read(cert);
        }
    }
    read(data);
});
