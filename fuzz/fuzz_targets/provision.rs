//! Field provisioning fuzz target: the JSON of `POST /provisioning/v1/register` must decode
//! or be refused, never panic, on both sides (the types are `moat-provision-proto`'s, the ones
//! moat-api and moat-device use):
//! - as the hub reads a request (`ProvisionRequest`, unknown fields refused), then its CSR:
//!   `pem_to_der(.., "CERTIFICATE REQUEST")` and `check_csr`, as the hub does next;
//! - as a device reads the hub's answer (`ProvisionResponse`), which then survives its own
//!   JSON round trip.
//!
//! Not reached: the device's further checks of the answer (its PEM certificates, the key they
//! certify) and its `assignment.json`, which live in moat-device (too heavy to build here).
//!
//! Run: `cargo +nightly fuzz run provision fuzz/corpus/provision fuzz/seeds/provision` from
//! the repository root (new inputs go to the first, ignored directory; the seeds stay as they
//! are).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_provision_proto::{ProvisionRequest, ProvisionResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ProvisionRequest>(data)
        && let Ok(der) = moat_pki::pem_to_der(req.csr.as_bytes(), "CERTIFICATE REQUEST")
    {
        let _ = moat_pki::check_csr(&der);
    }
    if let Ok(answer) = serde_json::from_slice::<ProvisionResponse>(data) {
        let json = serde_json::to_vec(&answer).expect("an answer encodes");
        let again: ProvisionResponse = serde_json::from_slice(&json).expect("and decodes");
        assert_eq!(again, answer);
    }
});
