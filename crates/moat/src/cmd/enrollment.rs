//! `moat allowlist …` and `moat station …`: factory enrollment over EST; `moat
//! enrollment-group …`: what field provisioning gives a device.

use super::{print_json, read_input, seg};
use crate::cli::{AllowlistCmd, Cli, EnrollmentGroupCmd, StationCmd};
use crate::client::ApiClient;
use anyhow::{anyhow, bail};
use moat_api::dto::{
    AllowlistAdded, AllowlistUpload, AllowlistView, CreateStationRequest, CreateStationResponse,
    StationView,
};
use moat_api::provisioning::{CreateEnrollmentGroupRequest, EnrollmentGroupView};
use moat_node::files::{private_dir, write_new};
use moat_store::{Allocation, ConnectionPolicy};

pub async fn allowlist(cli: &Cli, cmd: &AllowlistCmd) -> anyhow::Result<()> {
    match cmd {
        AllowlistCmd::Add { file } => {
            let csv = String::from_utf8(read_input(file, "allow-list")?).map_err(|_| {
                anyhow!(
                    "{} is not UTF-8 text; save it as CSV (UTF-8): serial[,mac[,model]] per line",
                    file.display()
                )
            })?;
            // The same checks the hub runs, before contacting it: a bad file is refused with
            // its line numbers even when no hub is reachable.
            moat_core::parse_allowlist_csv(&csv).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let api = ApiClient::from_cli(cli)?;
            let added: AllowlistAdded = api
                .post("/api/v1/allowlist", &AllowlistUpload { csv })
                .await
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            if cli.json {
                return print_json(&added);
            }
            println!(
                "added {} serial(s) to the allow-list from {}",
                added.added,
                file.display()
            );
            Ok(())
        }
        AllowlistCmd::List { limit, after } => {
            let api = ApiClient::from_cli(cli)?;
            let mut path = format!("/api/v1/allowlist?limit={limit}");
            if let Some(a) = after {
                path.push_str(&format!("&after={}", seg(a)));
            }
            let entries: Vec<AllowlistView> = api.get(&path).await?;
            if cli.json {
                return print_json(&entries);
            }
            println!("{:<32} {:<17} {:<20} ENROLLED", "SERIAL", "MAC", "MODEL");
            for e in entries {
                println!(
                    "{:<32} {:<17} {:<20} {}",
                    e.serial,
                    e.mac.as_deref().unwrap_or("-"),
                    e.model.as_deref().unwrap_or("-"),
                    match (&e.retired_at, &e.enrolled_at) {
                        (Some(at), _) => format!("retired {at} (decommissioned; never again)"),
                        (None, Some(at)) => at.clone(),
                        (None, None) => "no".into(),
                    }
                );
            }
            Ok(())
        }
        AllowlistCmd::Reset { serial } => {
            let api = ApiClient::from_cli(cli)?;
            let e: AllowlistView = api
                .post(
                    &format!("/api/v1/allowlist/{}/reset", seg(serial)),
                    &serde_json::json!({}),
                )
                .await?;
            if cli.json {
                return print_json(&e);
            }
            println!("serial {} may enroll once more", e.serial);
            Ok(())
        }
    }
}

