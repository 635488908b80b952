//! OTA report fuzz target: what a device publishes on `devices/{id}/ota/report` must parse or
//! be ignored, never panic; a report that parses survives its own JSON round trip unchanged.
//!
//! Run: `cargo +nightly fuzz run report fuzz/corpus/report fuzz/seeds/report` from the repository
//! root (new inputs go to the first, ignored directory; the seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_ota_proto::Report;

fuzz_target!(|data: &[u8]| {
    if let Some(report) = Report::parse(data) {
        assert_eq!(Report::parse(&report.to_json()), Some(report));
    }
});
