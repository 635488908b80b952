//! The cases of the suite, each an `async fn(&TestDb)` run against both back ends.

mod authority;
mod certs;
mod devices;
mod records;

pub use authority::*;
pub use certs::*;
pub use devices::*;
pub use records::*;
