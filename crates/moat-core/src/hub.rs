//! The [`Hub`]: the hub's CAs loaded with their keys, the registry, the vault and the event
//! bus, created or reopened at start-up.

use crate::events::{EventBus, LocalBus, Relay, Start, Subscription};
use crate::{CoreConfig, Error, Event};
use moat_pki::{CaProfile, Serial, ServerCertRequest};
use moat_store::{CaKind, CaRecord, CertRecord, CertSource, Store};
use moat_vault::{HubKey, KeyRef, Vault};
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// Setting keys of the hub's server identity (`server.NODE.…` on a cluster node).
const SERVER_KEY_REF: &str = "key_ref";
const SERVER_SERIAL: &str = "serial";
const SERVER_NAMES: &str = "names";

/// One of the hub's own CAs, ready to sign.
pub(crate) struct LoadedCa {
    /// Registry name.
    pub(crate) name: String,
    /// Its certificate.
    pub(crate) cert: CertificateDer<'static>,
    /// Its signing key (in memory after unsealing, or in the token).
    pub(crate) key: HubKey,
}

impl std::fmt::Debug for LoadedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The hub's TLS server identity: certificate chain (leaf, then issuer) and key.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    /// Leaf first, up to (not including) the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key; sign with it through `moat-api`'s rustls adapter.
    pub key: Arc<HubKey>,
}

impl ServerIdentity {
    /// Serial of the leaf certificate, lowercase hex.
    pub fn serial(&self) -> Result<String, Error> {
        let leaf = self
            .chain
            .first()
            .ok_or_else(|| Error::Internal("empty server certificate chain".into()))?;
        Ok(moat_pki::serial_of(leaf)?.to_hex())
    }
}

/// The hub's domain services. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Hub {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    pub(crate) cfg: CoreConfig,
    pub(crate) root: LoadedCa,
    pub(crate) device_ca: LoadedCa,
    /// Where domain events go ([`LocalBus`] unless the node was opened with another bus).
    bus: Arc<dyn EventBus>,
    /// Where this node's events go to the other nodes (a cluster; set once, at start).
    relay: std::sync::OnceLock<Arc<dyn Relay>>,
    /// Whether this node does the work one node of a cluster does at a time (always, on a
    /// single node; the holder of the cluster's leader lease otherwise).
    leader: std::sync::atomic::AtomicBool,
    /// Serialises CRL publication on this node so CRL numbers are handed out in the order the
    /// CRLs are built (the store's `save_crl` also refuses a lower number).
    pub(crate) crl_lock: Mutex<()>,
    /// The client CAs with their subjects, read on every certificate CONNECT.
    pub(crate) client_ca_cache: crate::cache::Cached<crate::admission::ClientCas>,
    /// Topic ACL policies, read on every CONNECT.
    pub(crate) policy_cache: crate::cache::Cached<Vec<moat_store::AclPolicy>>,
    /// Device certificates signed by this node since it started (metrics).
    pub(crate) signed: std::sync::atomic::AtomicU64,
    /// When this node last recorded each device's presence (at most once per interval).
    pub(crate) presence: crate::console::PresenceThrottle,
    /// What admission reads on every CONNECT, kept current by [`Self::emit`] (`view.rs`).
    pub(crate) view: crate::view::AdmissionView,
    /// Serialises each device's relay-window updates on this node (`relay.rs`).
    pub(crate) relay_locks: crate::relay::WindowLocks,
}

impl Hub {
    /// Opens the hub on `store` and `vault`: loads the root and device CAs, creating them (and
    /// their first CRLs) on the first start.
    pub async fn open(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        cfg: CoreConfig,
    ) -> Result<Hub, Error> {
        Self::open_with_bus(store, vault, cfg, Arc::new(LocalBus::default())).await
    }

