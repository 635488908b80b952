//! The firmware download handler in process (tower `oneshot`): identity from the
//! `PeerIdentity` extension, authorisation from the registry, and range requests.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use moat_api::{PeerIdentity, download_router};
use moat_ota::Downloads;
use moat_store::{
    Campaign, CampaignDevice, CampaignState, ConnectionPolicy, Device, DeviceState, FirmwareKey,
    FirmwareKeyKind, FirmwareRecord, Store, UpdateState,
};
use std::sync::Arc;
use time::OffsetDateTime;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    router: axum::Router,
    image: Vec<u8>,
    digest: String,
    store: Arc<dyn Store>,
}

fn device(id: &str) -> Device {
    let now = OffsetDateTime::now_utc();
    Device {
        id: id.into(),
        state: DeviceState::Active,
        policy: ConnectionPolicy::DenyInsecure,
        token_hash: None,
        ca_name: "devices".into(),
        created_at: now,
        updated_at: now,
        factory: None,
        stage: moat_store::Stage::Enrolled,
        owner: None,
        status_reason: None,
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("moat.db").display());
    let store = moat_store::open(&url).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let image: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let digest = moat_ota::digest_hex(&image);
    std::fs::create_dir_all(dir.path().join("firmware")).unwrap();
    std::fs::write(dir.path().join("firmware").join(&digest), &image).unwrap();
    for id in ["d1", "d2", "d3"] {
        store.create_device(&device(id), None).await.unwrap();
    }
    store
        .insert_firmware_key(&FirmwareKey {
            name: "k".into(),
            kind: FirmwareKeyKind::P256,
            spki_der: vec![1],
            key_ref: None,
            created_at: now,
        })
        .await
        .unwrap();
    store
        .publish_firmware(&FirmwareRecord {
            id: "fw-1".into(),
            model: "m".into(),
            version: "1.0.0+0".into(),
            security_counter: 1,
            size: image.len() as u64,
            digest: digest.clone(),
            key_name: "k".into(),
            created_at: now,
        })
        .await
        .unwrap();
    let campaign = Campaign {
        id: "cmp-1".into(),
        firmware_id: "fw-1".into(),
        target: "devices:d1,d2".into(),
        state: CampaignState::Running,
        waves: 2,
        current_wave: 0,
        success_threshold: 100,
        abort_threshold: 10,
        reason: None,
        created_at: now,
        updated_at: now,
    };
    let row = |d: &str, wave, state| CampaignDevice {
        campaign_id: "cmp-1".into(),
        device_id: d.into(),
        wave,
        state,
        reason: None,
        updated_at: now,
    };
    store
        .create_campaign(
            &campaign,
            &[
                row("d1", 0, UpdateState::Notified),
                row("d2", 1, UpdateState::Pending),
            ],
        )
        .await
        .unwrap();
    let downloads = Arc::new(Downloads::new(store.clone(), dir.path()));
    Fixture {
        _dir: dir,
        router: download_router(downloads),
        image,
        digest,
        store,
    }
}

async fn get(
    f: &Fixture,
    device: Option<&str>,
    path: &str,
    headers: &[(header::HeaderName, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(d) = device {
        req.extensions_mut().insert(PeerIdentity(d.into()));
    }
    let resp = f.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn full_and_ranged_downloads() {
    let f = fixture().await;
    let path = format!("/fw/{}", f.digest);
    let size = f.image.len();

    let (s, h, body) = get(&f, Some("d1"), &path, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, f.image);
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(h[header::CONTENT_LENGTH], size.to_string().as_str());
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", f.digest));

    // A download cut at 40,000 bytes resumes from there.
    let (s, h, body) = get(&f, Some("d1"), &path, &[(header::RANGE, "bytes=40000-")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        h[header::CONTENT_RANGE],
        format!("bytes 40000-{}/{size}", size - 1).as_str()
    );
    assert_eq!(body, f.image[40000..]);

    let (s, h, body) = get(&f, Some("d1"), &path, &[(header::RANGE, "bytes=10-19")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h[header::CONTENT_LENGTH], "10");
    assert_eq!(body, f.image[10..20]);

    let (s, _, body) = get(&f, Some("d1"), &path, &[(header::RANGE, "bytes=-100")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, f.image[size - 100..]);

    let (s, h, body) = get(
        &f,
        Some("d1"),
        &path,
        &[(header::RANGE, &format!("bytes={size}-"))],
    )
    .await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h[header::CONTENT_RANGE], format!("bytes */{size}").as_str());
    assert!(body.is_empty());

    // If-Range with the image's tag honours the range; with another tag sends everything.
    let (s, _, body) = get(
        &f,
        Some("d1"),
        &path,
        &[(header::RANGE, "bytes=5-9"), (header::IF_RANGE, &etag)],
    )
    .await;
    assert_eq!((s, body.len()), (StatusCode::PARTIAL_CONTENT, 5));
    let (s, _, body) = get(
        &f,
        Some("d1"),
        &path,
        &[(header::RANGE, "bytes=5-9"), (header::IF_RANGE, "\"old\"")],
    )
    .await;
    assert_eq!((s, body.len()), (StatusCode::OK, size));

    // Several ranges are answered with the whole image.
    let (s, _, body) = get(&f, Some("d1"), &path, &[(header::RANGE, "bytes=0-1,5-6")]).await;
    assert_eq!((s, body.len()), (StatusCode::OK, size));
}

#[tokio::test]
async fn only_notified_targets_of_active_campaigns_download() {
    let f = fixture().await;
    let path = format!("/fw/{}", f.digest);
    let problem = |body: &[u8]| -> serde_json::Value { serde_json::from_slice(body).unwrap() };

    let (s, _, body) = get(&f, None, &path, &[]).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "no client certificate identity"
    );
    assert_eq!(
        problem(&body)["type"],
        "urn:moat:problem:client-certificate-required"
    );

    for who in ["d2", "d3", "nobody"] {
        let (s, _, body) = get(&f, Some(who), &path, &[]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}");
        assert_eq!(problem(&body)["type"], "urn:moat:problem:forbidden");
    }
    let (s, _, _) = get(&f, Some("d1"), &format!("/fw/{}", "0".repeat(64)), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an image of no campaign");
    let (s, _, _) = get(&f, Some("d1"), "/fw/..%2f..%2fmoat.db", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "not a digest");
    let (s, _, _) = get(&f, Some("d1"), "/other", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // An ended campaign gives nothing. (A disabled device is refused before this router, by
    // the listener's admission — `CertificateCheck` at every request —, tested with real TLS
    // clients in moat/tests/admission.rs and ota.rs.)
    f.store
        .update_campaign(
            "cmp-1",
            (CampaignState::Running, 0),
            (CampaignState::Cancelled, 0),
            None,
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let (s, _, _) = get(&f, Some("d1"), &path, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
