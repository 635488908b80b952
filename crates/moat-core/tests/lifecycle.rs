//! The device lifecycle on an in-memory registry: every stage, every refused transition,
//! the events that drive the broker, and a superseded certificate refused from its retire
//! time on, before the retirement sweep has run.

mod common;

use common::{hub_and_registry, hub_with, station};
use moat_core::{
    Actor, AuditFilter, CertificateCheck, CoreConfig, CreateDevice, Credential, Denial,
    DeviceQuery, DeviceState, Error, EstRefusal, Event, Lifecycle, Stage,
};
use moat_testkit::pki::csr;
use rcgen::{DnType, KeyPair};
use time::OffsetDateTime;

fn state_error<T: std::fmt::Debug>(r: Result<T, Error>, want: &str) {
    match r {
        Err(Error::State(m)) => assert!(m.contains(want), "{want:?} not in {m:?}"),
        other => panic!("expected a state error ({want}), got {other:?}"),
    }
}

#[tokio::test]
async fn stages_follow_the_lifecycle_and_invalid_transitions_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, store) = hub_and_registry(dir.path(), CoreConfig::default()).await;
    let admin = Actor::admin();
    let mut events = hub.subscribe();
    hub.create_device(
        CreateDevice {
            id: "d".into(),
            credential: Credential::GenerateKey,
            allow_insecure: false,
        },
        &admin,
    )
    .await
    .expect("create");
    let lifecycle = |d: &moat_core::Device| d.lifecycle();
    let d = hub.device("d").await.expect("d");
    assert_eq!(
        (d.stage, lifecycle(&d)),
        (Stage::Enrolled, Lifecycle::Enrolled)
    );

    let d = hub
        .mark_provisioned("d", Some("hub-a".into()), &Actor::system())
        .await
        .expect("provisioned");
    assert_eq!(lifecycle(&d), Lifecycle::Provisioned);
    hub.note_connected(&d).await.expect("connected");
    let d = hub.device("d").await.expect("d");
    assert_eq!(lifecycle(&d), Lifecycle::Active);
    hub.note_connected(&d).await.expect("again");
    let audit = hub.audit_log(None, 100).await.expect("audit");
    let count = |action: &str| audit.iter().filter(|e| e.action == action).count();
    assert_eq!(count("device.activate"), 1, "activated once");
    assert_eq!(count("device.provision"), 1);

    // Suspended: connections refused (DeviceDisabled kicks), nothing else moves it on.
    let d = hub
        .suspend_device("d", Some("stolen"), &admin)
        .await
        .expect("suspend");
    assert_eq!(lifecycle(&d), Lifecycle::Suspended);
    assert_eq!(d.status_reason.as_deref(), Some("stolen"));
    state_error(
        hub.suspend_device("d", None, &admin).await,
        "suspended already",
    );
    state_error(hub.mark_provisioned("d", None, &admin).await, "suspended");
    state_error(hub.rotate_device("d", &admin).await, "suspended");
    let d = hub.resume_device("d", None, &admin).await.expect("resume");
    assert_eq!((lifecycle(&d), d.status_reason), (Lifecycle::Active, None));
    state_error(hub.resume_device("d", None, &admin).await, "not suspended");

    // `disable` is a suspension without a reason, `resume` ends it (and `enable` stays lenient).
    hub.enable_device("d", &admin).await.expect("enable active");
    let d = hub.disable_device("d", &admin).await.expect("disable");
    assert_eq!(lifecycle(&d), Lifecycle::Suspended);
    hub.resume_device("d", None, &admin).await.expect("resume");

    // Decommissioned is final.
    let (d, serials) = hub
        .decommission_device("d", Some("end of life"), &admin)
        .await
        .expect("decommission");
    assert_eq!(lifecycle(&d), Lifecycle::Decommissioned);
    assert_eq!(serials.len(), 1);
    for r in [
        hub.resume_device("d", None, &admin).await.map(drop),
        hub.suspend_device("d", None, &admin).await.map(drop),
        hub.claim_device("d", "acme", &admin).await.map(drop),
        hub.mark_provisioned("d", None, &admin).await.map(drop),
        hub.rotate_device("d", &admin).await.map(drop),
        hub.decommission_device("d", None, &admin).await.map(drop),
        hub.enable_device("d", &admin).await.map(drop),
    ] {
        assert!(matches!(r, Err(Error::State(_))), "{r:?}");
    }
    assert!(
        hub.cert(&serials[0])
            .await
            .expect("cert")
            .revocation_reason
            .as_deref()
            == Some("cessation_of_operation")
    );

    // A decommissioning cut short after its first write (state) is finished by the next call.
    hub.create_device(
        CreateDevice {
            id: "e".into(),
            credential: Credential::GenerateKey,
            allow_insecure: false,
        },
        &admin,
    )
    .await
    .expect("create");
    let now = time::OffsetDateTime::now_utc();
    assert!(
        store
            .set_device_status("e", DeviceState::Active, DeviceState::Revoked, None, now)
            .await
            .expect("cut short")
    );
    let (_, finished) = hub
        .decommission_device("e", None, &admin)
        .await
        .expect("finishes");
    assert_eq!(finished.len(), 1);
    state_error(hub.decommission_device("e", None, &admin).await, "final");

    // The broker hears of each access change.
    let mut seen = Vec::new();
    while let Ok(Ok(ev)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), events.recv()).await
    {
        seen.push(ev.event);
    }
    let disabled = seen
        .iter()
        .filter(|e| matches!(e, Event::DeviceDisabled { .. }))
        .count();
    assert_eq!(disabled, 2, "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::DeviceRevoked { certificates: c, .. }
                if c.iter().map(|c| &c.serial).eq(serials.iter()))),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_superseded_certificate_is_refused_from_its_retire_time_before_any_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = CoreConfig {
        rotation_overlap: time::Duration::seconds(1),
        ..CoreConfig::default()
    };
    let hub = hub_with(dir.path(), cfg).await;
    let admin = Actor::admin();
    hub.add_allowlist("SN-1\n", &admin).await.expect("upload");
    let station = station(&hub, "line-1").await;
    let key = KeyPair::generate().expect("key");
    let first = hub
        .est_enroll(
            &station,
            &csr(&key, &[(DnType::CommonName, "SN-1")], &[]),
            false,
        )
        .await
        .expect("enroll");
    let renewal = csr(
        &key,
        &[
            (DnType::OrganizationName, "Moat"),
            (DnType::CommonName, "SN-1"),
        ],
        &["urn:moat:device:SN-1"],
    );
    let second = hub
        .est_reenroll(
            CertificateCheck::tls(std::slice::from_ref(&first.cert), false),
            &renewal,
            "peer",
        )
        .await
        .expect("re-enroll");
    let old = hub.cert(&first.record.serial).await.expect("old");
    assert!(
        old.retire_at.is_some() && old.revoked_at.is_none(),
        "{old:?}"
    );
    hub.admit_certificate(CertificateCheck::tls(
        std::slice::from_ref(&first.cert),
        false,
    ))
    .await
    .expect("the old certificate works during the overlap");

    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let denial = hub
        .admit_certificate(CertificateCheck::tls(
            std::slice::from_ref(&first.cert),
            false,
        ))
        .await
        .expect_err("retired");
    assert!(
        matches!(denial, Denial::CertRetired(ref s) if *s == old.serial),
        "{denial:?}"
    );
    assert_eq!(denial.step(), "revocation");
    hub.admit_certificate(CertificateCheck::tls(
        std::slice::from_ref(&second.cert),
        false,
    ))
    .await
    .expect("the new one works");
    match hub
        .est_reenroll(
            CertificateCheck::tls(std::slice::from_ref(&first.cert), false),
            &renewal,
            "peer",
        )
        .await
    {
        Err(Error::Est(EstRefusal::Certificate(Denial::CertRetired(s)))) => {
            assert_eq!(s, old.serial)
        }
        other => panic!("expected CertificateRetired, got {other:?}"),
    }

    // The sweep revokes it (reason superseded) into a newer CRL, once.
    let before = hub.crl("devices").await.expect("crl").number;
    let retired = hub.retire_superseded_certs().await.expect("sweep");
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].serial, old.serial);
    assert!(hub.crl("devices").await.expect("crl").number > before);
    let old = hub.cert(&old.serial).await.expect("old");
    assert_eq!(old.revocation_reason.as_deref(), Some("superseded"));
    assert!(
        hub.retire_superseded_certs()
            .await
            .expect("sweep")
            .is_empty()
    );
    assert!(matches!(
        hub.admit_certificate(CertificateCheck::tls(
            std::slice::from_ref(&first.cert),
            false
        ))
        .await,
        Err(Denial::CertRevoked(_))
    ));
    let live = hub.live_certs("SN-1").await.expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].serial, second.record.serial);
}

