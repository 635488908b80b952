//! Admin API authentication and authorisation: a bearer token — the bootstrap admin token
//! (`admin.token`) or an operator's — checked against its stored hash, failed attempts rate
//! limited per client address; then the caller's role decides ([`permitted`]). Handlers get
//! the caller's audit identity as an `Extension<Actor>`.
//!
//! | role | may |
//! |---|---|
//! | `read-only` | GET anything, and explain a certificate |
//! | `operator` | also run the fleet: devices, certificates, revocation, sessions, access of one device, firmware, campaigns, allow-list, enrollment groups |
//! | `admin` | also the hub's trust and accounts: CAs, registration codes, stations, ACL policies and group policies, applications, firmware keys, operators, the server certificate |

use crate::AppState;
use crate::problem::Problem;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moat_core::{FailureLimiter, Principal, Role};
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
    let ip = peer.ip();
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let principal = match authenticate(&state, ip, presented.unwrap_or("")).await {
        Ok(p) => Some(p),
        Err(AuthFailure::Limited) => {
            tracing::warn!(%ip, "admin authentication rate limited");
            return Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too Many Requests",
                "too many failed authentication attempts from this address; wait a minute",
            )
            .into_response();
        }
        Err(AuthFailure::Wrong) => None,
        Err(AuthFailure::Internal(e)) => return e.into_response(),
    };
    match principal {
        Some(p) => {
            let path = req.uri().path();
            let path = path.strip_prefix("/api/v1").unwrap_or(path);
            if !permitted(p.role, req.method(), path) {
                state
                    .hub
                    .record_security_event(
                        &p.actor.0,
                        "admin.forbidden",
                        &format!("{} {}", req.method(), req.uri().path()),
                    )
                    .await;
                return Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Forbidden",
                    format!(
                        "{} has the {} role, which may not {} {}; ask an admin",
                        p.name,
                        p.role.as_str(),
                        req.method(),
                        req.uri().path()
                    ),
                )
                .into_response();
            }
            let mut req = req;
            req.extensions_mut().insert(p.actor.clone());
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => {
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
                "missing or wrong token (send `Authorization: Bearer <token>`: the admin token in the hub's data dir, admin.token, or an operator's)",
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

/// Why a token was not accepted.
#[derive(Debug)]
pub(crate) enum AuthFailure {
    /// Too many failures from this address lately; the token was not even checked.
    Limited,
    /// Not the admin token nor an operator's (counted against the address).
    Wrong,
    /// The registry could not be read.
    Internal(crate::problem::ApiError),
}

/// Checks a token (the bootstrap admin token or an operator's) for a caller at `ip`, with
/// the per-address failure limit. Shared by the API (bearer tokens) and the console's
/// sign-in form.
pub(crate) async fn authenticate(
    state: &AppState,
    ip: IpAddr,
    token: &str,
) -> Result<Principal, AuthFailure> {
    let auth = &state.auth;
    if auth.failures.is_limited(&ip) {
        return Err(AuthFailure::Limited);
    }
    if !token.is_empty() && moat_core::token_matches(token, &auth.token_hash) {
        return Ok(Principal::bootstrap_admin());
    }
    let found = if token.is_empty() {
        None
    } else {
        state
            .hub
            .operator_by_token(token)
            .await
            .map_err(|e| AuthFailure::Internal(crate::problem::ApiError::Core(e)))?
    };
    match found {
        Some(p) => Ok(p),
        None => {
            auth.failures.record_failure(&ip);
            tracing::warn!(%ip, "authentication failed");
            Err(AuthFailure::Wrong)
        }
    }
}

/// Whether `role` may call `method path` (path relative to `/api/v1`).
pub(crate) fn permitted(role: Role, method: &Method, path: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD;
    if read && !path.starts_with("/operators") {
        return true;
    }
    match role {
        Role::Admin => true,
        Role::ReadOnly => *method == Method::POST && path == "/certificates/explain",
        Role::Operator => !admin_only(method, path),
    }
}

/// The calls that change the hub's trust or its accounts.
fn admin_only(method: &Method, path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "operators" | "stations" | "acl-policies" | "groups" | "apps" | "gateways" | "server" => {
            true
        }
        "cas" => *method != Method::GET,
        "firmware-keys" => !path.ends_with("/sign"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        let (get, post, del) = (Method::GET, Method::POST, Method::DELETE);
        for p in ["/devices", "/audit", "/posture", "/cas"] {
            assert!(permitted(Role::ReadOnly, &get, p), "{p}");
        }
        assert!(!permitted(Role::ReadOnly, &get, "/operators"));
        assert!(permitted(Role::ReadOnly, &post, "/certificates/explain"));
        assert!(!permitted(Role::ReadOnly, &post, "/devices/d1/revoke"));
        assert!(permitted(Role::Operator, &post, "/devices/d1/revoke"));
        assert!(permitted(Role::Operator, &post, "/campaigns"));
        assert!(permitted(
            Role::Operator,
            &post,
            "/firmware-keys/release/sign"
        ));
        for (m, p) in [
            (&post, "/cas"),
            (&del, "/cas/acme"),
            (&post, "/cas/registration-code"),
            (&post, "/operators"),
            (&post, "/server/rotate"),
            (&post, "/firmware-keys/generate"),
            (&post, "/stations"),
            (&post, "/apps"),
        ] {
            assert!(!permitted(Role::Operator, m, p), "{m} {p}");
            assert!(permitted(Role::Admin, m, p), "{m} {p}");
        }
    }
}
