//! EST request body fuzz target: what `simpleenroll`, `simplereenroll` and `serverkeygen`
//! receive — base64 with any whitespace and optional padding (RFC 8951), or a PEM CSR — must
//! be decoded (`decode_est_body`, the decoder moat-api calls) or refused, never panic; what
//! decodes goes through the CSR check the hub runs next (`check_csr`).
//!
//! Run: `cargo +nightly fuzz run est_body fuzz/corpus/est_body fuzz/seeds/est_body` from the
//! repository root (new inputs go to the first, ignored directory; the seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = moat_pki::decode_est_body(data) {
        let _ = moat_pki::check_csr(&csr);
    }
});
