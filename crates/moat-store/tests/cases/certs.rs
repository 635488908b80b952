//! Certificates: insert, conflicts, lookups, listing, revocation.

use crate::common::{TestDb, at, cert, device, t0};
use moat_store::{CertRecord, CertSource, Error, RevokedCert};
use std::collections::BTreeSet;

pub async fn certificates(db: &TestDb) {
    let s = &db.store;
    let mut hub = cert("0a", None);
    hub.source = CertSource::Hub;
    s.insert_cert(&hub).await.unwrap();
    assert_eq!(s.cert("0a").await.unwrap(), Some(hub.clone()));
    assert_eq!(
        s.cert_by_fingerprint("fp-0a").await.unwrap(),
        Some(hub.clone())
    );
    assert_eq!(s.cert("ff").await.unwrap(), None);
    assert_eq!(s.cert_by_fingerprint("none").await.unwrap(), None);

    let mut dup = cert("0a", None);
    dup.fingerprint = "fresh".into();
    assert!(matches!(s.insert_cert(&dup).await, Err(Error::Conflict(m)) if m.contains("serial")));
    let mut dup_fp = cert("0b", None);
    dup_fp.fingerprint = "fp-0a".into();
    let r = s.insert_cert(&dup_fp).await;
    assert!(
        matches!(r, Err(Error::Conflict(ref m)) if m.contains("fingerprint")),
        "{r:?}"
    );

    // The same serial from another CA is a different certificate; `cert` returns the newest.
    let mut vendor = cert("0a", Some("v1"));
    vendor.ca_name = "vendor".into();
    vendor.fingerprint = "fp-vendor-0a".into();
    vendor.source = CertSource::Bound;
    vendor.created_at = at(10);
    s.insert_cert(&vendor).await.unwrap();
    assert_eq!(s.cert("0a").await.unwrap(), Some(vendor.clone()));

    // Listing: newest first, per device, limited.
    for (i, serial) in ["10", "11", "12"].into_iter().enumerate() {
        let mut c = cert(serial, Some("dev"));
        c.created_at = at(100 + i as i64);
        c.source = CertSource::HubKey;
        s.insert_cert(&c).await.unwrap();
    }
    let serials =
        |v: Vec<moat_store::CertRecord>| v.into_iter().map(|c| c.serial).collect::<Vec<_>>();
    assert_eq!(
        serials(s.list_certs(Some("dev"), 10).await.unwrap()),
        ["12", "11", "10"]
    );
    assert_eq!(
        serials(s.list_certs(Some("dev"), 2).await.unwrap()),
        ["12", "11"]
    );
    assert_eq!(
        serials(s.list_certs(None, 4).await.unwrap()),
        ["12", "11", "10", "0a"]
    );
    assert_eq!(s.list_certs(None, 100).await.unwrap().len(), 5);
    assert!(s.list_certs(Some("nobody"), 10).await.unwrap().is_empty());

    // Certificates outlive their device.
    s.create_device(&device("gone"), Some(&cert("20", Some("gone"))))
        .await
        .unwrap();
    s.delete_device("gone").await.unwrap();
    assert_eq!(
        s.cert("20").await.unwrap().unwrap().device_id.as_deref(),
        Some("gone")
    );
}

pub async fn revocation(db: &TestDb) {
    let s = &db.store;
    for serial in ["01", "02", "03"] {
        s.insert_cert(&cert(serial, Some("d1"))).await.unwrap();
    }
    s.insert_cert(&cert("04", Some("d2"))).await.unwrap();
    let mut other = cert("05", Some("d3"));
    other.ca_name = "vendor".into();
    s.insert_cert(&other).await.unwrap();

    assert!(s.revoked_serials_page(None, 10).await.unwrap().is_empty());
    assert!(s.revoke_cert("02", "key_compromise", at(5)).await.unwrap());
    assert!(
        !s.revoke_cert("02", "superseded", at(6)).await.unwrap(),
        "already revoked"
    );
    let c = s.cert("02").await.unwrap().unwrap();
    assert_eq!(c.revoked_at, Some(at(5)));
    assert_eq!(c.revocation_reason.as_deref(), Some("key_compromise"));
    assert!(matches!(
        s.revoke_cert("99", "x", at(5)).await,
        Err(Error::NotFound(_))
    ));

    // Only the serials revoked by this call.
    assert_eq!(
        s.revoke_device_certs("d1", "cessation_of_operation", at(7))
            .await
            .unwrap(),
        [
            ("devices".into(), "01".into()),
            ("devices".into(), "03".into())
        ]
    );
    assert!(
        s.revoke_device_certs("d1", "cessation_of_operation", at(8))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.revoke_device_certs("nobody", "x", at(8))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.cert("04").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        s.revoke_device_certs("d3", "superseded", at(9))
            .await
            .unwrap(),
        [("vendor".into(), "05".into())]
    );

    let rc = |serial: &str, secs, reason: &str| RevokedCert {
        serial: serial.into(),
        revoked_at: at(secs),
        reason: reason.into(),
    };
    assert_eq!(
        s.revoked_certs("devices").await.unwrap(),
        [
            rc("01", 7, "cessation_of_operation"),
            rc("02", 5, "key_compromise"),
            rc("03", 7, "cessation_of_operation")
        ]
    );
    assert_eq!(
        s.revoked_certs("vendor").await.unwrap(),
        [rc("05", 9, "superseded")]
    );
    assert!(s.revoked_certs("none").await.unwrap().is_empty());
    let all: BTreeSet<(String, String)> = s
        .revoked_serials_page(None, 100)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want = [
        ("devices", "01"),
        ("devices", "02"),
        ("devices", "03"),
        ("vendor", "05"),
    ]
    .map(|(c, s)| (c.to_string(), s.to_string()));
    assert_eq!(all, want.clone().into());
    // Keyset pages of 3 then the rest, in (ca_name, serial) order.
    let first = s.revoked_serials_page(None, 3).await.unwrap();
    assert_eq!(first, want[..3]);
    let last = &first[2];
    let rest = s
        .revoked_serials_page(Some((&last.0, &last.1)), 3)
        .await
        .unwrap();
    assert_eq!(rest, want[3..]);

    // Expiring: live device certificates whose validity ends in the window, soonest first;
    // revoked ones (02, 05), hub certificates and already-expired ones are not listed.
    let mut soon = cert("06", Some("d2"));
    soon.not_after = at(86_400 * 10);
    s.insert_cert(&soon).await.unwrap();
    let mut infra = cert("07", None);
    infra.not_after = at(86_400 * 10);
    s.insert_cert(&infra).await.unwrap();
    let serials = |v: Vec<CertRecord>| v.into_iter().map(|c| c.serial).collect::<Vec<_>>();
    let month = s.expiring_certs(t0(), at(86_400 * 30), 10).await.unwrap();
    assert_eq!(serials(month), ["06"]);
    let year = s.expiring_certs(t0(), at(86_400 * 400), 10).await.unwrap();
    assert_eq!(serials(year), ["06", "04"]);
    let later = s
        .expiring_certs(at(86_400 * 366), at(86_400 * 400), 10)
        .await
        .unwrap();
    assert!(later.is_empty(), "expired already: {later:?}");
}
