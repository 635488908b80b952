//! The OpenAPI document, assembled from the handlers' annotations.

use crate::dto::*;
use crate::dto_gateways::*;
use crate::dto_lifecycle::*;
use crate::dto_ota::*;
use crate::problem::Problem;
use crate::routes::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The admin API's OpenAPI 3.1 document, served at `/api/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Moat admin API", description = "Devices, certificates, CAs, revocation, factory enrollment, field provisioning, firmware updates, gateways and audit of a Moat hub, and its EST (RFC 7030) and provisioning endpoints. Errors are RFC 9457 problem documents."),
    paths(
        info, audit_log,
        list_devices, create_device, show_device, disable_device, enable_device, revoke_device, delete_device,
        claim_device, transfer_device, suspend_device, resume_device, decommission_device, rotate_device,
        live_device_certs,
        list_certs, show_cert, revoke_cert, explain_cert, show_crl, rotate_server_cert,
        list_cas, ca_bundle, registration_code, register_ca, remove_ca,
        list_sessions, kick_session, cluster_status, forget_cluster_node,
        list_acl_policies, put_acl_policy, delete_acl_policy, set_group_policy, set_access, create_app,
        list_gateways, create_gateway, show_gateway, allow_gateway, disallow_gateway, revoke_gateway,
        add_allowlist, list_allowlist, reset_allowlist, create_station, list_stations, delete_station,
        crate::est::cacerts, crate::est::csrattrs, crate::est::simpleenroll,
        crate::est::simplereenroll, crate::est::serverkeygen,
        list_firmware_keys, add_firmware_key, generate_firmware_key, sign_firmware,
        list_firmware, upload_firmware, show_firmware, update_key,
        list_campaigns, create_campaign, show_campaign, campaign_devices,
        set_device_model,
        crate::provisioning::register, crate::provisioning::create_enrollment_group,
        crate::provisioning::list_enrollment_groups, crate::provisioning::delete_enrollment_group,
        crate::posture::posture, crate::operators::create_operator,
        crate::operators::list_operators, crate::operators::delete_operator,
        pause_campaign, resume_campaign, cancel_campaign,
    ),
    components(schemas(
        Problem, DeviceView, CertView, CreateDeviceRequest, CreateDeviceResponse, RevokeRequest,
        RevokeDeviceResponse, CaView, RegistrationCodeResponse, RegisterCaRequest, ExplainRequest,
        ExplainResponse, StepView, AuditView, CrlView, HubInfo, SessionView, ClusterView, ClusterNodeView,
        AclPolicyView, PutAclPolicyRequest, AccessRequest, AccessView, GroupPolicyRequest, CreateAppRequest,
        AllowlistUpload, AllowlistAdded, AllowlistView, CreateStationRequest, StationView, CreateStationResponse,
        FirmwareKeyView, AddFirmwareKeyRequest, GenerateFirmwareKeyRequest, FirmwareView, UpdateKeyView,
        CreateCampaignRequest, CampaignInfo, WaveView, CampaignDeviceView,
        crate::provisioning::ProvisionRequest, crate::provisioning::ProvisionResponse,
        crate::provisioning::MqttAssignment, crate::provisioning::CreateEnrollmentGroupRequest,
        crate::provisioning::EnrollmentGroupView, crate::posture::PostureReport,
        crate::posture::FindingView, crate::operators::CreateOperatorRequest,
        crate::operators::OperatorView, crate::operators::CreateOperatorResponse,
        DeviceModelRequest, DeviceModelView,
        ClaimRequest, TransferRequest, StatusRequest, DecommissionResponse, RotateResponse,
        CreateGatewayRequest, GatewayAllowRequest, GatewayView, AllowanceView,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
            // EST stations: HTTP Basic with the station name and token (or mutual TLS).
            components.add_security_scheme(
                "basic",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
            );
        }
    }
}
