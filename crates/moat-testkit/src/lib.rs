//! Test support shared by Moat's integration tests, so that no test file carries its own copy
//! of a helper for a real peer:
//!
//! - [`pki`]: a test CA made with rcgen (a secure-element vendor's), leaves valid for seconds
//!   or days, any EKU;
//! - [`process`]: running a tool (openssl, the mosquitto clients) to completion, or bounded in
//!   time;
//! - [`openssl`]: openssl itself: keys and CSRs of every supported type, `verify` with CRLs;
//! - [`paho`]: paho-mqtt (`paho_hub.py`): one attempt, a whole flow, or one connection
//!   driven line by line ([`paho::Paho`]);
//! - [`haproxy`]: HAProxy balancing TCP over several hub nodes;
//! - [`nats`]: a NATS server of the test's own, stopped and started on one port;
//! - [`postgres`]: fresh databases on the suite's PostgreSQL server;
//! - [`proxy`]: a TCP relay a test can cut (a server that went away);
//! - [`peer`]: a TLS client (OpenSSL through Python's ssl module) that presents a client
//!   certificate and resumes its TLS session between attempts;
//! - [`softhsm`]: a private SoftHSM2 token directory, child-process scenarios, and a
//!   logged-in session on a token to inspect what it holds.
//!
//! It depends on none of Moat's crates: what it tests against is always a real peer or a
//! real listener. Not for production code.

pub mod haproxy;
pub mod nats;
pub mod openssl;
pub mod paho;
pub mod peer;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod softhsm;