/// Presence: the first accepted CONNECT records when the device was seen; a reconnection
/// within the interval writes nothing (a write would have replaced the time with a later
/// one, as the store does below). Activation and its audit entry happen as before. The
/// console's reads clamp their limits and treat empty audit fields as "any".
#[tokio::test]
async fn connections_record_presence_once_per_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, store) = hub_and_registry(dir.path(), CoreConfig::default()).await;
    hub.create_device(
        CreateDevice {
            id: "p".into(),
            credential: Credential::GenerateKey,
            allow_insecure: false,
        },
        &Actor::admin(),
    )
    .await
    .expect("create");
    let query = DeviceQuery {
        text: Some("p".into()),
        state: None,
    };
    let last_seen = || async {
        let page = hub.device_page(&query, 0, 10).await.expect("page");
        assert_eq!(page.total, 1);
        page.rows[0].last_seen
    };
    assert_eq!(last_seen().await, None);

    let before = OffsetDateTime::now_utc() - time::Duration::milliseconds(1);
    let d = hub.device("p").await.expect("p");
    hub.note_connected(&d).await.expect("connected");
    let first = last_seen().await.expect("recorded");
    assert!(
        first >= before && first <= OffsetDateTime::now_utc(),
        "{first}"
    );
    let d = hub.device("p").await.expect("p");
    assert_eq!(d.stage, Stage::Active);
    hub.note_connected(&d).await.expect("reconnected");
    assert_eq!(last_seen().await, Some(first), "throttled: nothing written");

    let later = first + time::Duration::seconds(1);
    store.touch_presence("p", later).await.expect("touch");
    assert_eq!(last_seen().await, Some(later));

    let filter = AuditFilter {
        actor: Some(String::new()),
        action: Some("device.".into()),
        target: Some("p".into()),
        outcome: None,
    };
    let actions: Vec<_> = hub
        .audit_search(&filter, None, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("device:p".to_string(), "device.activate".to_string()),
            ("admin".to_string(), "device.create".to_string()),
        ],
        "activated once, audited as before"
    );
    assert_eq!(
        hub.audit_search(&filter, None, 0)
            .await
            .expect("audit")
            .len(),
        1
    );
    assert_eq!(
        hub.device_page(&DeviceQuery::default(), 0, 0)
            .await
            .expect("page")
            .rows
            .len(),
        1
    );
    assert!(matches!(
        hub.device_page(
            &DeviceQuery {
                text: Some("x".repeat(moat_core::MAX_SEARCH_LEN + 1)),
                state: None
            },
            0,
            10
        )
        .await,
        Err(Error::Invalid(_))
    ));
}
