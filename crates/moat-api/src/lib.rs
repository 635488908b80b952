//! Moat's HTTP surfaces.
//!
//! - The **admin API** ([`admin_router`]): REST over HTTPS with bearer-token auth, JSON in
//!   and out, errors as RFC 9457 problem documents, an OpenAPI document at
//!   `/api/openapi.json`. The `moat` CLI is one of its clients.
//! - **EST** (RFC 7030, `est`): `/.well-known/est/` on the same HTTPS listener, for factory
//!   stations (mutual TLS with a station certificate, or HTTP Basic) and re-enrolling
//!   devices (mutual TLS with the certificate being renewed). No bearer token.
//! - The **public endpoint** ([`public_router`]): CRLs at the stable URL written into every
//!   certificate's CRL distribution point (`/crl/{ca}.crl`), and the CA bundle. Plain HTTP
//!   on purpose: CRLs are signed, and relying parties fetch them without TLS (RFC 5280).
//! - The **firmware download** router ([`download_router`]): `GET /fw/{digest}` with range
//!   requests, for devices identified by the mutual-TLS listener that mounts it
//!   ([`PeerIdentity`]).
//! - The **web console** (`console`): server-rendered pages under `/console` on the admin
//!   API's listener, signed in with the same tokens, roles applied by the same table.
//! - [`serve_tls`]: the HTTPS accept loop. It never awaits a handshake: each connection is
//!   handshaken and served in its own task under a timeout, within a connection cap. Client
//!   certificates are optional and checked by the shared [`LiveClientVerifier`] (also the
//!   MQTT listener's); handlers see the chain as `ConnectInfo<TlsPeer>`.
//!
//! Not here: business rules (they live in `moat-core`; handlers translate and delegate).

mod auth;
mod console;
mod download;
pub mod dto;
pub mod dto_gateways;
pub mod dto_lifecycle;
pub mod dto_ota;
mod est;
mod openapi;
pub mod operators;
mod posture;
mod problem;
pub mod provisioning;
mod public;
mod routes;
mod serve;
mod tls;
mod verifier;

pub use auth::AdminAuth;
pub use download::{ByteRange, PeerIdentity, device_download_router, download_router, parse_range};
pub use est::{EstAuth, MAX_EST_BODY_BYTES};
pub use openapi::ApiDoc;
pub use posture::{FindingView, PostureReport, PostureSource, PostureSummary};
pub use problem::Problem;
pub use public::public_router;
pub use routes::{SessionControl, admin_router};
pub use serve::{ServeLimits, TlsPeer, serve_plain, serve_tls};
pub use tls::{ServerCredentials, download_server_config, hub_server_config, tls_signing_key};
pub use verifier::{LiveClientVerifier, REFUSAL_REASONS, RequireClientCert, VerifierError};

use moat_core::Hub;
use std::sync::Arc;

/// What every admin handler sees.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The domain services.
    pub hub: Arc<Hub>,
    /// Admin authentication and its failure limiter.
    pub auth: Arc<AdminAuth>,
    /// The MQTT hub's live sessions, when it runs on this node.
    pub sessions: Option<Arc<dyn SessionControl>>,
    /// EST station authentication failures (rate limit per address).
    pub est: Arc<EstAuth>,
    /// Firmware updates, when enabled on this node.
    pub ota: Option<Arc<moat_ota::Ota>>,
    /// What the running hub observed, for the posture audit (None: registry checks only).
    pub posture: Option<Arc<dyn PostureSource>>,
}
