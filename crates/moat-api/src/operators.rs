//! `/api/v1/operators`: operator accounts with a role (admin only; see `auth.rs`).

use crate::AppState;
use crate::problem::{ApiError, Problem};
use crate::routes::ApiJson;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use moat_core::{Actor, Operator, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Create an operator account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperatorRequest {
    /// Login name: 1–64 of `A-Z a-z 0-9 . _ : -`.
    pub name: String,
    /// `read-only`, `operator` or `admin`.
    pub role: String,
}

/// An operator account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperatorView {
    /// Login name.
    pub name: String,
    /// `read-only`, `operator` or `admin`.
    pub role: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Operator> for OperatorView {
    fn from(o: &Operator) -> Self {
        OperatorView {
            name: o.name.clone(),
            role: o.role.as_str().into(),
            created_at: crate::dto::rfc3339(o.created_at),
        }
    }
}

/// A created account; `token` is shown this once (the hub keeps its hash).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateOperatorResponse {
    /// The account.
    pub operator: OperatorView,
    /// Its bearer token.
    pub token: String,
}

/// Create an operator account.
#[utoipa::path(post, path = "/api/v1/operators", request_body = CreateOperatorRequest, tag = "operators",
    responses((status = 201, body = CreateOperatorResponse), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_operator(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(req): ApiJson<CreateOperatorRequest>,
) -> Result<(StatusCode, Json<CreateOperatorResponse>), ApiError> {
    let role = Role::parse(&req.role).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Bad Request",
            format!("role {:?}: use read-only, operator or admin", req.role),
        )
    })?;
    let (op, token) = s.hub.create_operator(&req.name, role, &actor).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateOperatorResponse {
            operator: OperatorView::from(&op),
            token: token.expose().to_string(),
        }),
    ))
}

/// The operator accounts, by name.
#[utoipa::path(get, path = "/api/v1/operators", tag = "operators",
    responses((status = 200, body = [OperatorView]), (status = 403, body = Problem)))]
pub(crate) async fn list_operators(
    State(s): State<AppState>,
) -> Result<Json<Vec<OperatorView>>, ApiError> {
    Ok(Json(
        s.hub
            .operators()
            .await?
            .iter()
            .map(OperatorView::from)
            .collect(),
    ))
}

/// Delete an operator account (its token stops working at once).
#[utoipa::path(delete, path = "/api/v1/operators/{name}", tag = "operators",
    params(("name" = String, Path, description = "Login name")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_operator(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.hub.delete_operator(&name, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
