//! `moat device claim|transfer|suspend|resume|decommission|rotate|certs`: the device
//! lifecycle and certificate rotation.

use super::{print_json, seg};
use crate::cli::{Cli, DeviceCmd};
use crate::client::ApiClient;
use anyhow::bail;
use moat_api::dto::{CertView, DeviceView};
use moat_api::dto_lifecycle::{
    ClaimRequest, DecommissionResponse, RotateResponse, StatusRequest, TransferRequest,
};
use moat_node::files::{private_dir, write_new};

/// Prints the lifecycle lines of `moat device show`.
pub fn print_lifecycle(d: &DeviceView) {
    println!(
        "stage:    {}\nowner:    {}",
        d.stage,
        d.owner.as_deref().unwrap_or("-")
    );
    if let Some(r) = &d.status_reason {
        println!("reason:   {r}");
    }
}

pub async fn run(cli: &Cli, cmd: &DeviceCmd) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    let path = |id: &str, action: &str| format!("/api/v1/devices/{}/{action}", seg(id));
    match cmd {
        DeviceCmd::Claim { id, owner } => {
            let req = ClaimRequest {
                owner: owner.clone(),
            };
            let d: DeviceView = api.post(&path(id, "claim"), &req).await?;
            done(cli, &d, || format!("device {} is owned by {owner}", d.id))
        }
        DeviceCmd::Transfer { id, to, from } => {
            let req = TransferRequest {
                to: to.clone(),
                from: from.clone(),
            };
            let d: DeviceView = api.post(&path(id, "transfer"), &req).await?;
            done(cli, &d, || format!("device {} is now owned by {to}", d.id))
        }
        DeviceCmd::Suspend { id, reason } => {
            let req = StatusRequest {
                reason: Some(reason.clone()),
            };
            let d: DeviceView = api.post(&path(id, "suspend"), &req).await?;
            done(cli, &d, || {
                format!(
                    "device {} is suspended: its connections are refused, its certificates kept (moat device resume {} ends it)",
                    d.id, d.id
                )
            })
        }
        DeviceCmd::Resume { id, reason } => {
            let req = StatusRequest {
                reason: reason.clone(),
            };
            let d: DeviceView = api.post(&path(id, "resume"), &req).await?;
            done(cli, &d, || format!("device {} is {} again", d.id, d.stage))
        }
        DeviceCmd::Decommission { id, reason } => {
            let req = StatusRequest {
                reason: reason.clone(),
            };
            let r: DecommissionResponse = api.post(&path(id, "decommission"), &req).await?;
            if cli.json {
                return print_json(&r);
            }
            println!(
                "decommissioned device {}: {} certificate(s) revoked ({}); its serial can never enroll again",
                r.device.id,
                r.revoked_serials.len(),
                if r.revoked_serials.is_empty() {
                    "none live".to_string()
                } else {
                    r.revoked_serials.join(" ")
                }
            );
            Ok(())
        }
        DeviceCmd::Rotate { id, out } => {
            // Check the output directory before the hub issues anything.
            private_dir(out)?;
            for ext in ["crt", "key"] {
                let p = out.join(format!("{id}.{ext}"));
                if p.exists() {
                    bail!(
                        "{} already exists; move it away (the device may still use it) or choose another --out directory",
                        p.display()
                    );
                }
            }
            let r: RotateResponse = api
                .post(&path(id, "rotate"), &serde_json::json!({}))
                .await?;
            write_new(
                &out.join(format!("{id}.crt")),
                r.certificate_pem.as_bytes(),
                0o644,
            )?;
            write_new(
                &out.join(format!("{id}.key")),
                r.private_key_pem.as_bytes(),
                0o600,
            )?;
            if cli.json {
                // The key went to the file; not to the terminal.
                return print_json(&serde_json::json!({
                    "device": r.device, "certificate": r.certificate,
                    "superseded": r.superseded, "retire_at": r.retire_at,
                }));
            }
            println!(
                "new certificate {} for device {id}\nwrote {}\nwrote {} (the hub does not keep this key)",
                r.certificate.serial,
                out.join(format!("{id}.crt")).display(),
                out.join(format!("{id}.key")).display()
            );
            match &r.retire_at {
                Some(at) => println!("superseded, retiring at {at}: {}", r.superseded.join(" ")),
                None => println!("no earlier certificate to retire"),
            }
            Ok(())
        }
        DeviceCmd::Certs { id } => {
            let certs: Vec<CertView> = api.get(&path(id, "certificates")).await?;
            if cli.json {
                return print_json(&certs);
            }
            println!(
                "{:<34} {:<8} {:<21} {:<21} RETIRES",
                "SERIAL", "SOURCE", "NOT BEFORE", "NOT AFTER"
            );
            for c in certs {
                println!(
                    "{:<34} {:<8} {:<21} {:<21} {}",
                    c.serial,
                    c.source,
                    c.not_before,
                    c.not_after,
                    c.retire_at.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        other => bail!("not a lifecycle command: {other:?}"),
    }
}

fn done(cli: &Cli, d: &DeviceView, line: impl FnOnce() -> String) -> anyhow::Result<()> {
    if cli.json {
        return print_json(d);
    }
    println!("{}", line());
    Ok(())
}
