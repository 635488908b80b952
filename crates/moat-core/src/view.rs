//! The admission view: what [`crate::CertificateCheck`] and the topic ACL read on every
//! CONNECT — a device certificate's registry row by fingerprint, a device with its topic
//! access, a group's policy — kept in memory so that a device's reconnection reads nothing
//! from the registry.
//!
//! The view is never the authority; it is a copy the hub keeps current itself:
//!
//! - Filled on a miss from the registry, and by the issuance pipeline after its commit.
//! - Emptied, synchronously, by every change: [`crate::Hub`]'s `emit` applies each event to the
//!   view before any follower sees it ([`AdmissionView::apply`]: the device it names, with all
//!   its certificates; everything on a CA change or an event it does not know), and the few
//!   writes that emit no event (a group's policy) invalidate directly.
//! - A fill that raced with an invalidation is dropped: every invalidation bumps a
//!   generation, and a fill only lands if the generation it read before going to the registry
//!   is still current. So the view never brings back what a change removed.
//! - Only what admits is cached: revoked rows, station certificates and unknown fingerprints
//!   always go to the registry.
//!
//! It is on when this hub process is the only writer of its registry (SQLite). With a shared
//! PostgreSQL registry another node's change would not reach it until the cluster's event bus
//! carries events between nodes, so there every read goes to the registry.

use moat_store::{CertRecord, Device, IdentityAccess};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::{Error, Event};

/// Devices (and as many certificates) the view holds by default.
pub const DEFAULT_CAPACITY: usize = 200_000;

