//! The hub as a library: [`Node::start`] assembles a running Moat hub from a [`Config`] —
//! the vault and registry, the CAs, the listeners (HTTPS admin API + EST + provisioning +
//! console, MQTT over TLS and plain TCP, firmware downloads, CRLs, metrics), the shared
//! client-certificate verifier and server-credential resolver, the event followers and the
//! background jobs — and [`Node::shutdown`] stops it. `moat serve` is a thin wrapper (config
//! file and flags, logging, signals); tests start several nodes in one process on port 0.
//!
//! ```text
//!   Config ──▶ Node::start ──▶ Vault + Store ──▶ Hub (moat-core) ──▶ listeners + followers
//!                                                                 └─▶ hub.json (endpoints)
//! ```
//!
//! Modules: `cluster` (several nodes on one registry: the event log and NATS), `config` (the TOML tree: the `moat-config` crate, re-exported), `mqtt` (the broker's `Authority` and `Persistence`
//! over the hub, the event follower, OTA notices and reports), `metrics` and `posture` (the
//! metrics listener and the periodic posture audit), `files` (private dirs, atomic writes).

pub use moat_config as config;
pub mod cluster;
mod error;
pub mod files;
mod metrics;
mod mqtt;
mod node;
mod posture;

pub use error::Error;
pub use moat_config::Config;

/// A node's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
pub use node::{HubFile, Node};
