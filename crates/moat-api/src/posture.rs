//! `GET /api/v1/posture`: the security posture audit ([`moat_core::Hub::posture`]) with what
//! the running hub observed ([`PostureSource`]).

use crate::AppState;
use crate::problem::{ApiError, Problem};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use moat_core::{Finding, Observations, PostureOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// What only the running hub knows, and the configured audit options.
pub trait PostureSource: Send + Sync + std::fmt::Debug {
    /// Connections without mutual TLS, revoked certificates presented.
    fn observations(&self) -> Observations;
    /// The configured options (minimum firmware counters, windows).
    fn options(&self) -> PostureOptions;
    /// Findings per severity of the hub's last periodic audit, if one has run.
    fn last_run(&self) -> Option<PostureSummary> {
        None
    }
}

/// Findings per severity of a posture audit run.
#[derive(Clone, Debug)]
pub struct PostureSummary {
    /// When the run finished.
    pub at: time::OffsetDateTime,
    /// Findings per severity (`low` … `critical`).
    pub by_severity: BTreeMap<String, u64>,
}

/// Overrides of the configured windows.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct PostureQuery {
    /// Certificates and CAs expiring within this many days are findings.
    within_days: Option<u32>,
    /// Possible clones of this many past days are findings.
    clone_window_days: Option<u32>,
}

/// One finding.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FindingView {
    /// The check (insecure_policy, insecure_connection, certificate_expiring, ca_expiring,
    /// revoked_certificate_presented, possible_clone, firmware_below_minimum, weak_ca_key,
    /// shared_key_pair, never_seen).
    pub check: String,
    /// low, medium, high or critical.
    pub severity: String,
    /// Device id, `CA/serial` or CA name.
    pub subject: String,
    /// What was seen.
    pub detail: String,
    /// What to do.
    pub action: String,
}

impl From<&Finding> for FindingView {
    fn from(f: &Finding) -> Self {
        FindingView {
            check: f.check.into(),
            severity: f.severity.as_str().into(),
            subject: f.subject.clone(),
            detail: f.detail.clone(),
            action: f.action.clone(),
        }
    }
}

/// The audit's result.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostureReport {
    /// RFC 3339.
    pub generated_at: String,
    /// Findings per severity.
    pub counts: BTreeMap<String, u64>,
    /// Worst first.
    pub findings: Vec<FindingView>,
}

/// Run the security posture audit.
#[utoipa::path(get, path = "/api/v1/posture", params(PostureQuery), tag = "posture",
    responses((status = 200, body = PostureReport), (status = 400, body = Problem)))]
pub(crate) async fn posture(
    State(s): State<AppState>,
    Query(q): Query<PostureQuery>,
) -> Result<Json<PostureReport>, ApiError> {
    Ok(Json(report(&s, q.within_days, q.clone_window_days).await?))
}

/// Runs the audit with the hub's options, windows overridden when given (days).
pub(crate) async fn report(
    s: &AppState,
    within_days: Option<u32>,
    clone_window_days: Option<u32>,
) -> Result<PostureReport, ApiError> {
    let (obs, mut opts) = match &s.posture {
        Some(p) => (p.observations(), p.options()),
        None => (Observations::default(), PostureOptions::default()),
    };
    for (days, field) in [
        (within_days, &mut opts.expiring_within),
        (clone_window_days, &mut opts.clone_window),
    ] {
        if let Some(d) = days {
            if d > 3650 {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-request",
                    "Bad Request",
                    "a window is at most 3650 days",
                )
                .into());
            }
            *field = time::Duration::days(i64::from(d));
        }
    }
    let findings = s.hub.posture(&obs, &opts).await?;
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.severity.as_str().to_string()).or_default() += 1;
    }
    Ok(PostureReport {
        generated_at: crate::dto::rfc3339(time::OffsetDateTime::now_utc()),
        counts,
        findings: findings.iter().map(FindingView::from).collect(),
    })
}
