//! Moat's device SDK.
//!
//! It holds the device side of the MQTT hub's load generator (module [`load`]): an
//! mTLS MQTT client that is cheap per connection, a latency histogram, and small helpers for
//! benchmarking on a shared machine (file-descriptor limit, CPU clocks, `/proc` readings).
//! The `moat-device` binary drives it. The same client grows into the SDK's MQTT session and
//! the fleet simulator, so there is one device-side MQTT client in the workspace, not two.
//!
//! - [`ota`]: the device's OTA agent: verifies signed manifests (update key, expiry, model,
//!   anti-rollback), downloads with resume, verifies the image with `moat-image` before
//!   writing the inactive slot, boots it through `moat-image`'s boot flow (simulated flash)
//!   and confirms or rolls back, reporting every step.
//! - [`fleet`]: N simulated devices, each with its own certificate, on the load generator's
//!   MQTT client, each running an agent (`moat-device fleet`).
//!
//! What it is not (yet): a keystore, or an EST or provisioning client. Its MQTT client
//! speaks only what the simulator and benchmarks need (CONNECT, SUBSCRIBE, PUBLISH at QoS
//! 0/1, their acknowledgements, DISCONNECT) and reuses [`moat_broker::codec`] for framing
//! and packet bodies instead of carrying a second MQTT codec.

pub mod fleet;
pub mod load;
pub mod ota;
