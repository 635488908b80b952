//! Topic access: ACL policies, group policies, identity kind/group/policy.

use crate::common::{TestDb, t0};
use moat_store::{AclPolicy, Error, IdentityAccess, IdentityKind};

pub async fn topic_access(db: &TestDb) {
    let s = &db.store;
    let p = AclPolicy {
        name: "fleet".into(),
        publish: vec![
            "devices/{device.id}/#".into(),
            "groups/{device.group}/up".into(),
        ],
        subscribe: vec!["groups/{device.group}/#".into()],
        created_at: t0(),
    };
    s.put_acl_policy(&p).await.unwrap();
    assert_eq!(s.acl_policies().await.unwrap(), std::slice::from_ref(&p));
    // Replace keeps the creation time of the new value and the name.
    let mut p2 = p.clone();
    p2.subscribe = vec![];
    s.put_acl_policy(&p2).await.unwrap();
    assert_eq!(s.acl_policies().await.unwrap(), [p2.clone()]);

    assert_eq!(s.group_policy("g1").await.unwrap(), None);
    s.set_group_policy("g1", Some("fleet")).await.unwrap();
    assert_eq!(
        s.group_policy("g1").await.unwrap().as_deref(),
        Some("fleet")
    );
    s.set_group_policy("g1", None).await.unwrap();
    assert_eq!(s.group_policy("g1").await.unwrap(), None);

    assert_eq!(s.identity_access("d1").await.unwrap(), None);
    let a = IdentityAccess {
        device_id: "d1".into(),
        kind: IdentityKind::App,
        group: Some("g1".into()),
        policy: None,
    };
    s.put_identity_access(&a).await.unwrap();
    assert_eq!(s.identity_access("d1").await.unwrap(), Some(a.clone()));
    let b = IdentityAccess {
        policy: Some("fleet".into()),
        group: None,
        ..a
    };
    s.put_identity_access(&b).await.unwrap();
    assert_eq!(s.identity_access("d1").await.unwrap(), Some(b));

    s.delete_acl_policy("fleet").await.unwrap();
    assert!(s.acl_policies().await.unwrap().is_empty());
    assert!(matches!(
        s.delete_acl_policy("fleet").await,
        Err(Error::NotFound(_))
    ));
}
