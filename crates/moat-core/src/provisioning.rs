//! Field provisioning (like a cloud device provisioning service): a device that holds a
//! factory certificate — hub-issued over EST, or from a registered secure-element vendor CA —
//! asks over mutual TLS for its operational certificate and its hub assignment, in one round
//! trip. Enrollment groups decide what it gets.
//!
//! ```text
//!   client chain ─▶ CertificateCheck (valid now, trusted CA, not revoked or retired, a
//!        device's certificate, identity by the CA's rule, registered — or new under an
//!        auto-registering CA, then created here — and active)
//!     ─▶ enrollment group: most specific match of (CA, factory model)
//!     ─▶ hub: fixed (the group's, else the first configured) or hashed (SHA-256 of the id
//!        over the configured hubs: stable while the list is)
//!     ─▶ CSR checked (signature = possession of the key) ─▶ operational certificate (hub
//!        device CA, CN = device id) ─▶ one transaction: [device,] certificate, policy,
//!        group/ACL policy, assignment, audit ("device.provision", or "device.reprovision"
//!        saying from which hub to which)
//! ```
//!
//! Identity stays the device id: a device first known by a vendor certificate keeps that CA
//! as its registration CA, and its hub-issued operational certificates are accepted because
//! the registry records them for it (see `admission.rs`).

use crate::hub::cert_record;
use crate::issuance::{Grant, Holder, IssueError, Key, NewDevice};
use crate::{Actor, CertificateCheck, Denial, Error, Hub, validate_device_id};
use moat_store::{
    Allocation, Assignment, CaKind, CertSource, ConnectionPolicy, EnrollmentGroup, IdentityAccess,
    IdentityKind, ProvisioningWrite,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Why a provisioning call is refused. The text is the public reason (sent to the device
/// and audited); `moat-api` maps each variant to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionRefusal {
    /// No client certificate.
    #[error(
        "provisioning needs the device's factory or vendor certificate, presented over mutual TLS"
    )]
    NoClientCertificate,
    /// The certificate may not act as a device now ([`CertificateCheck`]'s refusal).
    #[error("the client certificate cannot provision: {0}")]
    Certificate(#[source] Denial),
    /// The CSR is not acceptable.
    #[error("bad CSR: {0}")]
    BadCsr(#[source] moat_pki::Error),
}

/// An enrollment group to create.
#[derive(Clone, Debug)]
pub struct CreateEnrollmentGroup {
    /// Its name.
    pub name: String,
    /// Only devices whose provisioning certificate this CA issued.
    pub ca_name: Option<String>,
    /// Only devices of this factory model.
    pub model: Option<String>,
    /// How the hub is chosen.
    pub allocation: Allocation,
    /// The hub of a fixed allocation (`mqtts://host:port`); None: the first configured hub.
    pub hub: Option<String>,
    /// The connection policy provisioned devices get.
    pub policy: ConnectionPolicy,
    /// The MQTT group they join.
    pub mqtt_group: Option<String>,
    /// The ACL policy they get as their own.
    pub acl_policy: Option<String>,
}

/// An MQTT endpoint a device is sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubEndpoint {
    /// `mqtts://host:port`.
    pub url: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HubEndpoint {
    /// Parses `mqtts://host:port` (port default 8883; IPv6 in brackets).
    pub fn parse(url: &str) -> Result<HubEndpoint, Error> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "hub endpoint {url:?}: {why} (expected mqtts://HOST[:PORT])"
            ))
        };
        let rest = url
            .strip_prefix("mqtts://")
            .ok_or_else(|| bad("the scheme must be mqtts (devices connect with mutual TLS)"))?;
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.len() > 253 {
            return Err(bad("only a host and a port are allowed"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(r) => {
                let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
                match after {
                    "" => (h, None),
                    a => (h, Some(a.strip_prefix(':').ok_or_else(|| bad("bad port"))?)),
                }
            }
            None => match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            },
        };
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(bad("empty or invalid host"));
        }
        let port = match port {
            None => 8883,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
        };
        let url = if host.contains(':') {
            format!("mqtts://[{host}]:{port}")
        } else {
            format!("mqtts://{host}:{port}")
        };
        Ok(HubEndpoint {
            url,
            host: host.to_string(),
            port,
        })
    }
}

