//! The admin API router: one module per resource.

mod access;
mod cas;
mod certs;
mod cluster;
mod devices;
mod enrollment;
mod gateways;
mod lifecycle;
mod misc;
mod ota;
mod sessions;

use crate::AppState;
use crate::problem::Problem;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::handler::Handler;
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;

pub(crate) use access::*;
pub(crate) use cas::*;
pub(crate) use certs::*;
pub(crate) use cluster::*;
pub(crate) use devices::*;
pub(crate) use enrollment::*;
pub(crate) use gateways::*;
pub(crate) use lifecycle::*;
pub(crate) use misc::*;
pub(crate) use ota::*;
pub use sessions::SessionControl;
pub(crate) use sessions::*;

/// Largest admin request body (a CSR or certificate chain in JSON is a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Largest body of the firmware upload and sign routes (the OTA service enforces its own,
/// configurable, image size limit below this).
pub const MAX_IMAGE_BYTES: usize = 64 * 1024 * 1024;

/// The HTTPS router: the admin API (everything under `/api/v1` needs the admin bearer
/// token; `/api/openapi.json` is public) and EST under `/.well-known/est/` (its own
/// authentication: station or device certificates, station tokens).
pub fn admin_router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/info", get(info))
        .route("/devices", get(list_devices).post(create_device))
        .route("/devices/{id}", get(show_device).delete(delete_device))
        .route("/devices/{id}/disable", post(disable_device))
        .route("/devices/{id}/enable", post(enable_device))
        .route("/devices/{id}/revoke", post(revoke_device))
        .route("/devices/{id}/claim", post(claim_device))
        .route("/devices/{id}/transfer", post(transfer_device))
        .route("/devices/{id}/suspend", post(suspend_device))
        .route("/devices/{id}/resume", post(resume_device))
        .route("/devices/{id}/decommission", post(decommission_device))
        .route("/devices/{id}/rotate", post(rotate_device))
        .route("/devices/{id}/certificates", get(live_device_certs))
        .route("/certificates", get(list_certs))
        .route("/certificates/explain", post(explain_cert))
        .route("/certificates/{serial}", get(show_cert))
        .route("/certificates/{serial}/revoke", post(revoke_cert))
        .route("/cas", get(list_cas).post(register_ca))
        .route("/cas/registration-code", post(registration_code))
        .route("/cas/bundle", get(ca_bundle))
        .route("/cas/{name}", delete(remove_ca))
        .route("/crls/{ca}", get(show_crl))
        .route("/audit", get(audit_log))
        .route("/acl-policies", get(list_acl_policies))
        .route(
            "/acl-policies/{name}",
            axum::routing::put(put_acl_policy).delete(delete_acl_policy),
        )
        .route(
            "/groups/{group}/policy",
            axum::routing::put(set_group_policy),
        )
        .route("/devices/{id}/access", post(set_access))
        .route("/apps", post(create_app))
        .route("/gateways", get(list_gateways).post(create_gateway))
        .route("/gateways/{name}", get(show_gateway))
        .route("/gateways/{name}/allow", post(allow_gateway))
        .route("/gateways/{name}/disallow", post(disallow_gateway))
        .route("/gateways/{name}/revoke", post(revoke_gateway))
        .route("/server/rotate", post(rotate_server_cert))
        .route(
            "/firmware-keys",
            get(list_firmware_keys).post(add_firmware_key),
        )
        .route("/firmware-keys/generate", post(generate_firmware_key))
        .route(
            "/firmware-keys/{name}/sign",
            post(sign_firmware).layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES)),
        )
        .route(
            "/firmware",
            get(list_firmware).post(upload_firmware.layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES))),
        )
        .route("/firmware/{id}", get(show_firmware))
        .route("/ota/update-key", get(update_key))
        .route("/campaigns", get(list_campaigns).post(create_campaign))
        .route("/campaigns/{id}", get(show_campaign))
        .route("/campaigns/{id}/devices", get(campaign_devices))
        .route("/campaigns/{id}/pause", post(pause_campaign))
        .route("/campaigns/{id}/resume", post(resume_campaign))
        .route("/campaigns/{id}/cancel", post(cancel_campaign))
        .route("/posture", get(crate::posture::posture))
        .route(
            "/operators",
            get(crate::operators::list_operators).post(crate::operators::create_operator),
        )
        .route(
            "/operators/{name}",
            delete(crate::operators::delete_operator),
        )
        .route("/devices/{id}/model", axum::routing::put(set_device_model))
        .route("/cluster", get(cluster_status))
        .route("/cluster/nodes/{name}", delete(forget_cluster_node))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{client_id}/kick", post(kick_session))
        .route(
            "/allowlist",
            get(list_allowlist)
                .post(add_allowlist)
                .layer(DefaultBodyLimit::max(MAX_ALLOWLIST_BODY_BYTES)),
        )
        .route("/allowlist/{serial}/reset", post(reset_allowlist))
        .route("/stations", get(list_stations).post(create_station))
        .route("/stations/{name}", delete(delete_station))
        .route(
            "/enrollment-groups",
            get(crate::provisioning::list_enrollment_groups)
                .post(crate::provisioning::create_enrollment_group),
        )
        .route(
            "/enrollment-groups/{name}",
            delete(crate::provisioning::delete_enrollment_group),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_admin,
        ));
    let console = crate::console::router(state.clone());
    Router::new()
        .nest("/api/v1", v1)
        .nest("/console", console)
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/console") }),
        )
        .route("/api/openapi.json", get(openapi_json))
        .merge(crate::est::routes())
        .route(
            moat_provision_proto::REGISTER_PATH,
            post(crate::provisioning::register),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(crate::serve::request_id))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(
        axum::http::StatusCode::NOT_FOUND,
        "not-found",
        "Not Found",
        "no such API endpoint; see /api/openapi.json",
    )
}

/// `Json` whose rejections are problem documents.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let status = rej.status();
                Err(Problem::new(
                    status,
                    "bad-body",
                    "Bad Request Body",
                    rej.body_text(),
                ))
            }
        }
    }
}

/// An RFC 5280 reason name from a request (default `unspecified`).
pub(crate) fn parse_reason(s: Option<&str>) -> Result<moat_core::RevocationReason, Problem> {
    match s {
        None => Ok(moat_core::RevocationReason::Unspecified),
        Some(r) => moat_core::RevocationReason::parse(r).ok_or_else(|| {
            Problem::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid-request",
                "Bad Request",
                format!("unknown revocation reason {r:?}; use unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation or privilege_withdrawn"),
            )
        }),
    }
}

/// A JSON body that may be empty (then `T::default()`).
pub(crate) fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad-body",
            "Bad Request Body",
            format!("request body is not valid JSON for this endpoint: {e}"),
        )
    })
}
