//! Domain events. In one process they travel on a tokio broadcast channel; subscribers (the
//! MQTT broker, OTA, metrics) act on them. A subscriber that lags gets `Lagged` and must
//! resynchronise from the registry, which stays the source of truth.

use serde::Serialize;

/// Something that changed in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A device was created.
    DeviceCreated {
        /// Its id.
        device_id: String,
    },
    /// A device was disabled: drop its sessions, refuse it until enabled.
    DeviceDisabled {
        /// Its id.
        device_id: String,
    },
    /// A device was enabled again.
    DeviceEnabled {
        /// Its id.
        device_id: String,
    },
    /// A device was revoked with all its certificates: drop its sessions for good.
    DeviceRevoked {
        /// Its id.
        device_id: String,
        /// The serials revoked with it.
        serials: Vec<String>,
    },
    /// A device was deleted (its certificates were revoked first).
    DeviceDeleted {
        /// Its id.
        device_id: String,
    },
    /// One certificate was revoked.
    CertificateRevoked {
        /// Serial, lowercase hex.
        serial: String,
        /// The issuing CA.
        ca_name: String,
        /// The device it identified, if any.
        device_id: Option<String>,
    },
    /// A superseded certificate's overlap ended and it was revoked (reason superseded): the
    /// verifier refuses it from now on. Its device is not kicked: it is expected to be
    /// connected with its newer certificate already.
    CertificateRetired {
        /// Serial, lowercase hex.
        serial: String,
        /// The issuing CA.
        ca_name: String,
        /// The device it identified, if any.
        device_id: Option<String>,
    },
    /// A device's lifecycle changed without changing its access (claimed, transferred,
    /// provisioned, first connected).
    DeviceUpdated {
        /// Its id.
        device_id: String,
    },
    /// A third-party CA was registered: refresh the client-certificate verifier.
    CaRegistered {
        /// Its registry name.
        name: String,
    },
    /// A third-party CA was removed: refresh the verifier, drop sessions it authenticated.
    CaRemoved {
        /// Its registry name.
        name: String,
    },
    /// An identity's group or policy changed: close its sessions so it reconnects under the
    /// new topic access.
    AccessChanged {
        /// Its id.
        device_id: String,
    },
    /// A new CRL was published.
    CrlPublished {
        /// The CA.
        ca_name: String,
        /// Its CRL number.
        number: u64,
    },
    /// The hub's TLS server certificate was replaced: listeners load it for new connections.
    ServerCertRotated {
        /// Serial of the new certificate.
        serial: String,
    },
}
