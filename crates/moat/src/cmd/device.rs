//! `moat device …`.

use super::{print_json, read_input, seg};
use crate::cli::{Cli, DeviceCmd};
use crate::client::ApiClient;
use anyhow::bail;
use moat_api::dto::{
    AccessRequest, AccessView, CertView, CreateDeviceRequest, CreateDeviceResponse, DeviceView,
    RevokeDeviceResponse, RevokeRequest,
};
use moat_node::files::{private_dir, write_new};

pub async fn run(cli: &Cli, cmd: &DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::Create {
            id,
            out,
            csr,
            cert,
            allow_insecure,
            group,
        } => {
            if csr.is_none() && cert.is_none() && out.is_none() {
                bail!(
                    "the hub will generate this device's key and show it only once: pass --out DIR to write it (or --csr FILE / --cert FILE)"
                );
            }
            if cert.is_some() && out.is_some() && !allow_insecure {
                bail!(
                    "--out has nothing to write with --cert (the certificate is yours already); drop --out"
                );
            }
            // Check the output directory before the hub issues anything.
            if let Some(dir) = out {
                private_dir(dir)?;
                for ext in ["crt", "key", "token"] {
                    let p = dir.join(format!("{id}.{ext}"));
                    if p.exists() {
                        bail!(
                            "{} already exists; move it away or choose another --out directory",
                            p.display()
                        );
                    }
                }
            }
            let req = CreateDeviceRequest {
                id: id.clone(),
                csr: csr
                    .as_deref()
                    .map(|p| read_input(p, "CSR").and_then(lossy))
                    .transpose()?,
                cert: cert
                    .as_deref()
                    .map(|p| read_input(p, "certificate").and_then(lossy))
                    .transpose()?,
                allow_insecure: *allow_insecure,
            };
            let api = ApiClient::from_cli(cli)?;
            let created: CreateDeviceResponse = api.post("/api/v1/devices", &req).await?;
            if let Some(g) = group {
                let _: AccessView = api
                    .post(
                        &format!("/api/v1/devices/{}/access", seg(id)),
                        &AccessRequest {
                            group: Some(g.clone()),
                            policy: None,
                        },
                    )
                    .await?;
            }
            if let Some(dir) = out {
                if cert.is_none() {
                    write_new(
                        &dir.join(format!("{id}.crt")),
                        created.certificate_pem.as_bytes(),
                        0o644,
                    )?;
                }
                if let Some(key) = &created.private_key_pem {
                    write_new(&dir.join(format!("{id}.key")), key.as_bytes(), 0o600)?;
                }
                if let Some(token) = &created.token {
                    write_new(
                        &dir.join(format!("{id}.token")),
                        format!("{token}\n").as_bytes(),
                        0o600,
                    )?;
                }
            }
            if cli.json {
                return print_json(&created);
            }
            println!(
                "created device {} (policy {}, certificate serial {})",
                created.device.id, created.device.policy, created.certificate.serial
            );
            match out {
                Some(dir) => {
                    println!("wrote {}", dir.join(format!("{id}.crt")).display());
                    if created.private_key_pem.is_some() {
                        println!(
                            "wrote {} (the hub does not keep this key)",
                            dir.join(format!("{id}.key")).display()
                        );
                    }
                }
                None if cert.is_none() => print!("{}", created.certificate_pem),
                None => {}
            }
            if let Some(token) = &created.token {
                println!("device token (shown once; the hub keeps only its hash): {token}");
            }
            Ok(())
        }
        DeviceCmd::SetGroup { id, group } => {
            let api = ApiClient::from_cli(cli)?;
            let a: AccessView = api
                .post(
                    &format!("/api/v1/devices/{}/access", seg(id)),
                    &AccessRequest {
                        group: Some(group.clone()),
                        policy: None,
                    },
                )
                .await?;
            if cli.json {
                return print_json(&a);
            }
            println!(
                "device {} is in group {}",
                a.device_id,
                a.group.as_deref().unwrap_or("(none)")
            );
            Ok(())
        }
        DeviceCmd::SetModel { id, model } => {
            let api = ApiClient::from_cli(cli)?;
            let m: moat_api::dto_ota::DeviceModelView = api
                .put(
                    &format!("/api/v1/devices/{}/model", seg(id)),
                    &moat_api::dto_ota::DeviceModelRequest {
                        model: model.clone(),
                    },
                )
                .await?;
            if cli.json {
                return print_json(&m);
            }
            println!(
                "device {} has model {}",
                m.device_id,
                m.model.as_deref().unwrap_or("(none)")
            );
            Ok(())
        }
        DeviceCmd::List {
            limit,
            after,
            owner,
        } => {
            let api = ApiClient::from_cli(cli)?;
            let mut path = format!("/api/v1/devices?limit={limit}");
            if let Some(a) = after {
                path.push_str(&format!("&after={}", seg(a)));
            }
            if let Some(o) = owner {
                path.push_str(&format!("&owner={}", seg(o)));
            }
            let devices: Vec<DeviceView> = api.get(&path).await?;
            if cli.json {
                return print_json(&devices);
            }
            println!(
                "{:<32} {:<9} {:<14} {:<15} {:<10} {:<16} CREATED",
                "ID", "STATE", "STAGE", "POLICY", "CA", "OWNER"
            );
            for d in devices {
                println!(
                    "{:<32} {:<9} {:<14} {:<15} {:<10} {:<16} {}",
                    d.id,
                    d.state,
                    d.stage,
                    d.policy,
                    d.ca,
                    d.owner.as_deref().unwrap_or("-"),
                    d.created_at
                );
            }
            Ok(())
        }
        DeviceCmd::Show { id } => {
            let api = ApiClient::from_cli(cli)?;
            let d: DeviceView = api.get(&format!("/api/v1/devices/{}", seg(id))).await?;
            let certs: Vec<CertView> = api
                .get(&format!("/api/v1/certificates?device={}", seg(id)))
                .await?;
            if cli.json {
                return print_json(&serde_json::json!({ "device": d, "certificates": certs }));
            }
            println!(
                "id:       {}\nstate:    {}\npolicy:   {}\nca:       {}\ncreated:  {}\nupdated:  {}",
                d.id, d.state, d.policy, d.ca, d.created_at, d.updated_at
            );
            super::lifecycle::print_lifecycle(&d);
            if let Some(serial) = &d.serial {
                println!(
                    "serial:   {serial}\nmac:      {}\nmodel:    {}",
                    d.mac.as_deref().unwrap_or("-"),
                    d.model.as_deref().unwrap_or("-")
                );
            }
            println!("certificates:");
            for c in certs {
                let status = match &c.revoked_at {
                    Some(at) => format!(
                        "revoked {at} ({})",
                        c.revocation_reason.as_deref().unwrap_or("unspecified")
                    ),
                    None => match &c.retire_at {
                        Some(at) => {
                            format!("superseded, retires {at} (valid until {})", c.not_after)
                        }
                        None => format!("valid until {}", c.not_after),
                    },
                };
                println!("  {}  {}  {}", c.serial, c.source, status);
            }
            Ok(())
        }
        DeviceCmd::Disable { id } => state_change(cli, id, "disable").await,
        DeviceCmd::Enable { id } => state_change(cli, id, "enable").await,
        DeviceCmd::Delete { id } => {
            let api = ApiClient::from_cli(cli)?;
            api.delete(&format!("/api/v1/devices/{}", seg(id))).await?;
            println!("deleted device {id} (its certificates are revoked)");
            Ok(())
        }
        DeviceCmd::Revoke { id, reason } => {
            revoke(
                cli,
                "device",
                &format!("/api/v1/devices/{}/revoke", seg(id)),
                reason,
            )
            .await
        }
        other => super::lifecycle::run(cli, other).await,
    }
}