    /// [`Self::open`], publishing events on `bus` (the seam where several nodes share one).
    pub async fn open_with_bus(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        cfg: CoreConfig,
        bus: Arc<dyn EventBus>,
    ) -> Result<Hub, Error> {
        let now = OffsetDateTime::now_utc();
        let root = match store.ca(&cfg.ca_names.root).await? {
            Some(rec) => load_ca(&vault, rec)?,
            None => {
                let (key_ref, key) = vault.generate_key("moat-root-ca")?;
                let serial = Serial::random();
                let profile = CaProfile {
                    common_name: cfg.root_common_name.clone(),
                    organization: Some(cfg.organization.clone()),
                    validity: cfg.root_validity,
                };
                let cert = moat_pki::new_root_ca(&profile, &key, &serial, now)?;
                let name = cfg.ca_names.root.clone();
                save_new_ca(&*store, &name, CaKind::Root, &cert, &key_ref, &name, now).await?;
                tracing::info!(ca = %name, "created root CA");
                LoadedCa { name, cert, key }
            }
        };
        let device_ca = match store.ca(&cfg.ca_names.devices).await? {
            Some(rec) => load_ca(&vault, rec)?,
            None => {
                let (key_ref, key) = vault.generate_key("moat-device-ca")?;
                let serial = Serial::random();
                let profile = CaProfile {
                    common_name: cfg.device_ca_common_name.clone(),
                    organization: Some(cfg.organization.clone()),
                    validity: cfg.device_ca_validity,
                };
                let crl_url = crl_url(&cfg, &root.name);
                let cert = moat_pki::new_intermediate_ca(
                    &profile,
                    &key,
                    &serial,
                    &root.cert,
                    &root.key,
                    crl_url.as_deref(),
                    now,
                )?;
                let name = cfg.ca_names.devices.clone();
                save_new_ca(
                    &*store,
                    &name,
                    CaKind::DeviceIssuing,
                    &cert,
                    &key_ref,
                    &root.name,
                    now,
                )
                .await?;
                tracing::info!(ca = %name, "created device CA");
                LoadedCa { name, cert, key }
            }
        };
        // Only this process writes a SQLite registry; another node's change to a shared
        // PostgreSQL one reaches the view only on a cluster node (`keep_admission_view`).
        let view = crate::view::AdmissionView::new(store.backend() == "sqlite", cfg.admission_view);
        let hub = Hub {
            view,
            store,
            vault,
            cfg,
            root,
            device_ca,
            bus,
            relay: std::sync::OnceLock::new(),
            leader: std::sync::atomic::AtomicBool::new(true),
            crl_lock: Mutex::new(()),
            client_ca_cache: Default::default(),
            policy_cache: Default::default(),
            signed: Default::default(),
            presence: Default::default(),
            relay_locks: Default::default(),
        };
        hub.refresh_crls().await?;
        Ok(hub)
    }

    /// The registry. Not public: the crates above reach it through the hub's services (see
    /// `services.rs`), so no caller can skip a check, an audit entry or an event.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The secret store (not public, like [`Self::store`]).
    pub(crate) fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// Device certificates this node has signed since it started (every path: admin create,
    /// EST, re-enrollment, provisioning, rotation).
    pub fn certificates_signed(&self) -> u64 {
        self.signed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Subscribes to domain events from the next one on.
    pub fn subscribe(&self) -> Subscription {
        self.bus.subscribe(Start::Now)
    }

    /// Subscribes to domain events from `start` (after a position already seen).
    pub fn subscribe_from(&self, start: Start) -> Subscription {
        self.bus.subscribe(start)
    }

    /// Publishes a change the registry has committed, after bringing the admission view up
    /// to date with it (so no CONNECT admits from what it changed).
    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        self.view.apply(&event);
        if let Some(relay) = self.relay.get() {
            relay.relay(&event);
        }
        self.bus.publish(event);
    }

    /// Whether this node runs the periodic work one node runs at a time: CRL refresh, the
    /// retirement sweep, campaign steps, OTA notice renewal. Always true on a single node.
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sets [`Self::is_leader`] (the cluster's lease holder).
    pub fn set_leader(&self, leader: bool) {
        self.leader
            .store(leader, std::sync::atomic::Ordering::Release);
    }

    /// Lets CONNECT admission read from the in-memory view on a registry other processes
    /// write too: for a cluster node, which applies every change another node makes (its
    /// events, in order; a full resynchronisation when it may have missed some). The
    /// staleness bound is then the cluster's: milliseconds over NATS, `catch_up_interval`
    /// without it.
    pub fn keep_admission_view(&self) {
        self.view.enable();
    }

    /// Sends every event this node emits from now on to the other nodes of its cluster too.
    /// Set once; a second call is an error.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) -> Result<(), Error> {
        self.relay
            .set(relay)
            .map_err(|_| Error::Internal("the hub's event relay is set already".into()))
    }

