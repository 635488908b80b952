//! `moat acl …` and `moat app …`.

use super::{print_json, seg};
use crate::cli::{AclCmd, AppCmd, Cli};
use crate::client::ApiClient;
use anyhow::bail;
use moat_api::dto::{
    AccessRequest, AccessView, AclPolicyView, CreateAppRequest, CreateDeviceResponse,
    GroupPolicyRequest, PutAclPolicyRequest,
};
use moat_node::files::{private_dir, write_new};

pub async fn acl(cli: &Cli, cmd: &AclCmd) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    match cmd {
        AclCmd::List => {
            let list: Vec<AclPolicyView> = api.get("/api/v1/acl-policies").await?;
            if cli.json {
                return print_json(&list);
            }
            for p in list {
                println!(
                    "{}\n  publish:   {}\n  subscribe: {}",
                    p.name,
                    p.publish.join(" "),
                    p.subscribe.join(" ")
                );
            }
            Ok(())
        }
        AclCmd::Create {
            name,
            publish,
            subscribe,
        } => {
            if publish.is_empty() && subscribe.is_empty() {
                bail!("give at least one --publish or --subscribe filter");
            }
            let p: AclPolicyView = api
                .put(
                    &format!("/api/v1/acl-policies/{}", seg(name)),
                    &PutAclPolicyRequest {
                        publish: publish.clone(),
                        subscribe: subscribe.clone(),
                    },
                )
                .await?;
            println!(
                "policy {} saved (applies at each identity's next CONNECT)",
                p.name
            );
            Ok(())
        }
        AclCmd::Delete { name } => {
            api.delete(&format!("/api/v1/acl-policies/{}", seg(name)))
                .await?;
            println!("policy {name} deleted");
            Ok(())
        }
        AclCmd::Assign {
            policy,
            device,
            group,
        } => {
            match (device, group) {
                (Some(d), None) => {
                    let a: AccessView = api
                        .post(
                            &format!("/api/v1/devices/{}/access", seg(d)),
                            &AccessRequest {
                                group: None,
                                policy: Some(policy.clone()),
                            },
                        )
                        .await?;
                    println!(
                        "{} now uses policy {}",
                        a.device_id,
                        a.policy.as_deref().unwrap_or("default")
                    );
                }
                (None, Some(g)) => {
                    api.put_no_content(
                        &format!("/api/v1/groups/{}/policy", seg(g)),
                        &GroupPolicyRequest {
                            policy: Some(policy.clone()),
                        },
                    )
                    .await?;
                    println!("group {g} now uses policy {policy}");
                }
                _ => bail!("give exactly one of --device ID or --group NAME"),
            }
            Ok(())
        }
    }
}

pub async fn app(cli: &Cli, cmd: &AppCmd) -> anyhow::Result<()> {
    let AppCmd::Create {
        name,
        out,
        token,
        publish,
        subscribe,
    } = cmd;
    if publish.is_empty() && subscribe.is_empty() {
        bail!("an application needs at least one --publish or --subscribe filter");
    }
    private_dir(out)?;
    for ext in ["crt", "key", "token"] {
        let p = out.join(format!("{name}.{ext}"));
        if p.exists() {
            bail!(
                "{} already exists; move it away or choose another --out directory",
                p.display()
            );
        }
    }
    let api = ApiClient::from_cli(cli)?;
    let req = CreateAppRequest {
        name: name.clone(),
        token: *token,
        publish: publish.clone(),
        subscribe: subscribe.clone(),
    };
    let created: CreateDeviceResponse = api.post("/api/v1/apps", &req).await?;
    write_new(
        &out.join(format!("{name}.crt")),
        created.certificate_pem.as_bytes(),
        0o644,
    )?;
    if let Some(key) = &created.private_key_pem {
        write_new(&out.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
    }
    if let Some(t) = &created.token {
        write_new(
            &out.join(format!("{name}.token")),
            format!("{t}\n").as_bytes(),
            0o600,
        )?;
    }
    if cli.json {
        return print_json(&created);
    }
    println!(
        "created application {name}; wrote {} (the hub does not keep the key)",
        out.display()
    );
    if let Some(t) = &created.token {
        println!("application token (shown once): {t}");
    }
    Ok(())
}
