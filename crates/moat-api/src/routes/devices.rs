//! `/api/v1/devices`.

use super::ApiJson;
use crate::AppState;
use crate::dto::{
    CreateDeviceRequest, CreateDeviceResponse, DeviceView, RevokeDeviceResponse, RevokeRequest,
};
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use moat_core::{Actor, CreateDevice, Credential};
use serde::Deserialize;

/// Paging of lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct DevicePage {
    /// Return devices with ids after this one.
    after: Option<String>,
    /// At most this many (default 100, max 1000).
    limit: Option<u32>,
    /// Only devices this organisation owns.
    owner: Option<String>,
}

/// List devices.
#[utoipa::path(get, path = "/api/v1/devices", params(DevicePage), tag = "devices",
    responses((status = 200, body = [DeviceView]), (status = 401, body = Problem)))]
pub(crate) async fn list_devices(
    State(s): State<AppState>,
    Query(page): Query<DevicePage>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let (after, limit) = (page.after.as_deref(), page.limit.unwrap_or(100));
    let devices = match &page.owner {
        Some(owner) => s.hub.list_devices_of_owner(owner, after, limit).await?,
        None => s.hub.list_devices(after, limit).await?,
    };
    Ok(Json(devices.iter().map(DeviceView::from).collect()))
}

/// What a create request asks to be issued: a CSR, a registered CA's certificate, or (neither)
/// a hub-generated key; both is refused.
pub(crate) fn credential_of(
    csr: Option<String>,
    cert: Option<String>,
) -> Result<Credential, ApiError> {
    Ok(match (csr, cert) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Bad Request",
                "give either csr or cert, not both",
            )
            .into());
        }
        (Some(csr), None) => Credential::Csr(csr.into_bytes()),
        (None, Some(cert)) => Credential::Cert(cert.into_bytes()),
        (None, None) => Credential::GenerateKey,
    })
}

/// Create a device (hub-generated key, CSR, or a registered CA's certificate).
#[utoipa::path(post, path = "/api/v1/devices", request_body = CreateDeviceRequest, tag = "devices",
    responses((status = 201, body = CreateDeviceResponse), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateDeviceRequest>,
) -> Result<(StatusCode, Json<CreateDeviceResponse>), ApiError> {
    let credential = credential_of(req.csr, req.cert)?;
    let created = s
        .hub
        .create_device(
            CreateDevice {
                id: req.id,
                credential,
                allow_insecure: req.allow_insecure,
            },
            &actor,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateDeviceResponse::from(created)),
    ))
}

/// Show a device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem)))]
pub(crate) async fn show_device(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    Ok(Json(DeviceView::from(&s.hub.device(&id).await?)))
}

/// Disable a device (its connections are refused until enabled).
#[utoipa::path(post, path = "/api/v1/devices/{id}/disable", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn disable_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    Ok(Json(DeviceView::from(
        &s.hub.disable_device(&id, &actor).await?,
    )))
}

/// Enable a disabled device.
#[utoipa::path(post, path = "/api/v1/devices/{id}/enable", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn enable_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    Ok(Json(DeviceView::from(
        &s.hub.enable_device(&id, &actor).await?,
    )))
}

/// Revoke a device and all its certificates; republishes the CRL.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices", request_body = RevokeRequest,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = RevokeDeviceResponse), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RevokeDeviceResponse>, ApiError> {
    let req: RevokeRequest = super::optional_json(&body)?;
    let reason = super::parse_reason(req.reason.as_deref())?;
    let serials = s.hub.revoke_device(&id, reason, &actor).await?;
    Ok(Json(RevokeDeviceResponse {
        device_id: id,
        revoked_serials: serials,
    }))
}

/// Delete a device (its certificates are revoked first).
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_device(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.hub.delete_device(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