    /// Applies a change another node of the cluster committed to the shared registry: the
    /// caches forget what it touched, then this node's followers get the event (they drop
    /// sessions, update the client verifier) as if it had happened here. Not relayed again.
    pub fn apply_remote(&self, event: Event) {
        tracing::debug!(?event, "event from another node");
        self.view.apply(&event);
        match &event {
            Event::CaRegistered { .. } | Event::CaRemoved { .. } => {
                self.client_ca_cache.invalidate();
            }
            Event::AccessChanged { .. } | Event::AccessPoliciesChanged { .. } => {
                self.policy_cache.invalidate()
            }
            _ => {}
        }
        self.bus.publish(event);
    }

    /// This node may have missed changes other nodes made (its cluster link was down, or
    /// events were lost): forgets every cached registry read and tells the followers
    /// ([`BusError::Lagged`](crate::BusError::Lagged)), which resynchronise from the registry.
    pub fn resynchronise(&self, missed: u64) {
        tracing::warn!(missed, "resynchronising from the registry");
        self.view.clear();
        self.client_ca_cache.invalidate();
        self.policy_cache.invalidate();
        self.bus.announce_gap(missed);
    }

    /// The root CA certificate.
    pub fn root_cert(&self) -> &CertificateDer<'static> {
        &self.root.cert
    }

    /// The device CA certificate.
    pub fn device_ca_cert(&self) -> &CertificateDer<'static> {
        &self.device_ca.cert
    }

    /// The registry name of the device CA.
    pub fn device_ca_name(&self) -> &str {
        &self.device_ca.name
    }

    /// The PEM a device or client installs to trust the hub: the root CA, then the device CA
    /// (so `openssl verify -CAfile bundle.pem` works on device certificates too).
    pub fn ca_bundle_pem(&self) -> String {
        let mut pem = moat_pki::pem_of_cert(&self.root.cert);
        pem.push_str(&moat_pki::pem_of_cert(&self.device_ca.cert));
        pem
    }

    /// The CRL URL written into certificates `ca_name` issues.
    pub fn crl_url(&self, ca_name: &str) -> Option<String> {
        crl_url(&self.cfg, ca_name)
    }

    /// The hub's TLS server identity for `names` (DNS names and IP addresses). Reuses the
    /// stored one unless it is missing, was made for other names, or has less than a third
    /// of its validity left; otherwise makes a new key and certificate (signed by the root)
    /// and records them before returning.
    pub async fn server_identity(&self, names: &[String]) -> Result<ServerIdentity, Error> {
        self.server_identity_for(names, false).await
    }

    /// A new TLS server certificate and key for `names` now, stored as this node's, without
    /// an event or audit entry: a cluster node following a rotation made through another
    /// node (which audited it).
    pub async fn renew_server_identity(&self, names: &[String]) -> Result<ServerIdentity, Error> {
        self.server_identity_for(names, true).await
    }

    /// Replaces the hub's TLS server certificate and key now (same names as the current one),
    /// audited, and emits [`Event::ServerCertRotated`] so that every listener serves the new
    /// one to new connections; established connections keep theirs. Returns the new one.
    pub async fn rotate_server_identity(
        &self,
        actor: &crate::Actor,
    ) -> Result<ServerIdentity, Error> {
        let result = async {
            let names: Vec<String> = match self
                .store
                .setting(&self.server_setting(SERVER_NAMES))
                .await?
            {
                Some(n) if !n.is_empty() => n.split(',').map(str::to_owned).collect(),
                _ => {
                    return Err(Error::NotFound {
                        kind: "hub server certificate",
                        id: "server".into(),
                    });
                }
            };
            let identity = self.server_identity_for(&names, true).await?;
            let serial = identity.serial()?;
            self.emit(Event::ServerCertRotated {
                serial: serial.clone(),
            });
            Ok((identity, serial))
        }
        .await;
        let target = result.as_ref().ok().map(|(_, s)| s.clone());
        self.audited(actor, "server.rotate", target.as_deref(), result)
            .await
            .map(|(identity, _)| identity)
    }

    /// The setting key `what` of this node's server identity.
    fn server_setting(&self, what: &str) -> String {
        match &self.cfg.server_identity_scope {
            Some(node) => format!("server.{node}.{what}"),
            None => format!("server.{what}"),
        }
    }

    async fn server_identity_for(
        &self,
        names: &[String],
        force: bool,
    ) -> Result<ServerIdentity, Error> {
        let now = OffsetDateTime::now_utc();
        let wanted = names.join(",");
        let key_ref = self
            .store
            .setting(&self.server_setting(SERVER_KEY_REF))
            .await?;
        let serial = self
            .store
            .setting(&self.server_setting(SERVER_SERIAL))
            .await?;
        let stored_names = self
            .store
            .setting(&self.server_setting(SERVER_NAMES))
            .await?;
        if let (Some(key_ref), Some(serial), Some(stored_names)) = (key_ref, serial, stored_names)
            && !force
            && stored_names == wanted
            && let Some(rec) = self.store.cert(&serial).await?
            && rec.not_after - now > self.cfg.server_cert_validity / 3
        {
            let key = self.vault.load_key(&KeyRef(key_ref))?;
            return Ok(ServerIdentity {
                chain: vec![CertificateDer::from(rec.der), self.root.cert.clone()],
                key: Arc::new(key),
            });
        }
        let (key_ref, key) = self.vault.generate_key("moat-server")?;
        let serial = Serial::random();
        let common_name = names.first().map(String::as_str).unwrap_or("moat");
        let cert = moat_pki::issue_server_cert(
            &ServerCertRequest {
                common_name,
                names,
                public_key: &key,
                serial: &serial,
                validity: self.cfg.server_cert_validity,
                now,
            },
            &self.root.cert,
            &self.root.key,
        )?;
        let rec = cert_record(&cert, &self.root.name, None, CertSource::Hub, now)?;
        self.store.insert_cert(&rec).await?;
        self.store
            .put_setting(&self.server_setting(SERVER_KEY_REF), &key_ref.0)
            .await?;
        self.store
            .put_setting(&self.server_setting(SERVER_NAMES), &wanted)
            .await?;
        self.store
            .put_setting(&self.server_setting(SERVER_SERIAL), &rec.serial)
            .await?;
        tracing::info!(serial = %rec.serial, names = %wanted, "issued hub server certificate");
        Ok(ServerIdentity {
            chain: vec![cert, self.root.cert.clone()],
            key: Arc::new(key),
        })
    }
}

