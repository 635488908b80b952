//! `moat gateway …`.

use super::{print_json, read_input, seg};
use crate::cli::{AllowTarget, Cli, GatewayCmd};
use crate::client::ApiClient;
use anyhow::bail;
use moat_api::dto::CreateDeviceResponse;
use moat_api::dto_gateways::{CreateGatewayRequest, GatewayAllowRequest, GatewayView};
use moat_node::files::{private_dir, write_new};

pub async fn run(cli: &Cli, cmd: &GatewayCmd) -> anyhow::Result<()> {
    match cmd {
        GatewayCmd::Create {
            name,
            out,
            csr,
            cert,
        } => {
            if csr.is_none() && cert.is_none() && out.is_none() {
                bail!(
                    "the hub will generate this gateway's key and show it only once: pass --out DIR to write it (or --csr FILE / --cert FILE)"
                );
            }
            if let Some(dir) = out {
                private_dir(dir)?;
                for ext in ["crt", "key"] {
                    let p = dir.join(format!("{name}.{ext}"));
                    if p.exists() {
                        bail!(
                            "{} already exists; move it away or choose another --out directory",
                            p.display()
                        );
                    }
                }
            }
            let text = |p: &std::path::Path, what| {
                read_input(p, what).and_then(|b| {
                    String::from_utf8(b).map_err(|_| anyhow::anyhow!("{} is not PEM", p.display()))
                })
            };
            let req = CreateGatewayRequest {
                name: name.clone(),
                csr: csr.as_deref().map(|p| text(p, "CSR")).transpose()?,
                cert: cert
                    .as_deref()
                    .map(|p| text(p, "certificate"))
                    .transpose()?,
            };
            let api = ApiClient::from_cli(cli)?;
            let created: CreateDeviceResponse = api.post("/api/v1/gateways", &req).await?;
            if let Some(dir) = out {
                if cert.is_none() {
                    write_new(
                        &dir.join(format!("{name}.crt")),
                        created.certificate_pem.as_bytes(),
                        0o644,
                    )?;
                }
                if let Some(key) = &created.private_key_pem {
                    write_new(&dir.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
                }
            }
            if cli.json {
                return print_json(&created);
            }
            println!(
                "created gateway {name} (certificate serial {}); it publishes and subscribes under gateways/{name}/#",
                created.certificate.serial
            );
            match out {
                Some(dir) if created.private_key_pem.is_some() => println!(
                    "wrote {} and {} (the hub does not keep the key)",
                    dir.join(format!("{name}.crt")).display(),
                    dir.join(format!("{name}.key")).display()
                ),
                Some(dir) if cert.is_none() => {
                    println!("wrote {}", dir.join(format!("{name}.crt")).display())
                }
                _ if cert.is_none() => print!("{}", created.certificate_pem),
                _ => {}
            }
            println!("let it relay with: moat gateway allow {name} --device ID | --group G");
            Ok(())
        }
        GatewayCmd::Allow { name, target } | GatewayCmd::Disallow { name, target } => {
            let allow = matches!(cmd, GatewayCmd::Allow { .. });
            let api = ApiClient::from_cli(cli)?;
            let path = format!(
                "/api/v1/gateways/{}/{}",
                seg(name),
                if allow { "allow" } else { "disallow" }
            );
            let g: GatewayView = api.post(&path, &request(target)).await?;
            if cli.json {
                return print_json(&g);
            }
            println!(
                "gateway {} {} relay for {}",
                g.name,
                if allow { "may" } else { "may no longer" },
                describe(target)
            );
            Ok(())
        }
        GatewayCmd::List => {
            let api = ApiClient::from_cli(cli)?;
            let all: Vec<GatewayView> = api.get("/api/v1/gateways").await?;
            if cli.json {
                return print_json(&all);
            }
            println!("{:<32} {:<9} RELAYS FOR", "NAME", "STATE");
            for g in all {
                println!("{:<32} {:<9} {}", g.name, g.state, allowances(&g));
            }
            Ok(())
        }
        GatewayCmd::Show { name } => {
            let api = ApiClient::from_cli(cli)?;
            let g: GatewayView = api.get(&format!("/api/v1/gateways/{}", seg(name))).await?;
            if cli.json {
                return print_json(&g);
            }
            println!("gateway:    {}", g.name);
            println!("state:      {}", g.state);
            println!("ca:         {}", g.ca);
            println!("created:    {}", g.created_at);
            println!("topics:     {}", g.topics);
            println!("relays for: {}", allowances(&g));
            Ok(())
        }
        GatewayCmd::Revoke { name, reason } => {
            super::device::revoke(
                cli,
                "gateway",
                &format!("/api/v1/gateways/{}/revoke", seg(name)),
                reason,
            )
            .await
        }
    }
}

fn request(t: &AllowTarget) -> GatewayAllowRequest {
    GatewayAllowRequest {
        device: t.device.clone(),
        group: t.group.clone(),
        enrollment_group: t.enrollment_group.clone(),
    }
}

fn describe(t: &AllowTarget) -> String {
    match (&t.device, &t.group, &t.enrollment_group) {
        (Some(d), _, _) => format!("device {d}"),
        (_, Some(g), _) => format!("the devices of group {g}"),
        (_, _, Some(e)) => format!("the devices of enrollment group {e}"),
        _ => "nothing".into(),
    }
}

fn allowances(g: &GatewayView) -> String {
    if g.allowances.is_empty() {
        return "(nothing yet)".into();
    }
    g.allowances
        .iter()
        .map(|a| format!("{}:{}", a.kind, a.name))
        .collect::<Vec<_>>()
        .join(" ")
}
