//! `moat cert explain`: would the hub accept this certificate over mutual TLS, and if not,
//! which step of DESIGN.md's validation order refuses it. The steps are the hub's own
//! ([`CertificateCheck`]), so explain says what every entry point does.

use crate::{CertificateCheck, Denial, STEPS};
use crate::{Error, Hub};
use serde::Serialize;

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
    /// `validity`, `chain`, `revocation`, `identity`, `registration`, `device_state`,
    /// `policy`.
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

impl Hub {
    /// Runs the acceptance checks on a certificate (PEM or DER, optionally with its chain)
    /// without connecting anything: the hub's own [`CertificateCheck`], on a chain nobody
    /// verified (so the chain is verified against the CAs trusted now).
    pub async fn explain(&self, input: &[u8]) -> Result<Explanation, Error> {
        let chain = moat_pki::parse_cert_chain_pem(input)?;
        let checked = match CertificateCheck::unverified(&chain).run(self).await {
            Ok(c) => c,
            Err(Denial::Unavailable(e)) => return Err(*e),
            Err(d) => {
                let step = d.step();
                // Report the steps before the failing one as passed.
                let steps = STEPS
                    .iter()
                    .take_while(|s| **s != step)
                    .map(|name| pass(name, String::new()))
                    .collect();
                return Ok(refused(steps, step, d.to_string(), None));
            }
        };
        let ca = &checked.ca;
        let info = &checked.info;
        let mut steps = vec![
            pass(
                "validity",
                format!("valid from {} to {}", info.not_before, info.not_after),
            ),
            pass("chain", format!("chains to CA {:?}", ca.name)),
            pass(
                "revocation",
                format!("serial {} is not revoked", info.serial),
            ),
            pass(
                "identity",
                format!(
                    "{:?} by the {} rule of CA {:?}",
                    checked.identity, ca.identity_rule, ca.name
                ),
            ),
        ];
        let (registration, policy) = match &checked.device {
            Some(d) => (
                format!("device {:?} is registered", d.id),
                d.policy.as_str(),
            ),
            None => (
                format!(
                    "device {:?} would be auto-registered by CA {:?}",
                    checked.identity, ca.name
                ),
                "deny_insecure",
            ),
        };
        steps.push(pass("registration", registration));
        steps.push(pass("device_state", "device is active".into()));
        steps.push(pass(
            "policy",
            format!("mutual TLS is allowed under {policy}"),
        ));
        Ok(Explanation {
            accepted: true,
            identity: Some(checked.identity),
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

fn refused(
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
