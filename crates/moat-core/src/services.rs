//! What the crates above the core (moat-api, moat-ota, moat-node) may use of the registry
//! and the vault, and nothing more: `Hub::store()` and `Hub::vault()` are private, so
//! devices, certificates, CAs and audit entries change only through the hub's own services.

use crate::{Device, Error, Hub};
use moat_store::FirmwareStore;
use moat_vault::{HubKey, KeyRef};
use std::sync::Arc;

impl Hub {
    /// The firmware part of the registry, which moat-ota owns: firmware keys and images,
    /// campaigns and their devices' updates, inventories, device models and MQTT groups.
    pub fn firmware_registry(&self) -> Arc<dyn FirmwareStore> {
        self.store().clone()
    }

    /// The device with this id, if there is one (see [`Hub::device`] for the refusal).
    pub async fn find_device(&self, id: &str) -> Result<Option<Device>, Error> {
        Ok(self.store().device(id).await?)
    }

    /// A hub setting (a small named value the hub keeps in its registry).
    pub async fn setting(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.store().setting(name).await?)
    }

    /// Stores a hub setting.
    pub async fn put_setting(&self, name: &str, value: &str) -> Result<(), Error> {
        Ok(self.store().put_setting(name, value).await?)
    }

    /// Whether the registry answers (readiness probes).
    pub async fn registry_ready(&self) -> Result<(), Error> {
        self.store().setting("readyz").await?;
        Ok(())
    }

    /// The registry's and the vault's back ends (`sqlite` / `postgres`; `file`, `env`,
    /// `pkcs11`, …), for status pages.
    pub fn backends(&self) -> (&'static str, &'static str) {
        (self.store().backend(), self.vault().backend())
    }

    /// Revoked certificates as (CA, serial), ordered, after `after`, at most `limit`: the
    /// client-certificate verifier's revoked set is loaded page by page from this.
    pub async fn revoked_serials_page(
        &self,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, Error> {
        Ok(self.store().revoked_serials_page(after, limit).await?)
    }

    /// Generates a signing key in the vault (sealed, or inside the PKCS#11 token): its
    /// reference, to be stored, and the key.
    pub fn generate_signing_key(&self, label: &str) -> Result<(KeyRef, HubKey), Error> {
        Ok(self.vault().generate_key(label)?)
    }

    /// The vault's signing key of this reference.
    pub fn signing_key(&self, key: &KeyRef) -> Result<HubKey, Error> {
        Ok(self.vault().load_key(key)?)
    }

    /// The signing key whose reference the setting `name` holds, generated (and its
    /// reference stored) on first use.
    pub async fn named_signing_key(&self, name: &str, label: &str) -> Result<HubKey, Error> {
        if let Some(r) = self.setting(name).await? {
            return self.signing_key(&KeyRef(r));
        }
        let (key_ref, key) = self.generate_signing_key(label)?;
        self.put_setting(name, &key_ref.0).await?;
        tracing::info!(setting = name, "generated a signing key");
        Ok(key)
    }
}

/// The cluster's shared records (`moat-node`'s cluster module writes and reads them).
impl Hub {
    /// The seq of the last event in the cluster's log (0 before the first).
    pub async fn cluster_log_head(&self) -> Result<u64, Error> {
        Ok(self.store().last_event_seq().await?)
    }

    /// Appends events (JSON) `node` emitted to the cluster's log; returns the first's seq.
    pub async fn append_cluster_events(&self, node: &str, events: &[String]) -> Result<u64, Error> {
        let now = time::OffsetDateTime::now_utc();
        Ok(self.store().append_events(node, events, now).await?)
    }

    /// The cluster's log after `seq`, in order, at most `limit`.
    pub async fn cluster_events_after(
        &self,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<moat_store::LoggedEvent>, Error> {
        Ok(self.store().events_after(seq, limit).await?)
    }

    /// Drops log entries older than `before`; returns how many.
    pub async fn prune_cluster_events(&self, before: time::OffsetDateTime) -> Result<u64, Error> {
        Ok(self.store().prune_events(before).await?)
    }

    /// Records a node's status.
    pub async fn record_cluster_node(&self, status: &moat_store::NodeStatus) -> Result<(), Error> {
        Ok(self.store().record_node(status).await?)
    }

    /// Takes or renews the cluster lease `name` for `holder` for `ttl`: true if held now.
    pub async fn acquire_cluster_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, Error> {
        let now = time::OffsetDateTime::now_utc();
        let until = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX);
        Ok(self.store().acquire_lease(name, holder, now, until).await?)
    }

    /// Who holds the cluster lease `name` now (None: nobody, or it expired).
    pub async fn cluster_lease_holder(&self, name: &str) -> Result<Option<String>, Error> {
        let now = time::OffsetDateTime::now_utc();
        Ok(self
            .store()
            .lease(name)
            .await?
            .filter(|(_, until)| *until > now)
            .map(|(holder, _)| holder))
    }

    /// Forgets a node removed from the cluster for good (its status row), audited as
    /// `cluster.forget`. A node that is up is refused: it would record itself again.
    pub async fn forget_cluster_node(&self, name: &str, actor: &crate::Actor) -> Result<(), Error> {
        let result = async {
            let now = time::OffsetDateTime::now_utc();
            let nodes = self.store().nodes().await?;
            let Some(node) = nodes.iter().find(|n| n.name == name) else {
                return Err(Error::NotFound {
                    kind: "cluster node",
                    id: name.to_string(),
                });
            };
            if node.alive(now) {
                return Err(Error::State(format!(
                    "cluster node {name:?} is up (it recorded itself {}s ago); stop it first",
                    (now - node.heartbeat_at).whole_seconds()
                )));
            }
            Ok(self.store().forget_node(name).await?)
        }
        .await;
        self.audited(actor, "cluster.forget", Some(name), result)
            .await
    }

    /// Every node of the cluster as its last heartbeat described it.
    pub async fn cluster_nodes(&self) -> Result<Vec<moat_store::NodeStatus>, Error> {
        Ok(self.store().nodes().await?)
    }
}
