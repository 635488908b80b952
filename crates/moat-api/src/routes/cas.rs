//! `/api/v1/cas`.

use super::ApiJson;
use crate::AppState;
use crate::dto::{CaView, RegisterCaRequest, RegistrationCodeResponse};
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use moat_core::{Actor, IdentityRule, RegisterCa};

/// List CAs: the hub's own and the registered ones.
#[utoipa::path(get, path = "/api/v1/cas", tag = "cas", responses((status = 200, body = [CaView])))]
pub(crate) async fn list_cas(State(s): State<AppState>) -> Result<Json<Vec<CaView>>, ApiError> {
    Ok(Json(
        s.hub.list_cas().await?.iter().map(CaView::from).collect(),
    ))
}

/// The CA bundle devices install to trust the hub (PEM).
#[utoipa::path(get, path = "/api/v1/cas/bundle", tag = "cas",
    responses((status = 200, content_type = "application/pem-certificate-chain", body = String)))]
pub(crate) async fn ca_bundle(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        s.hub.ca_bundle_pem(),
    )
}

/// A one-time registration code for proving possession of a CA key.
#[utoipa::path(post, path = "/api/v1/cas/registration-code", tag = "cas",
    responses((status = 201, body = RegistrationCodeResponse)))]
pub(crate) async fn registration_code(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
) -> Result<(StatusCode, Json<RegistrationCodeResponse>), ApiError> {
    let code = s.hub.registration_code(&actor).await?;
    let expires = time::OffsetDateTime::now_utc() + s.hub.config().registration_code_ttl;
    Ok((
        StatusCode::CREATED,
        Json(RegistrationCodeResponse {
            code: code.expose().to_string(),
            expires_at: expires
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }),
    ))
}

/// Register a third-party CA with proof of possession.
#[utoipa::path(post, path = "/api/v1/cas", tag = "cas", request_body = RegisterCaRequest,
    responses((status = 201, body = CaView), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn register_ca(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterCaRequest>,
) -> Result<(StatusCode, Json<CaView>), ApiError> {
    let identity = match req.identity.as_deref() {
        None => IdentityRule::Cn,
        Some(r) => IdentityRule::parse(r).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Bad Request",
                format!("unknown identity rule {r:?}; use cn, san-dns or san-uri"),
            )
        })?,
    };
    let ca = s
        .hub
        .register_ca(
            RegisterCa {
                name: req.name,
                cert: req.cert.into_bytes(),
                verification_cert: req.verification_cert.into_bytes(),
                identity,
                auto_register: req.auto_register,
            },
            &actor,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(CaView::from(&ca))))
}

/// Remove a registered CA.
#[utoipa::path(delete, path = "/api/v1/cas/{name}", tag = "cas",
    params(("name" = String, Path, description = "CA name")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn remove_ca(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.hub.remove_ca(&name, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
