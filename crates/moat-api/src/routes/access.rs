//! `/api/v1/acl-policies`, `/api/v1/groups/{group}/policy`, `/api/v1/devices/{id}/access`,
//! `/api/v1/apps`: topic access.

use super::ApiJson;
use crate::AppState;
use crate::dto::{
    AccessRequest, AccessView, AclPolicyView, CreateAppRequest, CreateDeviceResponse,
    GroupPolicyRequest, PutAclPolicyRequest,
};
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use moat_core::{AclPolicy, Actor, CreateApp};

fn view(p: AclPolicy) -> AclPolicyView {
    AclPolicyView {
        name: p.name,
        publish: p.publish,
        subscribe: p.subscribe,
    }
}

/// List ACL policies.
#[utoipa::path(get, path = "/api/v1/acl-policies", tag = "access", responses((status = 200, body = [AclPolicyView])))]
pub(crate) async fn list_acl_policies(
    State(s): State<AppState>,
) -> Result<Json<Vec<AclPolicyView>>, ApiError> {
    Ok(Json(
        s.hub.acl_policies().await?.into_iter().map(view).collect(),
    ))
}

/// Create or replace an ACL policy.
#[utoipa::path(put, path = "/api/v1/acl-policies/{name}", tag = "access", request_body = PutAclPolicyRequest,
    params(("name" = String, Path, description = "Policy name")),
    responses((status = 200, body = AclPolicyView), (status = 400, body = Problem)))]
pub(crate) async fn put_acl_policy(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutAclPolicyRequest>,
) -> Result<Json<AclPolicyView>, ApiError> {
    Ok(Json(view(
        s.hub
            .put_acl_policy(&name, req.publish, req.subscribe, &actor)
            .await?,
    )))
}

/// Delete an ACL policy.
#[utoipa::path(delete, path = "/api/v1/acl-policies/{name}", tag = "access",
    params(("name" = String, Path, description = "Policy name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_acl_policy(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.hub.delete_acl_policy(&name, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set or clear a group's policy.
#[utoipa::path(put, path = "/api/v1/groups/{group}/policy", tag = "access", request_body = GroupPolicyRequest,
    params(("group" = String, Path, description = "Group name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn set_group_policy(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(group): Path<String>,
    ApiJson(req): ApiJson<GroupPolicyRequest>,
) -> Result<StatusCode, ApiError> {
    s.hub
        .set_group_policy(&group, req.policy.as_deref(), &actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set an identity's group and/or policy; its live sessions are closed.
#[utoipa::path(post, path = "/api/v1/devices/{id}/access", tag = "access", request_body = AccessRequest,
    params(("id" = String, Path, description = "Device or application id")),
    responses((status = 200, body = AccessView), (status = 404, body = Problem)))]
pub(crate) async fn set_access(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AccessRequest>,
) -> Result<Json<AccessView>, ApiError> {
    let a = s
        .hub
        .set_identity_access(&id, req.group.as_deref(), req.policy.as_deref(), &actor)
        .await?;
    Ok(Json(AccessView {
        device_id: a.device_id,
        kind: a.kind.as_str().into(),
        group: a.group,
        policy: a.policy,
    }))
}

/// Create a backend application identity with its own policy.
#[utoipa::path(post, path = "/api/v1/apps", tag = "access", request_body = CreateAppRequest,
    responses((status = 201, body = CreateDeviceResponse), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_app(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<CreateDeviceResponse>), ApiError> {
    let created = s
        .hub
        .create_app(
            CreateApp {
                name: req.name,
                token: req.token,
                publish: req.publish,
                subscribe: req.subscribe,
            },
            &actor,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateDeviceResponse::from(created)),
    ))
}
