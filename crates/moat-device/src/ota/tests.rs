#![allow(clippy::unwrap_used)]

use super::*;
use moat_image::ImageVersion;
use moat_image::sign::{ImageBuilder, SigningKey};
use moat_ota_proto::{ManifestError, ManifestSigner, sign_manifest};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

struct UpdateSigner(p256::ecdsa::SigningKey);

impl ManifestSigner for UpdateSigner {
    fn public_key_der(&self) -> Vec<u8> {
        self.0
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec()
    }
    fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64], ManifestError> {
        let sig: p256::ecdsa::Signature = self.0.sign(message);
        Ok(sig.to_bytes().into())
    }
}

/// Serves one image from memory; the first `cuts` fetches stop after half of what was asked.
struct MemFetcher {
    image: Vec<u8>,
    cuts: AtomicU32,
    ranges: Mutex<Vec<u64>>,
}

#[async_trait::async_trait]
impl Fetcher for MemFetcher {
    async fn fetch(&self, _url: &str, buf: &mut Vec<u8>, size: u64) -> Result<(), FetchError> {
        let from = buf.len();
        self.ranges.lock().unwrap().push(from as u64);
        let rest = &self.image[from..];
        if rest.len() as u64 + from as u64 > size {
            return Err(FetchError::Protocol("too long".into()));
        }
        if self.cuts.load(Ordering::SeqCst) > 0 {
            self.cuts.fetch_sub(1, Ordering::SeqCst);
            buf.extend_from_slice(&rest[..rest.len() / 2]);
            return Err(FetchError::Connection("cut".into()));
        }
        buf.extend_from_slice(rest);
        Ok(())
    }
}

fn version(minor: u8) -> ImageVersion {
    ImageVersion {
        major: 1,
        minor,
        revision: 0,
        build: 0,
    }
}

fn fw_key() -> SigningKey {
    SigningKey::p256_from_bytes(&[3; 32]).unwrap()
}

fn image(minor: u8, counter: u32, payload: &[u8]) -> Vec<u8> {
    ImageBuilder::new(version(minor))
        .with_header_size(0x200)
        .with_security_counter(counter)
        .sign(payload, &fw_key())
        .unwrap()
}

struct Setup {
    signer: UpdateSigner,
    agent: Agent<MemFetcher>,
}

fn setup(served: Vec<u8>, cuts: u32) -> Setup {
    let signer = UpdateSigner(p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap());
    let cfg = AgentConfig {
        model: "sensor".into(),
        update_key: UpdateKey::from_der(&signer.public_key_der()).unwrap(),
        firmware_keys: vec![fw_key().trusted_key()],
        download_attempts: 5,
        retry_pause: Duration::from_millis(1),
    };
    let factory = image(0, 3, b"factory firmware");
    let flash = SimFlash::with_factory_image(&factory, 256 * 1024, version(0), 3);
    let fetcher = MemFetcher {
        image: served,
        cuts: AtomicU32::new(cuts),
        ranges: Mutex::new(Vec::new()),
    };
    Setup {
        signer,
        agent: Agent::new(cfg, fetcher, flash),
    }
}

fn manifest_for(img: &[u8], minor: u8, counter: u32) -> Manifest {
    Manifest {
        campaign: "cmp-1".into(),
        firmware: "fw-1".into(),
        models: vec!["sensor".into()],
        version: version(minor).to_string(),
        security_counter: counter,
        size: img.len() as u64,
        digest: hex::encode(Sha256::digest(img)),
        url: "https://hub/fw/x".into(),
        issued_at: now_unix(),
        expires_at: now_unix() + 3600,
    }
}

async fn run(s: &mut Setup, m: &Manifest) -> (Outcome, Vec<Report>) {
    let notice = sign_manifest(m, &s.signer).unwrap();
    let mut reports = Vec::new();
    let out = s.agent.handle_notice(&notice, &mut reports).await;
    (out, reports)
}

fn states(r: &[Report]) -> Vec<ReportState> {
    r.iter().map(|r| r.state).collect()
}

#[tokio::test]
async fn update_confirms_and_raises_the_floor() {
    let img = image(1, 5, &vec![0x5a; 20_000]);
    let mut s = setup(img.clone(), 0);
    let (out, reports) = run(&mut s, &manifest_for(&img, 1, 5)).await;
    assert_eq!(out, Outcome::Confirmed);
    assert_eq!(
        states(&reports),
        [
            ReportState::Downloading,
            ReportState::Installed,
            ReportState::Confirmed
        ]
    );
    let running = reports.last().unwrap().running.clone().unwrap();
    assert_eq!(
        (running.version.as_str(), running.security_counter),
        ("1.1.0+0", 5)
    );
    assert_eq!(s.agent.flash().min_counter(), 5);
    // The same notice again (a retained message after reconnect) changes nothing.
    let (out, reports) = run(&mut s, &manifest_for(&img, 1, 5)).await;
    assert!(matches!(out, Outcome::Ignored(_)), "{out:?}");
    assert!(reports.is_empty());
}

