//! The hub's admin API, as far as benchmarks need it: bulk device creation and revocation.

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where the admin API is: read from the hub's data dir (`hub.json`, `admin.token`,
/// `ca-bundle.pem`).
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The hub's data directory.
    #[arg(long)]
    pub hub_data_dir: PathBuf,
}

/// An authenticated admin API client.
#[derive(Clone, Debug)]
pub struct Admin {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    pub fn from_data_dir(dir: &Path) -> anyhow::Result<Self> {
        let hub: Value = serde_json::from_slice(
            &std::fs::read(dir.join("hub.json"))
                .with_context(|| format!("reading {}/hub.json", dir.display()))?,
        )
        .context("hub.json is not JSON")?;
        let Some(base) = hub.get("admin_url").and_then(Value::as_str) else {
            bail!("hub.json has no admin_url");
        };
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .with_context(|| format!("reading {}/admin.token", dir.display()))?
            .trim()
            .to_string();
        let ca = std::fs::read(dir.join("ca-bundle.pem"))
            .with_context(|| format!("reading {}/ca-bundle.pem", dir.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&ca).context("ca-bundle.pem")?;
        let http = reqwest::Client::builder()
            .tls_certs_only(certs)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .context("cannot build the HTTPS client")?;
        Ok(Admin {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// The admin API's base URL (`https://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the response")?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {path}: response is not JSON"))
    }

    /// Creates a device with a hub-generated key; returns (certificate chain PEM, key PEM).
    pub async fn create_device(&self, id: &str) -> anyhow::Result<(String, String)> {
        let v = self.post("/api/v1/devices", json!({ "id": id })).await?;
        let cert = v.get("certificate_pem").and_then(Value::as_str);
        let key = v.get("private_key_pem").and_then(Value::as_str);
        match (cert, key) {
            (Some(c), Some(k)) => Ok((c.to_string(), k.to_string())),
            _ => bail!("create {id}: response lacks certificate_pem or private_key_pem"),
        }
    }

    /// Adds serials to the EST allow-list (CSV text); returns how many.
    pub async fn add_allowlist(&self, csv: String) -> anyhow::Result<u64> {
        let v = self
            .post("/api/v1/allowlist", json!({ "csv": csv }))
            .await?;
        v.get("added")
            .and_then(Value::as_u64)
            .context("allow-list upload: no count in the answer")
    }

    /// Creates an EST station with a hub-issued certificate; returns (chain PEM, key PEM).
    pub async fn create_station(&self, name: &str) -> anyhow::Result<(String, String)> {
        let v = self
            .post("/api/v1/stations", json!({ "name": name }))
            .await?;
        let cert = v.get("certificate_pem").and_then(Value::as_str);
        let key = v.get("private_key_pem").and_then(Value::as_str);
        match (cert, key) {
            (Some(c), Some(k)) => Ok((c.to_string(), k.to_string())),
            _ => bail!("station {name}: response lacks certificate_pem or private_key_pem"),
        }
    }

    /// Revokes a device (all its certificates).
    pub async fn revoke_device(&self, id: &str) -> anyhow::Result<()> {
        self.post(&format!("/api/v1/devices/{id}/revoke"), json!({}))
            .await
            .map(|_| ())
    }
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Devices to create.
    #[arg(long)]
    pub count: usize,
    /// Device ids are PREFIX + a zero-padded number.
    #[arg(long, default_value = "dev-")]
    pub prefix: String,
    /// First number.
    #[arg(long, default_value_t = 0)]
    pub start: usize,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Concurrent API requests.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

pub async fn enroll(a: EnrollArgs) -> anyhow::Result<Value> {
    let admin = Admin::from_data_dir(&a.admin.hub_data_dir)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let next = Arc::new(AtomicUsize::new(a.start));
    let end = a.start + a.count;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.max(1) {
        let (admin, next, out, prefix) =
            (admin.clone(), next.clone(), a.out.clone(), a.prefix.clone());
        tasks.spawn(async move {
            let mut made = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return Ok::<usize, anyhow::Error>(made);
                }
                let id = format!("{prefix}{n:06}");
                let (crt, key) = (out.join(format!("{id}.crt")), out.join(format!("{id}.key")));
                if crt.exists() && key.exists() {
                    continue;
                }
                let (cert_pem, key_pem) = admin.create_device(&id).await?;
                tokio::fs::write(&key, key_pem).await?;
                tokio::fs::write(&crt, cert_pem).await?;
                made += 1;
            }
        });
    }
    let mut made = 0;
    while let Some(r) = tasks.join_next().await {
        made += r.context("enroll task panicked")??;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "enroll: {made} devices created in {secs:.1}s ({:.0}/s)",
        made as f64 / secs
    );
    Ok(json!({ "kind": "enroll", "created": made, "seconds": secs }))
}