/// A provisioned device's answer.
#[derive(Debug)]
pub struct Provisioned {
    /// The device.
    pub device_id: String,
    /// Its new operational certificate (issued by the hub's device CA).
    pub cert: CertificateDer<'static>,
    /// Where it connects.
    pub endpoint: HubEndpoint,
    /// The assignment as stored.
    pub assignment: Assignment,
    /// Its connection policy.
    pub policy: ConnectionPolicy,
    /// The hub it was assigned to before, when this provisioning moved it.
    pub moved_from: Option<String>,
}

/// Picks the hub for `device_id` among `hubs` (non-empty) by `group`.
pub fn allocate(
    device_id: &str,
    group: Option<&EnrollmentGroup>,
    hubs: &[String],
) -> Option<String> {
    match group {
        Some(g) if g.allocation == Allocation::Hashed => {
            if hubs.is_empty() {
                return None;
            }
            let h = Sha256::digest(device_id.as_bytes());
            let n = u64::from_be_bytes(h[..8].try_into().ok()?);
            let len = u64::try_from(hubs.len()).ok()?;
            let i = usize::try_from(n % len).ok()?;
            hubs.get(i).cloned()
        }
        Some(g) => g.hub.clone().or_else(|| hubs.first().cloned()),
        None => hubs.first().cloned(),
    }
}

/// The most specific group matching a device: CA and model both named beats one named beats
/// neither; ties go to the first name. `None` in a group matches anything.
pub fn matching_group<'g>(
    groups: &'g [EnrollmentGroup],
    ca_name: &str,
    model: Option<&str>,
) -> Option<&'g EnrollmentGroup> {
    groups
        .iter()
        .filter(|g| g.ca_name.as_deref().is_none_or(|c| c == ca_name))
        .filter(|g| g.model.as_deref().is_none_or(|m| Some(m) == model))
        .min_by_key(|g| {
            (
                std::cmp::Reverse(u8::from(g.ca_name.is_some()) + u8::from(g.model.is_some())),
                g.name.clone(),
            )
        })
}

impl Hub {
    /// Creates an enrollment group (audited).
    pub async fn create_enrollment_group(
        &self,
        req: CreateEnrollmentGroup,
        actor: &Actor,
    ) -> Result<EnrollmentGroup, Error> {
        let name = req.name.clone();
        let result = async {
            validate_device_id(&req.name)
                .map_err(|e| Error::Invalid(format!("enrollment group name: {e}")))?;
            if let Some(ca) = &req.ca_name {
                let known = self.store().list_cas().await?;
                if !known
                    .iter()
                    .any(|c| &c.name == ca && c.kind != CaKind::Root)
                {
                    return Err(Error::NotFound {
                        kind: "client CA",
                        id: ca.clone(),
                    });
                }
            }
            if let Some(m) = &req.model
                && (m.is_empty() || m.len() > crate::MAX_MODEL_LEN)
            {
                return Err(Error::Invalid(format!(
                    "model must be 1 to {} characters",
                    crate::MAX_MODEL_LEN
                )));
            }
            let hub = match (req.allocation, &req.hub) {
                (Allocation::Hashed, Some(_)) => {
                    return Err(Error::Invalid(
                        "a hashed allocation spreads devices over the configured hubs ([provisioning] hubs); an endpoint is for a fixed allocation".into(),
                    ));
                }
                (_, Some(h)) => Some(HubEndpoint::parse(h)?.url),
                (_, None) => None,
            };
            if let Some(g) = &req.mqtt_group {
                validate_device_id(g).map_err(|e| Error::Invalid(format!("group: {e}")))?;
            }
            if let Some(p) = &req.acl_policy {
                self.require_policy(p).await?;
            }
            let group = EnrollmentGroup {
                name: req.name,
                ca_name: req.ca_name,
                model: req.model,
                allocation: req.allocation,
                hub,
                policy: req.policy,
                mqtt_group: req.mqtt_group,
                acl_policy: req.acl_policy,
                created_at: OffsetDateTime::now_utc(),
            };
            self.store()
                .insert_enrollment_group(&group)
                .await
                .map_err(|e| match e {
                    moat_store::Error::Conflict(_) => Error::Conflict {
                        kind: "enrollment group",
                        id: group.name.clone(),
                    },
                    e => e.into(),
                })?;
            Ok(group)
        }
        .await;
        self.audited(actor, "enrollment_group.create", Some(&name), result)
            .await
    }

    /// All enrollment groups, by name.
    pub async fn enrollment_groups(&self) -> Result<Vec<EnrollmentGroup>, Error> {
        Ok(self.store().enrollment_groups().await?)
    }

