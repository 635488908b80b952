//! The OTA protocol between a Moat hub and its devices, shared by both sides so they cannot
//! drift apart: signed update manifests, device reports, and the MQTT topics that carry them.
//!
//! ```text
//!  hub ── devices/{id}/ota/notify (retained, QoS 1) ──▶ device   COSE_Sign1(Manifest), ES256
//!  hub ◀── devices/{id}/ota/report (QoS 1) ──────────── device   JSON Report
//!  hub ◀── GET /fw/{digest} (HTTPS, mutual TLS, Range) ─ device   the image named by the manifest
//! ```
//!
//! A [`Manifest`] is signed by the hub's update key (P-256, held by the hub's vault, distinct
//! from its CA keys); devices get that key's public half when they are provisioned and verify
//! every manifest with it ([`open_manifest`]) before they download anything. The manifest
//! names the image by its SHA-256 digest and size, and carries its version, security counter,
//! target models and an expiry, so a device can refuse rollback, replay of an old manifest
//! (freeze) and images meant for other models (mix-and-match) before it spends a byte on them.
//!
//! Not here: deciding what to do with a manifest (the device agent in `moat-device`) or who
//! gets one (`moat-ota`).

mod manifest;
mod report;

pub use manifest::{
    Manifest, ManifestError, ManifestSigner, UpdateKey, open_manifest, sign_manifest,
};
pub use report::{Report, ReportState, Running};

/// The topic the hub publishes a device's manifest on (retained, so a device that was offline
/// gets it when it subscribes).
pub fn notify_topic(device_id: &str) -> String {
    format!("devices/{device_id}/ota/notify")
}

/// The topic a device publishes its reports on.
pub fn report_topic(device_id: &str) -> String {
    format!("devices/{device_id}/ota/report")
}

/// The filter the hub follows for reports of every device.
pub const REPORT_FILTER: &str = "devices/+/ota/report";

/// The device id in a report topic (`devices/{id}/ota/report`), if it is one.
pub fn device_of_report_topic(topic: &str) -> Option<&str> {
    let id = topic
        .strip_prefix("devices/")?
        .strip_suffix("/ota/report")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The download path of an image: `/fw/{digest}` (SHA-256 of the file, lowercase hex).
pub fn download_path(digest: &str) -> String {
    format!("/fw/{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(notify_topic("d-1"), "devices/d-1/ota/notify");
        assert_eq!(device_of_report_topic(&report_topic("d-1")), Some("d-1"));
        for bad in [
            "devices//ota/report",
            "devices/a/b/ota/report",
            "devices/a/ota/notify",
            "x/a/ota/report",
        ] {
            assert_eq!(device_of_report_topic(bad), None, "{bad}");
        }
    }
}
