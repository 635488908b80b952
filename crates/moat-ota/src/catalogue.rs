//! The image catalogue: uploads verified as devices verify them, content-addressed blobs
//! under `DATA_DIR/firmware/<sha256>`, hub-side signing, and download authorisation.

use crate::{Error, Ota, random_id, valid_name};
use moat_core::Actor;
use moat_image::ImageVersion;
use moat_image::sign::ImageBuilder;
use moat_store::FirmwareRecord;
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

/// What `moat fw sign` asks for.
#[derive(Clone, Debug)]
pub struct SignRequest {
    /// The hub-held key to sign with.
    pub key: String,
    /// Image version, `major.minor.revision[+build]`.
    pub version: String,
    /// Security counter written to the protected TLVs.
    pub security_counter: u32,
    /// Header size (the payload starts there; imgtool `--header-size`, padded).
    pub header_size: u16,
}

/// Parses `major.minor.revision[+build]` as imgtool does.
pub fn parse_version(s: &str) -> Result<ImageVersion, Error> {
    let bad = || {
        Error::Invalid(format!(
            "version {s:?} is not MAJOR.MINOR.REVISION[+BUILD] (e.g. 1.2.3 or 1.2.3+4)"
        ))
    };
    let (main, build) = match s.split_once('+') {
        Some((m, b)) => (m, b.parse::<u32>().map_err(|_| bad())?),
        None => (s, 0),
    };
    let mut parts = main.split('.');
    let major = parts
        .next()
        .and_then(|p| p.parse::<u8>().ok())
        .ok_or_else(bad)?;
    let minor = parts
        .next()
        .map_or(Ok(0), |p| p.parse::<u8>().map_err(|_| bad()))?;
    let revision = parts
        .next()
        .map_or(Ok(0), |p| p.parse::<u16>().map_err(|_| bad()))?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(ImageVersion {
        major,
        minor,
        revision,
        build,
    })
}

/// SHA-256 of `bytes`, lowercase hex: an image's catalogue digest and blob name.
pub fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is a SHA-256 in lowercase hex (what blob names and download paths are).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where blobs live, and who may fetch them. Needs only the registry and the data dir, so
/// a download listener can run without the vault.
#[derive(Clone, Debug)]
pub struct Downloads {
    store: Arc<dyn moat_store::FirmwareStore>,
    dir: PathBuf,
}

/// An image a device may fetch.
#[derive(Debug)]
pub struct Blob {
    /// Its file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its digest (the HTTP entity tag).
    pub digest: String,
}

impl Downloads {
    /// Blobs under `data_dir/firmware`, authorised by `store`.
    pub fn new(store: Arc<dyn moat_store::FirmwareStore>, data_dir: &Path) -> Self {
        Downloads {
            store,
            dir: data_dir.join("firmware"),
        }
    }

    /// The blob directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image `digest` if `device_id` may fetch it: it is a notified target of a running
    /// or paused campaign for that image. Whether the device may act at all (its certificate,
    /// its state) is `moat_core::CertificateCheck`'s decision, made before this at every
    /// request.
    pub async fn open(&self, device_id: &str, digest: &str) -> Result<Blob, Error> {
        if !is_digest(digest) {
            return Err(Error::Invalid(
                "the path must name an image by its SHA-256 (64 lowercase hex digits)".into(),
            ));
        }
        let refused = || Error::DownloadRefused {
            device: device_id.to_owned(),
            digest: digest.to_owned(),
        };
        if !self.store.download_allowed(device_id, digest).await? {
            return Err(refused());
        }
        let path = self.dir.join(digest);
        let meta = tokio::fs::metadata(&path).await.map_err(Error::io(format!(
            "image {digest} is in the catalogue but its blob is not readable"
        )))?;
        Ok(Blob {
            path,
            size: meta.len(),
            digest: digest.to_owned(),
        })
    }

    /// Removes what interrupted uploads left: temporary files, and blobs no image record
    /// names (an upload killed between its blob and its row). Only while no upload runs
    /// (at start-up). Other files are left alone.
    pub(crate) fn sweep(&self, known: &std::collections::HashSet<String>) -> Result<usize, Error> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(Error::io(format!("listing {}", self.dir.display())))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("listing {}", self.dir.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let orphan = (name.starts_with('.') && name.ends_with(".tmp"))
                || (is_digest(name) && !known.contains(name));
            if orphan {
                std::fs::remove_file(entry.path())
                    .map_err(Error::io(format!("removing {}", entry.path().display())))?;
                tracing::warn!(
                    file = name,
                    "removed a firmware blob an interrupted upload left"
                );
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes `bytes` as blob `digest` unless it exists: to a temporary file in the same
    /// directory, synced, then renamed, so a reader never sees half an image.
    fn store_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.dir.join(digest);
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("creating {}", self.dir.display())))?;
        let tmp = self.dir.join(format!(".{digest}.{}.tmp", random_id("")));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename is durable once the directory is.
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::Io {
                context: format!("writing image {digest}"),
                source: e,
            }
        })
    }
}

