//! `/api/v1/certificates` and `/api/v1/crls`.

use super::ApiJson;
use crate::AppState;
use crate::dto::{CertView, CrlView, ExplainRequest, ExplainResponse, RevokeRequest, StepView};
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use moat_core::{Actor, StepOutcome};
use serde::Deserialize;

/// Certificate list filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct CertFilter {
    /// Only this device's certificates.
    device: Option<String>,
    /// At most this many (default 100, max 1000).
    limit: Option<u32>,
    /// Instead: live device certificates expiring within this many days, soonest first.
    expiring_within_days: Option<u32>,
}

/// List certificates, newest first (or those about to expire, soonest first).
#[utoipa::path(get, path = "/api/v1/certificates", params(CertFilter), tag = "certificates",
    responses((status = 200, body = [CertView])))]
pub(crate) async fn list_certs(
    State(s): State<AppState>,
    Query(f): Query<CertFilter>,
) -> Result<Json<Vec<CertView>>, ApiError> {
    let limit = f.limit.unwrap_or(100);
    let certs = match f.expiring_within_days {
        Some(days) => {
            s.hub
                .expiring_certs(time::Duration::days(i64::from(days)), limit)
                .await?
        }
        None => s.hub.list_certs(f.device.as_deref(), limit).await?,
    };
    Ok(Json(certs.iter().map(CertView::from).collect()))
}

/// Show a certificate by serial.
#[utoipa::path(get, path = "/api/v1/certificates/{serial}", tag = "certificates",
    params(("serial" = String, Path, description = "Serial, hex")),
    responses((status = 200, body = CertView), (status = 404, body = Problem)))]
pub(crate) async fn show_cert(
    State(s): State<AppState>,
    Path(serial): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    let cert = s.hub.cert(&serial).await?;
    Ok(Json(CertView {
        pem: Some(moat_pki::pem_of_cert(&cert.der)),
        ..CertView::from(&cert)
    }))
}

/// Replace the hub's TLS server certificate and key now. Every listener (admin API, MQTT)
/// serves the new one to new connections; established connections are not dropped.
#[utoipa::path(post, path = "/api/v1/server/rotate", tag = "certificates",
    responses((status = 200, body = CertView)))]
pub(crate) async fn rotate_server_cert(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
) -> Result<Json<CertView>, ApiError> {
    let identity = s.hub.rotate_server_identity(&actor).await?;
    let serial = identity.serial()?;
    Ok(Json(CertView::from(&s.hub.cert(&serial).await?)))
}

/// Revoke a certificate; republishes its CA's CRL.
#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revoke", tag = "certificates",
    request_body = RevokeRequest,
    params(("serial" = String, Path, description = "Serial, hex")),
    responses((status = 200, body = CertView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn revoke_cert(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(serial): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<CertView>, ApiError> {
    let req: RevokeRequest = super::optional_json(&body)?;
    let reason = super::parse_reason(req.reason.as_deref())?;
    Ok(Json(CertView::from(
        &s.hub.revoke_cert(&serial, reason, &actor).await?,
    )))
}

/// Would the hub accept this certificate over mutual TLS, and if not, which step refuses it.
#[utoipa::path(post, path = "/api/v1/certificates/explain", tag = "certificates",
    request_body = ExplainRequest,
    responses((status = 200, body = ExplainResponse), (status = 422, body = Problem)))]
pub(crate) async fn explain_cert(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ExplainRequest>,
) -> Result<Json<ExplainResponse>, ApiError> {
    let e = s.hub.explain(req.cert.as_bytes()).await?;
    Ok(Json(ExplainResponse {
        accepted: e.accepted,
        identity: e.identity,
        steps: e
            .steps
            .into_iter()
            .map(|st| StepView {
                name: st.name.to_string(),
                outcome: match st.outcome {
                    StepOutcome::Pass => "pass",
                    StepOutcome::Fail => "fail",
                    StepOutcome::Skipped => "skipped",
                }
                .to_string(),
                detail: st.detail,
            })
            .collect(),
    }))
}

/// The current CRL of a hub CA.
#[utoipa::path(get, path = "/api/v1/crls/{ca}", tag = "certificates",
    params(("ca" = String, Path, description = "CA name (`devices`, `root`)")),
    responses((status = 200, body = CrlView), (status = 404, body = Problem)))]
pub(crate) async fn show_crl(
    State(s): State<AppState>,
    Path(ca): Path<String>,
) -> Result<Json<CrlView>, ApiError> {
    let crl = s.hub.crl(&ca).await?;
    Ok(Json(CrlView {
        ca: crl.ca_name,
        number: crl.number,
        this_update: fmt(crl.this_update),
        next_update: fmt(crl.next_update),
        crl_pem: moat_pki::pem_of_crl(&crl.der),
    }))
}

fn fmt(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
