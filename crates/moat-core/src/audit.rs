//! The audit log: who did what, when, with which outcome. Every admin operation of [`Hub`]
//! records one entry, whether it succeeded or not.
//!
//! [`Hub`]: crate::Hub

use crate::{Error, Hub};
use moat_store::NewAuditEntry;
use time::OffsetDateTime;

/// Who performs an admin action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The hub itself (start-up, timers).
    pub fn system() -> Self {
        Actor("system".into())
    }
    /// The holder of the admin token.
    pub fn admin() -> Self {
        Actor("admin".into())
    }
}

impl Hub {
    /// Records the outcome of `action` on `target` and passes the result through (also for
    /// admin actions performed outside the core, such as a session kick). An audit
    /// write failure is logged but does not turn a done operation into a reported failure.
    pub async fn audited<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        let (outcome, detail) = match &result {
            Ok(_) => ("ok", None),
            Err(e) if e.is_client_error() => ("refused", Some(e.to_string())),
            Err(e) => ("error", Some(e.kind().to_string())),
        };
        self.append_audit(&actor.0, action, target, outcome, detail)
            .await;
        result
    }

    async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        detail: Option<String>,
    ) {
        let entry = NewAuditEntry {
            at: OffsetDateTime::now_utc(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.map(str::to_string),
            outcome: outcome.to_string(),
            detail,
        };
        if let Err(e) = self.store().append_audit(&entry).await {
            tracing::error!(error = %e, action, "audit log write failed");
        }
    }

    /// Records an admin action performed by another crate whose errors are not core errors
    /// (OTA): `outcome` is `ok`, `refused` (with the public reason as `detail`) or `error`
    /// (with the error's kind).
    pub async fn record_admin_action(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        detail: Option<String>,
    ) {
        self.append_audit(&actor.0, action, target, outcome, detail)
            .await;
    }

    /// Records a refused attempt that is not an admin operation (a failed admin login, later a
    /// refused device connection) so that `moat audit` shows it.
    pub async fn record_security_event(&self, actor: &str, action: &str, target: &str) {
        self.append_audit(actor, action, Some(target), "refused", None)
            .await;
    }

    /// Audit entries, newest first.
    pub async fn audit_log(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<moat_store::AuditEntry>, Error> {
        Ok(self
            .store()
            .list_audit(before, limit.clamp(1, 1000))
            .await?)
    }
}
