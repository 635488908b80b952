//! The OTA service on a real core (in-memory registry, file vault), without MQTT: a
//! recording notifier stands in for the broker and reports are applied directly. Waves,
//! thresholds, pause/resume/cancel, signed manifests, and revoked devices being skipped.
#![allow(clippy::unwrap_used)]

use moat_core::{Actor, CoreConfig, CreateDevice, Credential, Hub, RevocationReason};
use moat_image::ImageVersion;
use moat_image::sign::{ImageBuilder, SigningKey};
use moat_ota::{CreateCampaign, Error, Notifier, Ota, OtaConfig, Target, WaveSpec};
use moat_ota_proto::{Report, ReportState, UpdateKey, open_manifest};
use moat_store::{CampaignState, UpdateState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Recorder {
    notices: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Notifier for Recorder {
    fn notify(&self, device_id: &str, manifest: &[u8]) {
        self.notices
            .lock()
            .unwrap()
            .push((device_id.into(), manifest.to_vec()));
    }
    fn clear(&self, device_id: &str) {
        self.notices
            .lock()
            .unwrap()
            .push((device_id.into(), Vec::new()));
    }
}

impl Recorder {
    fn notified(&self) -> Vec<String> {
        self.notices
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(d, _)| d.clone())
            .collect()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    hub: Arc<Hub>,
    ota: Arc<Ota>,
    notes: Arc<Recorder>,
    key: SigningKey,
}

async fn setup(devices: usize) -> Setup {
    setup_with_ttl(devices, Duration::from_secs(3600)).await
}

async fn setup_with_ttl(devices: usize, manifest_ttl: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = moat_store::open("sqlite::memory:").await.unwrap();
    let vault = moat_vault::Vault::open(
        dir.path(),
        moat_vault::MasterKeySource::File(dir.path().join("master.key")),
    )
    .unwrap();
    let hub = Arc::new(
        Hub::open(store, Arc::new(vault), CoreConfig::default())
            .await
            .unwrap(),
    );
    for i in 0..devices {
        hub.create_device(
            CreateDevice {
                id: format!("d{i:02}"),
                credential: Credential::GenerateKey,
                allow_insecure: false,
            },
            &Actor::admin(),
        )
        .await
        .unwrap();
    }
    let notes = Arc::new(Recorder::default());
    let ota = Arc::new(
        Ota::open(
            hub.clone(),
            OtaConfig {
                data_dir: dir.path().to_owned(),
                download_url: "https://hub.test:8444".into(),
                manifest_ttl,
                max_image_size: 1 << 20,
            },
            notes.clone(),
        )
        .await
        .unwrap(),
    );
    let key = SigningKey::p256_from_bytes(&[5; 32]).unwrap();
    let pem = pem_of(&key);
    ota.add_key("release", pem.as_bytes(), &Actor::admin())
        .await
        .unwrap();
    Setup {
        _dir: dir,
        hub,
        ota,
        notes,
        key,
    }
}

fn pem_of(key: &SigningKey) -> String {
    moat_ota::spki_pem(key.trusted_key().spki_der().as_bytes())
}

fn image(key: &SigningKey, minor: u8, counter: u32) -> Vec<u8> {
    ImageBuilder::new(ImageVersion {
        major: 1,
        minor,
        revision: 0,
        build: 0,
    })
    .with_header_size(0x200)
    .with_security_counter(counter)
    .sign(&vec![minor; 4096], key)
    .unwrap()
}

async fn report(ota: &Ota, device: &str, campaign: &str, state: ReportState) {
    ota.handle_report(
        device,
        &Report {
            campaign: Some(campaign.into()),
            state,
            reason: (state == ReportState::RolledBack).then(|| "did not confirm".into()),
            running: None,
        },
    )
    .await
    .unwrap();
}

fn all(n: usize) -> Target {
    Target::Devices((0..n).map(|i| format!("d{i:02}")).collect())
}

#[tokio::test]
async fn waves_advance_on_confirmations_and_manifests_verify() {
    let s = setup(10).await;
    let fw = s
        .ota
        .upload("sensor", &image(&s.key, 1, 2), &Actor::admin())
        .await
        .unwrap();
    let view = s
        .ota
        .create_campaign(
            CreateCampaign {
                firmware_id: fw.id.clone(),
                target: all(10),
                waves: WaveSpec::parse_list("20%,100%").unwrap(),
                success_threshold: 100,
                abort_threshold: 10,
            },
            &Actor::admin(),
        )
        .await
        .unwrap();
    let id = view.campaign.id.clone();
    assert_eq!(
        view.waves.iter().map(|w| w.devices).collect::<Vec<_>>(),
        [2, 8]
    );
    assert_eq!(s.notes.notified(), ["d00", "d01"]);

    // The manifest verifies with the update key and says what the image is.
    let key = UpdateKey::from_der(s.ota.update_key_der()).unwrap();
    let (_, bytes) = s.notes.notices.lock().unwrap()[0].clone();
    let m = open_manifest(&bytes, &key).unwrap();
    assert_eq!(
        (m.campaign.as_str(), m.security_counter, m.size),
        (id.as_str(), 2, fw.size)
    );
    assert_eq!(m.url, format!("https://hub.test:8444/fw/{}", fw.digest));
    assert_eq!(m.models, ["sensor"]);
    assert!(m.expires_at > m.issued_at);

    // Downloads count for nothing; an out-of-order report cannot move a device back.
    report(&s.ota, "d00", &id, ReportState::Downloading).await;
    report(&s.ota, "d00", &id, ReportState::Confirmed).await;
    report(&s.ota, "d00", &id, ReportState::Installed).await;
    // A device of another wave, or a stranger, changes nothing.
    report(&s.ota, "d05", &id, ReportState::Confirmed).await;
    let v = s.ota.campaign(&id).await.unwrap();
    assert_eq!(v.campaign.current_wave, 0);
    assert_eq!(v.waves[0].count(UpdateState::Confirmed), 1);
    assert_eq!(v.waves[1].count(UpdateState::Pending), 8);

    report(&s.ota, "d01", &id, ReportState::Confirmed).await;
    let v = s.ota.campaign(&id).await.unwrap();
    assert_eq!(
        v.campaign.current_wave, 1,
        "wave 1 all confirmed: next wave"
    );
    assert_eq!(v.waves[1].count(UpdateState::Notified), 8);

    // Pause: confirmations still count, but nothing new starts; resume finishes it.
    s.ota.pause(&id, &Actor::admin()).await.unwrap();
    for i in 2..10 {
        report(&s.ota, &format!("d{i:02}"), &id, ReportState::Confirmed).await;
    }
    assert_eq!(
        s.ota.campaign(&id).await.unwrap().campaign.state,
        CampaignState::Paused
    );
    let v = s.ota.resume(&id, &Actor::admin()).await.unwrap();
    assert_eq!(v.campaign.state, CampaignState::Succeeded);
    assert!(matches!(
        s.ota.cancel(&id, &Actor::admin()).await,
        Err(Error::State(_))
    ));
}

#[tokio::test]
async fn failures_abort_and_later_waves_are_never_notified() {
    let s = setup(10).await;
    let fw = s
        .ota
        .upload("sensor", &image(&s.key, 1, 2), &Actor::admin())
        .await
        .unwrap();
    let v = s
        .ota
        .create_campaign(
            CreateCampaign {
                firmware_id: fw.id,
                target: all(10),
                waves: WaveSpec::parse_list("5,5").unwrap(),
                success_threshold: 80,
                abort_threshold: 30,
            },
            &Actor::admin(),
        )
        .await
        .unwrap();
    let id = v.campaign.id;
    report(&s.ota, "d00", &id, ReportState::RolledBack).await;
    assert_eq!(
        s.ota.campaign(&id).await.unwrap().campaign.state,
        CampaignState::Running,
        "1 of 5 is below 30%"
    );
    report(&s.ota, "d01", &id, ReportState::Failed).await;
    let v = s.ota.campaign(&id).await.unwrap();
    assert_eq!(v.campaign.state, CampaignState::Aborted, "2 of 5 reach 30%");
    assert!(v.campaign.reason.unwrap().contains("2 of 5"));
    assert_eq!(v.waves[1].count(UpdateState::Cancelled), 5);
    assert_eq!(s.notes.notified().len(), 5, "wave 2 never notified");
    // Devices already notified still report after the abort.
    report(&s.ota, "d02", &id, ReportState::RolledBack).await;
    let v = s.ota.campaign(&id).await.unwrap();
    assert_eq!(v.waves[0].count(UpdateState::RolledBack), 2);
}

#[tokio::test]
async fn revoked_devices_get_nothing_and_stop_counting() {
    let s = setup(4).await;
    let events = tokio::spawn(s.ota.clone().follow_events(std::future::pending()));
    s.hub
        .revoke_device("d03", RevocationReason::KeyCompromise, &Actor::admin())
        .await
        .unwrap();
    let fw = s
        .ota
        .upload("sensor", &image(&s.key, 1, 2), &Actor::admin())
        .await
        .unwrap();
    let v = s
        .ota
        .create_campaign(
            CreateCampaign {
                firmware_id: fw.id,
                target: all(4),
                waves: Vec::new(),
                success_threshold: 100,
                abort_threshold: 50,
            },
            &Actor::admin(),
        )
        .await
        .unwrap();
    let id = v.campaign.id;
    assert_eq!(v.waves[0].devices, 3, "the revoked device is not targeted");
    report(&s.ota, "d00", &id, ReportState::Confirmed).await;
    report(&s.ota, "d01", &id, ReportState::Confirmed).await;
    // d02 is revoked mid-campaign: skipped, its notice withdrawn, and the wave completes
    // without it.
    s.hub
        .revoke_device("d02", RevocationReason::KeyCompromise, &Actor::admin())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = s.ota.campaign(&id).await.unwrap();
        if v.campaign.state == CampaignState::Succeeded {
            assert_eq!(v.waves[0].count(UpdateState::Skipped), 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cleared = s
        .notes
        .notices
        .lock()
        .unwrap()
        .iter()
        .any(|(d, m)| d == "d02" && m.is_empty());
    assert!(cleared);
    let downloads = s.ota.downloads();
    assert!(matches!(
        downloads
            .open("d02", &moat_ota::digest_hex(&image(&s.key, 1, 2)))
            .await,
        Err(Error::DownloadRefused { .. })
    ));
    events.abort();
}

#[tokio::test]
async fn uploads_are_verified_and_counters_only_go_up() {
    let s = setup(0).await;
    let err = s
        .ota
        .upload("sensor", b"not an image", &Actor::admin())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ImageRefused(_)), "{err}");
    let stranger = SigningKey::ed25519_from_bytes(&[8; 32]);
    let err = s
        .ota
        .upload("sensor", &image(&stranger, 1, 1), &Actor::admin())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("image refused"), "{err}");
    s.ota
        .upload("sensor", &image(&s.key, 2, 5), &Actor::admin())
        .await
        .unwrap();
    let err = s
        .ota
        .upload("sensor", &image(&s.key, 1, 4), &Actor::admin())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::CounterBelowPublished {
                counter: 4,
                published: 5,
                ..
            }
        ),
        "{err}"
    );
    // Another model has its own floor.
    s.ota
        .upload("gateway", &image(&s.key, 1, 4), &Actor::admin())
        .await
        .unwrap();
    let err = s
        .ota
        .create_campaign(
            CreateCampaign {
                firmware_id: "fw-nope".into(),
                target: Target::Group("g".into()),
                waves: Vec::new(),
                success_threshold: 100,
                abort_threshold: 10,
            },
            &Actor::admin(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // Signing with a registered (offline) key is refused with what to do instead.
    let err = s
        .ota
        .sign(
            &moat_ota::SignRequest {
                key: "release".into(),
                version: "1.0.0".into(),
                security_counter: 1,
                header_size: 0x200,
            },
            b"payload",
            &Actor::admin(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err}");
    // A hub-held key signs images that its own catalogue accepts.
    s.ota.generate_key("hub", &Actor::admin()).await.unwrap();
    let signed = s
        .ota
        .sign(
            &moat_ota::SignRequest {
                key: "hub".into(),
                version: "3.0.0+1".into(),
                security_counter: 9,
                header_size: 0x200,
            },
            b"payload",
            &Actor::admin(),
        )
        .await
        .unwrap();
    let fw = s
        .ota
        .upload("sensor", &signed, &Actor::admin())
        .await
        .unwrap();
    assert_eq!(
        (
            fw.key_name.as_str(),
            fw.version.as_str(),
            fw.security_counter
        ),
        ("hub", "3.0.0+1", 9)
    );
}

#[tokio::test]
async fn notices_of_devices_that_have_not_started_are_renewed_before_they_expire() {
    let s = setup_with_ttl(3, Duration::from_secs(2)).await;
    let fw = s
        .ota
        .upload("sensor", &image(&s.key, 1, 2), &Actor::admin())
        .await
        .unwrap();
    let v = s
        .ota
        .create_campaign(
            CreateCampaign {
                firmware_id: fw.id,
                target: all(3),
                waves: Vec::new(),
                success_threshold: 100,
                abort_threshold: 50,
            },
            &Actor::admin(),
        )
        .await
        .unwrap();
    let id = v.campaign.id;
    assert_eq!(
        s.ota.refresh_notices().await.unwrap(),
        0,
        "fresh notices stay"
    );
    report(&s.ota, "d00", &id, ReportState::Downloading).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // d00 has started: only d01 and d02 get a new manifest, valid from now.
    let before = s.notes.notified().len();
    assert_eq!(s.ota.refresh_notices().await.unwrap(), 2);
    let notices = s.notes.notices.lock().unwrap().clone();
    let renewed: Vec<_> = notices[before..].iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(renewed, ["d01", "d02"]);
    let key = UpdateKey::from_der(s.ota.update_key_der()).unwrap();
    let first = open_manifest(&notices[0].1, &key).unwrap();
    let last = open_manifest(&notices[notices.len() - 1].1, &key).unwrap();
    assert!(last.expires_at > first.expires_at);
    assert_eq!(s.ota.refresh_notices().await.unwrap(), 0, "just renewed");
}

/// Waits until `d`'s state in campaign `id` is `want` (events are applied asynchronously).
async fn wait_state(s: &Setup, id: &str, d: &str, want: UpdateState) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = s.ota.campaign_devices(id).await.unwrap();
        let row = rows.iter().find(|r| r.device_id == d).unwrap();
        if row.state == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{d} is {:?}, not {want:?}",
            row.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn times_notified(s: &Setup, d: &str) -> usize {
    s.notes.notified().iter().filter(|n| *n == d).count()
}

#[tokio::test]
async fn redelivered_reports_change_nothing() {
    // Devices publish reports at least once: a report the hub applied may come again after
    // the device reconnects, alone or followed by older ones.
    let s = setup(4).await;
    let fw = s
        .ota
        .upload("sensor", &image(&s.key, 1, 2), &Actor::admin())
        .await
        .unwrap();
    let id = s
        .ota
        .create_campaign(
            CreateCampaign {
                firmware_id: fw.id,
                target: all(4),
                waves: Vec::new(),
                success_threshold: 100,
                abort_threshold: 50,
            },
            &Actor::admin(),
        )
        .await
        .unwrap()
        .campaign
        .id;
    for _ in 0..2 {
        for state in [
            ReportState::Downloading,
            ReportState::Installed,
            ReportState::Confirmed,
        ] {
            report(&s.ota, "d00", &id, state).await;
        }
        report(&s.ota, "d01", &id, ReportState::RolledBack).await;
    }
    let v = s.ota.campaign(&id).await.unwrap();
    assert_eq!(v.waves[0].count(UpdateState::Confirmed), 1);
    assert_eq!(v.waves[0].count(UpdateState::RolledBack), 1);
    // Counted twice, the roll-back would have reached the abort threshold (2 of 4 = 50%).
    assert_eq!(v.campaign.state, CampaignState::Running, "{v:?}");
    report(&s.ota, "d02", &id, ReportState::Confirmed).await;
    report(&s.ota, "d03", &id, ReportState::Confirmed).await;
    report(&s.ota, "d03", &id, ReportState::Confirmed).await;
    let v = s.ota.campaign(&id).await.unwrap();
    assert_eq!(v.waves[0].count(UpdateState::Confirmed), 3);
    assert_eq!(v.campaign.state, CampaignState::Running, "75% < 100%");
}

#[tokio::test]
async fn model_targets_use_the_registry_model_until_a_device_reports() {
    let s = setup(4).await;
    for (d, m) in [("d00", "sensor"), ("d01", "sensor"), ("d02", "camera")] {
        s.ota.set_device_model(d, m, &Actor::admin()).await.unwrap();
    }
    assert!(matches!(
        s.ota
            .set_device_model("nobody", "sensor", &Actor::admin())
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.ota
            .set_device_model("d03", "bad model", &Actor::admin())
            .await,
        Err(Error::Invalid(_))
    ));
    let fw = s
        .ota
        .upload("sensor", &image(&s.key, 1, 2), &Actor::admin())
        .await
        .unwrap();
    let create = |target: Target| CreateCampaign {
        firmware_id: fw.id.clone(),
        target,
        waves: Vec::new(),
        success_threshold: 100,
        abort_threshold: 50,
    };
    let members = |v: &moat_ota::CampaignView| v.waves.iter().map(|w| w.devices).sum::<u64>();
    // No device has reported: the registry's models decide.
    let v = s
        .ota
        .create_campaign(create(Target::Model("sensor".into())), &Actor::admin())
        .await
        .unwrap();
    assert_eq!(members(&v), 2);
    let ids: Vec<_> = s
        .ota
        .campaign_devices(&v.campaign.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, ["d00", "d01"]);
    s.ota.cancel(&v.campaign.id, &Actor::admin()).await.unwrap();
    // What a device reports wins over the registry.
    s.ota
        .handle_report(
            "d01",
            &Report {
                campaign: None,
                state: ReportState::Idle,
                reason: None,
                running: Some(moat_ota_proto::Running {
                    model: "camera".into(),
                    version: "1.0.0".into(),
                    security_counter: 1,
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s.ota.device_model("d01").await.unwrap().as_deref(),
        Some("camera")
    );
    let v = s
        .ota
        .create_campaign(create(Target::Model("sensor".into())), &Actor::admin())
        .await
        .unwrap();
    assert_eq!(members(&v), 1);
    s.ota.cancel(&v.campaign.id, &Actor::admin()).await.unwrap();
    // Other targets leave out devices known to be of another model; unknown ones stay.
    let v = s
        .ota
        .create_campaign(create(all(4)), &Actor::admin())
        .await
        .unwrap();
    let ids: Vec<_> = s
        .ota
        .campaign_devices(&v.campaign.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, ["d00", "d03"]);
}

#[tokio::test]
async fn a_device_re_enabled_while_the_campaign_runs_gets_the_update() {
    let s = setup(4).await;
    let events = tokio::spawn(s.ota.clone().follow_events(std::future::pending()));
    let image = image(&s.key, 1, 2);
    let digest = moat_ota::digest_hex(&image);
    let fw = s
        .ota
        .upload("sensor", &image, &Actor::admin())
        .await
        .unwrap();
    let id = s
        .ota
        .create_campaign(
            CreateCampaign {
                firmware_id: fw.id,
                target: all(4),
                waves: WaveSpec::parse_list("50%,100%").unwrap(),
                success_threshold: 100,
                abort_threshold: 50,
            },
            &Actor::admin(),
        )
        .await
        .unwrap()
        .campaign
        .id;
    // d00 (wave 1) is disabled: skipped, and the wave goes on without it.
    s.hub.disable_device("d00", &Actor::admin()).await.unwrap();
    wait_state(&s, &id, "d00", UpdateState::Skipped).await;
    assert!(s.ota.downloads().open("d00", &digest).await.is_err());
    report(&s.ota, "d01", &id, ReportState::Confirmed).await;
    assert_eq!(s.ota.campaign(&id).await.unwrap().campaign.current_wave, 1);
    // Re-enabled while the campaign still runs: notified again, although its wave is over.
    s.hub.enable_device("d00", &Actor::admin()).await.unwrap();
    wait_state(&s, &id, "d00", UpdateState::Notified).await;
    assert_eq!(times_notified(&s, "d00"), 2);
    assert!(s.ota.downloads().open("d00", &digest).await.is_ok());
    report(&s.ota, "d00", &id, ReportState::Confirmed).await;

    // Paused: a device disabled and re-enabled meanwhile waits, and is notified on resume.
    s.ota.pause(&id, &Actor::admin()).await.unwrap();
    s.hub.disable_device("d02", &Actor::admin()).await.unwrap();
    wait_state(&s, &id, "d02", UpdateState::Skipped).await;
    s.hub.enable_device("d02", &Actor::admin()).await.unwrap();
    wait_state(&s, &id, "d02", UpdateState::Pending).await;
    assert_eq!(times_notified(&s, "d02"), 1);
    s.ota.resume(&id, &Actor::admin()).await.unwrap();
    wait_state(&s, &id, "d02", UpdateState::Notified).await;
    assert_eq!(times_notified(&s, "d02"), 2);
    report(&s.ota, "d02", &id, ReportState::Confirmed).await;
    report(&s.ota, "d03", &id, ReportState::Confirmed).await;
    let v = s.ota.campaign(&id).await.unwrap();
    assert_eq!(v.campaign.state, CampaignState::Succeeded, "{v:?}");
    assert_eq!(v.waves[0].count(UpdateState::Confirmed), 2);

    // Once the campaign is over, re-enabling changes nothing in it.
    s.hub.disable_device("d03", &Actor::admin()).await.unwrap();
    s.hub.enable_device("d03", &Actor::admin()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(times_notified(&s, "d03"), 1);
    events.abort();
}
