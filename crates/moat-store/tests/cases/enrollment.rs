//! Factory enrollment: the allow-list (all-or-nothing upload, paging, reset), one enrollment
//! per serial in one transaction with the device, certificate and audit entry, and stations.

use crate::common::{TestDb, at, cert, device, t0};
use moat_store::{
    AllowlistEntry, CertSource, Error, FactoryInfo, Issuance, NewAuditEntry, Station,
};

fn entry(serial: &str, mac: Option<&str>, model: Option<&str>) -> AllowlistEntry {
    AllowlistEntry {
        factory: FactoryInfo {
            serial: serial.into(),
            mac: mac.map(str::to_owned),
            model: model.map(str::to_owned),
        },
        added_at: t0(),
        enrolled_at: None,
        device_id: None,
        retired_at: None,
    }
}

fn audit(action: &str, target: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: at(5),
        actor: "station:line-1".into(),
        action: action.into(),
        target: Some(target.into()),
        outcome: "ok".into(),
        detail: None,
    }
}

/// The enrollment of `serial` as device `serial` with certificate serial `cert_serial`.
fn enrollment(serial: &str, cert_serial: &str) -> Issuance {
    let mut d = device(serial);
    d.factory = Some(FactoryInfo {
        serial: serial.into(),
        mac: Some("aa:bb:cc:dd:ee:ff".into()),
        model: Some("M1".into()),
    });
    let mut c = cert(cert_serial, Some(serial));
    c.created_at = at(5);
    Issuance {
        device: d,
        create_device: true,
        claim_serial: Some(serial.into()),
        certs: vec![c],
        supersede: None,
        provisioning: None,
        audit: audit("est.enroll", serial),
    }
}

pub async fn allowlist_upload_is_all_or_nothing(db: &TestDb) {
    let s = &db.store;
    let first = vec![
        entry("SN-2", Some("aa:bb:cc:dd:ee:02"), Some("M1")),
        entry("SN-1", None, None),
        entry("SN-3", None, Some("M2")),
    ];
    s.add_allowlist(&first).await.unwrap();
    assert_eq!(
        s.allowlist_entry("SN-2").await.unwrap(),
        Some(first[0].clone())
    );
    assert_eq!(s.allowlist_entry("nope").await.unwrap(), None);

    // One serial already listed: nothing of the second upload is stored.
    let second = vec![entry("SN-4", None, None), entry("SN-2", None, None)];
    let r = s.add_allowlist(&second).await;
    assert!(
        matches!(r, Err(Error::Conflict(ref m)) if m.contains("SN-2")),
        "{r:?}"
    );
    assert_eq!(s.allowlist_entry("SN-4").await.unwrap(), None);
    assert_eq!(
        s.allowlisted(&["SN-4".into(), "SN-3".into(), "SN-1".into()])
            .await
            .unwrap(),
        ["SN-3", "SN-1"]
    );

    let serials =
        |v: Vec<AllowlistEntry>| v.into_iter().map(|e| e.factory.serial).collect::<Vec<_>>();
    assert_eq!(
        serials(s.list_allowlist(None, 2).await.unwrap()),
        ["SN-1", "SN-2"]
    );
    assert_eq!(
        serials(s.list_allowlist(Some("SN-2"), 2).await.unwrap()),
        ["SN-3"]
    );
    assert!(s.list_allowlist(Some("SN-3"), 2).await.unwrap().is_empty());
}

