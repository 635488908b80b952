//! Files in the data dir: `vault.json`, the master key file, atomic 0600 writes.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;

/// The only `vault.json` format version this code reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Length of a master key (AES-256).
pub(crate) const KEY_LEN: usize = 32;

/// `vault.json`: everything needed to open the vault except the secret itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VaultFile {
    /// Format version, so a newer layout is refused instead of misread.
    pub version: u32,
    /// `file`, `passphrase` or `pkcs11`: which kind of master key opens this vault.
    pub source: String,
    /// Key-derivation salt and cost for the passphrase source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2: Option<Argon2Record>,
    /// Which token object wraps data keys, for the PKCS#11 source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Record>,
    /// A known plaintext sealed under the master key (base64), to tell a wrong key apart
    /// from corrupt data before anything is touched.
    pub check: String,
}

/// Argon2id parameters as stored (the salt is not secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Argon2Record {
    /// Random 16-byte salt, base64.
    pub salt: String,
    /// Memory cost in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// Where the PKCS#11 wrapping key lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pkcs11Record {
    /// Token label the vault was created on (informational; the key is found by id).
    pub token_label: String,
    /// CKA_LABEL of the AES wrapping key.
    pub wrap_key_label: String,
    /// CKA_ID of the AES wrapping key, hex.
    pub wrap_key_id: String,
}

/// An `Error::Io` for `path`.
pub(crate) fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An `Error::Io` of kind `InvalidData` for a malformed file.
pub(crate) fn invalid(
    path: &Path,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    io_err(path, io::Error::new(io::ErrorKind::InvalidData, cause))
}

/// Creates the data dir (mode 0700) if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, e))
}

/// Reads `vault.json`, or `None` if it does not exist yet.
pub(crate) fn read_vault_file(path: &Path) -> Result<Option<VaultFile>, Error> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    let file: VaultFile = serde_json::from_slice(&bytes).map_err(|e| invalid(path, e))?;
    if file.version != FORMAT_VERSION {
        return Err(invalid(
            path,
            format!(
                "unsupported vault.json version {} (this build reads {FORMAT_VERSION})",
                file.version
            ),
        ));
    }
    Ok(Some(file))
}

/// Writes a new `vault.json` atomically; refuses to replace an existing one.
pub(crate) fn write_vault_file(path: &Path, file: &VaultFile) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| invalid(path, e))?;
    bytes.push(b'\n');
    write_new_atomic(path, &bytes)
}

/// Writes `bytes` to a 0600 temporary file next to `path`, syncs it, then links it into place
/// without replacing anything already there (`AlreadyExists` if `path` exists), so a reader
/// never sees a partial file and a concurrent creator never loses its file.
pub(crate) fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        fs::hard_link(&tmp, path).map_err(|e| io_err(path, e))?;
        // Make the new directory entry durable too.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn temp_path(path: &Path) -> Result<PathBuf, Error> {
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|e| Error::Crypto(format!("random: {e}")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(path.with_file_name(format!(".{name}.tmp-{}", hex::encode(suffix))))
}

/// Reads an existing master key file, refusing a wrong length or permissions wider than 0600.
/// `Ok(None)` if it does not exist.
pub(crate) fn read_key_file(path: &Path) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, Error> {
    let bad = |problem: String| Error::BadKeyFile {
        path: path.display().to_string(),
        problem,
    };
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    let meta = f.metadata().map_err(|e| io_err(path, e))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o7177 != 0 {
        return Err(bad(format!(
            "permissions {mode:04o} are wider than 0600 (run `chmod 600` on it)"
        )));
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(bad(format!(
            "{} bytes long, expected {KEY_LEN}",
            meta.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    f.read_exact(key.as_mut()).map_err(|e| io_err(path, e))?;
    Ok(Some(key))
}

/// Creates a new random master key file with mode 0600 (atomically, never replacing one).
pub(crate) fn create_key_file(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(key.as_mut()).map_err(|e| Error::Crypto(format!("random: {e}")))?;
    write_new_atomic(path, key.as_ref())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_is_0600_and_never_clobbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x");
        write_new_atomic(&p, b"one").expect("first write");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = write_new_atomic(&p, b"two").expect_err("second write must fail");
        assert!(
            matches!(err, Error::Io { ref source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
        );
        assert_eq!(fs::read(&p).expect("read"), b"one");
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn key_file_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        assert!(read_key_file(&p).expect("read").is_none());
        let k = create_key_file(&p).expect("create");
        assert_eq!(*read_key_file(&p).expect("read").expect("exists"), *k);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(read_key_file(&p), Err(Error::BadKeyFile { .. })));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&p, [0u8; 31]).expect("write");
        assert!(matches!(read_key_file(&p), Err(Error::BadKeyFile { .. })));
    }
}