impl Ota {
    /// Publishes an image for `model` if the verifier devices run accepts it with one of the
    /// registered keys and its security counter is not below one already published for the
    /// model. The blob is stored before the record, so a published image is always readable.
    pub async fn upload(
        &self,
        model: &str,
        image: &[u8],
        actor: &Actor,
    ) -> Result<FirmwareRecord, Error> {
        let result = self.upload_inner(model, image).await;
        let target = result.as_ref().map(|f| f.id.clone()).ok();
        self.audited(
            actor,
            "fw.upload",
            target.as_deref().or(Some(model)),
            result,
        )
        .await
    }

    async fn upload_inner(&self, model: &str, image: &[u8]) -> Result<FirmwareRecord, Error> {
        valid_name("model", model)?;
        let size = image.len() as u64;
        if size > self.cfg.max_image_size {
            return Err(Error::TooLarge {
                size,
                limit: self.cfg.max_image_size,
            });
        }
        let (keys, names) = self.trusted_keys().await?;
        if keys.is_empty() {
            return Err(Error::State(
                "no firmware key is registered: add one with `moat fw key add` or `moat fw key generate`".into(),
            ));
        }
        let verified = moat_image::verify(image, &keys, 0).map_err(Error::ImageRefused)?;
        let counter = verified.security_counter.unwrap_or(0);
        let published = self.store().max_security_counter(model).await?;
        if let Some(p) = published.filter(|p| counter < *p) {
            return Err(Error::CounterBelowPublished {
                counter,
                published: p,
                model: model.to_owned(),
            });
        }
        let digest = digest_hex(image);
        let downloads = self.downloads.clone();
        let (d, bytes) = (digest.clone(), image.to_vec());
        tokio::task::spawn_blocking(move || downloads.store_blob(&d, &bytes))
            .await
            .map_err(|e| Error::Signing(format!("blob writer task failed: {e}")))??;
        let record = FirmwareRecord {
            id: random_id("fw-"),
            model: model.to_owned(),
            version: verified.version().to_string(),
            security_counter: counter,
            size,
            digest,
            key_name: names.get(verified.key_index).cloned().unwrap_or_default(),
            created_at: OffsetDateTime::now_utc(),
        };
        match self.store().publish_firmware(&record).await {
            Ok(true) => Ok(record),
            // Another upload with a higher counter won the race.
            Ok(false) => {
                let published = self.store().max_security_counter(model).await?.unwrap_or(0);
                Err(Error::CounterBelowPublished {
                    counter,
                    published,
                    model: model.to_owned(),
                })
            }
            Err(moat_store::Error::Conflict(_)) => Err(Error::Conflict {
                kind: "image for this model",
                id: record.digest,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Every published image, newest first.
    pub async fn list_firmware(&self) -> Result<Vec<FirmwareRecord>, Error> {
        Ok(self.store().list_firmware().await?)
    }

    /// One published image.
    pub async fn firmware(&self, id: &str) -> Result<FirmwareRecord, Error> {
        self.store()
            .firmware(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "firmware",
                id: id.to_owned(),
            })
    }

    /// Builds an MCUboot image around `payload` and signs it with a hub-held key (in the
    /// vault or the PKCS#11 token), laid out as `imgtool sign --pad-header` lays it out.
    pub async fn sign(
        &self,
        req: &SignRequest,
        payload: &[u8],
        actor: &Actor,
    ) -> Result<Vec<u8>, Error> {
        let result = async {
            let version = parse_version(&req.version)?;
            if usize::from(req.header_size) < moat_image::HEADER_SIZE {
                return Err(Error::Invalid(format!(
                    "header size {} is below {}",
                    req.header_size,
                    moat_image::HEADER_SIZE
                )));
            }
            if payload.len() as u64 > self.cfg.max_image_size {
                return Err(Error::TooLarge {
                    size: payload.len() as u64,
                    limit: self.cfg.max_image_size,
                });
            }
            let signer = self.key_signer(&req.key).await?;
            let builder = ImageBuilder::new(version)
                .with_header_size(req.header_size)
                .with_security_counter(req.security_counter);
            let payload = payload.to_vec();
            tokio::task::spawn_blocking(move || builder.sign_with(&payload, &signer))
                .await
                .map_err(|e| Error::Signing(format!("signing task failed: {e}")))?
                .map_err(|e| Error::Signing(e.to_string()))
        }
        .await;
        self.audited(actor, "fw.sign", Some(&req.key), result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_imgtool() {
        let v = |s| parse_version(s).ok().map(|v| v.to_string());
        assert_eq!(v("1.2.3"), Some("1.2.3+0".into()));
        assert_eq!(v("1.2.3+4"), Some("1.2.3+4".into()));
        assert_eq!(v("2"), Some("2.0.0+0".into()));
        for bad in ["", "x", "1.2.3.4", "256.0.0", "1.2.x", "1.2.3+y", "1..2"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        assert!(is_digest(&digest_hex(b"x")));
        assert!(!is_digest("AB"));
        assert!(!is_digest(&"A".repeat(64)));
        assert!(!is_digest(&"../".repeat(21)));
    }
}
