//! Gateways: identities that relay the signed messages of devices without IP (LoRa, BLE,
//! serial…) to the hub, and the devices each may relay for.
//!
//! A gateway is an identity of kind [`IdentityKind::Gateway`]: a device row with a
//! certificate from the one issuance pipeline (`create_device`), so admission at CONNECT,
//! revocation, disabling and the session kicks that follow them treat it like any device. Its
//! topic access is fixed: it publishes and subscribes under `gateways/{name}/#` only
//! ([`gateway_acl`]), whatever group or policy it is given. What it may relay is a list of
//! allowances (a device, an MQTT group, an enrollment group), read from the registry for every
//! relayed message (`relay.rs`), so a change applies to the next message on every node.

use crate::access::TopicAcl;
use crate::{
    Actor, CreateDevice, CreatedDevice, Credential, Error, Event, Hub, validate_device_id,
};
use moat_pki::RevocationReason;
use moat_store::{AllowanceKind, Device, GatewayAllowance, IdentityAccess, IdentityKind};
use time::OffsetDateTime;

/// The topic tree of gateway `name`: `gateways/{name}`.
pub fn gateway_root(name: &str) -> String {
    format!("gateways/{name}")
}

/// A gateway's topic access: publish and subscribe under `gateways/{name}/#`, nothing else.
pub fn gateway_acl(name: &str) -> TopicAcl {
    let filter = format!("{}/#", gateway_root(name));
    TopicAcl {
        publish: vec![filter.clone()],
        subscribe: vec![filter],
    }
}

/// A gateway and what it may relay for.
#[derive(Clone, Debug)]
pub struct Gateway {
    /// Its identity (device row: state, CA, creation).
    pub device: Device,
    /// Its allowances, by kind then name.
    pub allowances: Vec<GatewayAllowance>,
}

impl Hub {
    /// Creates a gateway `name` with a certificate from the one issuance pipeline (a
    /// hub-generated key, a CSR's key, or a registered CA's certificate), mutual TLS only.
    pub async fn create_gateway(
        &self,
        name: &str,
        credential: Credential,
        actor: &Actor,
    ) -> Result<CreatedDevice, Error> {
        validate_device_id(name)?;
        let created = self
            .create_device(
                CreateDevice {
                    id: name.to_string(),
                    credential,
                    allow_insecure: false,
                },
                actor,
            )
            .await?;
        let result = async {
            self.store()
                .put_identity_access(&IdentityAccess {
                    device_id: name.to_string(),
                    kind: IdentityKind::Gateway,
                    group: None,
                    policy: None,
                })
                .await?;
            // Admitted a moment ago with a device's access? It reconnects as a gateway.
            self.emit(Event::AccessChanged {
                device_id: name.to_string(),
            });
            Ok(())
        }
        .await;
        self.audited(actor, "gateway.create", Some(name), result)
            .await?;
        Ok(created)
    }

    /// The kind of identity `id` (a device when it has no access row).
    pub(crate) async fn identity_kind(&self, id: &str) -> Result<IdentityKind, Error> {
        Ok(self
            .access_row(id)
            .await?
            .map_or(IdentityKind::Device, |a| a.kind))
    }

    /// Gateway `name`'s identity; NotFound if there is no identity of kind gateway by that
    /// name.
    async fn gateway_device(&self, name: &str) -> Result<Device, Error> {
        let not_found = || Error::NotFound {
            kind: "gateway",
            id: name.to_string(),
        };
        if validate_device_id(name).is_err() {
            return Err(not_found());
        }
        match self.store().identity_access(name).await? {
            Some(a) if a.kind == IdentityKind::Gateway => {}
            _ => return Err(not_found()),
        }
        self.store().device(name).await?.ok_or_else(not_found)
    }

    /// One gateway with its allowances.
    pub async fn gateway(&self, name: &str) -> Result<Gateway, Error> {
        let device = self.gateway_device(name).await?;
        let allowances = self.store().gateway_allowances(name).await?;
        Ok(Gateway { device, allowances })
    }

