//! `/api/v1/info`, `/api/v1/audit`, `/api/openapi.json`.

use crate::AppState;
use crate::dto::{AuditView, HubInfo};
use crate::problem::ApiError;
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::OpenApi;

/// Facts about the hub.
#[utoipa::path(get, path = "/api/v1/info", tag = "hub", responses((status = 200, body = HubInfo)))]
pub(crate) async fn info(State(s): State<AppState>) -> Json<HubInfo> {
    Json(HubInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        store: s.hub.backends().0.to_string(),
        vault: s.hub.backends().1.to_string(),
        ca_bundle_pem: s.hub.ca_bundle_pem(),
    })
}

/// Audit paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct AuditPage {
    /// Entries with ids below this one.
    before: Option<i64>,
    /// At most this many (default 100, max 1000).
    limit: Option<u32>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditPage), tag = "hub",
    responses((status = 200, body = [AuditView])))]
pub(crate) async fn audit_log(
    State(s): State<AppState>,
    Query(p): Query<AuditPage>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let entries = s.hub.audit_log(p.before, p.limit.unwrap_or(100)).await?;
    Ok(Json(entries.iter().map(AuditView::from).collect()))
}

/// The OpenAPI document of this API.
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::ApiDoc::openapi())
}
