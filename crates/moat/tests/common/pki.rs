//! Registering a test CA ([`moat_testkit::pki::TestCa`]) with a running hub through the CLI
//! (proof of possession with a registration code).

use super::TestHub;
pub use moat_testkit::pki::TestCa;
use rcgen::ExtendedKeyUsagePurpose;
use time::Duration;

/// Registration of a [`TestCa`] with a [`TestHub`].
pub trait Register {
    /// Registers this CA with `hub` as `name`.
    fn register(&self, hub: &TestHub, name: &str);
}

impl Register for TestCa {
    fn register(&self, hub: &TestHub, name: &str) {
        let code = hub.ok(&["ca", "registration-code"]).trim().to_string();
        let dir = hub.dir.path();
        let (proof, _) = self.leaf(
            dir,
            &format!("{name}-proof"),
            &code,
            Duration::ZERO,
            Duration::days(1),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, &self.pem).expect("w");
        hub.ok(&[
            "ca",
            "register",
            "--cert",
            ca_file.to_str().expect("p"),
            "--verification-cert",
            proof.to_str().expect("p"),
            "--name",
            name,
        ]);
    }
}
