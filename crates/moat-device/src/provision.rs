//! Field provisioning client: one round trip over mutual TLS with the factory certificate
//! (the EST-issued one) that returns the device's operational certificate (from its CSR) and
//! its hub assignment (the MQTT endpoint and the CA bundle that signs the MQTT server's
//! certificate).
//!
//! ```text
//! POST /provisioning/v1/register   (mTLS: factory certificate)
//!   {"csr": "<PEM CSR>"}
//! 200 {"device_id", "certificate", "chain", "mqtt": {"url","host","port","ca_bundle"},
//!      "enrollment_group", "policy", "provisions", "moved_from"}
//! 401/403/409 application/problem+json
//! ```
//!
//! The messages are `moat-provision-proto`'s, the types the hub serves.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::identity::{self, Identity};
use crate::keystore::DeviceKey;
use crate::{Error, csr, est, files};

pub use moat_provision_proto::{MqttAssignment, REGISTER_PATH};
use moat_provision_proto::{ProvisionRequest, ProvisionResponse};

/// The outcome of provisioning: identity material and the assignment.
#[derive(Clone, Debug)]
pub struct Assignment {
    /// The device's id on the hub.
    pub device_id: String,
    /// Operational identity: the new leaf (then the issuing CA certificates) and its key.
    pub identity: Identity,
    /// The issuing CA certificates the hub sent (also after the leaf in `identity.chain`).
    pub chain: Vec<CertificateDer<'static>>,
    /// The MQTT endpoint and its CA bundle.
    pub mqtt: MqttAssignment,
    /// The enrollment group that matched, if any.
    pub enrollment_group: Option<String>,
    /// The device policy applied (`deny-insecure`, …).
    pub policy: Option<String>,
    /// How many times this device has been provisioned (1 the first time), if the hub says.
    pub provisions: Option<u64>,
    /// The MQTT endpoint the device was assigned before, when this provisioning moved it.
    pub moved_from: Option<String>,
}

/// What `moat-device provision` stores next to the certificate, for `moat-device run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentFile {
    /// The device's id (the MQTT client id).
    pub device_id: String,
    /// The MQTT endpoint (its CA bundle inline).
    pub mqtt: MqttAssignment,
    /// The enrollment group that matched.
    pub enrollment_group: Option<String>,
    /// The device policy applied.
    pub policy: Option<String>,
}

impl Assignment {
    /// Writes `DIR/device.pem` (leaf + chain), `DIR/mqtt-ca.pem` and `DIR/assignment.json`,
    /// each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        files::write_certs(&dir.join("device.pem"), &self.identity.chain)?;
        files::write_atomic(&dir.join("mqtt-ca.pem"), self.mqtt.ca_bundle.as_bytes())?;
        let file = AssignmentFile {
            device_id: self.device_id.clone(),
            mqtt: self.mqtt.clone(),
            enrollment_group: self.enrollment_group.clone(),
            policy: self.policy.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| Error::BadInput {
            what: "assignment".into(),
            problem: e.to_string(),
        })?;
        json.push(b'\n');
        files::write_atomic(&dir.join("assignment.json"), &json)
    }
}

impl AssignmentFile {
    /// Reads `assignment.json`.
    pub fn load(path: &Path) -> Result<AssignmentFile, Error> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadInput {
            what: path.display().to_string(),
            problem: e.to_string(),
        })
    }
}

/// The provisioning service of a hub.
#[derive(Clone, Debug)]
pub struct ProvisioningClient {
    url: String,
    roots: RootCertStore,
    timeout: std::time::Duration,
}

impl ProvisioningClient {
    /// `base` is the hub's HTTPS base (`https://hub:8443`); `roots` verify its certificate.
    pub fn new(base: &str, roots: RootCertStore) -> Result<ProvisioningClient, Error> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("https://") {
            return Err(Error::BadInput {
                what: format!("provisioning URL {base:?}"),
                problem: "must be https://HOST:PORT".into(),
            });
        }
        let url = if base.ends_with(REGISTER_PATH) {
            base.to_owned()
        } else {
            format!("{base}{REGISTER_PATH}")
        };
        Ok(ProvisioningClient {
            url,
            roots,
            timeout: std::time::Duration::from_secs(30),
        })
    }

    /// Registers: a CSR signed by `operational_key` (subject CN = the factory certificate's
    /// CN; the hub names the device itself and only takes the key), sent over mutual TLS with
    /// `factory`. `operational_key` may be the factory key (kept in the secure element). The answer is checked: the certificate must
    /// certify `operational_key`, the CA bundle must parse, the endpoint must be usable.
    pub async fn register(
        &self,
        factory: &Identity,
        operational_key: &DeviceKey,
    ) -> Result<Assignment, Error> {
        let url = &self.url;
        let cn = factory.info()?.common_name.ok_or_else(|| Error::BadInput {
            what: "the factory certificate".into(),
            problem: "has no subject CN to request".into(),
        })?;
        let csr_der = csr::enrollment_csr(operational_key, &cn)?;
        let csr_pem = files::pem_encode("CERTIFICATE REQUEST", &csr_der);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*factory.client_config(self.roots.clone())?).clone())
            .timeout(self.timeout)
            .build()
            .map_err(Error::http(url))?;
        let resp = http
            .post(url)
            .json(&ProvisionRequest { csr: csr_pem })
            .send()
            .await
            .map_err(Error::http(url))?;
        if !resp.status().is_success() {
            return Err(est::refusal(url, resp).await);
        }
        let body = est::read_capped(url, resp).await?;
        parse_answer(url, &body, operational_key)
    }
}

fn parse_answer(url: &str, body: &[u8], key: &DeviceKey) -> Result<Assignment, Error> {
    let bad = |problem: String| Error::BadAnswer {
        url: url.to_owned(),
        problem,
    };
    let a: ProvisionResponse =
        serde_json::from_slice(body).map_err(|e| bad(format!("not the register answer: {e}")))?;
    let leaf = files::certs_from_pem("certificate", a.certificate.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let chain = if a.chain.trim().is_empty() {
        Vec::new()
    } else {
        files::certs_from_pem("chain", a.chain.as_bytes()).map_err(|e| bad(e.to_string()))?
    };
    let mut full = vec![leaf[0].clone()];
    full.extend(chain.iter().cloned());
    let identity = Identity::new(full, key.clone()).map_err(|_| Error::WrongKeyCertified {
        url: url.to_owned(),
    })?;
    identity::roots_from_certs(
        "mqtt.ca_bundle",
        files::certs_from_pem("mqtt.ca_bundle", a.mqtt.ca_bundle.as_bytes())
            .map_err(|e| bad(e.to_string()))?,
    )
    .map_err(|e| bad(e.to_string()))?;
    if a.mqtt.host.is_empty() || a.mqtt.port == 0 {
        return Err(bad(format!(
            "MQTT endpoint {}:{} is not usable",
            a.mqtt.host, a.mqtt.port
        )));
    }
    if a.device_id.is_empty() {
        return Err(bad("empty device_id".into()));
    }
    Ok(Assignment {
        device_id: a.device_id,
        identity,
        chain,
        mqtt: a.mqtt,
        enrollment_group: a.enrollment_group,
        policy: Some(a.policy),
        provisions: Some(u64::from(a.provisions)),
        moved_from: a.moved_from,
    })
}
