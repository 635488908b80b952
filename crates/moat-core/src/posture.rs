//! The security posture audit: the checks a cloud IoT security audit runs, on this fleet.
//! See [`CHECKS`] for their names.
//! Each finding names its check, a severity, the subject (device, certificate, CA), what was
//! seen and what to do. `moat audit posture`, `GET /api/v1/posture` and the
//! `moat_posture_findings` metric all come from [`Hub::posture`].
//!
//! Registry facts are read here; what only the running hub sees (connections made without
//! mutual TLS, revoked certificates presented at the TLS handshake) comes in as
//! [`Observations`] from the listeners.

use crate::{Error, Hub};
use moat_store::CaKind;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use time::{Duration, OffsetDateTime};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Low,
    /// Fix when convenient.
    Medium,
    /// Fix soon.
    High,
    /// Fix now: identities can be impersonated.
    Critical,
}

impl Severity {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The checks, by name (stable: metrics and scripts use them).
pub const CHECKS: [&str; 11] = [
    "insecure_policy",
    "insecure_connection",
    "certificate_expiring",
    "ca_expiring",
    "revoked_certificate_presented",
    "possible_clone",
    "firmware_below_minimum",
    "weak_ca_key",
    "shared_key_pair",
    "never_seen",
    "relay_refused",
];

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// One of [`CHECKS`].
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What it is about: a device id, `CA/serial`, a CA name.
    pub subject: String,
    /// What was seen.
    pub detail: String,
    /// What to do.
    pub action: String,
}

/// A device that connected without mutual TLS since the hub started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsecureUse {
    /// The device.
    pub device_id: String,
    /// `tls` (server TLS + token) or `plain`.
    pub mode: &'static str,
    /// Connections so far.
    pub connections: u64,
}

/// A revoked certificate presented at a TLS handshake since the hub started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedAttempt {
    /// The issuing CA's registry name.
    pub ca_name: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Handshakes refused.
    pub attempts: u64,
    /// The last one.
    pub last_at: OffsetDateTime,
}

/// What the running hub observed.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// Connections without mutual TLS, per device and mode.
    pub insecure: Vec<InsecureUse>,
    /// Revoked certificates presented.
    pub revoked_attempts: Vec<RevokedAttempt>,
}

/// What the audit looks for.
#[derive(Clone, Debug)]
pub struct PostureOptions {
    /// Certificates and CAs expiring within this are findings.
    pub expiring_within: Duration,
    /// Possible clones of this recent past are findings.
    pub clone_window: Duration,
    /// Lowest acceptable firmware security counter per model.
    pub min_security_counter: BTreeMap<String, u32>,
    /// Devices enrolled longer ago than this that never connected are findings.
    pub never_seen_after: Duration,
    /// At most this many findings per check.
    pub limit: u32,
}

impl Default for PostureOptions {
    fn default() -> Self {
        PostureOptions {
            expiring_within: Duration::days(30),
            clone_window: Duration::days(30),
            min_security_counter: BTreeMap::new(),
            never_seen_after: Duration::days(7),
            limit: 1000,
        }
    }
}

fn finding(
    check: &'static str,
    severity: Severity,
    subject: impl Into<String>,
    detail: impl Into<String>,
    action: impl Into<String>,
) -> Finding {
    Finding {
        check,
        severity,
        subject: subject.into(),
        detail: detail.into(),
        action: action.into(),
    }
}

