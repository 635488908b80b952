//! The cases of the suite, each an `async fn(&TestDb)` run against both back ends.

mod access;
mod authority;
mod certs;
mod cluster;
mod console;
mod devices;
mod enrollment;
mod firmware;
mod gateways;
mod lifecycle;
mod mqtt;
mod operators;
mod posture;
mod provisioning;
mod records;

pub use access::*;
pub use authority::*;
pub use certs::*;
pub use cluster::*;
pub use console::*;
pub use devices::*;
pub use enrollment::*;
pub use firmware::*;
pub use gateways::*;
pub use lifecycle::*;
pub use mqtt::*;
pub use operators::*;
pub use posture::*;
pub use provisioning::*;
pub use records::*;
