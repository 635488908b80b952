//! Device lifecycle and ownership, and certificate rotation.
//!
//! ```text
//!   allow-listed ─EST enroll─▶ enrolled ─provisioning─▶ provisioned ─first CONNECT─▶ active
//!   (admin-created and auto-registered devices start at enrolled)
//!   any of those ─suspend─▶ suspended ─resume─▶ back to its stage
//!   any but decommissioned ─decommission (or revoke)─▶ decommissioned   (final)
//! ```
//!
//! Two columns carry it: `stage` (how far commissioning got, [`Stage`]) and the device's
//! `state` (active / disabled / revoked), which every admission check already reads.
//! **Suspended is disabled** and **decommissioned is revoked**: `suspend`/`resume` are
//! `disable`/`enable` with a reason and strict transitions, and `decommission` is `revoke`
//! (reason cessationOfOperation) that also retires the factory serial. `revoke` retires the
//! serial too, so "decommissioned ⇒ the serial can never enroll again" holds whichever
//! command ended the device's life. [`moat_store::Device::lifecycle`] combines both columns.
//!
//! Every transition is audited with its actor and reason; an invalid one is an
//! [`Error::State`] (HTTP 409) that says what the device is.
//!
//! Rotation: a superseded certificate (EST re-enrollment, [`Hub::rotate_device`]) keeps
//! working for [`crate::CoreConfig::rotation_overlap`], then [`Hub::retire_superseded_certs`]
//! (a periodic sweep in `moat serve`) revokes it with reason superseded through the usual
//! revocation path (registry, CRL, live verifier). Admission and re-enrollment refuse it
//! from its retire time on, whether or not the sweep has run.

use crate::issuance::{Grant, Holder, Key};
use crate::{Actor, CreatedDevice, Error, Event, Hub, RevokedCertificate, Secret};
use moat_pki::RevocationReason;
use moat_store::{CertRecord, CertSource, Device, DeviceState, RetiredCert, Stage};
use time::OffsetDateTime;

/// Longest owner (organisation) name.
pub const MAX_OWNER_LEN: usize = 128;
/// Longest suspension or decommissioning reason.
pub const MAX_REASON_LEN: usize = 512;

/// What `rotate_device` returns: the new certificate and its key (shown this once, never
/// stored), and the certificates it supersedes with their retire time.
#[derive(Debug)]
pub struct RotatedDevice {
    /// The device, its new certificate, chain and key (`token` is always None).
    pub created: CreatedDevice,
    /// Serials of the certificates that now retire at `retire_at`.
    pub superseded: Vec<String>,
    /// When they retire (None: none to retire).
    pub retire_at: Option<OffsetDateTime>,
}

/// The ` (… retires at …)` note of an audit detail.
pub(crate) fn retire_note(at: Option<OffsetDateTime>) -> String {
    match at.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    }) {
        Some(t) => format!("; the old one retires at {t}"),
        None => "; the old one expires before the overlap ends".into(),
    }
}

/// `t` at the registry's precision (microseconds), so what is returned is what is stored.
pub(crate) fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

fn check_owner(owner: &str) -> Result<(), Error> {
    let ok = !owner.trim().is_empty()
        && owner.len() <= MAX_OWNER_LEN
        && !owner.chars().any(char::is_control);
    if !ok {
        return Err(Error::Invalid(format!(
            "owner must be 1 to {MAX_OWNER_LEN} printable characters"
        )));
    }
    Ok(())
}

fn check_reason(reason: Option<&str>) -> Result<Option<String>, Error> {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) if r.len() > MAX_REASON_LEN || r.chars().any(char::is_control) => {
            Err(Error::Invalid(format!(
                "reason must be at most {MAX_REASON_LEN} printable characters"
            )))
        }
        r => Ok(r.map(str::to_owned)),
    }
}

fn decommissioned(id: &str) -> Error {
    Error::State(format!(
        "device {id:?} is decommissioned; that is final (create or enroll a new device)"
    ))
}

