//! Admin authentication: a bearer token checked against its stored hash, with failed
//! attempts rate limited per client address.

use crate::AppState;
use crate::problem::Problem;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moat_core::FailureLimiter;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Failed attempts allowed per address within a minute before 429.
const MAX_FAILURES: u32 = 10;

/// Who may use the admin API.
#[derive(Debug)]
pub struct AdminAuth {
    token_hash: String,
    failures: FailureLimiter<IpAddr>,
}

impl AdminAuth {
    /// Checks bearer tokens against `token_hash` (as [`moat_core::hash_token`] makes).
    pub fn new(token_hash: String) -> Self {
        AdminAuth {
            token_hash,
            failures: FailureLimiter::new(MAX_FAILURES, Duration::from_secs(60), 10_000),
        }
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
    if auth.failures.is_limited(&ip) {
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
            auth.failures.record_failure(&ip);
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
