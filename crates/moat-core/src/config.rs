//! What the core needs from the hub's configuration (the binary maps its TOML onto this).

use time::Duration;

/// Names of the hub's own CAs in the registry.
#[derive(Clone, Debug)]
pub struct CaNames {
    /// Registry name of the root CA.
    pub root: String,
    /// Registry name of the device-issuing CA.
    pub devices: String,
}

impl Default for CaNames {
    fn default() -> Self {
        CaNames {
            root: "root".into(),
            devices: "devices".into(),
        }
    }
}

/// Core settings. Every field has a safe default.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Subject O of every certificate the hub makes.
    pub organization: String,
    /// Root CA subject CN.
    pub root_common_name: String,
    /// Root CA validity.
    pub root_validity: Duration,
    /// Device CA subject CN.
    pub device_ca_common_name: String,
    /// Device CA validity.
    pub device_ca_validity: Duration,
    /// Validity of device certificates.
    pub device_cert_validity: Duration,
    /// Validity of the hub's server certificate (renewed at start when a third is left).
    pub server_cert_validity: Duration,
    /// Base URL the CRLs are published under (`{base}/crl/{ca}.crl`), written into the CRL
    /// distribution point of every certificate the hub issues. None: no CDP.
    pub crl_base_url: Option<String>,
    /// How long a published CRL is valid (its nextUpdate); it is republished well before.
    pub crl_validity: Duration,
    /// How long a CA registration code stays usable.
    pub registration_code_ttl: Duration,
    /// Registry names of the hub CAs.
    pub ca_names: CaNames,
    /// MQTT endpoints (`mqtts://host:port`) provisioning assigns devices to: the first is the
    /// default of fixed allocations, hashed allocations spread over all of them. Never empty
    /// in a running hub (the binary defaults it to its own TLS listener).
    pub provisioning_hubs: Vec<String>,
    /// How long a device certificate stays valid after a newer one superseded it (EST
    /// re-enrollment, `moat device rotate`); then it is revoked with reason superseded.
    pub rotation_overlap: Duration,
    /// Devices the in-memory admission view holds (`view.rs`; 0 turns it off). It is only
    /// used on a registry this process alone writes (SQLite).
    pub admission_view: usize,
    /// The node name of a cluster node: its TLS server certificate is its own (each node
    /// names itself in it), kept under settings of its own. None on a single node.
    pub server_identity_scope: Option<String>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            organization: "Moat".into(),
            root_common_name: "Moat Root CA".into(),
            root_validity: Duration::days(3650),
            device_ca_common_name: "Moat Device CA".into(),
            device_ca_validity: Duration::days(1825),
            device_cert_validity: Duration::days(365),
            server_cert_validity: Duration::days(90),
            crl_base_url: None,
            crl_validity: Duration::days(7),
            registration_code_ttl: Duration::hours(1),
            ca_names: CaNames::default(),
            provisioning_hubs: vec!["mqtts://localhost:8883".into()],
            rotation_overlap: Duration::hours(24),
            admission_view: crate::view::DEFAULT_CAPACITY,
            server_identity_scope: None,
        }
    }
}
