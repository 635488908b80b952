//! What one certificate issuance writes: the registry side of moat-core's one issuance
//! pipeline. Every way a device gets a certificate (admin create, EST enroll and re-enroll,
//! field provisioning, rotation, auto-registration at CONNECT) is one [`Issuance`], written
//! by [`Store::issue`](crate::Store::issue) in one transaction, so no path can leave a
//! device without its certificate, a certificate without its audit entry, or an allow-list
//! serial claimed without a certificate.

use crate::model::{CertRecord, ConnectionPolicy, Device, IdentityAccess, NewAuditEntry};
use crate::provisioning::Assignment;
use time::OffsetDateTime;

/// Everything one issuance writes, all or nothing.
#[derive(Clone, Debug)]
pub struct Issuance {
    /// The device the certificates are for: inserted when `create_device`; otherwise it
    /// must exist ([`Error::NotFound`](crate::Error::NotFound) if it does not, for a
    /// provisioning, which updates it).
    pub device: Device,
    /// Insert `device` (refused with [`Error::Conflict`](crate::Error::Conflict) if the id
    /// exists).
    pub create_device: bool,
    /// An allow-listed serial this issuance enrolls (EST): claimed first, only if it is
    /// listed, not enrolled and not retired. [`Error::NotFound`](crate::Error::NotFound) if
    /// it is not listed, [`Error::Conflict`](crate::Error::Conflict) if it cannot be claimed.
    pub claim_serial: Option<String>,
    /// The certificates to record, in order: the vendor certificate an auto-registered
    /// device presented, then the one issued (or bound). Each refused with
    /// [`Error::Conflict`](crate::Error::Conflict) if its serial or fingerprint is taken.
    pub certs: Vec<CertRecord>,
    /// Certificates the new one supersedes: they retire (revoked, reason superseded, by the
    /// sweep) at the given time.
    pub supersede: Option<Supersede>,
    /// A field provisioning's changes to the device.
    pub provisioning: Option<ProvisioningWrite>,
    /// The audit entry recording the issuance.
    pub audit: NewAuditEntry,
}

/// Certificates a new one supersedes (rotation, re-enrollment).
#[derive(Clone, Debug)]
pub struct Supersede {
    /// Their serials, of the new certificate's CA. Only those unrevoked, valid past
    /// `retire_at` and not retiring sooner get the date.
    pub serials: Vec<String>,
    /// When they retire.
    pub retire_at: OffsetDateTime,
}

/// What a field provisioning changes on the device besides its certificate.
#[derive(Clone, Debug)]
pub struct ProvisioningWrite {
    /// Its connection policy from now on (its stage becomes `provisioned`).
    pub policy: ConnectionPolicy,
    /// Its access (group / own ACL policy), when the enrollment group sets one.
    pub access: Option<IdentityAccess>,
    /// Its assignment (`provisions` is computed by the store).
    pub assignment: Assignment,
}