#[tokio::test]
async fn cut_download_resumes_where_it_stopped() {
    let img = image(1, 5, &vec![0x33; 100_000]);
    let mut s = setup(img.clone(), 2);
    let (out, _) = run(&mut s, &manifest_for(&img, 1, 5)).await;
    assert_eq!(out, Outcome::Confirmed);
    let ranges = s.agent.fetcher.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[0], 0);
    assert!(
        ranges[1] > 0 && ranges[2] > ranges[1],
        "resumed, not restarted: {ranges:?}"
    );
    assert_eq!(s.agent.last_download_attempts, 3);
}

#[tokio::test]
async fn image_that_never_confirms_rolls_back() {
    let mut payload = vec![0x11; 10_000];
    payload.extend_from_slice(NO_CONFIRM_MARKER);
    let img = image(2, 6, &payload);
    let mut s = setup(img.clone(), 0);
    let (out, reports) = run(&mut s, &manifest_for(&img, 2, 6)).await;
    assert!(
        matches!(&out, Outcome::RolledBack(r) if r.contains("did not confirm")),
        "{out:?}"
    );
    assert_eq!(reports.last().unwrap().state, ReportState::RolledBack);
    let running = reports.last().unwrap().running.clone().unwrap();
    assert_eq!(
        (running.version.as_str(), running.security_counter),
        ("1.0.0+0", 3),
        "back on the factory image, floor unchanged"
    );
}

#[tokio::test]
async fn refusals_say_why_and_touch_nothing() {
    let good = image(1, 5, &vec![1; 5000]);
    // (manifest, served bytes, expected words in the reason)
    let older = image(9, 2, &vec![2; 5000]);
    let mut expired = manifest_for(&good, 1, 5);
    expired.expires_at = now_unix() - 10;
    let mut other_model = manifest_for(&good, 1, 5);
    other_model.models = vec!["gateway".into()];
    let mut wrong_digest = manifest_for(&good, 1, 5);
    wrong_digest.digest = "00".repeat(32);
    // A manifest that claims a high counter for a validly signed older image.
    let lying = manifest_for(&older, 9, 5);
    let mut other_version = manifest_for(&good, 1, 5);
    other_version.version = "1.7.0+0".into();
    let cases: Vec<(Manifest, Vec<u8>, &str)> = vec![
        (
            manifest_for(&older, 9, 2),
            older.clone(),
            "lower security counter",
        ),
        (expired, good.clone(), "expired manifest"),
        (other_model, good.clone(), "other model"),
        (wrong_digest, good.clone(), "digest mismatch"),
        (lying, older.clone(), "image refused"),
        (other_version, good.clone(), "does not match its manifest"),
    ];
    for (m, served, words) in cases {
        let mut s = setup(served, 0);
        let before = *s.agent.flash().state();
        let (out, reports) = run(&mut s, &m).await;
        match &out {
            Outcome::Failed(r) => assert!(r.contains(words), "{words}: {r}"),
            other => panic!("{words}: {other:?}"),
        }
        let last = reports.last().unwrap();
        assert_eq!(last.state, ReportState::Failed);
        assert!(last.reason.as_deref().unwrap().contains(words));
        assert_eq!(last.campaign.as_deref(), Some("cmp-1"));
        assert_eq!(*s.agent.flash().state(), before, "{words}: flash untouched");
        assert_eq!(s.agent.flash().running_version(), version(0));
    }
}

#[tokio::test]
async fn notices_that_do_not_verify_are_ignored() {
    let img = image(1, 5, b"x");
    let mut s = setup(img.clone(), 0);
    let forger = UpdateSigner(p256::ecdsa::SigningKey::from_slice(&[10; 32]).unwrap());
    let forged = sign_manifest(&manifest_for(&img, 1, 5), &forger).unwrap();
    let mut reports: Vec<Report> = Vec::new();
    let out = s.agent.handle_notice(&forged, &mut reports).await;
    assert!(
        matches!(&out, Outcome::Ignored(r) if r.contains("signature")),
        "{out:?}"
    );
    let out = s.agent.handle_notice(b"", &mut reports).await;
    assert!(matches!(out, Outcome::Ignored(_)));
    assert!(reports.is_empty());
}
