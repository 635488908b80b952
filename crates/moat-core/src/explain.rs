//! `moat cert explain`: would the hub accept this certificate, and if not, which step of
//! DESIGN.md's validation order refuses it (chain, revocation, identity rule, registration,
//! device state, policy).

use crate::{Error, Hub};
use moat_pki::{IdentityRule, TrustedCa};
use moat_store::{ConnectionPolicy, DeviceState};
use serde::Serialize;
use time::OffsetDateTime;

/// How one step went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// The step passed.
    Pass,
    /// The step refused the certificate.
    Fail,
    /// Not reached, because an earlier step failed.
    Skipped,
}

/// One validation step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `chain`, `revocation`, `identity`, `registration`, `device_state`, `policy`.
    pub name: &'static str,
    /// Its outcome.
    pub outcome: StepOutcome,
    /// What was found.
    pub detail: String,
}

/// The verdict on a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Whether a device presenting it (with its key) would get in over mutual TLS.
    pub accepted: bool,
    /// The device identity, if the identity step was reached and passed.
    pub identity: Option<String>,
    /// Every step in order.
    pub steps: Vec<Step>,
}

const STEPS: [&str; 6] = [
    "chain",
    "revocation",
    "identity",
    "registration",
    "device_state",
    "policy",
];

impl Hub {
    /// Runs the acceptance checks on a certificate (PEM or DER, optionally with its chain)
    /// without connecting anything.
    pub async fn explain(&self, input: &[u8]) -> Result<Explanation, Error> {
        let mut chain = moat_pki::parse_cert_chain_pem(input)?;
        let leaf = chain.remove(0);
        let now = OffsetDateTime::now_utc();
        let mut steps = Vec::new();

        // 1. chain: the device CA first, then every registered CA.
        let (mut trusted, mut recs) = self.registered_cas().await?;
        trusted.insert(
            0,
            TrustedCa {
                name: self.device_ca.name.clone(),
                cert: self.device_ca.cert.clone(),
                intermediates: Vec::new(),
            },
        );
        let device_ca_rec = self
            .store()
            .ca(&self.device_ca.name)
            .await?
            .ok_or_else(|| Error::Internal("device CA record missing".into()))?;
        recs.insert(0, device_ca_rec);
        let ca = match moat_pki::verify_client_chain(&leaf, &chain, &trusted, now) {
            Ok(i) => {
                steps.push(pass("chain", format!("chains to CA {:?}", recs[i].name)));
                recs.swap_remove(i)
            }
            Err(e) => return Ok(finish(steps, "chain", e.to_string(), None)),
        };

        // 2. revocation
        let info = moat_pki::cert_info(&leaf)?;
        let rec = self
            .store()
            .cert_by_fingerprint(&info.fingerprint_sha256)
            .await?;
        if let Some(r) = rec.as_ref().filter(|r| r.revoked_at.is_some()) {
            let why = r.revocation_reason.as_deref().unwrap_or("unspecified");
            return Ok(finish(
                steps,
                "revocation",
                format!("serial {} is revoked ({why})", r.serial),
                None,
            ));
        }
        steps.push(pass(
            "revocation",
            format!("serial {} is not revoked", info.serial),
        ));

        // 3. identity
        let rule = IdentityRule::parse(&ca.identity_rule).unwrap_or(IdentityRule::Cn);
        let identity = match moat_pki::identity_of(&leaf, rule) {
            Ok(id) => id,
            Err(e) => return Ok(finish(steps, "identity", e.to_string(), None)),
        };
        steps.push(pass(
            "identity",
            format!(
                "{identity:?} by the {} rule of CA {:?}",
                rule.as_str(),
                ca.name
            ),
        ));

        // 4. registration
        let device = match self.store().device(&identity).await? {
            Some(d) if d.ca_name != ca.name => {
                return Ok(finish(
                    steps,
                    "registration",
                    format!(
                        "device {identity:?} is registered under CA {:?}, not {:?}",
                        d.ca_name, ca.name
                    ),
                    Some(identity),
                ));
            }
            Some(d) => {
                steps.push(pass(
                    "registration",
                    format!("device {identity:?} is registered"),
                ));
                Some(d)
            }
            None if ca.auto_register => {
                steps.push(pass(
                    "registration",
                    format!(
                        "device {identity:?} would be auto-registered by CA {:?}",
                        ca.name
                    ),
                ));
                None
            }
            None => {
                return Ok(finish(
                    steps,
                    "registration",
                    format!("no device {identity:?} is registered"),
                    Some(identity),
                ));
            }
        };

        // 5. device state
        match device.as_ref().map(|d| d.state) {
            Some(DeviceState::Disabled) => {
                return Ok(finish(
                    steps,
                    "device_state",
                    "device is disabled".into(),
                    Some(identity),
                ));
            }
            Some(DeviceState::Revoked) => {
                return Ok(finish(
                    steps,
                    "device_state",
                    "device is revoked".into(),
                    Some(identity),
                ));
            }
            _ => steps.push(pass("device_state", "device is active".into())),
        }

        // 6. policy: mutual TLS is allowed under every policy.
        let policy = device
            .map(|d| d.policy)
            .unwrap_or(ConnectionPolicy::DenyInsecure);
        steps.push(pass(
            "policy",
            format!("mutual TLS is allowed under {}", policy.as_str()),
        ));
        Ok(Explanation {
            accepted: true,
            identity: Some(identity),
            steps,
        })
    }
}

fn pass(name: &'static str, detail: String) -> Step {
    Step {
        name,
        outcome: StepOutcome::Pass,
        detail,
    }
}

fn finish(
    mut steps: Vec<Step>,
    failed: &'static str,
    detail: String,
    identity: Option<String>,
) -> Explanation {
    steps.push(Step {
        name: failed,
        outcome: StepOutcome::Fail,
        detail,
    });
    let after = STEPS.iter().skip_while(|s| **s != failed).skip(1);
    steps.extend(after.map(|name| Step {
        name,
        outcome: StepOutcome::Skipped,
        detail: String::new(),
    }));
    Explanation {
        accepted: false,
        identity,
        steps,
    }
}
