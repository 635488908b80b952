//! `/api/v1/allowlist` and `/api/v1/stations`: what factory enrollment (EST) may enroll,
//! and who.

use super::ApiJson;
use crate::AppState;
use crate::dto::{
    AllowlistAdded, AllowlistUpload, AllowlistView, CreateStationRequest, CreateStationResponse,
    StationView,
};
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use moat_core::{Actor, CreateStation};
use serde::Deserialize;

/// Largest allow-list upload (100,000 lines of serial, MAC and model).
pub const MAX_ALLOWLIST_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Paging of the allow-list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct AllowlistPage {
    /// Return serials after this one.
    after: Option<String>,
    /// At most this many (default 100, max 1000).
    limit: Option<u32>,
}

/// Add serials to the allow-list (CSV; all or nothing).
#[utoipa::path(post, path = "/api/v1/allowlist", request_body = AllowlistUpload, tag = "enrollment",
    responses((status = 201, body = AllowlistAdded), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn add_allowlist(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<AllowlistUpload>,
) -> Result<(StatusCode, Json<AllowlistAdded>), ApiError> {
    let added = s.hub.add_allowlist(&req.csv, &actor).await?;
    Ok((StatusCode::CREATED, Json(AllowlistAdded { added })))
}

/// The allow-list, by serial.
#[utoipa::path(get, path = "/api/v1/allowlist", params(AllowlistPage), tag = "enrollment",
    responses((status = 200, body = [AllowlistView])))]
pub(crate) async fn list_allowlist(
    State(s): State<AppState>,
    Query(page): Query<AllowlistPage>,
) -> Result<Json<Vec<AllowlistView>>, ApiError> {
    let entries = s
        .hub
        .list_allowlist(page.after.as_deref(), page.limit.unwrap_or(100))
        .await?;
    Ok(Json(entries.iter().map(AllowlistView::from).collect()))
}

/// Allow an enrolled serial to enroll once more.
#[utoipa::path(post, path = "/api/v1/allowlist/{serial}/reset", tag = "enrollment",
    params(("serial" = String, Path, description = "Serial")),
    responses((status = 200, body = AllowlistView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn reset_allowlist(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(serial): Path<String>,
) -> Result<Json<AllowlistView>, ApiError> {
    let entry = s.hub.reset_allowlist(&serial, &actor).await?;
    Ok(Json(AllowlistView::from(&entry)))
}

/// Create a factory station: a hub-issued certificate and key, or an HTTP Basic token.
#[utoipa::path(post, path = "/api/v1/stations", request_body = CreateStationRequest, tag = "enrollment",
    responses((status = 201, body = CreateStationResponse), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_station(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateStationRequest>,
) -> Result<(StatusCode, Json<CreateStationResponse>), ApiError> {
    let created = s
        .hub
        .create_station(
            CreateStation {
                name: req.name,
                token: req.token,
            },
            &actor,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// List stations.
#[utoipa::path(get, path = "/api/v1/stations", tag = "enrollment",
    responses((status = 200, body = [StationView])))]
pub(crate) async fn list_stations(
    State(s): State<AppState>,
) -> Result<Json<Vec<StationView>>, ApiError> {
    Ok(Json(
        s.hub
            .list_stations()
            .await?
            .iter()
            .map(StationView::from)
            .collect(),
    ))
}

/// Delete a station (its certificate is revoked).
#[utoipa::path(delete, path = "/api/v1/stations/{name}", tag = "enrollment",
    params(("name" = String, Path, description = "Station name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_station(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.hub.delete_station(&name, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
