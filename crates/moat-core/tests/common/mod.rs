//! A hub on an in-memory registry and a file vault in a temp dir, for the core's tests.
#![allow(dead_code)]

use moat_core::{Actor, CoreConfig, CreateStation, Hub};
use moat_store::Store;
use std::path::Path;
use std::sync::Arc;

/// A hub with `cfg` whose vault lives in `dir`.
pub async fn hub_with(dir: &Path, cfg: CoreConfig) -> Arc<Hub> {
    hub_and_registry(dir, cfg).await.0
}

/// [`hub_with`], and a handle on its registry for tests that arrange what the hub's services
/// never write (a half-done decommissioning, a timestamp, a CA record).
pub async fn hub_and_registry(dir: &Path, cfg: CoreConfig) -> (Arc<Hub>, Arc<dyn Store>) {
    let store = moat_store::open("sqlite::memory:").await.expect("store");
    let vault = moat_vault::Vault::open(
        dir,
        moat_vault::MasterKeySource::File(dir.join("master.key")),
    )
    .expect("vault");
    let hub = Hub::open(store.clone(), Arc::new(vault), cfg)
        .await
        .expect("hub");
    (Arc::new(hub), store)
}

/// A hub with the default configuration.
pub async fn hub(dir: &Path) -> Arc<Hub> {
    hub_with(dir, CoreConfig::default()).await
}

/// A factory station `name` with a certificate (no token), for `est_enroll`.
pub async fn station(hub: &Hub, name: &str) -> moat_core::Station {
    hub.create_station(
        CreateStation {
            name: name.into(),
            token: false,
        },
        &Actor::admin(),
    )
    .await
    .expect("station")
    .station
}
