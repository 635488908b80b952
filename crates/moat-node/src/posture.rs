//! The posture audit inside `moat serve`: what the listeners observed ([`HubPosture`], the
//! API's [`moat_api::PostureSource`]) and a periodic run whose counts the metrics expose
//! (`moat_posture_findings{check,severity}`).

use crate::mqtt::HubAuthority;
use moat_api::LiveClientVerifier;
use moat_core::{Hub, Observations, PostureOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The running hub's observations and the configured options.
#[derive(Debug)]
pub struct HubPosture {
    pub authority: Arc<HubAuthority>,
    pub verifier: Arc<LiveClientVerifier>,
    pub options: PostureOptions,
    /// What the periodic run found last.
    pub counts: Arc<PostureCounts>,
}

impl moat_api::PostureSource for HubPosture {
    fn observations(&self) -> Observations {
        Observations {
            insecure: self.authority.insecure_uses(),
            revoked_attempts: self.verifier.revoked_attempts(),
        }
    }

    fn options(&self) -> PostureOptions {
        self.options.clone()
    }

    fn last_run(&self) -> Option<moat_api::PostureSummary> {
        let at = (*self.counts.1.lock().unwrap_or_else(PoisonError::into_inner))?;
        let mut by_severity = BTreeMap::new();
        for (_, sev, n) in self.counts.snapshot() {
            *by_severity.entry(sev.to_string()).or_default() += n;
        }
        Some(moat_api::PostureSummary { at, by_severity })
    }
}

/// Findings of the last periodic run, per (check, severity).
#[derive(Debug, Default)]
pub struct PostureCounts(
    Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// When that run finished (None before the first).
    Mutex<Option<time::OffsetDateTime>>,
);

impl PostureCounts {
    /// (check, severity, findings); every check × severity, zeros included, once a run is done.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter().map(|((c, s), n)| (*c, *s, *n)).collect()
    }
}

/// Runs the audit every `interval` until `shutdown` (the first run right away).
pub async fn follow(
    hub: Arc<Hub>,
    source: Arc<HubPosture>,
    counts: Arc<PostureCounts>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    use moat_api::PostureSource;
    loop {
        match hub.posture(&source.observations(), &source.options()).await {
            Ok(findings) => {
                let mut m = BTreeMap::new();
                for check in moat_core::POSTURE_CHECKS {
                    for sev in ["low", "medium", "high", "critical"] {
                        m.insert((check, sev), 0);
                    }
                }
                for f in &findings {
                    *m.entry((f.check, f.severity.as_str())).or_default() += 1;
                }
                *counts.0.lock().unwrap_or_else(PoisonError::into_inner) = m;
                *counts.1.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(time::OffsetDateTime::now_utc());
            }
            Err(e) => tracing::warn!(error = %e, "posture audit failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