async fn state_change(cli: &Cli, id: &str, action: &str) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    let d: DeviceView = api
        .post(
            &format!("/api/v1/devices/{}/{action}", seg(id)),
            &serde_json::json!({}),
        )
        .await?;
    if cli.json {
        return print_json(&d);
    }
    println!("device {} is now {}", d.id, d.state);
    Ok(())
}

/// Refuses an unknown reason before calling the hub.
pub fn check_reason(r: &str) -> anyhow::Result<()> {
    if moat_core::RevocationReason::parse(r).is_none() {
        bail!(
            "unknown --reason {r:?}; use unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation or privilege_withdrawn"
        );
    }
    Ok(())
}

fn lossy(b: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(b).map_err(|_| {
        anyhow::anyhow!("the file is not PEM; convert DER with `openssl req -inform der -in FILE -out FILE.pem` (CSR) or `openssl x509 -inform der …` (certificate)")
    })
}

/// Revokes an identity (`what`: device, gateway) through `path` with an optional reason and
/// prints what was revoked.
pub(super) async fn revoke(
    cli: &Cli,
    what: &str,
    path: &str,
    reason: &Option<String>,
) -> anyhow::Result<()> {
    if let Some(r) = reason {
        check_reason(r)?;
    }
    let api = ApiClient::from_cli(cli)?;
    let r: RevokeDeviceResponse = api
        .post(
            path,
            &RevokeRequest {
                reason: reason.clone(),
            },
        )
        .await?;
    if cli.json {
        return print_json(&r);
    }
    println!(
        "revoked {what} {} and {} certificate(s): {}",
        r.device_id,
        r.revoked_serials.len(),
        r.revoked_serials.join(" ")
    );
    Ok(())
}