fn crl_url(cfg: &CoreConfig, ca_name: &str) -> Option<String> {
    cfg.crl_base_url
        .as_ref()
        .map(|base| format!("{}/crl/{ca_name}.crl", base.trim_end_matches('/')))
}

fn load_ca(vault: &Vault, rec: CaRecord) -> Result<LoadedCa, Error> {
    let key_ref = rec
        .key_ref
        .ok_or_else(|| Error::Internal(format!("hub CA {} has no key reference", rec.name)))?;
    let key = vault.load_key(&KeyRef(key_ref))?;
    Ok(LoadedCa {
        name: rec.name,
        cert: CertificateDer::from(rec.cert_der),
        key,
    })
}

async fn save_new_ca(
    store: &dyn Store,
    name: &str,
    kind: CaKind,
    cert: &CertificateDer<'static>,
    key_ref: &KeyRef,
    issuer_name: &str,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let rec = cert_record(cert, issuer_name, None, CertSource::Hub, now)?;
    store.insert_cert(&rec).await?;
    store
        .insert_ca(&CaRecord {
            name: name.to_string(),
            kind,
            cert_der: cert.to_vec(),
            key_ref: Some(key_ref.0.clone()),
            identity_rule: moat_pki::IdentityRule::Cn.as_str().to_string(),
            auto_register: false,
            fingerprint: rec.fingerprint,
            created_at: now,
        })
        .await?;
    Ok(())
}

/// The registry row of a certificate.
pub(crate) fn cert_record(
    der: &[u8],
    ca_name: &str,
    device_id: Option<&str>,
    source: CertSource,
    now: OffsetDateTime,
) -> Result<CertRecord, Error> {
    let info = moat_pki::cert_info(der)?;
    Ok(CertRecord {
        serial: info.serial,
        ca_name: ca_name.to_string(),
        device_id: device_id.map(str::to_string),
        subject: info.subject,
        not_before: info.not_before,
        not_after: info.not_after,
        fingerprint: info.fingerprint_sha256,
        spki_sha256: info.spki_sha256,
        source,
        der: der.to_vec(),
        created_at: now,
        revoked_at: None,
        revocation_reason: None,
        retire_at: None,
    })
}
