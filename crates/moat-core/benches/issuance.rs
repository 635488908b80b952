//! Issuance and CRL benchmarks (run with `cargo bench -p moat-core --bench issuance`).
//!
//! - CSR → checked → signed → stored, per second, with N concurrent callers, on SQLite (a file
//!   in a temp dir, synchronous=FULL) and, when `MOAT_TEST_DATABASE_URL` is set, PostgreSQL.
//! - Rebuilding, signing and storing a CRL with 100,000 revoked entries.
//!
//! Plain `main` (no harness): each figure is one timed run after a warm-up, printed as a line
//! that BENCHMARKS.md quotes.

use moat_core::{Actor, CoreConfig, CreateDevice, Credential, Hub, RevocationReason};
use std::sync::Arc;
use std::time::Instant;

/// Concurrent callers (API clients) for each issuance run.
const CALLER_COUNTS: [usize; 2] = [8, 32];

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let n: usize = std::env::var("BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let (hub, store) = open_hub(&url, dir.path()).await;
        for callers in CALLER_COUNTS {
            issue(&hub, "sqlite", n, callers).await;
        }
        crl(&hub, &store, "sqlite", 100_000).await;
        if let Ok(pg) = std::env::var("MOAT_TEST_DATABASE_URL") {
            let db = format!("moat_bench_{}", std::process::id());
            let admin = sqlx_free_psql(&pg, &format!("CREATE DATABASE {db}"));
            if admin {
                let base = pg.rsplit_once('/').expect("db url").0;
                let pg_dir = tempfile::tempdir().expect("tempdir");
                let (hub, store) = open_hub(&format!("{base}/{db}"), pg_dir.path()).await;
                for callers in CALLER_COUNTS {
                    issue(&hub, "postgres", n, callers).await;
                }
                crl(&hub, &store, "postgres", 100_000).await;
                drop((hub, store));
                sqlx_free_psql(&pg, &format!("DROP DATABASE {db} WITH (FORCE)"));
            }
        }
    });
}

fn sqlx_free_psql(url: &str, sql: &str) -> bool {
    std::process::Command::new("psql")
        .args([url, "-q", "-c", sql])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

async fn open_hub(url: &str, dir: &std::path::Path) -> (Arc<Hub>, Arc<dyn moat_store::Store>) {
    let store = moat_store::open(url).await.expect("store");
    let vault = moat_vault::Vault::open(
        dir,
        moat_vault::MasterKeySource::File(dir.join("master.key")),
    )
    .expect("vault");
    let hub = Hub::open(store.clone(), Arc::new(vault), CoreConfig::default())
        .await
        .expect("hub");
    (Arc::new(hub), store)
}

/// A pool of P-256 CSRs made up front (devices make their keys; the hub's cost starts at the CSR).
fn csrs(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let key = moat_pki::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("bench-{i}"));
            params.serialize_request(&key).expect("csr").der().to_vec()
        })
        .collect()
}

async fn issue(hub: &Arc<Hub>, backend: &str, n: usize, callers: usize) {
    let pool = Arc::new(csrs(n));
    // Warm-up (connections, statement cache).
    for i in 0..50 {
        create(
            hub,
            &format!("warm-{backend}-{callers}-{i}"),
            pool[i % n].clone(),
        )
        .await;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let hub = hub.clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                create(&hub, &format!("dev-{callers}-{i}"), pool[i].clone()).await;
                i += callers;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "issuance {backend}: {n} CSRs -> signed -> stored in {secs:.2} s = {:.0} certificates/s ({callers} concurrent callers)",
        n as f64 / secs
    );
}

async fn create(hub: &Hub, id: &str, csr: Vec<u8>) {
    hub.create_device(
        CreateDevice {
            id: id.to_string(),
            credential: Credential::Csr(csr),
            allow_insecure: false,
        },
        &Actor::system(),
    )
    .await
    .expect("issue");
}

async fn crl(hub: &Arc<Hub>, store: &Arc<dyn moat_store::Store>, backend: &str, entries: usize) {
    // Revoke directly in the store (the revocation path is not what is measured here).
    let now = time::OffsetDateTime::now_utc();
    let have = store
        .revoked_certs(hub.device_ca_name())
        .await
        .expect("revoked")
        .len();
    for i in have..entries {
        let serial = moat_pki::Serial::random();
        let der = format!("bench-crl-{i}");
        let rec = moat_core::CertRecord {
            serial: serial.to_hex(),
            ca_name: hub.device_ca_name().to_string(),
            device_id: None,
            subject: "CN=bench".into(),
            not_before: now,
            not_after: now,
            fingerprint: format!("{:064x}", i),
            spki_sha256: String::new(),
            source: moat_core::CertSource::Csr,
            der: der.into_bytes(),
            created_at: now,
            revoked_at: Some(now),
            revocation_reason: Some(RevocationReason::KeyCompromise.as_str().into()),
            retire_at: None,
        };
        store.insert_cert(&rec).await.expect("insert");
    }
    let start = Instant::now();
    let crl = hub
        .publish_crl(hub.device_ca_name(), &Actor::system())
        .await
        .expect("crl");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "crl {backend}: rebuilt, signed and stored a CRL of {entries} entries ({} bytes) in {:.0} ms",
        crl.der.len(),
        secs * 1000.0
    );
}