    /// Every gateway, by name.
    pub async fn list_gateways(&self) -> Result<Vec<Gateway>, Error> {
        let mut out = Vec::new();
        for name in self.store().gateway_ids().await? {
            // A gateway deleted as a device leaves its access row: skip it.
            let Some(device) = self.store().device(&name).await? else {
                continue;
            };
            let allowances = self.store().gateway_allowances(&name).await?;
            out.push(Gateway { device, allowances });
        }
        Ok(out)
    }

    /// Lets gateway `name` relay for a device, the devices of an MQTT group, or the devices an
    /// enrollment group provisioned. A device must exist and be a device (not an application
    /// or a gateway); an enrollment group must exist; an MQTT group is any name (it exists as
    /// its members' group). Giving it twice is not an error.
    pub async fn allow_gateway(
        &self,
        name: &str,
        kind: AllowanceKind,
        target: &str,
        actor: &Actor,
    ) -> Result<Gateway, Error> {
        let result = async {
            self.gateway_device(name).await?;
            validate_device_id(target).map_err(|_| {
                Error::Invalid(format!(
                    "{} {target:?} may only contain letters, digits, '.', '_', ':' and '-'",
                    kind.as_str().replace('_', " ")
                ))
            })?;
            match kind {
                AllowanceKind::Device => {
                    self.device(target).await?;
                    let found = self.identity_kind(target).await?;
                    if found != IdentityKind::Device {
                        return Err(Error::Invalid(format!(
                            "{target:?} is {} identity, not a device: gateways relay for devices only",
                            match found {
                                IdentityKind::App => "an application",
                                _ => "a gateway",
                            }
                        )));
                    }
                }
                AllowanceKind::EnrollmentGroup => {
                    let groups = self.store().enrollment_groups().await?;
                    if !groups.iter().any(|g| g.name == target) {
                        return Err(Error::NotFound {
                            kind: "enrollment group",
                            id: target.to_string(),
                        });
                    }
                }
                AllowanceKind::Group => {}
            }
            self.store()
                .put_gateway_allowance(&GatewayAllowance {
                    gateway: name.to_string(),
                    kind,
                    name: target.to_string(),
                    created_at: OffsetDateTime::now_utc(),
                })
                .await?;
            self.gateway(name).await
        }
        .await;
        let detail = format!("{} {target}", kind.as_str());
        self.audited_detail(actor, "gateway.allow", name, Some(detail), result)
            .await
    }

    /// Withdraws an allowance; NotFound if the gateway had none such. Messages it relays from
    /// now on for devices no other allowance covers are refused.
    pub async fn disallow_gateway(
        &self,
        name: &str,
        kind: AllowanceKind,
        target: &str,
        actor: &Actor,
    ) -> Result<Gateway, Error> {
        let result = async {
            self.gateway_device(name).await?;
            if !self
                .store()
                .delete_gateway_allowance(name, kind, target)
                .await?
            {
                return Err(Error::NotFound {
                    kind: "gateway allowance",
                    id: format!("{name}: {} {target}", kind.as_str()),
                });
            }
            self.gateway(name).await
        }
        .await;
        let detail = format!("{} {target}", kind.as_str());
        self.audited_detail(actor, "gateway.disallow", name, Some(detail), result)
            .await
    }

    /// Revokes a gateway and its certificates (as `revoke_device`): its sessions are closed
    /// on every node and it can no longer connect. The devices it relayed for are untouched.
    pub async fn revoke_gateway(
        &self,
        name: &str,
        reason: RevocationReason,
        actor: &Actor,
    ) -> Result<Vec<String>, Error> {
        if let Err(e) = self.gateway_device(name).await {
            return self
                .audited(actor, "gateway.revoke", Some(name), Err(e))
                .await;
        }
        let revoked = self.revoke_device(name, reason, actor).await?;
        self.audited(actor, "gateway.revoke", Some(name), Ok(revoked))
            .await
    }
}
