//! A directory of device credentials as `moat device create --out DIR` writes them:
//! `DIR/ID.crt` (leaf + issuing CA) and `DIR/ID.key`.

use super::Error;
use super::tls::{PinningVerifier, client_config, read_certs, read_key};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use std::path::Path;
use std::sync::Arc;

/// One device's identity, ready to connect.
#[derive(Clone, Debug)]
pub struct Device {
    /// Device id (the file stem; equal to the certificate's identity).
    pub id: String,
    /// TLS client configuration presenting its certificate.
    pub tls: Arc<ClientConfig>,
}

/// Device ids found in `dir` (every `ID.crt` with an `ID.key` beside it), sorted.
pub fn list(dir: &Path) -> Result<Vec<String>, Error> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "crt")
            && path.with_extension("key").exists()
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            ids.push(stem.to_string());
        }
    }
    ids.sort();
    Ok(ids)
}

/// Loads the given devices' credentials from `dir`.
pub fn load(
    dir: &Path,
    ids: &[String],
    provider: &Arc<CryptoProvider>,
    verifier: &Arc<PinningVerifier>,
) -> Result<Vec<Device>, Error> {
    ids.iter()
        .map(|id| {
            let chain = read_certs(&dir.join(format!("{id}.crt")))?;
            let key = read_key(&dir.join(format!("{id}.key")))?;
            Ok(Device {
                id: id.clone(),
                tls: client_config(provider.clone(), verifier.clone(), chain, key)?,
            })
        })
        .collect()
}