impl Hub {
    /// Like [`Hub::audited`], with `detail` (the reason, the owners) recorded on success too.
    pub(crate) async fn audited_detail<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: Option<String>,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        if result.is_err() {
            return self.audited(actor, action, Some(target), result).await;
        }
        self.record_admin_action(actor, action, Some(target), "ok", detail)
            .await;
        result
    }

    /// Devices owned by `owner`, by id, after `after`, at most `limit` (1..=1000).
    pub async fn list_devices_of_owner(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Device>, Error> {
        Ok(self
            .store()
            .list_devices_by_owner(owner, after, limit.clamp(1, 1000))
            .await?)
    }

    /// Claims an unowned device for `owner`. Claiming it again for the same owner is a no-op;
    /// a device another owner holds is refused ([`Error::Held`], HTTP 409: transfer it).
    pub async fn claim_device(
        &self,
        id: &str,
        owner: &str,
        actor: &Actor,
    ) -> Result<Device, Error> {
        let result = async {
            check_owner(owner)?;
            let mut device = self.device(id).await?;
            if device.state == DeviceState::Revoked {
                return Err(decommissioned(id));
            }
            match device.owner.as_deref() {
                Some(o) if o == owner => return Ok(device),
                Some(o) => {
                    return Err(Error::Held(format!(
                        "device {id:?} is owned by {o:?}; its owner moves it with `moat device transfer {id} --to {owner:?}`"
                    )));
                }
                None => {}
            }
            let now = OffsetDateTime::now_utc();
            if !self
                .store()
                .set_device_owner(id, None, Some(owner), now)
                .await?
            {
                return Err(Error::Held(format!(
                    "device {id:?} was claimed by another owner just now"
                )));
            }
            device.owner = Some(owner.to_string());
            device.updated_at = now;
            Ok(device)
        }
        .await;
        if result.is_ok() {
            self.emit(Event::DeviceUpdated {
                device_id: id.to_string(),
            });
        }
        self.audited_detail(
            actor,
            "device.claim",
            id,
            Some(format!("owner {owner}")),
            result,
        )
        .await
    }

    /// Moves a device to owner `to`. With `from`, only if `from` owns it now (compare-and-set,
    /// 409 otherwise); without, from whoever owns it. An unowned device is claimed, not
    /// transferred.
    pub async fn transfer_device(
        &self,
        id: &str,
        to: &str,
        from: Option<&str>,
        actor: &Actor,
    ) -> Result<Device, Error> {
        let mut detail = None;
        let result = async {
            check_owner(to)?;
            let mut device = self.device(id).await?;
            if device.state == DeviceState::Revoked {
                return Err(decommissioned(id));
            }
            let Some(current) = device.owner.clone() else {
                return Err(Error::State(format!(
                    "device {id:?} has no owner; claim it: moat device claim {id} --owner {to}"
                )));
            };
            if let Some(f) = from
                && f != current
            {
                return Err(Error::Held(format!(
                    "device {id:?} is owned by {current:?}, not {f:?}"
                )));
            }
            detail = Some(format!("owner {current} -> {to}"));
            let now = OffsetDateTime::now_utc();
            if !self
                .store()
                .set_device_owner(id, Some(&current), Some(to), now)
                .await?
            {
                return Err(Error::Held(format!(
                    "device {id:?} changed owner just now; look at it again"
                )));
            }
            device.owner = Some(to.to_string());
            device.updated_at = now;
            Ok(device)
        }
        .await;
        if result.is_ok() {
            self.emit(Event::DeviceUpdated {
                device_id: id.to_string(),
            });
        }
        self.audited_detail(actor, "device.transfer", id, detail, result)
            .await
    }

    /// Suspends an active device (e.g. reported stolen): its connections are refused and
    /// its live sessions closed; its certificates stay valid. This is `disable` with a
    /// reason and a strict transition: only a device that is not suspended or decommissioned.
    pub async fn suspend_device(
        &self,
        id: &str,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Device, Error> {
        let result = async {
            let reason = check_reason(reason)?;
            let device = self.device(id).await?;
            match device.state {
                DeviceState::Revoked => return Err(decommissioned(id)),
                DeviceState::Disabled => {
                    return Err(Error::State(format!(
                        "device {id:?} is suspended already; resume it first to suspend it again"
                    )));
                }
                DeviceState::Active => {}
            }
            self.change_status(device, DeviceState::Disabled, reason)
                .await
        }
        .await;
        if result.is_ok() {
            self.emit(Event::DeviceDisabled {
                device_id: id.to_string(),
            });
        }
        let detail = reason.map(|r| format!("reason: {r}"));
        self.audited_detail(actor, "device.suspend", id, detail, result)
            .await
    }

    /// Resumes a suspended device: it may connect again, at the stage it had reached.
    /// Anything but a suspended device is refused (409).
    pub async fn resume_device(
        &self,
        id: &str,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Device, Error> {
        let result = async {
            check_reason(reason)?;
            let device = self.device(id).await?;
            match device.state {
                DeviceState::Revoked => return Err(decommissioned(id)),
                DeviceState::Active => {
                    return Err(Error::State(format!(
                        "device {id:?} is not suspended (it is {})",
                        device.lifecycle().as_str()
                    )));
                }
                DeviceState::Disabled => {}
            }
            self.change_status(device, DeviceState::Active, None).await
        }
        .await;
        if result.is_ok() {
            self.emit(Event::DeviceEnabled {
                device_id: id.to_string(),
            });
        }
        let detail = reason.map(|r| format!("reason: {r}"));
        self.audited_detail(actor, "device.resume", id, detail, result)
            .await
    }

    /// Compare-and-set of the state (and its reason) from the one `device` was read with.
    pub(crate) async fn change_status(
        &self,
        mut device: Device,
        to: DeviceState,
        reason: Option<String>,
    ) -> Result<Device, Error> {
        let now = OffsetDateTime::now_utc();
        if !self
            .store()
            .set_device_status(&device.id, device.state, to, reason.as_deref(), now)
            .await?
        {
            return Err(Error::State(format!(
                "device {:?} changed state meanwhile; look at it again",
                device.id
            )));
        }
        device.state = to;
        device.status_reason = reason;
        device.updated_at = now;
        Ok(device)
    }

    /// Decommissions a device, finally: every certificate it holds is revoked (reason
    /// cessationOfOperation; CRL republished, the live verifier updated and its sessions
    /// closed through [`Event::DeviceRevoked`]), its factory serial is retired so that it can
    /// never enroll again (not even after `moat allowlist reset`), and it refuses every
    /// connection. Returns the device and the serials revoked now. Decommissioning it again
    /// is refused (409), unless an earlier call was cut short (then this one finishes it).
    pub async fn decommission_device(
        &self,
        id: &str,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<(Device, Vec<String>), Error> {
        let result = async {
            let reason = check_reason(reason)?;
            let device = self.device(id).await?;
            // The steps (state, certificates, serial) are separate writes, each idempotent:
            // a decommissioning cut short by a registry failure is finished by the next
            // call; a finished one is refused.
            let device = if device.state == DeviceState::Revoked {
                if !self.decommission_unfinished(&device).await? {
                    return Err(decommissioned(id));
                }
                device
            } else {
                self.change_status(device, DeviceState::Revoked, reason)
                    .await?
            };
            let serials = self
                .revoke_device_certs(&device, RevocationReason::CessationOfOperation)
                .await?;
            Ok((device, serials))
        }
        .await;
        let detail = result.as_ref().ok().map(|(_, serials)| {
            format!(
                "{}certificates revoked: {}",
                reason.map(|r| format!("reason: {r}; ")).unwrap_or_default(),
                if serials.is_empty() {
                    "none".to_string()
                } else {
                    serials.join(" ")
                }
            )
        });
        self.audited_detail(actor, "device.decommission", id, detail, result)
            .await
    }

    /// Whether a revoked device still has an unrevoked certificate or an unretired serial.
    async fn decommission_unfinished(&self, device: &Device) -> Result<bool, Error> {
        let certs = self.store().list_certs(Some(&device.id), 1000).await?;
        if certs.iter().any(|c| c.revoked_at.is_none()) {
            return Ok(true);
        }
        Ok(match &device.factory {
            Some(f) => self
                .store()
                .allowlist_entry(&f.serial)
                .await?
                .is_some_and(|e| e.retired_at.is_none()),
            None => false,
        })
    }

    /// Revokes every live certificate of a device whose state is revoked already, emits
    /// [`Event::DeviceRevoked`], republishes the CRLs of the hub CAs that issued them and
    /// retires its factory serial.
    pub(crate) async fn revoke_device_certs(
        &self,
        device: &Device,
        reason: RevocationReason,
    ) -> Result<Vec<String>, Error> {
        let now = OffsetDateTime::now_utc();
        let revoked = self
            .store()
            .revoke_device_certs(&device.id, reason.as_str(), now)
            .await?;
        let certificates = revoked_certificates(revoked);
        let serials = certificates.iter().map(|c| c.serial.clone()).collect();
        self.emit(Event::DeviceRevoked {
            device_id: device.id.clone(),
            certificates: certificates.clone(),
        });
        self.publish_crls_of(&certificates).await?;
        if let Some(f) = &device.factory {
            match self.store().retire_allowlist_serial(&f.serial, now).await {
                // Not on the allow-list (any more): nothing can enroll it anyway.
                Ok(_) | Err(moat_store::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(serials)
    }

    /// Republishes the CRL of every hub CA that issued one of `revoked` (a device registered
    /// through a vendor CA may hold the hub's operational certificates too).
    pub(crate) async fn publish_crls_of(
        &self,
        revoked: &[RevokedCertificate],
    ) -> Result<(), Error> {
        let mut cas: Vec<&str> = revoked.iter().map(|c| c.ca_name.as_str()).collect();
        cas.dedup();
        for ca in cas.into_iter().filter(|ca| self.is_hub_ca(ca)) {
            self.publish_crl(ca, &Actor::system()).await?;
        }
        Ok(())
    }

    /// Records that field provisioning assigned `id` (stage → provisioned, also for an
    /// active device that is re-provisioned: it becomes active again at its next CONNECT),
    /// audited as `device.provision` with `detail` (e.g. the assigned hub). A suspended or
    /// decommissioned device is refused (409). (The provisioning endpoint sets the stage in
    /// its own transaction, with its own audit entry.)
    pub async fn mark_provisioned(
        &self,
        id: &str,
        detail: Option<String>,
        actor: &Actor,
    ) -> Result<Device, Error> {
        let result = self.set_stage_checked(id, Stage::Provisioned).await;
        self.audited_detail(actor, "device.provision", id, detail, result)
            .await
    }

    /// Sets the stage of an active (not suspended, not decommissioned) device.
    async fn set_stage_checked(&self, id: &str, stage: Stage) -> Result<Device, Error> {
        let mut device = self.device(id).await?;
        match device.state {
            DeviceState::Revoked => return Err(decommissioned(id)),
            DeviceState::Disabled => {
                return Err(Error::State(format!(
                    "device {id:?} is suspended; resume it first"
                )));
            }
            DeviceState::Active => {}
        }
        let now = OffsetDateTime::now_utc();
        if self.store().set_device_stage(id, stage, now).await? {
            device.stage = stage;
            device.updated_at = now;
            self.emit(Event::DeviceUpdated {
                device_id: id.to_string(),
            });
        }
        Ok(device)
    }

    /// Called by the MQTT hub after it admitted `device`. The first accepted CONNECT makes
    /// it active (audited as `device.activate` by the device): one `UPDATE` that happens
    /// once per device, nothing at all when it is active already. Every CONNECT records the
    /// device's presence (last seen), at most once per device per
    /// [`PRESENCE_INTERVAL`](crate::PRESENCE_INTERVAL) on this node, so a device that
    /// reconnects within it costs no registry round trip. Both are attempted; the first
    /// error is returned.
    pub async fn note_connected(&self, device: &Device) -> Result<(), Error> {
        // Both at once: with group commit they share a write batch instead of queueing
        // for two (this runs before the CONNACK of a device's first connection).
        let (activated, seen) = tokio::join!(
            self.activate_on_first_connect(device),
            self.note_presence(&device.id)
        );
        activated.and(seen)
    }

    /// The first-CONNECT half of [`Hub::note_connected`].
    async fn activate_on_first_connect(&self, device: &Device) -> Result<(), Error> {
        if device.stage == Stage::Active || device.state != DeviceState::Active {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        if self
            .store()
            .set_device_stage(&device.id, Stage::Active, now)
            .await?
        {
            self.emit(Event::DeviceUpdated {
                device_id: device.id.clone(),
            });
            self.record_admin_action(
                &Actor(format!("device:{}", device.id)),
                "device.activate",
                Some(&device.id),
                "ok",
                Some(format!("first connection (was {})", device.stage.as_str())),
            )
            .await;
        }
        Ok(())
    }

    /// When a certificate superseded at `now` retires: after the overlap, unless it expires
    /// first (then it needs no retiring).
    pub(crate) fn retire_time(
        &self,
        superseded: &CertRecord,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let at = to_micros(now + self.cfg.rotation_overlap);
        (at < superseded.not_after).then_some(at)
    }

    /// The certificates of a device that still work: unrevoked and unexpired (those
    /// retiring included, with their retire time), newest first.
    pub async fn live_certs(&self, id: &str) -> Result<Vec<CertRecord>, Error> {
        self.device(id).await?;
        let now = OffsetDateTime::now_utc();
        Ok(self
            .store()
            .list_certs(Some(id), 1000)
            .await?
            .into_iter()
            .filter(|c| c.revoked_at.is_none() && c.not_after > now)
            .collect())
    }

    /// Issues a fresh certificate on a new hub-generated key for a hub-keyed device (its
    /// newest live certificate came with a key the hub generated). The key is returned this
    /// once and never stored; the device's other live certificates retire after the
    /// rotation overlap. Refused (409) for a device that holds its own key (it renews with
    /// EST `simplereenroll`), one identified by a registered CA, and a suspended or
    /// decommissioned device.
    pub async fn rotate_device(&self, id: &str, actor: &Actor) -> Result<RotatedDevice, Error> {
        let result = self.rotate_device_inner(id, actor).await;
        match result {
            // Audited, and announced, by the issuance.
            Ok(r) => Ok(r),
            Err(e) => self.audited(actor, "device.rotate", Some(id), Err(e)).await,
        }
    }

    async fn rotate_device_inner(&self, id: &str, actor: &Actor) -> Result<RotatedDevice, Error> {
        let device = self.device(id).await?;
        match device.state {
            DeviceState::Revoked => return Err(decommissioned(id)),
            DeviceState::Disabled => {
                return Err(Error::State(format!(
                    "device {id:?} is suspended; resume it before rotating its certificate"
                )));
            }
            DeviceState::Active => {}
        }
        if device.ca_name != self.device_ca.name {
            return Err(Error::State(format!(
                "device {id:?} is identified by certificates of registered CA {:?}; the hub holds no key for it: rotate its certificate with that CA",
                device.ca_name
            )));
        }
        let live = self.live_certs(id).await?;
        match live.first().map(|c| c.source) {
            Some(CertSource::HubKey) => {}
            Some(CertSource::Csr) => {
                return Err(Error::State(format!(
                    "device {id:?} holds its own key (its certificate was issued on a CSR): it renews with EST simplereenroll; the hub does not generate keys for it"
                )));
            }
            Some(_) => {
                return Err(Error::State(format!(
                    "device {id:?} has no hub-issued certificate to rotate"
                )));
            }
            None => {
                return Err(Error::State(format!(
                    "device {id:?} has no live certificate; the hub rotates only a hub-keyed device's certificate"
                )));
            }
        }
        let now = OffsetDateTime::now_utc();
        let retire_at = to_micros(now + self.cfg.rotation_overlap);
        // Certificates that expire before the overlap ends need no retiring.
        let superseded: Vec<String> = live
            .iter()
            .filter(|c| c.ca_name == self.device_ca.name && c.not_after > retire_at)
            .map(|c| c.serial.clone())
            .collect();
        let retire_at = (!superseded.is_empty()).then_some(retire_at);
        let note = format!(
            " replaces {}{}",
            if superseded.is_empty() {
                "nothing".to_string()
            } else {
                superseded.join(" ")
            },
            retire_note(retire_at)
        );
        let issued = self
            .issue(Grant {
                device_id: id.to_string(),
                key: Key::Generate,
                holder: Holder::Existing(device),
                presented: None,
                claim_serial: None,
                supersede: retire_at.map(|at| (superseded.clone(), at)),
                provisioning: None,
                actor,
                action: "device.rotate",
                target: id.to_string(),
                note,
                now,
            })
            .await?;
        let chain_pem = self.device_chain_pem(&issued.cert);
        Ok(RotatedDevice {
            created: CreatedDevice {
                device: issued.device,
                certificate: issued.record,
                chain_pem,
                private_key_pem: issued.private_key.map(|k| Secret::new(k.serialize_pem())),
                token: None,
            },
            superseded,
            retire_at,
        })
    }

    /// Revokes (reason superseded) every certificate whose overlap has ended, emits
    /// [`Event::CertificateRetired`] for each, audits each as `cert.retire`, and republishes
    /// the CRLs concerned. Run periodically (`moat serve` does); safe on several nodes at
    /// once (each certificate is retired by one of them).
    pub async fn retire_superseded_certs(&self) -> Result<Vec<RetiredCert>, Error> {
        let now = OffsetDateTime::now_utc();
        let retired = self.store().retire_due_certs(now).await?;
        let mut cas: Vec<&str> = Vec::new();
        for r in &retired {
            self.emit(Event::CertificateRetired {
                serial: r.serial.clone(),
                ca_name: r.ca_name.clone(),
                device_id: r.device_id.clone(),
            });
            self.record_admin_action(
                &Actor::system(),
                "cert.retire",
                Some(&r.serial),
                "ok",
                Some(format!(
                    "superseded{}; overlap ended",
                    r.device_id
                        .as_ref()
                        .map(|d| format!(" (device {d})"))
                        .unwrap_or_default()
                )),
            )
            .await;
            if !cas.contains(&r.ca_name.as_str()) {
                cas.push(&r.ca_name);
            }
        }
        for ca in cas.into_iter().filter(|c| self.is_hub_ca(c)) {
            self.publish_crl(ca, &Actor::system()).await?;
        }
        Ok(retired)
    }
}

/// The store's (CA, serial) pairs as the event carries them, ordered by CA then serial.
pub(crate) fn revoked_certificates(pairs: Vec<(String, String)>) -> Vec<RevokedCertificate> {
    pairs
        .into_iter()
        .map(|(ca_name, serial)| RevokedCertificate { ca_name, serial })
        .collect()
}
