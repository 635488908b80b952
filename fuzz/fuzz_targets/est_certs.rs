//! EST answer fuzz target, the device's side: the certs-only CMS SignedData a device gets
//! from `cacerts`, `simpleenroll` and `simplereenroll` (after its base64) must give its
//! certificates or an error, never panic (`parse_certs_only`); the certificates it gives
//! encode again as the hub would send them (`certs_only`) and read back the same.
//!
//! Run: `cargo +nightly fuzz run est_certs fuzz/corpus/est_certs fuzz/seeds/est_certs` from
//! the repository root (new inputs go to the first, ignored directory; the seeds stay as they
//! are).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut certs) = moat_pki::parse_certs_only(data) else {
        return;
    };
    let der = moat_pki::certs_only(&certs).expect("certificates that parsed encode again");
    let mut again = moat_pki::parse_certs_only(&der).expect("our own encoding parses");
    // SET OF comes out in DER order, not in the order it was read.
    certs.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    again.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    assert_eq!(certs, again);
});
