//! `/api/v1/firmware-keys`, `/api/v1/firmware`, `/api/v1/ota/update-key`, `/api/v1/campaigns`.

use super::ApiJson;
use crate::AppState;
use crate::dto_ota::*;
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use moat_core::Actor;
use moat_ota::{CreateCampaign, Ota, SignRequest, Target, WaveSpec};
use serde::Deserialize;
use std::sync::Arc;

/// The OTA service, or a problem saying it is not running on this hub.
fn ota(s: &AppState) -> Result<&Arc<Ota>, ApiError> {
    s.ota.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ota-unavailable",
            "Service Unavailable",
            "firmware updates are not enabled on this hub",
        )
        .into()
    })
}

/// List firmware signing keys.
#[utoipa::path(get, path = "/api/v1/firmware-keys", tag = "firmware",
    responses((status = 200, body = [FirmwareKeyView])))]
pub(crate) async fn list_firmware_keys(
    State(s): State<AppState>,
) -> Result<Json<Vec<FirmwareKeyView>>, ApiError> {
    let keys = ota(&s)?.keys().await?;
    Ok(Json(keys.iter().map(FirmwareKeyView::from).collect()))
}

/// Register a public key images are verified against (they are signed offline).
#[utoipa::path(post, path = "/api/v1/firmware-keys", tag = "firmware", request_body = AddFirmwareKeyRequest,
    responses((status = 201, body = FirmwareKeyView), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn add_firmware_key(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<AddFirmwareKeyRequest>,
) -> Result<(StatusCode, Json<FirmwareKeyView>), ApiError> {
    let key = ota(&s)?
        .add_key(&req.name, req.public_key_pem.as_bytes(), &actor)
        .await?;
    Ok((StatusCode::CREATED, Json(FirmwareKeyView::from(&key))))
}

/// Generate a P-256 key held by the hub's vault (or PKCS#11 token).
#[utoipa::path(post, path = "/api/v1/firmware-keys/generate", tag = "firmware", request_body = GenerateFirmwareKeyRequest,
    responses((status = 201, body = FirmwareKeyView), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn generate_firmware_key(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<GenerateFirmwareKeyRequest>,
) -> Result<(StatusCode, Json<FirmwareKeyView>), ApiError> {
    let key = ota(&s)?.generate_key(&req.name, &actor).await?;
    Ok((StatusCode::CREATED, Json(FirmwareKeyView::from(&key))))
}

/// How to sign.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct SignParams {
    /// Image version, `MAJOR.MINOR.REVISION[+BUILD]`.
    version: String,
    /// Security counter (default 0).
    security_counter: Option<u32>,
    /// Header size in bytes (default 512, as `imgtool sign --header-size 0x200 --pad-header`).
    header_size: Option<u16>,
}

/// Sign a payload (the request body) into an MCUboot image with a hub-held key; the
/// answer is the image (`application/octet-stream`).
#[utoipa::path(post, path = "/api/v1/firmware-keys/{name}/sign", tag = "firmware", params(SignParams,
    ("name" = String, Path, description = "Key name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn sign_firmware(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(p): Query<SignParams>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req = SignRequest {
        key: name,
        version: p.version,
        security_counter: p.security_counter.unwrap_or(0),
        header_size: p.header_size.unwrap_or(0x200),
    };
    let image = ota(&s)?.sign(&req, &body, &actor).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], image))
}

/// List published images, newest first.
#[utoipa::path(get, path = "/api/v1/firmware", tag = "firmware",
    responses((status = 200, body = [FirmwareView])))]
pub(crate) async fn list_firmware(
    State(s): State<AppState>,
) -> Result<Json<Vec<FirmwareView>>, ApiError> {
    let list = ota(&s)?.list_firmware().await?;
    Ok(Json(list.iter().map(FirmwareView::from).collect()))
}

/// Upload parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct UploadParams {
    /// The device model the image is for.
    model: String,
}

