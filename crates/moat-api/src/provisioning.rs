//! Field provisioning on the hub's HTTPS listener: `POST /provisioning/v1/register` over
//! mutual TLS with the device's factory (or secure-element vendor) certificate; JSON in and
//! out. Decisions, signing, storage and audit are `moat-core`'s ([`moat_core::Hub::provision`]).
//! Also the admin routes for enrollment groups (`/api/v1/enrollment-groups`).
//!
//! Refusals are problem documents: 401 without a client certificate, 403 for a certificate
//! that cannot provision (station, revoked, expired, unknown device of a CA that does not
//! auto-register, device not active), 400 for a bad CSR. A certificate from a CA the hub
//! does not trust never gets this far: the TLS handshake refuses it. Refused calls count
//! per client certificate, calls without one per address (429 past the limit).

use crate::problem::{ApiError, Problem};
use crate::routes::ApiJson;
use crate::{AppState, TlsPeer};
use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use moat_core::{Actor, CreateEnrollmentGroup};
use moat_core::{Allocation, ConnectionPolicy, EnrollmentGroup};
pub use moat_provision_proto::{MqttAssignment, ProvisionRequest, ProvisionResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Provision: operational certificate and hub assignment, in one round trip.
#[utoipa::path(post, path = "/provisioning/v1/register", tag = "provisioning",
    security(()),
    request_body = ProvisionRequest,
    responses(
        (status = 200, body = ProvisionResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn register(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<TlsPeer>,
    ApiJson(req): ApiJson<ProvisionRequest>,
) -> Result<Json<ProvisionResponse>, ApiError> {
    let csr = moat_pki::pem_to_der(req.csr.as_bytes(), "CERTIFICATE REQUEST").map_err(|e| {
        ApiError::Problem(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Bad Request",
            format!("csr: {e}; send a PEM \"CERTIFICATE REQUEST\""),
        ))
    })?;
    // Refused calls are limited per client certificate (its own failures only: devices
    // behind one address do not lock each other out); calls without one, which no device
    // makes, per address with failed EST station logins.
    let addr = peer.addr.ip();
    let key: Option<[u8; 32]> = peer.chain.first().map(|c| Sha256::digest(c).into());
    let limited = match &key {
        Some(k) => s.est.by_certificate.is_limited(k),
        None => s.est.by_addr.is_limited(&addr),
    };
    if limited {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too Many Requests",
            "too many refused provisioning calls with this certificate or, without one, from this address; wait a minute",
        )
        .into());
    }
    let p = match s
        .hub
        .provision(peer.certificate_check(), &csr, &addr.to_string())
        .await
    {
        Ok(p) => p,
        Err(e) => {
            if e.is_client_error() {
                match &key {
                    Some(k) => s.est.by_certificate.record_failure(k),
                    None => s.est.by_addr.record_failure(&addr),
                }
            }
            return Err(e.into());
        }
    };
    Ok(Json(ProvisionResponse {
        certificate: moat_pki::pem_of_cert(&p.cert),
        chain: moat_pki::pem_of_cert(s.hub.device_ca_cert()),
        mqtt: MqttAssignment {
            url: p.endpoint.url,
            host: p.endpoint.host,
            port: p.endpoint.port,
            ca_bundle: s.hub.ca_bundle_pem(),
        },
        enrollment_group: p.assignment.enrollment_group,
        policy: p.policy.as_str().into(),
        provisions: p.assignment.provisions,
        moved_from: p.moved_from,
        device_id: p.device_id,
    }))
}

/// Create an enrollment group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentGroupRequest {
    /// Name.
    pub name: String,
    /// Only devices whose provisioning certificate this CA issued (`devices` = the hub's
    /// device CA, or a registered CA's name).
    pub ca: Option<String>,
    /// Only devices of this factory model (from the allow-list).
    pub model: Option<String>,
    /// `fixed` (default) or `hashed`.
    #[serde(default = "fixed")]
    #[schema(value_type = String)]
    pub allocation: Allocation,
    /// Hub of a fixed allocation, `mqtts://host:port` (default: the first configured hub).
    pub hub: Option<String>,
    /// `deny_insecure` (default) or `allow_insecure`.
    #[serde(default = "deny")]
    #[schema(value_type = String)]
    pub policy: ConnectionPolicy,
    /// MQTT group provisioned devices join.
    pub group: Option<String>,
    /// ACL policy provisioned devices get as their own.
    pub acl_policy: Option<String>,
}

fn fixed() -> Allocation {
    Allocation::Fixed
}

fn deny() -> ConnectionPolicy {
    ConnectionPolicy::DenyInsecure
}

/// An enrollment group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentGroupView {
    /// Name.
    pub name: String,
    /// CA it matches (any when absent).
    pub ca: Option<String>,
    /// Model it matches (any when absent).
    pub model: Option<String>,
    /// `fixed` or `hashed`.
    pub allocation: String,
    /// Hub of a fixed allocation (absent: the first configured hub).
    pub hub: Option<String>,
    /// Policy devices get.
    pub policy: String,
    /// Group devices join.
    pub group: Option<String>,
    /// ACL policy devices get.
    pub acl_policy: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&EnrollmentGroup> for EnrollmentGroupView {
    fn from(g: &EnrollmentGroup) -> Self {
        EnrollmentGroupView {
            name: g.name.clone(),
            ca: g.ca_name.clone(),
            model: g.model.clone(),
            allocation: g.allocation.as_str().into(),
            hub: g.hub.clone(),
            policy: g.policy.as_str().into(),
            group: g.mqtt_group.clone(),
            acl_policy: g.acl_policy.clone(),
            created_at: crate::dto::rfc3339(g.created_at),
        }
    }
}

/// Create an enrollment group.
#[utoipa::path(post, path = "/api/v1/enrollment-groups", request_body = CreateEnrollmentGroupRequest,
    tag = "provisioning",
    responses((status = 201, body = EnrollmentGroupView), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_enrollment_group(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateEnrollmentGroupRequest>,
) -> Result<(StatusCode, Json<EnrollmentGroupView>), ApiError> {
    let g = s
        .hub
        .create_enrollment_group(
            CreateEnrollmentGroup {
                name: req.name,
                ca_name: req.ca,
                model: req.model,
                allocation: req.allocation,
                hub: req.hub,
                policy: req.policy,
                mqtt_group: req.group,
                acl_policy: req.acl_policy,
            },
            &actor,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(EnrollmentGroupView::from(&g))))
}

/// The enrollment groups, by name.
#[utoipa::path(get, path = "/api/v1/enrollment-groups", tag = "provisioning",
    responses((status = 200, body = [EnrollmentGroupView])))]
pub(crate) async fn list_enrollment_groups(
    State(s): State<AppState>,
) -> Result<Json<Vec<EnrollmentGroupView>>, ApiError> {
    let groups = s.hub.enrollment_groups().await?;
    Ok(Json(groups.iter().map(EnrollmentGroupView::from).collect()))
}

/// Delete an enrollment group (devices it provisioned keep what they got).
#[utoipa::path(delete, path = "/api/v1/enrollment-groups/{name}", tag = "provisioning",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_enrollment_group(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.hub.delete_enrollment_group(&name, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
