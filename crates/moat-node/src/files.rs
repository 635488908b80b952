//! Files the hub and CLI write: private ones 0600, written atomically (temp + rename) so a
//! crash never leaves a half-written key, token or certificate.

use crate::error::{Context, Error};
use std::io::Write;
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode_private()
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl ModePrivate for std::fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            self.mode(0o700);
        }
        self
    }
}

/// Writes `contents` to `path` atomically with `mode` (0600 for secrets, 0644 for public).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a new file that must not exist yet (refuses to overwrite a key or certificate).
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    if path.exists() {
        return Err(Error::Exists {
            path: path.display().to_string(),
        });
    }
    write_atomic(path, contents, mode)
}
