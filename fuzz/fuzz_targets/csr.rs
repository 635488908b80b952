//! CSR fuzz target: what EST (`simpleenroll`, `simplereenroll`, `serverkeygen`), field
//! provisioning and `moat device create --csr` accept from a client — a PKCS#10 request, PEM
//! or DER — must be checked or refused, never panic. A request that passes is then compared
//! with a fixed certificate as a re-enrollment would (`check_renewal`), and its identity
//! fields are read.
//!
//! Run: `cargo +nightly fuzz run csr fuzz/corpus/csr fuzz/seeds/csr` from the repository
//! root (new inputs go to the first, ignored directory; the seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A device certificate to renew (DER), from the seed corpus's hub.
const CURRENT: &[u8] = include_bytes!("../seeds/cert_chain/device.der");

fuzz_target!(|data: &[u8]| {
    if let Ok(checked) = moat_pki::check_csr(data) {
        let _ = moat_pki::check_renewal(&checked, CURRENT);
        let _ = (&checked.common_name, &checked.serial_number);
    }
});
