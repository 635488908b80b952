//! Operator accounts: people (and scripts) who use the admin API, the console and the CLI
//! with a role. Each has its own bearer token, shown once and kept only as a hash; the
//! bootstrap admin token (`admin.token` in the data dir) keeps working as the `admin` role.

use crate::{Actor, Error, Hub, Secret, hash_token, new_token, validate_device_id};
use moat_store::{Operator, Role};
use time::OffsetDateTime;

/// Who made an API call, and with what rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `admin` for the bootstrap token, else the operator's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// How the audit log names it (`admin`, `operator:NAME`).
    pub actor: Actor,
}

impl Principal {
    /// The holder of the bootstrap admin token.
    pub fn bootstrap_admin() -> Principal {
        Principal {
            name: "admin".into(),
            role: Role::Admin,
            actor: Actor::admin(),
        }
    }
}

impl Hub {
    /// Creates an operator account; returns it with its token (shown once).
    pub async fn create_operator(
        &self,
        name: &str,
        role: Role,
        actor: &Actor,
    ) -> Result<(Operator, Secret), Error> {
        let result = async {
            validate_device_id(name).map_err(|e| Error::Invalid(format!("operator name: {e}")))?;
            if name == "admin" {
                return Err(Error::Invalid(
                    "\"admin\" names the bootstrap admin token; choose another name".into(),
                ));
            }
            let token = new_token("moat_op_");
            let op = Operator {
                name: name.to_string(),
                role,
                token_hash: hash_token(token.expose()),
                created_at: OffsetDateTime::now_utc(),
            };
            self.store()
                .insert_operator(&op)
                .await
                .map_err(|e| match e {
                    moat_store::Error::Conflict(_) => Error::Conflict {
                        kind: "operator",
                        id: name.to_string(),
                    },
                    e => e.into(),
                })?;
            Ok((op, token))
        }
        .await;
        self.audited(actor, "operator.create", Some(name), result)
            .await
    }

    /// All operator accounts, by name.
    pub async fn operators(&self) -> Result<Vec<Operator>, Error> {
        Ok(self.store().operators().await?)
    }

    /// Deletes an operator account (its token stops working at once).
    pub async fn delete_operator(&self, name: &str, actor: &Actor) -> Result<(), Error> {
        let result = self
            .store()
            .delete_operator(name)
            .await
            .map_err(|e| match e {
                moat_store::Error::NotFound(_) => Error::NotFound {
                    kind: "operator",
                    id: name.to_string(),
                },
                e => e.into(),
            });
        self.audited(actor, "operator.delete", Some(name), result)
            .await
    }

    /// The operator whose token this is, if any.
    pub async fn operator_by_token(&self, token: &str) -> Result<Option<Principal>, Error> {
        Ok(self
            .store()
            .operator_by_token_hash(&hash_token(token))
            .await?
            .map(|o| Principal {
                actor: Actor(format!("operator:{}", o.name)),
                name: o.name,
                role: o.role,
            }))
    }
}