    /// Deletes an enrollment group (audited). Devices it provisioned keep what they got.
    pub async fn delete_enrollment_group(&self, name: &str, actor: &Actor) -> Result<(), Error> {
        let result = self
            .store()
            .delete_enrollment_group(name)
            .await
            .map_err(|e| match e {
                moat_store::Error::NotFound(_) => Error::NotFound {
                    kind: "enrollment group",
                    id: name.into(),
                },
                e => e.into(),
            });
        self.audited(actor, "enrollment_group.delete", Some(name), result)
            .await
    }

    /// A device's hub assignment.
    pub async fn assignment(&self, device_id: &str) -> Result<Option<Assignment>, Error> {
        Ok(self.store().assignment(device_id).await?)
    }

    /// Provisions the device that presented `chain` (verified by the TLS handshake) with the
    /// key of `csr`. Every outcome is audited; a refusal stores nothing else.
    pub async fn provision(
        &self,
        client: CertificateCheck<'_>,
        csr: &[u8],
        peer: &str,
    ) -> Result<Provisioned, Error> {
        let mut actor = Actor(format!("unauthenticated@{peer}"));
        let result = self.provision_inner(client, csr, &mut actor).await;
        match result {
            Ok(p) => Ok(p),
            Err(e) => {
                let target = actor.0.strip_prefix("device:").map(str::to_owned);
                self.audited(&actor, "device.provision", target.as_deref(), Err(e))
                    .await
            }
        }
    }