#[derive(Debug, Default)]
struct Inner {
    /// Live device certificates by SHA-256 fingerprint.
    certs: HashMap<String, Arc<CertRecord>>,
    /// The fingerprints in `certs` of each device.
    certs_of: HashMap<String, Vec<String>>,
    devices: HashMap<String, Arc<Device>>,
    /// A device's group and own policy (None: a device with the defaults).
    access: HashMap<String, Option<IdentityAccess>>,
    /// A group's policy (None: the group has none).
    groups: HashMap<String, Option<String>>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct AdmissionView {
    enabled: std::sync::atomic::AtomicBool,
    capacity: usize,
    /// Bumped by every invalidation, under `inner`'s write lock.
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

/// The generation a fill read before it went to the registry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

impl AdmissionView {
    /// A view holding at most `capacity` devices (and certificates); `enabled: false` makes
    /// every read a miss and every fill a no-op.
    pub(crate) fn new(enabled: bool, capacity: usize) -> Self {
        AdmissionView {
            enabled: std::sync::atomic::AtomicBool::new(enabled && capacity > 0),
            capacity,
            generation: AtomicU64::new(0),
            inner: RwLock::default(),
        }
    }

    fn on(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Turns the view on (a node that learns every change to a shared registry).
    pub(crate) fn enable(&self) {
        self.clear();
        self.enabled.store(self.capacity > 0, Ordering::Release);
    }

    /// Take before reading the registry; hand to the fill.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    pub(crate) fn cert(&self, fingerprint: &str) -> Option<Arc<CertRecord>> {
        if !self.on() {
            return None;
        }
        self.read().certs.get(fingerprint).cloned()
    }

    pub(crate) fn device(&self, id: &str) -> Option<Arc<Device>> {
        if !self.on() {
            return None;
        }
        self.read().devices.get(id).cloned()
    }

    pub(crate) fn access(&self, id: &str) -> Option<Option<IdentityAccess>> {
        if !self.on() {
            return None;
        }
        self.read().access.get(id).cloned()
    }

    pub(crate) fn group_policy(&self, group: &str) -> Option<Option<String>> {
        if !self.on() {
            return None;
        }
        self.read().groups.get(group).cloned()
    }

    /// Keeps `rec` if it admits (a device's, neither revoked nor superseded) and nothing was
    /// invalidated since `t`.
    pub(crate) fn fill_cert(&self, t: Ticket, rec: &CertRecord) {
        let Some(device_id) = rec.device_id.as_ref() else {
            return;
        };
        if !self.on() || rec.revoked_at.is_some() || rec.retire_at.is_some() {
            return;
        }
        let mut inner = self.write();
        if !self.current(t) {
            return;
        }
        if inner.certs.len() >= self.capacity {
            inner.certs.clear();
            inner.certs_of.clear();
        }
        inner
            .certs
            .insert(rec.fingerprint.clone(), Arc::new(rec.clone()));
        inner
            .certs_of
            .entry(device_id.clone())
            .or_default()
            .push(rec.fingerprint.clone());
    }

    /// Keeps `device` unless something was invalidated since `t`.
    pub(crate) fn fill_device(&self, t: Ticket, device: &Device) {
        if !self.on() {
            return;
        }
        let mut inner = self.write();
        if self.current(t) {
            if inner.devices.len() >= self.capacity {
                inner.devices.clear();
            }
            inner
                .devices
                .insert(device.id.clone(), Arc::new(device.clone()));
        }
    }

    /// Keeps a device's access unless something was invalidated since `t`.
    pub(crate) fn fill_access(&self, t: Ticket, id: &str, access: Option<IdentityAccess>) {
        if !self.on() {
            return;
        }
        let mut inner = self.write();
        if self.current(t) {
            if inner.access.len() >= self.capacity {
                inner.access.clear();
            }
            inner.access.insert(id.to_string(), access);
        }
    }

    /// Keeps a group's policy unless something was invalidated since `t`.
    pub(crate) fn fill_group(&self, t: Ticket, group: &str, policy: Option<String>) {
        if !self.on() {
            return;
        }
        let mut inner = self.write();
        if self.current(t) {
            if inner.groups.len() >= self.capacity {
                inner.groups.clear();
            }
            inner.groups.insert(group.to_string(), policy);
        }
    }

    /// Forgets a device and all its certificates.
    pub(crate) fn invalidate_device(&self, id: &str) {
        let mut inner = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        inner.devices.remove(id);
        inner.access.remove(id);
        for fp in inner.certs_of.remove(id).unwrap_or_default() {
            inner.certs.remove(&fp);
        }
    }

    /// Forgets every group's policy.
    pub(crate) fn invalidate_groups(&self) {
        let mut inner = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        inner.groups.clear();
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        let mut inner = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *inner = Inner::default();
    }

    /// Brings the view up to date with a change the registry has committed.
    pub(crate) fn apply(&self, event: &Event) {
        match event {
            Event::DeviceCreated { device_id }
            | Event::CertificateIssued { device_id, .. }
            | Event::DeviceDisabled { device_id }
            | Event::DeviceEnabled { device_id }
            | Event::DeviceRevoked { device_id, .. }
            | Event::DeviceDeleted { device_id }
            | Event::CertificateRevoked {
                device_id: Some(device_id),
                ..
            }
            | Event::CertificateRetired {
                device_id: Some(device_id),
                ..
            }
            | Event::DeviceUpdated { device_id }
            | Event::AccessChanged { device_id } => self.invalidate_device(device_id),
            // Changes nothing the view holds.
            Event::CrlPublished { .. } | Event::ServerCertRotated { .. } => {}
            Event::AccessPoliciesChanged { .. } => self.invalidate_groups(),
            // A certificate of no device (never cached), a CA change: start afresh rather than
            // reason about what it touched.
            Event::CertificateRevoked {
                device_id: None, ..
            }
            | Event::CertificateRetired {
                device_id: None, ..
            }
            | Event::CaRegistered { .. }
            | Event::CaRemoved { .. } => self.clear(),
        }
    }

    fn current(&self, t: Ticket) -> bool {
        self.generation.load(Ordering::Acquire) == t.0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl crate::Hub {
    /// A certificate's registry row by SHA-256 fingerprint (the view's copy when it has one).
    pub(crate) async fn cert_row(&self, fingerprint: &str) -> Result<Option<CertRecord>, Error> {
        if let Some(r) = self.view.cert(fingerprint) {
            return Ok(Some((*r).clone()));
        }
        let t = self.view.ticket();
        let rec = self.store().cert_by_fingerprint(fingerprint).await?;
        if let Some(r) = &rec {
            self.view.fill_cert(t, r);
        }
        Ok(rec)
    }

    /// A device's registry record (the view's copy when it has one).
    pub(crate) async fn device_row(&self, id: &str) -> Result<Option<Device>, Error> {
        if let Some(d) = self.view.device(id) {
            return Ok(Some((*d).clone()));
        }
        let t = self.view.ticket();
        let device = self.store().device(id).await?;
        if let Some(d) = &device {
            self.view.fill_device(t, d);
        }
        Ok(device)
    }

    /// A device's group and own policy (the view's copy when it has one).
    pub(crate) async fn access_row(&self, id: &str) -> Result<Option<IdentityAccess>, Error> {
        if let Some(a) = self.view.access(id) {
            return Ok(a);
        }
        let t = self.view.ticket();
        let access = self.store().identity_access(id).await?;
        self.view.fill_access(t, id, access.clone());
        Ok(access)
    }

    /// A group's policy (the view's copy when it has one).
    pub(crate) async fn group_policy_row(&self, group: &str) -> Result<Option<String>, Error> {
        if let Some(p) = self.view.group_policy(group) {
            return Ok(p);
        }
        let t = self.view.ticket();
        let policy = self.store().group_policy(group).await?;
        self.view.fill_group(t, group, policy.clone());
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_store::{CertSource, ConnectionPolicy, DeviceState, Stage};
    use time::OffsetDateTime;

    fn device(id: &str) -> Device {
        Device {
            id: id.into(),
            state: DeviceState::Active,
            policy: ConnectionPolicy::DenyInsecure,
            token_hash: None,
            ca_name: "device-ca".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            factory: None,
            stage: Stage::Active,
            owner: None,
            status_reason: None,
        }
    }

    fn cert(fp: &str, device: Option<&str>) -> CertRecord {
        CertRecord {
            serial: format!("s-{fp}"),
            ca_name: "device-ca".into(),
            device_id: device.map(str::to_string),
            subject: String::new(),
            not_before: OffsetDateTime::UNIX_EPOCH,
            not_after: OffsetDateTime::UNIX_EPOCH,
            fingerprint: fp.into(),
            spki_sha256: String::new(),
            source: CertSource::Csr,
            der: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            revoked_at: None,
            revocation_reason: None,
            retire_at: None,
        }
    }

    #[test]
    fn an_event_about_a_device_forgets_it_and_its_certificates() {
        let v = AdmissionView::new(true, 10);
        v.fill_device(v.ticket(), &device("a"));
        v.fill_device(v.ticket(), &device("b"));
        v.fill_cert(v.ticket(), &cert("fa", Some("a")));
        v.fill_cert(v.ticket(), &cert("fb", Some("b")));
        v.fill_access(v.ticket(), "a", None);
        v.apply(&Event::CertificateRevoked {
            serial: "s-fa".into(),
            ca_name: "device-ca".into(),
            device_id: Some("a".into()),
        });
        assert!(v.device("a").is_none() && v.cert("fa").is_none() && v.access("a").is_none());
        assert!(v.device("b").is_some() && v.cert("fb").is_some());
        v.apply(&Event::CaRemoved { name: "x".into() });
        assert!(v.device("b").is_none() && v.cert("fb").is_none());
    }

    #[test]
    fn a_fill_that_raced_with_an_invalidation_is_dropped() {
        let v = AdmissionView::new(true, 10);
        let before = v.ticket();
        v.apply(&Event::DeviceDisabled {
            device_id: "a".into(),
        });
        v.fill_device(before, &device("a"));
        v.fill_access(before, "a", None);
        v.fill_cert(before, &cert("fa", Some("a")));
        v.fill_group(before, "g", Some("p".into()));
        assert!(v.device("a").is_none() && v.cert("fa").is_none());
        assert!(v.access("a").is_none());
        assert!(v.group_policy("g").is_none());
    }

    #[test]
    fn refusing_rows_are_never_kept_and_a_disabled_view_keeps_nothing() {
        let v = AdmissionView::new(true, 10);
        let mut revoked = cert("r", Some("a"));
        revoked.revoked_at = Some(OffsetDateTime::UNIX_EPOCH);
        let mut retiring = cert("t", Some("a"));
        retiring.retire_at = Some(OffsetDateTime::UNIX_EPOCH);
        for c in [revoked, retiring, cert("s", None)] {
            v.fill_cert(v.ticket(), &c);
            assert!(v.cert(&c.fingerprint).is_none(), "{}", c.fingerprint);
        }
        let off = AdmissionView::new(false, 10);
        off.fill_device(off.ticket(), &device("a"));
        off.fill_cert(off.ticket(), &cert("fa", Some("a")));
        assert!(off.device("a").is_none() && off.cert("fa").is_none());
    }

    #[test]
    fn capacity_bounds_the_view() {
        let v = AdmissionView::new(true, 3);
        for i in 0..10 {
            v.fill_device(v.ticket(), &device(&format!("d{i}")));
            v.fill_cert(v.ticket(), &cert(&format!("f{i}"), Some(&format!("d{i}"))));
        }
        let inner = v.read();
        assert!(inner.devices.len() <= 3 && inner.certs.len() <= 3);
        assert!(inner.certs_of.values().map(Vec::len).sum::<usize>() <= 3);
    }
}
