//! Operator accounts (migration `0009_operators`): a name, a role and the hash of a bearer
//! token. A supertrait of [`Store`](crate::Store), like [`FirmwareStore`](crate::FirmwareStore).

use crate::Error;
use crate::codec::RowExt;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What an operator may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read everything, change nothing.
    ReadOnly,
    /// Run the fleet: devices, certificates, revocation, sessions, firmware, campaigns.
    Operator,
    /// Also the hub's trust and accounts: CAs, stations, firmware keys, operators, the
    /// server certificate.
    Admin,
}

impl Role {
    /// Column text (and the CLI's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read-only" => Some(Role::ReadOnly),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An operator account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// Login name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// SHA-256 of its bearer token, lowercase hex.
    pub token_hash: String,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// Operator accounts. Every method is one statement.
#[async_trait]
pub trait OperatorStore: Send + Sync {
    /// Adds an account. [`Error::Conflict`] if the name (or token) exists.
    async fn insert_operator(&self, op: &Operator) -> Result<(), Error>;
    /// All accounts, by name.
    async fn operators(&self) -> Result<Vec<Operator>, Error>;
    /// The account whose token hashes to `token_hash`.
    async fn operator_by_token_hash(&self, token_hash: &str) -> Result<Option<Operator>, Error>;
    /// Deletes an account. [`Error::NotFound`] if there is none of that name.
    async fn delete_operator(&self, name: &str) -> Result<(), Error>;
}

pub(crate) mod sql {
    pub(crate) const INSERT: &str = "INSERT INTO operators (name, role, token_hash, created_at) \
         VALUES ($1, $2, $3, $4)";
    pub(crate) const ALL: &str =
        "SELECT name, role, token_hash, created_at FROM operators ORDER BY name";
    pub(crate) const BY_TOKEN: &str =
        "SELECT name, role, token_hash, created_at FROM operators WHERE token_hash = $1";
    pub(crate) const DELETE: &str = "DELETE FROM operators WHERE name = $1";
}

pub(crate) fn operator(row: &impl RowExt) -> Result<Operator, Error> {
    Ok(Operator {
        name: row.text("name")?,
        role: Role::parse(&row.text("role")?).ok_or(Error::Corrupt("operators.role"))?,
        token_hash: row.text("token_hash")?,
        created_at: row.ts("created_at")?,
    })
}

/// Implements [`OperatorStore`] for `$store`.
macro_rules! impl_operator_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::operators::OperatorStore for $store {
            async fn insert_operator(&self, o: &$crate::operators::Operator) -> Result<(), Error> {
                let o = o.clone();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(operators::sql::INSERT)
                        .bind(&o.name)
                        .bind(o.role.as_str())
                        .bind(&o.token_hash)
                        .bind(micros(o.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| classify(e, || format!("operator {}", o.name)))
                        .map(drop)
                })
            }

            async fn operators(&self) -> Result<Vec<$crate::operators::Operator>, Error> {
                sqlx::query(operators::sql::ALL)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(operators::operator)
                    .collect()
            }

            async fn operator_by_token_hash(
                &self,
                token_hash: &str,
            ) -> Result<Option<$crate::operators::Operator>, Error> {
                sqlx::query(operators::sql::BY_TOKEN)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| operators::operator(&r))
                    .transpose()
            }

            async fn delete_operator(&self, name: &str) -> Result<(), Error> {
                let name = name.to_string();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query(operators::sql::DELETE)
                        .bind(&name)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if done.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("operator {name}")));
                    }
                    Ok(())
                })
            }
        }
    };
}

pub(crate) use impl_operator_store;
