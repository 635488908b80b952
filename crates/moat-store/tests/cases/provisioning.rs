//! Field provisioning: enrollment groups (unique names), and a provisioning written whole —
//! device (when created), certificate, policy, access, assignment and audit — or not at all.

use crate::common::{TestDb, at, cert, device, t0};
use moat_store::{
    Allocation, Assignment, ConnectionPolicy, EnrollmentGroup, Error, IdentityAccess, IdentityKind,
    Issuance, NewAuditEntry, ProvisioningWrite,
};

fn group(name: &str) -> EnrollmentGroup {
    EnrollmentGroup {
        name: name.into(),
        ca_name: Some("devices".into()),
        model: Some("M1".into()),
        allocation: Allocation::Hashed,
        hub: None,
        policy: ConnectionPolicy::AllowInsecure,
        mqtt_group: Some("fleet".into()),
        acl_policy: None,
        created_at: t0(),
    }
}

fn provisioning(device_id: &str, cert_serial: &str, hub: &str, create: bool) -> Issuance {
    Issuance {
        device: device(device_id),
        create_device: create,
        claim_serial: None,
        certs: vec![cert(cert_serial, Some(device_id))],
        supersede: None,
        provisioning: Some(ProvisioningWrite {
            policy: ConnectionPolicy::AllowInsecure,
            access: Some(IdentityAccess {
                device_id: device_id.into(),
                kind: IdentityKind::Device,
                group: Some("fleet".into()),
                policy: None,
            }),
            assignment: Assignment {
                device_id: device_id.into(),
                hub: hub.into(),
                enrollment_group: Some("g".into()),
                provisioned_at: at(10),
                provisions: 0,
            },
        }),
        audit: NewAuditEntry {
            at: at(10),
            actor: format!("device:{device_id}"),
            action: "device.provision".into(),
            target: Some(device_id.into()),
            outcome: "ok".into(),
            detail: None,
        },
    }
}

pub async fn enrollment_groups_and_provisioning(db: &TestDb) {
    let s = &db.store;
    s.insert_enrollment_group(&group("b")).await.unwrap();
    let mut a = group("a");
    a.ca_name = None;
    a.model = None;
    a.allocation = Allocation::Fixed;
    a.hub = Some("mqtts://h:8883".into());
    s.insert_enrollment_group(&a).await.unwrap();
    assert!(matches!(
        s.insert_enrollment_group(&group("b")).await,
        Err(Error::Conflict(_))
    ));
    let all = s.enrollment_groups().await.unwrap();
    assert_eq!(all, vec![a.clone(), group("b")]);
    s.delete_enrollment_group("b").await.unwrap();
    assert!(matches!(
        s.delete_enrollment_group("b").await,
        Err(Error::NotFound(_))
    ));

    // A device that does not exist cannot be provisioned (and nothing is written).
    assert!(matches!(
        s.issue(&provisioning("d1", "01", "mqtts://a:8883", false))
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(s.cert("01").await.unwrap().is_none());
    assert!(s.assignment("d1").await.unwrap().is_none());

    // Created with it; then provisioned again to another hub.
    let first = s
        .issue(&provisioning("d1", "01", "mqtts://a:8883", true))
        .await
        .unwrap()
        .expect("a provisioning returns its assignment");
    assert_eq!(
        (first.hub.as_str(), first.provisions),
        ("mqtts://a:8883", 1)
    );
    let d = s.device("d1").await.unwrap().unwrap();
    assert_eq!(d.policy, ConnectionPolicy::AllowInsecure);
    let access = s.identity_access("d1").await.unwrap().unwrap();
    assert_eq!(access.group.as_deref(), Some("fleet"));
    let again = s
        .issue(&provisioning("d1", "02", "mqtts://b:8883", false))
        .await
        .unwrap()
        .expect("a provisioning returns its assignment");
    assert_eq!(
        (again.hub.as_str(), again.provisions),
        ("mqtts://b:8883", 2)
    );
    assert_eq!(s.assignment("d1").await.unwrap(), Some(again));

    // A taken certificate serial rolls the whole provisioning back.
    let mut dup = provisioning("d1", "02", "mqtts://c:8883", false);
    dup.audit.action = "device.reprovision".into();
    assert!(matches!(s.issue(&dup).await, Err(Error::Conflict(_))));
    assert_eq!(
        s.assignment("d1").await.unwrap().unwrap().hub,
        "mqtts://b:8883"
    );
    let audit = s.list_audit(None, 100).await.unwrap();
    assert!(!audit.iter().any(|e| e.action == "device.reprovision"));

    // The assignment goes with the device.
    s.delete_device("d1").await.unwrap();
    assert!(s.assignment("d1").await.unwrap().is_none());
}
