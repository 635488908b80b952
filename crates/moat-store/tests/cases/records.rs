//! Settings and the audit log.

use crate::common::{TestDb, at};
use moat_store::NewAuditEntry;

pub async fn settings(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.setting("admin_token_hash").await.unwrap(), None);
    s.put_setting("admin_token_hash", "one").await.unwrap();
    assert_eq!(
        s.setting("admin_token_hash").await.unwrap().as_deref(),
        Some("one")
    );
    s.put_setting("admin_token_hash", "two").await.unwrap();
    s.put_setting("other", "").await.unwrap();
    assert_eq!(
        s.setting("admin_token_hash").await.unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(s.setting("other").await.unwrap().as_deref(), Some(""));
}

pub async fn audit_paging(db: &TestDb) {
    let s = &db.store;
    assert!(s.list_audit(None, 10).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = NewAuditEntry {
            at: at(i),
            actor: "admin".into(),
            action: format!("device.create.{i}"),
            target: (i % 2 == 0).then(|| format!("d{i}")),
            outcome: "ok".into(),
            detail: (i == 3).then(|| "why".to_owned()),
        };
        ids.push(s.append_audit(&e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let page1 = s.list_audit(None, 2).await.unwrap();
    assert_eq!(
        page1.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    assert_eq!(page1[1].action, "device.create.3");
    assert_eq!(page1[1].detail.as_deref(), Some("why"));
    assert_eq!(page1[1].target, None);
    assert_eq!(page1[0].target.as_deref(), Some("d4"));
    assert_eq!(page1[0].at, at(4));
    let page2 = s.list_audit(Some(page1[1].id), 2).await.unwrap();
    assert_eq!(
        page2.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    let page3 = s.list_audit(Some(page2[1].id), 2).await.unwrap();
    assert_eq!(page3.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(page3[0].actor, "admin");
    assert_eq!(page3[0].outcome, "ok");
}
