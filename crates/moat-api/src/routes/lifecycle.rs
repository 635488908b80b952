//! `/api/v1/devices/{id}/…` lifecycle routes: ownership (claim, transfer), suspension,
//! decommissioning, certificate rotation and the device's live certificates.

use super::ApiJson;
use crate::AppState;
use crate::dto::{CertView, DeviceView};
use crate::dto_lifecycle::{
    ClaimRequest, DecommissionResponse, RotateResponse, StatusRequest, TransferRequest,
};
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use moat_core::Actor;

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Claim an unowned device for an organisation (409 if another owner holds it).
#[utoipa::path(post, path = "/api/v1/devices/{id}/claim", tag = "devices", request_body = ClaimRequest,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn claim_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<DeviceView>, ApiError> {
    let d = s.hub.claim_device(&id, &req.owner, &actor).await?;
    Ok(Json(DeviceView::from(&d)))
}

/// Transfer a device to another owner (with `from`: only from that owner).
#[utoipa::path(post, path = "/api/v1/devices/{id}/transfer", tag = "devices", request_body = TransferRequest,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn transfer_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<Json<DeviceView>, ApiError> {
    let d = s
        .hub
        .transfer_device(&id, &req.to, req.from.as_deref(), &actor)
        .await?;
    Ok(Json(DeviceView::from(&d)))
}

/// Suspend a device: connections refused, live sessions closed, certificates kept.
#[utoipa::path(post, path = "/api/v1/devices/{id}/suspend", tag = "devices", request_body = StatusRequest,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn suspend_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<DeviceView>, ApiError> {
    let req: StatusRequest = super::optional_json(&body)?;
    let d = s
        .hub
        .suspend_device(&id, req.reason.as_deref(), &actor)
        .await?;
    Ok(Json(DeviceView::from(&d)))
}

/// Resume a suspended device (409 for any other).
#[utoipa::path(post, path = "/api/v1/devices/{id}/resume", tag = "devices", request_body = StatusRequest,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn resume_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<DeviceView>, ApiError> {
    let req: StatusRequest = super::optional_json(&body)?;
    let d = s
        .hub
        .resume_device(&id, req.reason.as_deref(), &actor)
        .await?;
    Ok(Json(DeviceView::from(&d)))
}

/// Decommission a device, finally: every certificate revoked, its factory serial retired
/// (never enrolls again), every connection refused.
#[utoipa::path(post, path = "/api/v1/devices/{id}/decommission", tag = "devices", request_body = StatusRequest,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DecommissionResponse), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn decommission_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<DecommissionResponse>, ApiError> {
    let req: StatusRequest = super::optional_json(&body)?;
    let (d, serials) = s
        .hub
        .decommission_device(&id, req.reason.as_deref(), &actor)
        .await?;
    Ok(Json(DecommissionResponse {
        device: DeviceView::from(&d),
        revoked_serials: serials,
    }))
}

/// Issue a fresh certificate on a new hub-generated key for a hub-keyed device; the
/// previous certificates retire after the rotation overlap. The key is in this response
/// only.
#[utoipa::path(post, path = "/api/v1/devices/{id}/rotate", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = RotateResponse), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn rotate_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RotateResponse>, ApiError> {
    let r = s.hub.rotate_device(&id, &actor).await?;
    let key = r.created.private_key_pem.as_ref().ok_or_else(|| {
        Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
            "rotation returned no key",
        )
    })?;
    Ok(Json(RotateResponse {
        device: DeviceView::from(&r.created.device),
        certificate: CertView::from(&r.created.certificate),
        certificate_pem: r.created.chain_pem.clone(),
        private_key_pem: key.expose().to_string(),
        superseded: r.superseded,
        retire_at: r.retire_at.map(rfc3339),
    }))
}

/// The device's live certificates (unrevoked, unexpired; retiring ones with their retire
/// time), newest first.
#[utoipa::path(get, path = "/api/v1/devices/{id}/certificates", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = [CertView]), (status = 404, body = Problem)))]
pub(crate) async fn live_device_certs(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<CertView>>, ApiError> {
    let certs = s.hub.live_certs(&id).await?;
    Ok(Json(certs.iter().map(CertView::from).collect()))
}
