//! `moat operator …`: operator accounts with a role.

use super::{print_json, seg};
use crate::cli::{Cli, OperatorCmd};
use crate::client::ApiClient;
use moat_api::operators::{CreateOperatorRequest, CreateOperatorResponse, OperatorView};

pub async fn run(cli: &Cli, cmd: &OperatorCmd) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    match cmd {
        OperatorCmd::Create { name, role } => {
            let created: CreateOperatorResponse = api
                .post(
                    "/api/v1/operators",
                    &CreateOperatorRequest {
                        name: name.clone(),
                        role: role.clone(),
                    },
                )
                .await?;
            if cli.json {
                return print_json(&created);
            }
            println!(
                "created operator {} ({})",
                created.operator.name, created.operator.role
            );
            println!(
                "token (shown once; the hub keeps only its hash; save it to a file and pass --token-file): {}",
                created.token
            );
            Ok(())
        }
        OperatorCmd::List => {
            let list: Vec<OperatorView> = api.get("/api/v1/operators").await?;
            if cli.json {
                return print_json(&list);
            }
            println!("{:<32} {:<10} CREATED", "NAME", "ROLE");
            for o in list {
                println!("{:<32} {:<10} {}", o.name, o.role, o.created_at);
            }
            Ok(())
        }
        OperatorCmd::Delete { name } => {
            api.delete(&format!("/api/v1/operators/{}", seg(name)))
                .await?;
            println!("deleted operator {name}");
            Ok(())
        }
    }
}