    async fn provision_inner(
        &self,
        client: CertificateCheck<'_>,
        csr: &[u8],
        actor: &mut Actor,
    ) -> Result<Provisioned, Error> {
        let leaf = client
            .chain()
            .first()
            .ok_or(ProvisionRefusal::NoClientCertificate)?;
        let checked = client.run(self).await.map_err(|d| match d {
            Denial::Unavailable(e) => *e,
            d => ProvisionRefusal::Certificate(d).into(),
        })?;
        let now = OffsetDateTime::now_utc();
        let (ca, info, device_id) = (checked.ca, checked.info, checked.identity);
        *actor = Actor(format!("device:{device_id}"));
        // A new device of an auto-registering vendor CA is created with its provisioning.
        if checked.device.is_none() {
            validate_device_id(&device_id)
                .map_err(|e| ProvisionRefusal::Certificate(Denial::NoIdentity(e.to_string())))?;
        }
        let device = checked.device;
        let checked = moat_pki::check_csr(csr).map_err(ProvisionRefusal::BadCsr)?;

        let groups = self.store().enrollment_groups().await?;
        let model = device
            .as_ref()
            .and_then(|d| d.factory.as_ref())
            .and_then(|f| f.model.as_deref());
        let group = matching_group(&groups, &ca.name, model).cloned();
        let hub = allocate(&device_id, group.as_ref(), &self.cfg.provisioning_hubs)
            .ok_or_else(|| Error::Internal("no hub endpoints configured".into()))?;
        let endpoint = HubEndpoint::parse(&hub)?;
        let previous = self.store().assignment(&device_id).await?;
        let moved_from = previous
            .as_ref()
            .filter(|a| a.hub != endpoint.url)
            .map(|a| a.hub.clone());

        let create = device.is_none();
        let presented = if create {
            Some(cert_record(
                leaf,
                &ca.name,
                Some(&device_id),
                CertSource::Bound,
                now,
            )?)
        } else {
            None
        };
        let current_policy = device
            .as_ref()
            .map_or(ConnectionPolicy::DenyInsecure, |d| d.policy);
        let policy = group.as_ref().map_or(current_policy, |g| g.policy);
        let access = group
            .as_ref()
            .filter(|g| g.mqtt_group.is_some() || g.acl_policy.is_some())
            .map(|g| IdentityAccess {
                device_id: device_id.clone(),
                kind: IdentityKind::Device,
                group: g.mqtt_group.clone(),
                policy: g.acl_policy.clone(),
            });
        let action = if previous.is_some() {
            "device.reprovision"
        } else {
            "device.provision"
        };
        let group_name = group.as_ref().map(|g| g.name.clone());
        let note = format!(
            " (provisioned with {} of CA {}); hub {}{}; enrollment group {}",
            info.serial,
            ca.name,
            endpoint.url,
            moved_from
                .as_deref()
                .map(|f| format!(" (moved from {f})"))
                .unwrap_or_default(),
            group_name.as_deref().unwrap_or("none"),
        );
        let holder = match device {
            Some(d) => Holder::Existing(d),
            None => Holder::New(NewDevice::mutual_tls(
                ca.name.clone(),
                moat_store::Stage::Provisioned,
            )),
        };
        let grant = Grant {
            device_id: device_id.clone(),
            key: Key::Public(&checked.public_key),
            holder,
            presented,
            claim_serial: None,
            supersede: None,
            provisioning: Some(ProvisioningWrite {
                policy,
                access,
                assignment: Assignment {
                    device_id: device_id.clone(),
                    hub: endpoint.url.clone(),
                    enrollment_group: group_name,
                    provisioned_at: now,
                    provisions: 0,
                },
            }),
            actor: &*actor,
            action,
            target: device_id.clone(),
            note,
            now,
        };
        let issued = match self.issue(grant).await {
            Ok(issued) => issued,
            // Two first calls of an auto-registering device at once: the other one created it.
            Err(IssueError::Registry(moat_store::Error::Conflict(what))) if create => {
                return Err(Error::Conflict {
                    kind: "device",
                    id: format!("{device_id} ({what}); retry"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let assignment = issued
            .assignment
            .ok_or_else(|| Error::Internal("a provisioning wrote no assignment".into()))?;
        let cert = issued.cert;
        Ok(Provisioned {
            device_id,
            cert,
            endpoint,
            assignment,
            policy,
            moved_from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, ca: Option<&str>, model: Option<&str>) -> EnrollmentGroup {
        EnrollmentGroup {
            name: name.into(),
            ca_name: ca.map(Into::into),
            model: model.map(Into::into),
            allocation: Allocation::Fixed,
            hub: None,
            policy: ConnectionPolicy::DenyInsecure,
            mqtt_group: None,
            acl_policy: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn most_specific_group_wins() {
        let gs = vec![
            group("any", None, None),
            group("by-ca", Some("vendor"), None),
            group("by-both", Some("vendor"), Some("m1")),
            group("by-model", None, Some("m1")),
        ];
        let pick = |ca, m| matching_group(&gs, ca, m).map(|g| g.name.as_str());
        assert_eq!(pick("vendor", Some("m1")), Some("by-both"));
        assert_eq!(pick("vendor", Some("m2")), Some("by-ca"));
        assert_eq!(pick("devices", Some("m1")), Some("by-model"));
        assert_eq!(pick("devices", None), Some("any"));
        assert_eq!(matching_group(&gs[1..3], "devices", None), None);
    }

    #[test]
    fn hashed_allocation_is_stable_and_spreads() {
        let hubs: Vec<String> = (0..3).map(|i| format!("mqtts://hub{i}:8883")).collect();
        let mut g = group("g", None, None);
        g.allocation = Allocation::Hashed;
        let mut seen = std::collections::HashSet::new();
        for i in 0..100 {
            let id = format!("dev-{i}");
            let a = allocate(&id, Some(&g), &hubs).expect("allocated");
            assert_eq!(allocate(&id, Some(&g), &hubs).expect("allocated"), a);
            seen.insert(a);
        }
        assert_eq!(seen.len(), 3);
        g.allocation = Allocation::Fixed;
        assert_eq!(allocate("x", Some(&g), &hubs).expect("allocated"), hubs[0]);
        g.hub = Some("mqtts://other:8883".into());
        assert_eq!(
            allocate("x", Some(&g), &hubs).expect("allocated"),
            "mqtts://other:8883"
        );
        assert_eq!(allocate("x", None, &hubs).expect("allocated"), hubs[0]);
    }

    #[test]
    fn endpoints() {
        let e = HubEndpoint::parse("mqtts://hub.example.com:8884").expect("valid endpoint");
        assert_eq!((e.host.as_str(), e.port), ("hub.example.com", 8884));
        assert_eq!(
            HubEndpoint::parse("mqtts://h").expect("valid endpoint").url,
            "mqtts://h:8883"
        );
        let v6 = HubEndpoint::parse("mqtts://[::1]:9000").expect("valid endpoint");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        for bad in [
            "mqtt://h:1883",
            "mqtts://",
            "mqtts://h:0",
            "mqtts://h:x",
            "mqtts://u@h",
            "mqtts://h/p",
        ] {
            assert!(HubEndpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
