//! The PKCS#11 key store: a named P-256 key pair inside a token (SoftHSM2 in tests, standing
//! in for a secure element), through moat-vault's token code. Configuration is an RFC 7512
//! PKCS#11 URI:
//!
//! ```text
//! pkcs11:token=factory;object=device?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin
//! ```
//!
//! `token` (CKA_LABEL of the token) and `module-path` are required; `object` is the key's
//! label (else the caller's default); the PIN comes from `pin-value`, `pin-source` (a file),
//! or the caller (an environment variable).

use std::path::PathBuf;

use moat_vault::{Pkcs11Config, Secret, Token};

use super::{DeviceKey, KeyStore, check_label};
use crate::Error;

/// A parsed PKCS#11 URI.
#[derive(Clone, Debug)]
pub struct Pkcs11Spec {
    /// The PKCS#11 module (shared library) to load.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The key's label (`object=`), if the URI names one.
    pub object: Option<String>,
    /// `pin-value=`: the PIN in the URI itself (prefer `pin-source`).
    pub pin: Option<Secret>,
    /// `pin-source=`: a file holding the PIN.
    pub pin_source: Option<PathBuf>,
}

/// RFC 3986 percent-decoding of one URI component.
fn percent_decode(spec: &str, s: &str) -> Result<String, Error> {
    let bad = || Error::BadStoreSpec {
        spec: redact(spec),
        problem: format!("bad percent-encoding in {s:?}"),
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let v = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The URI with any `pin-value` blanked, for messages.
fn redact(spec: &str) -> String {
    match spec.find("pin-value=") {
        Some(at) => {
            let end = spec[at..].find('&').map_or(spec.len(), |e| at + e);
            format!("{}pin-value=[redacted]{}", &spec[..at], &spec[end..])
        }
        None => spec.to_owned(),
    }
}

impl Pkcs11Spec {
    /// Parses the RFC 7512 subset above.
    pub fn parse(spec: &str) -> Result<Pkcs11Spec, Error> {
        let err = |problem: String| Error::BadStoreSpec {
            spec: redact(spec),
            problem,
        };
        let rest = spec
            .strip_prefix("pkcs11:")
            .ok_or_else(|| err("a PKCS#11 URI starts with pkcs11:".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut module, mut pin, mut pin_source) =
            (None, None, None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| err(format!("{attr:?} is not name=value")))?;
            let v = percent_decode(spec, v)?;
            match k {
                "token" => token = Some(v),
                "object" => object = Some(v),
                // Attributes that narrow the search further are accepted and not needed.
                "type"
                | "id"
                | "manufacturer"
                | "model"
                | "serial"
                | "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-id"
                | "slot-manufacturer" => {}
                other => return Err(err(format!("unknown path attribute {other:?}"))),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| err(format!("{attr:?} is not name=value")))?;
            let v = percent_decode(spec, v)?;
            match k {
                "module-path" => module = Some(PathBuf::from(v)),
                "pin-value" => pin = Some(Secret::new(v)),
                "pin-source" => {
                    let path = v.strip_prefix("file://").unwrap_or(&v);
                    pin_source = Some(PathBuf::from(path));
                }
                "module-name" => {}
                other => return Err(err(format!("unknown query attribute {other:?}"))),
            }
        }
        let token = token.ok_or_else(|| err("token=LABEL is required".into()))?;
        let module = module.ok_or_else(|| {
            err("?module-path=/path/to/module.so is required (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)".into())
        })?;
        if let Some(o) = &object {
            check_label(o)?;
        }
        Ok(Pkcs11Spec {
            module,
            token,
            object,
            pin,
            pin_source,
        })
    }
}

/// Keys inside a PKCS#11 token (a logged-in session held open).
#[derive(Debug)]
pub struct Pkcs11KeyStore {
    token: Token,
}

impl Pkcs11KeyStore {
    /// Loads the module, finds the token and logs in. The PIN is the URI's (`pin-value`,
    /// `pin-source`), else `pin`.
    pub fn open(spec: &Pkcs11Spec, pin: Option<Secret>) -> Result<Pkcs11KeyStore, Error> {
        let pin = match (&spec.pin, &spec.pin_source, pin) {
            (Some(p), _, _) => p.clone(),
            (None, Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
                Secret::new(text.trim_end_matches(['\r', '\n']))
            }
            (None, None, Some(p)) => p,
            (None, None, None) => {
                return Err(Error::BadStoreSpec {
                    spec: format!("pkcs11:token={}", spec.token),
                    problem: "no PIN: set MOAT_DEVICE_PIN, or add ?pin-source=FILE to the URI"
                        .into(),
                });
            }
        };
        if !spec.module.exists() {
            return Err(Error::BadStoreSpec {
                spec: format!("module-path={}", spec.module.display()),
                problem: "no such PKCS#11 module (is the token's library installed?)".into(),
            });
        }
        let cfg = Pkcs11Config {
            module: spec.module.clone(),
            token_label: spec.token.clone(),
            pin,
        };
        let token = Token::open(&cfg).map_err(|e| match e {
            moat_vault::Error::WrongMasterKey => Error::WrongPin(spec.token.clone()),
            moat_vault::Error::TokenNotFound(t) => Error::TokenNotFound(t),
            e => Error::vault(format!("opening PKCS#11 token {:?}", spec.token))(e),
        })?;
        Ok(Pkcs11KeyStore { token })
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn generate(&self, label: &str) -> Result<DeviceKey, Error> {
        check_label(label)?;
        match self.token.generate_named_key(label) {
            Ok(k) => Ok(DeviceKey::new(k, label)),
            Err(moat_vault::Error::KeyExists(_)) => Err(Error::KeyExists {
                label: label.to_owned(),
                store: self.describe(),
            }),
            Err(e) => Err(Error::vault(format!(
                "generating key {label:?} in {}",
                self.describe()
            ))(e)),
        }
    }

    fn load(&self, label: &str) -> Result<DeviceKey, Error> {
        check_label(label)?;
        match self.token.find_named_key(label) {
            Ok(k) => Ok(DeviceKey::new(k, label)),
            Err(moat_vault::Error::KeyNotFound(_)) => Err(Error::KeyNotFound {
                label: label.to_owned(),
                store: self.describe(),
            }),
            Err(e) => Err(Error::vault(format!(
                "finding key {label:?} in {}",
                self.describe()
            ))(e)),
        }
    }

    fn describe(&self) -> String {
        format!("PKCS#11 token {:?}", self.token.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7512_uris() {
        let s = Pkcs11Spec::parse(
            "pkcs11:token=fac%20tory;object=dev-1;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:///run/pin",
        )
        .expect("parse");
        assert_eq!(s.token, "fac tory");
        assert_eq!(s.object.as_deref(), Some("dev-1"));
        assert_eq!(s.module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(s.pin_source, Some(PathBuf::from("/run/pin")));
        assert!(s.pin.is_none());

        let e = Pkcs11Spec::parse("pkcs11:token=t?pin-value=1234")
            .expect_err("no module")
            .to_string();
        assert!(e.contains("module-path") && !e.contains("1234"), "{e}");
        for bad in [
            "pkcs11:object=x?module-path=/m",
            "pkcs11:token=t;colour=red?module-path=/m",
            "pkcs11:token=%zz?module-path=/m",
            "pkcs11:token=t;object=../x?module-path=/m",
        ] {
            assert!(Pkcs11Spec::parse(bad).is_err(), "{bad}");
        }
    }
}