fn date(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

impl Hub {
    /// Runs every check; findings sorted by severity (worst first), then check and subject.
    pub async fn posture(
        &self,
        obs: &Observations,
        opts: &PostureOptions,
    ) -> Result<Vec<Finding>, Error> {
        let now = OffsetDateTime::now_utc();
        let limit = opts.limit.max(1);
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut out = Vec::new();

        // Devices allowed to connect without mutual TLS, and those that actually did.
        let insecure = self.store().insecure_devices(limit).await?;
        for d in &insecure {
            out.push(finding(
                "insecure_policy",
                Severity::Medium,
                &d.id,
                "allowed to connect with a token over server TLS or plain TCP (policy allow_insecure)",
                "give it a certificate and make it mutual-TLS only (deny_insecure); tokens can be replayed and plain TCP is readable on the wire",
            ));
        }
        for u in obs.insecure.iter().take(cap) {
            let (severity, how) = match u.mode {
                "plain" => (
                    Severity::High,
                    "over plain TCP (token and traffic readable on the network)",
                ),
                _ => (
                    Severity::Medium,
                    "over server TLS with a token (no client certificate)",
                ),
            };
            out.push(finding(
                "insecure_connection",
                severity,
                &u.device_id,
                format!(
                    "connected {} time(s) {how} since the hub started",
                    u.connections
                ),
                "move the device to mutual TLS; then set it to deny_insecure",
            ));
        }

        // Certificates and CAs close to expiry.
        let until = now + opts.expiring_within;
        for c in self.store().expiring_certs(now, until, limit).await? {
            let left = c.not_after - now;
            let severity = if left <= Duration::days(7) {
                Severity::High
            } else {
                Severity::Medium
            };
            out.push(finding(
                "certificate_expiring",
                severity,
                format!("{}/{}", c.ca_name, c.serial),
                format!(
                    "certificate of {} expires {} ({} days left)",
                    c.device_id.as_deref().unwrap_or("?"),
                    date(c.not_after),
                    left.whole_days()
                ),
                "renew it: EST simplereenroll from the device, or moat device rotate for a hub-keyed device",
            ));
        }
        let cas = self.store().list_cas().await?;
        for ca in &cas {
            let Ok(info) = moat_pki::cert_info(&ca.cert_der) else {
                continue;
            };
            if info.not_after <= until {
                let expired = info.not_after <= now;
                out.push(finding(
                    "ca_expiring",
                    if expired || ca.kind != CaKind::Registered {
                        Severity::Critical
                    } else {
                        Severity::High
                    },
                    &ca.name,
                    format!(
                        "CA certificate {} {}",
                        if expired { "expired" } else { "expires" },
                        date(info.not_after)
                    ),
                    "plan the CA rollover now: every certificate it signed stops verifying when it expires",
                ));
            }
            match moat_pki::weak_key(&ca.cert_der) {
                Ok(Some(why)) => out.push(finding(
                    "weak_ca_key",
                    Severity::High,
                    &ca.name,
                    format!("CA key or signature is weak: {why}"),
                    "replace the CA with one on EC P-256/P-384 or RSA ≥ 2048 and re-issue its devices' certificates; then remove it (moat ca remove)",
                )),
                Ok(None) => {}
                Err(e) => tracing::warn!(ca = %ca.name, error = %e, "CA certificate does not parse"),
            }
        }

        // Revoked certificates that still try.
        for a in obs.revoked_attempts.iter().take(cap) {
            out.push(finding(
                "revoked_certificate_presented",
                Severity::High,
                format!("{}/{}", a.ca_name, a.serial),
                format!(
                    "revoked certificate presented {} time(s), last {}",
                    a.attempts,
                    date(a.last_at)
                ),
                "find what still holds it (a stolen credential or a device that missed its replacement); block its address if it is not yours",
            ));
        }

        // One identity connected from two places at once.
        let clones = self
            .store()
            .audit_by_action("mqtt.possible_clone", now - opts.clone_window, limit)
            .await?;
        let mut by_id: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
        for e in &clones {
            let id = e
                .actor
                .rsplit_once('@')
                .map_or(e.actor.as_str(), |(id, _)| id)
                .to_string();
            let entry = by_id.entry(id).or_default();
            entry.0 += 1;
            if let Some((_, ip)) = e.actor.rsplit_once('@') {
                entry.1.insert(ip.to_string());
            }
            if let Some(from) = e
                .detail
                .as_deref()
                .and_then(|d| d.split(" was connected from ").nth(1))
                .and_then(|d| d.split(',').next())
            {
                entry.1.insert(from.to_string());
            }
        }
        for (id, (n, addrs)) in by_id {
            out.push(finding(
                "possible_clone",
                if n >= 2 {
                    Severity::Critical
                } else {
                    Severity::High
                },
                &id,
                format!(
                    "connected from two places at once {n} time(s) in the last {} days ({})",
                    opts.clone_window.whole_days(),
                    addrs.into_iter().collect::<Vec<_>>().join(", ")
                ),
                "if only one device should hold this identity, revoke it (moat device revoke) and re-provision the genuine device",
            ));
        }

        // Gateways whose relayed messages were refused (forged, replayed, not theirs to relay,
        // from revoked or disabled devices), from the audit log of the recent past.
        let relays = self
            .store()
            .audit_by_action("gateway.relay", now - opts.clone_window, limit)
            .await?;
        let mut by_gateway: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for e in &relays {
            let gateway = e
                .actor
                .rsplit_once('@')
                .map_or(e.actor.as_str(), |(g, _)| g)
                .to_string();
            let why = e
                .detail
                .as_deref()
                .and_then(|d| d.split(':').next())
                .unwrap_or("refused")
                .to_string();
            *by_gateway
                .entry(gateway)
                .or_default()
                .entry(why)
                .or_default() += 1;
        }
        for (gateway, reasons) in by_gateway {
            let forged =
                reasons.contains_key("forged") || reasons.contains_key("unknown_certificate");
            let total: u64 = reasons.values().sum();
            out.push(finding(
                "relay_refused",
                if forged { Severity::High } else { Severity::Medium },
                &gateway,
                format!(
                    "{total} relayed message(s) refused in the last {} days ({})",
                    opts.clone_window.whole_days(),
                    reasons
                        .iter()
                        .map(|(r, n)| format!("{r} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                if forged {
                    "messages the gateway relayed were altered or not signed by the device they name: inspect the gateway (moat audit), revoke it if it is compromised (moat gateway revoke)"
                } else {
                    "check what the gateway relays and for whom: replays, devices it may not serve (moat gateway allow) or revoked devices still sending"
                },
            ));
        }

        // Firmware below the minimum security counter.
        for (model, min) in &opts.min_security_counter {
            for inv in self
                .store()
                .devices_below_counter(model, *min, limit)
                .await?
            {
                out.push(finding(
                    "firmware_below_minimum",
                    Severity::High,
                    &inv.device_id,
                    format!(
                        "runs {model} {} with security counter {} (minimum {min})",
                        inv.version, inv.security_counter
                    ),
                    "update it: moat campaign create --target devices:… with an image at or above the minimum",
                ));
            }
        }

        // One key pair in certificates of several devices.
        for k in self.store().shared_keys(limit).await? {
            out.push(finding(
                "shared_key_pair",
                Severity::Critical,
                format!("spki:{}", &k.spki_sha256[..k.spki_sha256.len().min(16)]),
                format!(
                    "the same key pair is in live certificates of {} devices: {}",
                    k.device_ids.len(),
                    k.device_ids.join(", ")
                ),
                "whoever holds the key can be any of them: revoke these certificates and give each device its own key",
            ));
        }

        // Enrolled (or provisioned) but never connected: a credential nobody uses yet.
        for d in self
            .store()
            .never_connected(now - opts.never_seen_after, limit)
            .await?
        {
            out.push(finding(
                "never_seen",
                Severity::Low,
                &d.id,
                format!(
                    "{} since {} and never connected",
                    d.stage.as_str(),
                    date(d.created_at)
                ),
                "check it was installed; a credential issued but never used is one nobody watches: decommission devices that will not ship",
            ));
        }

        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.check.cmp(b.check))
                .then(a.subject.cmp(&b.subject))
        });
        Ok(out)
    }
}
