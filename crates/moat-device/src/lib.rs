//! Moat's device SDK: what a device program links to get an identity from the hub, keep it
//! fresh and talk to the hub with it — and the device-side tools built on the same code.
//!
//! ```text
//!  keystore ──▶ DeviceKey (file: sealed under a passphrase | pkcs11: inside the token)
//!     │            signs CSRs (rcgen) and TLS handshakes (rustls) where the key lives
//!     ▼
//!  est::EstClient ──simpleenroll (station)──▶ factory certificate
//!  provision::ProvisioningClient ──mTLS──▶ operational certificate + MQTT assignment
//!  session::Session ──mTLS MQTT (rumqttc)──▶ hub, renewing via simplereenroll when due
//! ```
//!
//! - [`keystore`]: the device key, behind the [`keystore::KeyStore`] trait: an encrypted
//!   file store (argon2id + AES-256-GCM envelope, moat-vault's code) or a PKCS#11 token, in
//!   which the key is generated and used and from which it never leaves.
//! - [`identity`]: certificate chain + key, the rustls client configs built from them, and
//!   the renewal policy.
//! - [`csr`], [`est`]: RFC 7030 EST client (cacerts, simpleenroll through a factory station,
//!   simplereenroll authenticated by the certificate being renewed).
//! - [`provision`]: the field provisioning client (`/provisioning/v1/register`).
//! - [`session`]: MQTT over mutual TLS with reconnects and automatic renewal.
//! - [`relay`]: devices without IP: signed messages (COSE_Sign1, moat-cose) with a counter
//!   kept in a file, and the check of signed downlinks (trusted signer, replay window).
//! - [`ota`]: the device's OTA agent: verifies signed manifests (update key, expiry, model,
//!   anti-rollback), downloads with resume, verifies the image with `moat-image` before
//!   writing the inactive slot, boots it through `moat-image`'s boot flow (simulated flash)
//!   and confirms or rolls back, reporting every step.
//! - [`fleet`]: N simulated devices, each with its own certificate, on the load generator's
//!   MQTT client, each running an agent (`moat-device fleet`).
//! - [`load`]: the MQTT load generator: an mTLS MQTT client that is cheap per connection
//!   (it reuses [`moat_mqtt`] for framing instead of a second codec), a latency
//!   histogram, and helpers for benchmarking on a shared machine.
//!
//! What it is not: a broker-independent MQTT library (the session uses rumqttc; the load
//! generator's client speaks only what benchmarks need), or a place for hub-side logic. The
//! `moat-device` binary drives all of it (key, cacerts, est-enroll, reenroll, provision, run;
//! fleet and the load subcommands).

pub mod csr;
mod error;
pub mod est;
pub mod files;
pub mod fleet;
pub mod identity;
pub mod keystore;
pub mod load;
pub mod ota;
pub mod provision;
pub mod relay;
pub mod session;

pub use error::Error;

/// An error and its causes on one line (`a: b: c`), for logs and CLI messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        src = c.source();
    }
    s
}
