//! `moat fw …`: firmware images on a workstation, with the verifier devices run.

use crate::cli::FwCmd;
use anyhow::Context;
use moat_image::TrustedKey;

/// Runs a `moat fw` command.
pub fn run(cmd: &FwCmd) -> anyhow::Result<()> {
    match cmd {
        FwCmd::Verify {
            file,
            keys,
            min_counter,
        } => {
            let mut trusted = Vec::with_capacity(keys.len());
            for path in keys {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read the key {}", path.display()))?;
                let key = TrustedKey::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "{} is not a usable public key ({e}); give a PEM public key, e.g. from `imgtool getpub -k KEY -e pem`",
                        path.display()
                    )
                })?;
                trusted.push(key);
            }
            let image = std::fs::read(file)
                .with_context(|| format!("cannot read the image {}", file.display()))?;
            let report = moat_image::report(&image, &trusted, *min_counter);
            print!("{report}");
            if !report.accepted() {
                std::process::exit(3);
            }
            Ok(())
        }
    }
}
