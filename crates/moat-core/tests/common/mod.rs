//! A hub on an in-memory registry and a file vault in a temp dir, for the core's tests.
#![allow(dead_code)]

use moat_core::{CoreConfig, Hub};
use std::path::Path;
use std::sync::Arc;

/// A hub with `cfg` whose vault lives in `dir`.
pub async fn hub_with(dir: &Path, cfg: CoreConfig) -> Arc<Hub> {
    let store = moat_store::open("sqlite::memory:").await.expect("store");
    let vault = moat_vault::Vault::open(
        dir,
        moat_vault::MasterKeySource::File(dir.join("master.key")),
    )
    .expect("vault");
    Arc::new(Hub::open(store, Arc::new(vault), cfg).await.expect("hub"))
}

/// A hub with the default configuration.
pub async fn hub(dir: &Path) -> Arc<Hub> {
    hub_with(dir, CoreConfig::default()).await
}
