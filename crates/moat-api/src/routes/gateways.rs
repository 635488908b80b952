//! `/api/v1/gateways`: gateways of devices without IP and what they may relay for.

use super::ApiJson;
use crate::AppState;
use crate::dto::{CreateDeviceResponse, RevokeDeviceResponse, RevokeRequest};
use crate::dto_gateways::{CreateGatewayRequest, GatewayAllowRequest, GatewayView};
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use moat_core::{Actor, AllowanceKind};

/// List gateways with their allowances.
#[utoipa::path(get, path = "/api/v1/gateways", tag = "gateways",
    responses((status = 200, body = [GatewayView])))]
pub(crate) async fn list_gateways(
    State(s): State<AppState>,
) -> Result<Json<Vec<GatewayView>>, ApiError> {
    let all = s.hub.list_gateways().await?;
    Ok(Json(all.iter().map(GatewayView::from).collect()))
}

/// Create a gateway: an identity with a mutual-TLS certificate from the hub's issuance (or a
/// registered CA's), publishing and subscribing under `gateways/{name}/#` only.
#[utoipa::path(post, path = "/api/v1/gateways", tag = "gateways", request_body = CreateGatewayRequest,
    responses((status = 201, body = CreateDeviceResponse), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_gateway(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateGatewayRequest>,
) -> Result<(StatusCode, Json<CreateDeviceResponse>), ApiError> {
    let credential = super::devices::credential_of(req.csr, req.cert)?;
    let created = s.hub.create_gateway(&req.name, credential, &actor).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateDeviceResponse::from(created)),
    ))
}

/// Show a gateway and its allowances.
#[utoipa::path(get, path = "/api/v1/gateways/{name}", tag = "gateways",
    params(("name" = String, Path, description = "Gateway name")),
    responses((status = 200, body = GatewayView), (status = 404, body = Problem)))]
pub(crate) async fn show_gateway(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<GatewayView>, ApiError> {
    Ok(Json(GatewayView::from(&s.hub.gateway(&name).await?)))
}

/// The one allowance a request names.
fn allowance(req: GatewayAllowRequest) -> Result<(AllowanceKind, String), Problem> {
    match (req.device, req.group, req.enrollment_group) {
        (Some(d), None, None) => Ok((AllowanceKind::Device, d)),
        (None, Some(g), None) => Ok((AllowanceKind::Group, g)),
        (None, None, Some(e)) => Ok((AllowanceKind::EnrollmentGroup, e)),
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Bad Request",
            "give exactly one of device, group or enrollment_group",
        )),
    }
}

/// Let a gateway relay for a device, an MQTT group's devices or an enrollment group's devices.
#[utoipa::path(post, path = "/api/v1/gateways/{name}/allow", tag = "gateways", request_body = GatewayAllowRequest,
    params(("name" = String, Path, description = "Gateway name")),
    responses((status = 200, body = GatewayView), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn allow_gateway(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<GatewayAllowRequest>,
) -> Result<Json<GatewayView>, ApiError> {
    let (kind, target) = allowance(req)?;
    let g = s.hub.allow_gateway(&name, kind, &target, &actor).await?;
    Ok(Json(GatewayView::from(&g)))
}

/// Withdraw an allowance: the gateway's next messages for devices no other allowance covers
/// are refused.
#[utoipa::path(post, path = "/api/v1/gateways/{name}/disallow", tag = "gateways", request_body = GatewayAllowRequest,
    params(("name" = String, Path, description = "Gateway name")),
    responses((status = 200, body = GatewayView), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn disallow_gateway(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<GatewayAllowRequest>,
) -> Result<Json<GatewayView>, ApiError> {
    let (kind, target) = allowance(req)?;
    let g = s.hub.disallow_gateway(&name, kind, &target, &actor).await?;
    Ok(Json(GatewayView::from(&g)))
}

/// Revoke a gateway and its certificates: its sessions close on every node; the devices it
/// relayed for are untouched.
#[utoipa::path(post, path = "/api/v1/gateways/{name}/revoke", tag = "gateways", request_body = RevokeRequest,
    params(("name" = String, Path, description = "Gateway name")),
    responses((status = 200, body = RevokeDeviceResponse), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_gateway(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RevokeDeviceResponse>, ApiError> {
    let req: RevokeRequest = super::optional_json(&body)?;
    let reason = super::parse_reason(req.reason.as_deref())?;
    let serials = s.hub.revoke_gateway(&name, reason, &actor).await?;
    Ok(Json(RevokeDeviceResponse {
        device_id: name,
        revoked_serials: serials,
    }))
}
