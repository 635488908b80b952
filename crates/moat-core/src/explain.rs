//! `moat cert explain`: would the hub accept this certificate over mutual TLS, and if not,
//! which step of DESIGN.md's validation order refuses it. Steps 2–5 are the MQTT hub's own
//! ([`Hub::check_leaf`]).

use crate::admission::Denial;
use crate::{Error, Hub};
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
        let mut cas = self.client_cas().await?;
        let trusted = crate::admission::trust_anchors(&cas);
        let ca = match moat_pki::verify_client_chain(&leaf, &chain, &trusted, now) {
            Ok(i) => cas.swap_remove(i),
            Err(e) => return Ok(refused(Vec::new(), "chain", e.to_string(), None)),
        };
        let mut steps = vec![pass("chain", format!("chains to CA {:?}", ca.name))];
        let check = match self.check_leaf(&leaf, &ca).await {
            Ok(c) => c,
            Err(Denial::Unavailable(e)) => return Err(e),
            Err(d) => {
                let step = d.step();
                // Report the steps before the failing one as passed.
                for name in STEPS.iter().skip(1).take_while(|s| **s != step) {
                    steps.push(pass(name, String::new()));
                }
                return Ok(refused(steps, step, d.to_string(), None));
            }
        };
        steps.push(pass(
            "revocation",
            format!("serial {} is not revoked", check.serial),
        ));
        steps.push(pass(
            "identity",
            format!(
                "{:?} by the {} rule of CA {:?}",
                check.identity, ca.identity_rule, ca.name
            ),
        ));
        let (registration, policy) = match &check.device {
            Some(d) => (
                format!("device {:?} is registered", d.id),
                d.policy.as_str(),
            ),
            None => (
                format!(
                    "device {:?} would be auto-registered by CA {:?}",
                    check.identity, ca.name
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
            identity: Some(check.identity),
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
