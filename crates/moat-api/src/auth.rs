//! Admin authentication: a bearer token checked against its stored hash, with failed
//! attempts rate limited per client address.

use crate::AppState;
use crate::problem::Problem;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per address within [`FAILURE_WINDOW`] before 429.
const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (oldest windows are dropped past this).
const MAX_TRACKED: usize = 10_000;

/// Who may use the admin API.
#[derive(Debug)]
pub struct AdminAuth {
    token_hash: String,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AdminAuth {
    /// Checks bearer tokens against `token_hash` (as [`moat_core::hash_token`] makes).
    pub fn new(token_hash: String) -> Self {
        AdminAuth {
            token_hash,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn limited(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// Middleware: the request must carry `Authorization: Bearer <admin token>`.
pub(crate) async fn require_admin(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let auth = &state.auth;
    let ip = peer.ip();
    if auth.limited(ip) {
        tracing::warn!(%ip, "admin authentication rate limited");
        return Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too Many Requests",
            "too many failed authentication attempts from this address; wait a minute",
        )
        .into_response();
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if moat_core::token_matches(token, &auth.token_hash) => next.run(req).await,
        _ => {
            auth.record_failure(ip);
            tracing::warn!(%ip, "admin authentication failed");
            state
                .hub
                .record_security_event(
                    &format!("unauthenticated@{ip}"),
                    "admin.authenticate",
                    req.uri().path(),
                )
                .await;
            let mut resp = Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "missing or wrong admin token (send `Authorization: Bearer <token>`; the token is in the hub's data dir, admin.token)",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"moat\""),
            );
            resp
        }
    }
}
