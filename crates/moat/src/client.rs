//! The admin API client the CLI commands use. It finds the hub through the data dir
//! (`hub.json`, `admin.token`, `ca-bundle.pem`) unless told otherwise, and turns problem
//! documents into one-line errors.

use crate::cli::Cli;
use anyhow::{Context, anyhow, bail};
use moat_node::HubFile;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

/// A connection to a running hub's admin API.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// Resolves the hub URL, token and trust anchors from the flags or the data dir.
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Self> {
        let data_dir = cli
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::cmd::DEFAULT_DATA_DIR));
        let base = match &cli.hub {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let p = data_dir.join("hub.json");
                let text = std::fs::read_to_string(&p).map_err(|_| {
                    anyhow!(
                        "no running hub found: {} is missing (start one with `moat serve`, or pass --hub URL / --data-dir DIR)",
                        p.display()
                    )
                })?;
                let hub: HubFile = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a hub file", p.display()))?;
                hub.admin_url
            }
        };
        let token_path = cli
            .token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("admin.token"));
        let token = std::fs::read_to_string(&token_path)
            .map_err(|e| {
                anyhow!(
                    "cannot read the admin token from {}: {e} (pass --token-file FILE)",
                    token_path.display()
                )
            })?
            .trim()
            .to_string();
        if token.is_empty() {
            bail!("{} is empty (pass --token-file FILE)", token_path.display());
        }
        let ca_path = cli
            .ca_file
            .clone()
            .unwrap_or_else(|| data_dir.join("ca-bundle.pem"));
        let ca_pem = std::fs::read(&ca_path).map_err(|e| {
            anyhow!(
                "cannot read the hub's CA bundle from {}: {e} (pass --ca-file FILE)",
                ca_path.display()
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&ca_pem)
            .with_context(|| format!("{} is not a PEM bundle", ca_path.display()))?;
        let http = reqwest::Client::builder()
            .tls_certs_only(certs)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTPS client")?;
        Ok(ApiClient { base, token, http })
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// GET a text resource.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.send(Method::GET, path, None::<&()>).await?;
        Ok(resp.text().await?)
    }

    /// POST JSON, returning JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// POST without a body, expecting no content.
    pub async fn post_empty(&self, path: &str) -> anyhow::Result<()> {
        self.send(Method::POST, path, None::<&()>).await?;
        Ok(())
    }

    /// PUT JSON, returning JSON.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// PUT JSON, expecting no content.
    pub async fn put_no_content<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        self.send(Method::PUT, path, Some(body)).await?;
        Ok(())
    }

    /// POST raw bytes (`application/octet-stream`), returning JSON.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        let resp = self.send_bytes(path, body).await?;
        resp.json::<T>()
            .await
            .context("the hub's answer is not what this CLI expects (version mismatch?)")
    }

    /// POST raw bytes, returning raw bytes.
    pub async fn post_bytes_raw(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let resp = self.send_bytes(path, body).await?;
        Ok(resp.bytes().await?.to_vec())
    }

    async fn send_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let req = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.finish(req).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, path, None::<&()>).await?;
        Ok(())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let resp = self.send(method, path, body).await?;
        resp.json::<T>()
            .await
            .context("the hub's answer is not what this CLI expects (version mismatch?)")
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.finish(req).await
    }

    /// Sends a request and turns an error answer (a problem document) into one line.
    async fn finish(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the hub at {}: {} (is `moat serve` running? pass --hub URL)",
                self.base,
                root_cause(&e)
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        match status {
            StatusCode::UNAUTHORIZED => bail!("the hub refused the admin token: {detail}"),
            _ => bail!("{detail}"),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