pub async fn enrollment_claims_a_serial_once(db: &TestDb) {
    let s = &db.store;
    s.add_allowlist(&[entry("SN-1", None, None), entry("SN-2", None, None)])
        .await
        .unwrap();

    // Not on the allow-list: nothing is written.
    let r = s.issue(&enrollment("SN-9", "c9")).await;
    assert!(
        matches!(r, Err(Error::NotFound(ref m)) if m.contains("SN-9")),
        "{r:?}"
    );
    assert_eq!(s.device("SN-9").await.unwrap(), None);
    assert_eq!(s.cert("c9").await.unwrap(), None);

    let e = enrollment("SN-1", "c1");
    s.issue(&e).await.unwrap();
    let d = s.device("SN-1").await.unwrap().unwrap();
    assert_eq!(d, e.device);
    assert_eq!(
        d.factory.as_ref().unwrap().mac.as_deref(),
        Some("aa:bb:cc:dd:ee:ff")
    );
    assert_eq!(s.cert("c1").await.unwrap(), Some(e.certs[0].clone()));
    let listed = s.allowlist_entry("SN-1").await.unwrap().unwrap();
    assert_eq!(listed.enrolled_at, Some(at(5)));
    assert_eq!(listed.device_id.as_deref(), Some("SN-1"));
    let log = s.list_audit(None, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].action, "est.enroll");

    // Twice: refused, and the second certificate is not stored.
    let r = s.issue(&enrollment("SN-1", "c1b")).await;
    assert!(
        matches!(r, Err(Error::Conflict(ref m)) if m.contains("SN-1")),
        "{r:?}"
    );
    assert_eq!(s.cert("c1b").await.unwrap(), None);

    // A certificate conflict rolls the claim back: SN-2 may still enroll afterwards.
    let mut clash = enrollment("SN-2", "c2");
    clash.certs[0].fingerprint = e.certs[0].fingerprint.clone();
    assert!(matches!(s.issue(&clash).await, Err(Error::Conflict(_))));
    assert_eq!(
        s.allowlist_entry("SN-2")
            .await
            .unwrap()
            .unwrap()
            .enrolled_at,
        None
    );
    assert_eq!(s.device("SN-2").await.unwrap(), None);
    s.issue(&enrollment("SN-2", "c2")).await.unwrap();

    // Reset: SN-1 enrolls once more, onto the device it already is.
    assert!(s.reset_allowlist("SN-1").await.unwrap());
    assert!(!s.reset_allowlist("SN-1").await.unwrap());
    assert!(matches!(
        s.reset_allowlist("SN-9").await,
        Err(Error::NotFound(_))
    ));
    let reset = s.allowlist_entry("SN-1").await.unwrap().unwrap();
    assert_eq!(reset.enrolled_at, None);
    assert_eq!(
        reset.device_id.as_deref(),
        Some("SN-1"),
        "the device stays known"
    );
    let mut again = enrollment("SN-1", "c1c");
    again.create_device = false;
    s.issue(&again).await.unwrap();
    assert_eq!(s.list_certs(Some("SN-1"), 10).await.unwrap().len(), 2);

    // Re-enrollment's certificate and its audit entry land together.
    let mut renewed = cert("c1d", Some("SN-1"));
    renewed.fingerprint = "fp-renewed".into();
    let reenroll = Issuance {
        device: s.device("SN-1").await.unwrap().unwrap(),
        create_device: false,
        claim_serial: None,
        certs: vec![renewed.clone()],
        supersede: None,
        provisioning: None,
        audit: audit("est.reenroll", "SN-1"),
    };
    s.issue(&reenroll).await.unwrap();
    assert_eq!(s.cert("c1d").await.unwrap(), Some(renewed.clone()));
    let r = s.issue(&reenroll).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    let actions: Vec<_> = s
        .list_audit(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        ["est.reenroll", "est.enroll", "est.enroll", "est.enroll"]
    );
}

/// Many stations enrolling the same serial at once: exactly one wins, and exactly one device
/// and one certificate exist afterwards.
pub async fn concurrent_enrollments_of_one_serial(db: &TestDb) {
    let s = &db.store;
    s.add_allowlist(&[entry("SN-X", None, None)]).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = db.store.clone();
            tokio::spawn(async move {
                let mut e = enrollment("SN-X", &format!("cx{i}"));
                e.certs[0].fingerprint = format!("fp-x{i}");
                s.issue(&e).await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(s.list_certs(Some("SN-X"), 100).await.unwrap().len(), 1);
    assert_eq!(s.list_devices(None, 100).await.unwrap().len(), 1);
}

pub async fn stations(db: &TestDb) {
    let s = &db.store;
    let with_cert = Station {
        name: "line-1".into(),
        cert_serial: Some("st1".into()),
        token_hash: None,
        created_at: t0(),
    };
    let mut c = cert("st1", None);
    c.source = CertSource::Station;
    s.create_station(&with_cert, Some(&c), &audit("station.create", "line-1"))
        .await
        .unwrap();
    assert_eq!(s.station("line-1").await.unwrap(), Some(with_cert.clone()));
    assert_eq!(
        s.cert("st1").await.unwrap().unwrap().source,
        CertSource::Station
    );

    let with_token = Station {
        name: "line-0".into(),
        cert_serial: None,
        token_hash: Some("abcd".into()),
        created_at: at(1),
    };
    s.create_station(&with_token, None, &audit("station.create", "line-0"))
        .await
        .unwrap();
    assert_eq!(
        s.list_stations().await.unwrap(),
        [with_token.clone(), with_cert.clone()]
    );

    // Same name again: refused, and its certificate is not stored.
    let mut c2 = cert("st2", None);
    c2.source = CertSource::Station;
    let r = s
        .create_station(&with_cert, Some(&c2), &audit("station.create", "line-1"))
        .await;
    assert!(
        matches!(r, Err(Error::Conflict(ref m)) if m.contains("line-1")),
        "{r:?}"
    );
    assert_eq!(s.cert("st2").await.unwrap(), None);
    assert_eq!(s.list_audit(None, 10).await.unwrap().len(), 2);

    // The station authentication read: certificate and station together.
    let (rec, st) = s.station_cert(&c.fingerprint).await.unwrap().unwrap();
    assert_eq!((rec, st), (c.clone(), Some(with_cert.clone())));
    let mut device_cert = cert("d1", Some("d1"));
    device_cert.fingerprint = "fp-device".into();
    s.insert_cert(&device_cert).await.unwrap();
    assert_eq!(
        s.station_cert("fp-device").await.unwrap(),
        Some((device_cert, None))
    );
    assert_eq!(s.station_cert("fp-none").await.unwrap(), None);

    s.delete_station("line-1").await.unwrap();
    assert_eq!(s.station("line-1").await.unwrap(), None);
    assert!(matches!(
        s.delete_station("line-1").await,
        Err(Error::NotFound(_))
    ));
    assert!(
        s.cert("st1").await.unwrap().is_some(),
        "certificate rows stay"
    );
}
