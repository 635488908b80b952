//! `moat ca …`.

use super::{print_json, read_input, seg};
use crate::cli::{CaCmd, Cli};
use crate::client::ApiClient;
use moat_api::dto::{CaView, RegisterCaRequest, RegistrationCodeResponse};

pub async fn run(cli: &Cli, cmd: &CaCmd) -> anyhow::Result<()> {
    match cmd {
        CaCmd::Bundle => {
            let api = ApiClient::from_cli(cli)?;
            print!("{}", api.get_text("/api/v1/cas/bundle").await?);
            Ok(())
        }
        CaCmd::RegistrationCode => {
            let api = ApiClient::from_cli(cli)?;
            let code: RegistrationCodeResponse = api
                .post("/api/v1/cas/registration-code", &serde_json::json!({}))
                .await?;
            if cli.json {
                return print_json(&code);
            }
            println!("{}", code.code);
            eprintln!(
                "one-time code, valid until {}: make a certificate with CN={} signed by your CA's key and pass it as --verification-cert",
                code.expires_at, code.code
            );
            Ok(())
        }
        CaCmd::Register {
            cert,
            verification_cert,
            identity,
            auto_register,
            name,
        } => {
            let text = |p: &std::path::Path, what: &str| -> anyhow::Result<String> {
                String::from_utf8(read_input(p, what)?)
                    .map_err(|_| anyhow::anyhow!("{} is not PEM", p.display()))
            };
            let req = RegisterCaRequest {
                name: name.clone(),
                cert: text(cert, "CA certificate")?,
                verification_cert: text(verification_cert, "verification certificate")?,
                identity: Some(identity.clone()),
                auto_register: *auto_register,
            };
            let api = ApiClient::from_cli(cli)?;
            let ca: CaView = api.post("/api/v1/cas", &req).await?;
            if cli.json {
                return print_json(&ca);
            }
            println!(
                "registered CA {} ({}), identity rule {}, auto-register {}",
                ca.name, ca.subject, ca.identity_rule, ca.auto_register
            );
            Ok(())
        }
        CaCmd::List => {
            let api = ApiClient::from_cli(cli)?;
            let cas: Vec<CaView> = api.get("/api/v1/cas").await?;
            if cli.json {
                return print_json(&cas);
            }
            println!(
                "{:<20} {:<15} {:<8} {:<5} {:<22} SUBJECT",
                "NAME", "KIND", "IDENTITY", "AUTO", "NOT AFTER"
            );
            for c in cas {
                println!(
                    "{:<20} {:<15} {:<8} {:<5} {:<22} {}",
                    c.name, c.kind, c.identity_rule, c.auto_register, c.not_after, c.subject
                );
            }
            Ok(())
        }
        CaCmd::Remove { name } => {
            let api = ApiClient::from_cli(cli)?;
            api.delete(&format!("/api/v1/cas/{}", seg(name))).await?;
            println!("removed CA {name}");
            Ok(())
        }
    }
}
