//! Operator accounts: unique names and tokens, lookup by token hash, deletion.

use crate::common::{TestDb, t0};
use moat_store::{Error, Operator, Role};

fn op(name: &str, role: Role, hash: &str) -> Operator {
    Operator {
        name: name.into(),
        role,
        token_hash: hash.into(),
        created_at: t0(),
    }
}

pub async fn operator_accounts(db: &TestDb) {
    let s = &db.store;
    s.insert_operator(&op("viewer", Role::ReadOnly, "h1"))
        .await
        .unwrap();
    s.insert_operator(&op("ops", Role::Operator, "h2"))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_operator(&op("viewer", Role::Admin, "h3")).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.insert_operator(&op("other", Role::Admin, "h1")).await,
        Err(Error::Conflict(_))
    ));
    let names: Vec<String> = s
        .operators()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, vec!["ops", "viewer"]);
    assert_eq!(
        s.operator_by_token_hash("h2").await.unwrap(),
        Some(op("ops", Role::Operator, "h2"))
    );
    s.delete_operator("ops").await.unwrap();
    assert_eq!(s.operator_by_token_hash("h2").await.unwrap(), None);
    assert!(matches!(
        s.delete_operator("ops").await,
        Err(Error::NotFound(_))
    ));
}
