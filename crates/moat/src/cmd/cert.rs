//! `moat cert …`.

use super::{print_json, read_input, seg};
use crate::cli::{CertCmd, Cli};
use crate::client::ApiClient;
use moat_api::dto::{CertView, ExplainRequest, ExplainResponse, RevokeRequest};

pub async fn run(cli: &Cli, cmd: &CertCmd) -> anyhow::Result<()> {
    match cmd {
        CertCmd::List {
            device,
            expiring_within,
            limit,
        } => {
            let api = ApiClient::from_cli(cli)?;
            let mut path = format!("/api/v1/certificates?limit={limit}");
            if let Some(d) = device {
                path.push_str(&format!("&device={}", seg(d)));
            }
            if let Some(days) = expiring_within {
                path.push_str(&format!("&expiring_within_days={days}"));
            }
            let certs: Vec<CertView> = api.get(&path).await?;
            if cli.json {
                return print_json(&certs);
            }
            println!(
                "{:<34} {:<24} {:<8} {:<9} {:<8} NOT AFTER",
                "SERIAL", "DEVICE", "CA", "SOURCE", "STATUS"
            );
            for c in certs {
                println!(
                    "{:<34} {:<24} {:<8} {:<9} {:<8} {}",
                    c.serial,
                    c.device_id.as_deref().unwrap_or("-"),
                    c.ca,
                    c.source,
                    if c.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "valid"
                    },
                    c.not_after
                );
            }
            Ok(())
        }
        CertCmd::Show { serial } => {
            let api = ApiClient::from_cli(cli)?;
            let c: CertView = api
                .get(&format!("/api/v1/certificates/{}", seg(serial)))
                .await?;
            print_json(&c)
        }
        CertCmd::Revoke { serial, reason } => {
            if let Some(r) = reason {
                super::device::check_reason(r)?;
            }
            let api = ApiClient::from_cli(cli)?;
            let c: CertView = api
                .post(
                    &format!("/api/v1/certificates/{}/revoke", seg(serial)),
                    &RevokeRequest {
                        reason: reason.clone(),
                    },
                )
                .await?;
            if cli.json {
                return print_json(&c);
            }
            println!(
                "revoked certificate {} ({})",
                c.serial,
                c.revocation_reason.as_deref().unwrap_or("unspecified")
            );
            Ok(())
        }
        CertCmd::Explain { file } => {
            let pem = String::from_utf8(read_input(file, "certificate")?)
                .map_err(|_| anyhow::anyhow!("{} is not PEM; convert it with `openssl x509 -inform der -in FILE -out FILE.pem`", file.display()))?;
            let api = ApiClient::from_cli(cli)?;
            let e: ExplainResponse = api
                .post(
                    "/api/v1/certificates/explain",
                    &ExplainRequest { cert: pem },
                )
                .await?;
            if cli.json {
                print_json(&e)?;
            } else {
                for s in &e.steps {
                    println!("{:<8} {:<13} {}", s.outcome, s.name, s.detail);
                }
                match (&e.accepted, &e.identity) {
                    (true, Some(id)) => println!("ACCEPTED as device {id}"),
                    _ => {
                        let failed = e.steps.iter().find(|s| s.outcome == "fail");
                        println!(
                            "REFUSED at step {}",
                            failed.map(|s| s.name.as_str()).unwrap_or("?")
                        );
                    }
                }
            }
            if !e.accepted {
                // Scripts can test the verdict by exit status.
                std::process::exit(3);
            }
            Ok(())
        }
    }
}
