//! Files the SDK writes (keys, certificates, assignments) and the PEM it reads.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n: u64 = rand::random();
    path.with_file_name(format!(".{name}.{n:016x}.tmp"))
}

/// Writes a 0600 temporary file next to `path` and syncs it; returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, Error> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io(&tmp))?;
    let r = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp)(e));
    }
    Ok(tmp)
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
}

/// Replaces `path` atomically (temporary file, fsync, rename, directory fsync), mode 0600:
/// a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = write_temp(path, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path)(e));
    }
    sync_dir(path);
    Ok(())
}

/// Creates `path` atomically, mode 0600, never replacing an existing file (`Io` with
/// `AlreadyExists` then).
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = write_temp(path, bytes)?;
    let r = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    r.map_err(Error::io(path))?;
    sync_dir(path);
    Ok(())
}

/// PEM armour around `der`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The certificates of a PEM text, in order; `what` names it in errors. Refuses text with
/// no certificate.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadInput {
            what: what.to_owned(),
            problem: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::BadInput {
            what: what.to_owned(),
            problem: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

/// Reads a PEM certificate file (a chain or a CA bundle).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = fs::read(path).map_err(Error::io(path))?;
    certs_from_pem(&path.display().to_string(), &bytes)
}

/// PEM text of a chain.
pub fn certs_to_pem(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| pem_encode("CERTIFICATE", c)).collect()
}

/// Writes a chain as PEM, atomically.
pub fn write_certs(path: &Path, chain: &[CertificateDer<'_>]) -> Result<(), Error> {
    write_atomic(path, certs_to_pem(chain).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_and_pem_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("cert.pem");
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .expect("params")
            .self_signed(&rcgen::KeyPair::generate().expect("key"))
            .expect("cert");
        write_certs(&p, &[cert.der().clone()]).expect("write");
        write_certs(&p, &[cert.der().clone(), cert.der().clone()]).expect("replace");
        assert_eq!(read_certs(&p).expect("read").len(), 2);
        assert!(matches!(
            write_new(&p, b"x"),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
        // No temporary files left behind.
        assert_eq!(fs::read_dir(tmp.path()).expect("dir").count(), 1);
        assert!(certs_from_pem("empty", b"").is_err());
    }
}
