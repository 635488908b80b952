//! Moat's device SDK.
//!
//! Today it holds the device side of the MQTT hub's load generator (module [`load`]): an
//! mTLS MQTT client that is cheap per connection, a latency histogram, and small helpers for
//! benchmarking on a shared machine (file-descriptor limit, CPU clocks, `/proc` readings).
//! The `moat-load` binary drives it. The same client grows into the SDK's MQTT session and
//! the fleet simulator, so there is one device-side MQTT client in the workspace, not two.
//!
//! What it is not (yet): a keystore, an EST or provisioning client, or an OTA agent. It
//! speaks only what the benchmarks need (CONNECT, SUBSCRIBE, PUBLISH at QoS 0/1, their
//! acknowledgements, DISCONNECT) and reuses [`moat_broker::codec`] for framing and packet
//! bodies instead of carrying a second MQTT codec.

pub mod load;