pub async fn station(cli: &Cli, cmd: &StationCmd) -> anyhow::Result<()> {
    match cmd {
        StationCmd::Create { name, out, token } => {
            // Check the output directory before the hub issues anything.
            if let Some(dir) = out {
                private_dir(dir)?;
                for ext in ["crt", "key", "token"] {
                    let p = dir.join(format!("{name}.{ext}"));
                    if p.exists() {
                        bail!(
                            "{} already exists; move it away or choose another --out directory",
                            p.display()
                        );
                    }
                }
            }
            let api = ApiClient::from_cli(cli)?;
            let created: CreateStationResponse = api
                .post(
                    "/api/v1/stations",
                    &CreateStationRequest {
                        name: name.clone(),
                        token: *token,
                    },
                )
                .await?;
            if let Some(dir) = out {
                if let (Some(cert), Some(key)) =
                    (&created.certificate_pem, &created.private_key_pem)
                {
                    write_new(&dir.join(format!("{name}.crt")), cert.as_bytes(), 0o644)?;
                    write_new(&dir.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
                }
                if let Some(t) = &created.token {
                    write_new(
                        &dir.join(format!("{name}.token")),
                        format!("{t}\n").as_bytes(),
                        0o600,
                    )?;
                }
            }
            if cli.json {
                return print_json(&created);
            }
            println!(
                "created station {} ({})",
                created.station.name, created.station.credential
            );
            if let Some(dir) = out {
                for ext in ["crt", "key", "token"] {
                    let p = dir.join(format!("{name}.{ext}"));
                    if p.exists() {
                        println!("wrote {}", p.display());
                    }
                }
            }
            if let Some(t) = &created.token {
                println!(
                    "station token (shown once; the hub keeps only its hash; HTTP Basic user {name}): {t}"
                );
            }
            Ok(())
        }
        StationCmd::List => {
            let api = ApiClient::from_cli(cli)?;
            let list: Vec<StationView> = api.get("/api/v1/stations").await?;
            if cli.json {
                return print_json(&list);
            }
            println!(
                "{:<32} {:<12} {:<34} CREATED",
                "NAME", "CREDENTIAL", "CERTIFICATE"
            );
            for s in list {
                println!(
                    "{:<32} {:<12} {:<34} {}",
                    s.name,
                    s.credential,
                    s.cert_serial.as_deref().unwrap_or("-"),
                    s.created_at
                );
            }
            Ok(())
        }
        StationCmd::Delete { name } => {
            let api = ApiClient::from_cli(cli)?;
            api.delete(&format!("/api/v1/stations/{}", seg(name)))
                .await?;
            println!("deleted station {name} (its certificate is revoked)");
            Ok(())
        }
    }
}

/// `moat enrollment-group …`.
pub async fn enrollment_group(cli: &Cli, cmd: &EnrollmentGroupCmd) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    match cmd {
        EnrollmentGroupCmd::Create {
            name,
            ca,
            model,
            allocation,
            endpoint,
            allow_insecure,
            group,
            acl_policy,
        } => {
            let req = CreateEnrollmentGroupRequest {
                name: name.clone(),
                ca: ca.clone(),
                model: model.clone(),
                allocation: if allocation == "hashed" {
                    Allocation::Hashed
                } else {
                    Allocation::Fixed
                },
                hub: endpoint.clone(),
                policy: if *allow_insecure {
                    ConnectionPolicy::AllowInsecure
                } else {
                    ConnectionPolicy::DenyInsecure
                },
                group: group.clone(),
                acl_policy: acl_policy.clone(),
            };
            let g: EnrollmentGroupView = api.post("/api/v1/enrollment-groups", &req).await?;
            if cli.json {
                return print_json(&g);
            }
            println!(
                "created enrollment group {} ({} allocation{})",
                g.name,
                g.allocation,
                g.hub
                    .as_deref()
                    .map(|h| format!(" to {h}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        EnrollmentGroupCmd::List => {
            let list: Vec<EnrollmentGroupView> = api.get("/api/v1/enrollment-groups").await?;
            if cli.json {
                return print_json(&list);
            }
            println!(
                "{:<24} {:<16} {:<16} {:<8} {:<28} {:<15} {:<16} ACL POLICY",
                "NAME", "CA", "MODEL", "ALLOC", "HUB", "POLICY", "GROUP"
            );
            let d = |o: &Option<String>| o.clone().unwrap_or_else(|| "*".into());
            for g in list {
                println!(
                    "{:<24} {:<16} {:<16} {:<8} {:<28} {:<15} {:<16} {}",
                    g.name,
                    d(&g.ca),
                    d(&g.model),
                    g.allocation,
                    g.hub.as_deref().unwrap_or("(configured)"),
                    g.policy,
                    g.group.as_deref().unwrap_or("-"),
                    g.acl_policy.as_deref().unwrap_or("-"),
                );
            }
            Ok(())
        }
        EnrollmentGroupCmd::Delete { name } => {
            api.delete(&format!("/api/v1/enrollment-groups/{}", seg(name)))
                .await?;
            println!("deleted enrollment group {name}");
            Ok(())
        }
    }
}