/// Publish an image (the request body, MCUboot format): refused unless its signature
/// verifies with a registered key and its security counter is not below one already
/// published for the model.
#[utoipa::path(post, path = "/api/v1/firmware", tag = "firmware", params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FirmwareView), (status = 409, body = Problem),
              (status = 413, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn upload_firmware(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Query(p): Query<UploadParams>,
    body: Bytes,
) -> Result<(StatusCode, Json<FirmwareView>), ApiError> {
    let fw = ota(&s)?.upload(&p.model, &body, &actor).await?;
    Ok((StatusCode::CREATED, Json(FirmwareView::from(&fw))))
}

/// Show a published image.
#[utoipa::path(get, path = "/api/v1/firmware/{id}", tag = "firmware",
    params(("id" = String, Path, description = "Catalogue id")),
    responses((status = 200, body = FirmwareView), (status = 404, body = Problem)))]
pub(crate) async fn show_firmware(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FirmwareView>, ApiError> {
    Ok(Json(FirmwareView::from(&ota(&s)?.firmware(&id).await?)))
}

/// The public half of the hub's update key, which signs manifests.
#[utoipa::path(get, path = "/api/v1/ota/update-key", tag = "firmware",
    responses((status = 200, body = UpdateKeyView)))]
pub(crate) async fn update_key(State(s): State<AppState>) -> Result<Json<UpdateKeyView>, ApiError> {
    Ok(Json(UpdateKeyView {
        public_key_pem: ota(&s)?.update_key_pem(),
    }))
}

/// List campaigns, newest first.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns",
    responses((status = 200, body = [CampaignInfo])))]
pub(crate) async fn list_campaigns(
    State(s): State<AppState>,
) -> Result<Json<Vec<CampaignInfo>>, ApiError> {
    let list = ota(&s)?.campaigns().await?;
    Ok(Json(list.iter().map(CampaignInfo::from).collect()))
}

/// Create a campaign and notify its first wave.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "campaigns", request_body = CreateCampaignRequest,
    responses((status = 201, body = CampaignInfo), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn create_campaign(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateCampaignRequest>,
) -> Result<(StatusCode, Json<CampaignInfo>), ApiError> {
    let create = CreateCampaign {
        firmware_id: req.firmware,
        target: Target::parse(&req.target)?,
        waves: match req.waves.as_deref() {
            Some(w) => WaveSpec::parse_list(w)?,
            None => Vec::new(),
        },
        success_threshold: req.success_threshold.unwrap_or(100),
        abort_threshold: req.abort_threshold.unwrap_or(10),
    };
    let view = ota(&s)?.create_campaign(create, &actor).await?;
    Ok((StatusCode::CREATED, Json(CampaignInfo::from(&view))))
}

/// Show a campaign with per-wave progress.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignInfo), (status = 404, body = Problem)))]
pub(crate) async fn show_campaign(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignInfo>, ApiError> {
    Ok(Json(CampaignInfo::from(&ota(&s)?.campaign(&id).await?)))
}

/// The devices of a campaign and where each stands.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/devices", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = [CampaignDeviceView]), (status = 404, body = Problem)))]
pub(crate) async fn campaign_devices(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<CampaignDeviceView>>, ApiError> {
    let devices = ota(&s)?.campaign_devices(&id).await?;
    Ok(Json(devices.iter().map(CampaignDeviceView::from).collect()))
}

/// Set the model the registry holds for a device, so `model:M` campaigns target it before
/// it has reported one (what it reports wins afterwards).
#[utoipa::path(put, path = "/api/v1/devices/{id}/model", tag = "campaigns", request_body = DeviceModelRequest,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceModelView), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn set_device_model(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DeviceModelRequest>,
) -> Result<Json<DeviceModelView>, ApiError> {
    let ota = ota(&s)?;
    ota.set_device_model(&id, &req.model, &actor).await?;
    Ok(Json(DeviceModelView {
        model: ota.device_model(&id).await?,
        device_id: id,
    }))
}

/// Pause a campaign: no new wave starts; notified devices go on.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignInfo), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn pause_campaign(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignInfo>, ApiError> {
    let view = ota(&s)?.pause(&id, &actor).await?;
    Ok(Json(CampaignInfo::from(&view)))
}

/// Resume a paused campaign.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignInfo), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn resume_campaign(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignInfo>, ApiError> {
    let view = ota(&s)?.resume(&id, &actor).await?;
    Ok(Json(CampaignInfo::from(&view)))
}

/// Cancel a campaign for good.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/cancel", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignInfo), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn cancel_campaign(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignInfo>, ApiError> {
    let view = ota(&s)?.cancel(&id, &actor).await?;
    Ok(Json(CampaignInfo::from(&view)))
}
