//! What a device tells the hub: JSON on `devices/{id}/ota/report`.

use serde::{Deserialize, Serialize};

/// Largest report the hub reads (a reason is a sentence, not a log).
pub const MAX_REPORT_LEN: usize = 4096;

/// Where a device is with an update, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    /// No update in progress: the report only says what the device runs (on connect).
    Idle,
    /// It accepted the manifest and is downloading the image.
    Downloading,
    /// It verified the image, wrote the inactive slot and is rebooting into it.
    Installed,
    /// The new image booted and confirmed itself.
    Confirmed,
    /// It refused the update or could not install it; `reason` says why.
    Failed,
    /// The new image did not confirm; the device is back on its previous image.
    RolledBack,
}

/// What the device runs now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Its model (what campaigns target with `model:M`).
    pub model: String,
    /// The running image's version.
    pub version: String,
    /// The running image's security counter (the device's anti-rollback floor).
    pub security_counter: u32,
}

/// One report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The campaign it is about (absent for `idle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The step reached.
    pub state: ReportState,
    /// Why it failed or rolled back, in words an operator can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the device runs after this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Running>,
}

impl Report {
    /// Parses a report payload; `None` for anything that is not one (too long, not JSON).
    pub fn parse(payload: &[u8]) -> Option<Report> {
        if payload.len() > MAX_REPORT_LEN {
            return None;
        }
        serde_json::from_slice(payload).ok()
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let r = Report {
            campaign: Some("cmp-1".into()),
            state: ReportState::RolledBack,
            reason: Some("new image did not confirm".into()),
            running: Some(Running {
                model: "m".into(),
                version: "1.0.0+0".into(),
                security_counter: 2,
            }),
        };
        assert_eq!(Report::parse(&r.to_json()), Some(r));
        let text = br#"{"campaign":"c","state":"rolled_back","reason":"x"}"#;
        assert_eq!(
            Report::parse(text).map(|r| r.state),
            Some(ReportState::RolledBack)
        );
        assert_eq!(Report::parse(b"{\"state\":\"exploded\"}"), None);
        assert_eq!(Report::parse(b"not json"), None);
        assert_eq!(Report::parse(&vec![b' '; MAX_REPORT_LEN + 1]), None);
    }
}
