//! `moat fw …`: the device's image verifier on a workstation (`verify`, no hub needed), and
//! the hub's firmware keys, signing and catalogue (admin API).

use super::{print_json, read_input, seg};
use crate::cli::{Cli, FwCmd, FwKeyCmd};
use crate::client::ApiClient;
use anyhow::Context;
use moat_api::dto_ota::{
    AddFirmwareKeyRequest, FirmwareKeyView, FirmwareView, GenerateFirmwareKeyRequest, UpdateKeyView,
};
use moat_image::TrustedKey;

/// Runs a `moat fw` command.
pub async fn run(cli: &Cli, cmd: &FwCmd) -> anyhow::Result<()> {
    match cmd {
        FwCmd::Verify {
            file,
            keys,
            min_counter,
        } => verify(file, keys, *min_counter),
        FwCmd::Key(k) => key(cli, k).await,
        FwCmd::Sign {
            key,
            version,
            security_counter,
            header_size,
            input,
            output,
        } => {
            let payload = read_input(input, "payload")?;
            let api = ApiClient::from_cli(cli)?;
            let path = format!(
                "/api/v1/firmware-keys/{}/sign?version={}&security_counter={security_counter}&header_size={header_size}",
                seg(key),
                seg(version)
            );
            let image = api.post_bytes_raw(&path, payload).await?;
            moat_node::files::write_atomic(output, &image, 0o644)
                .with_context(|| format!("cannot write {}", output.display()))?;
            println!(
                "signed {} ({} bytes) with key {key}: version {version}, security counter {security_counter}",
                output.display(),
                image.len()
            );
            Ok(())
        }
        FwCmd::Upload { file, model } => {
            let image = read_input(file, "image")?;
            let api = ApiClient::from_cli(cli)?;
            let fw: FirmwareView = api
                .post_bytes(&format!("/api/v1/firmware?model={}", seg(model)), image)
                .await?;
            if cli.json {
                return print_json(&fw);
            }
            println!(
                "published {}: model {}, version {}, security counter {}, {} bytes, key {}, sha256 {}",
                fw.id, fw.model, fw.version, fw.security_counter, fw.size, fw.key, fw.digest
            );
            Ok(())
        }
        FwCmd::List => {
            let api = ApiClient::from_cli(cli)?;
            let list: Vec<FirmwareView> = api.get("/api/v1/firmware").await?;
            if cli.json {
                return print_json(&list);
            }
            println!(
                "{:<16} {:<20} {:<14} {:>7} {:>10} {:<12} CREATED",
                "ID", "MODEL", "VERSION", "COUNTER", "SIZE", "KEY"
            );
            for f in list {
                println!(
                    "{:<16} {:<20} {:<14} {:>7} {:>10} {:<12} {}",
                    f.id, f.model, f.version, f.security_counter, f.size, f.key, f.created_at
                );
            }
            Ok(())
        }
        FwCmd::UpdateKey => {
            let api = ApiClient::from_cli(cli)?;
            let k: UpdateKeyView = api.get("/api/v1/ota/update-key").await?;
            if cli.json {
                return print_json(&k);
            }
            print!("{}", k.public_key_pem);
            Ok(())
        }
    }
}

async fn key(cli: &Cli, cmd: &FwKeyCmd) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    match cmd {
        FwKeyCmd::Add { name, public_key } => {
            let pem = read_input(public_key, "public key")?;
            let req = AddFirmwareKeyRequest {
                name: name.clone(),
                public_key_pem: String::from_utf8_lossy(&pem).into_owned(),
            };
            let k: FirmwareKeyView = api.post("/api/v1/firmware-keys", &req).await?;
            if cli.json {
                return print_json(&k);
            }
            println!("registered {} key {}", k.kind, k.name);
            Ok(())
        }
        FwKeyCmd::Generate { name } => {
            let req = GenerateFirmwareKeyRequest { name: name.clone() };
            let k: FirmwareKeyView = api.post("/api/v1/firmware-keys/generate", &req).await?;
            if cli.json {
                return print_json(&k);
            }
            print!("{}", k.public_key_pem);
            Ok(())
        }
        FwKeyCmd::List => {
            let keys: Vec<FirmwareKeyView> = api.get("/api/v1/firmware-keys").await?;
            if cli.json {
                return print_json(&keys);
            }
            println!("{:<24} {:<8} {:<9} CREATED", "NAME", "KIND", "HUB-HELD");
            for k in keys {
                println!(
                    "{:<24} {:<8} {:<9} {}",
                    k.name,
                    k.kind,
                    if k.hub_held { "yes" } else { "no" },
                    k.created_at
                );
            }
            Ok(())
        }
    }
}

fn verify(
    file: &std::path::Path,
    keys: &[std::path::PathBuf],
    min_counter: u32,
) -> anyhow::Result<()> {
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
    let image =
        std::fs::read(file).with_context(|| format!("cannot read the image {}", file.display()))?;
    let report = moat_image::report(&image, &trusted, min_counter);
    print!("{report}");
    if !report.accepted() {
        std::process::exit(3);
    }
    Ok(())
}
