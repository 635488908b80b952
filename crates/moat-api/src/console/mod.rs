//! The web console: server-rendered pages (maud, compiled into the binary; one stylesheet, no
//! script, nothing from a CDN) under `/console` on the admin API's HTTPS listener.
//!
//! - **Sign-in**: the admin token or an operator's token, checked exactly as the API checks a
//!   bearer token (same hash, same failure limiter), opens a [`session`]; the cookie is
//!   `HttpOnly; Secure; SameSite=Strict`.
//! - **Authorisation**: every state-changing console path mirrors the API path of the same
//!   action (`POST /console/devices/{id}/revoke` ↔ `POST /api/v1/devices/{id}/revoke`), so the
//!   one role table, [`crate::auth::permitted`], decides both; pages hide what the role may not
//!   do, and the server refuses it anyway.
//! - **CSRF**: a state-changing request must come from the console's own origin (`Origin` /
//!   `Sec-Fetch-Site`) and carry the session's CSRF token in its form; otherwise 403 and a
//!   security event, before any handler runs.
//! - Responses carry a strict Content-Security-Policy (no script at all), `no-store`, and
//!   `frame-ancestors 'none'`.
//!
//! Handlers call the same `moat-core` / `moat-ota` services as the API handlers and reuse the
//! API's views (`dto`), so the console adds presentation only.

mod devices;
mod fleet;
mod session;
mod ui;

use crate::AppState;
use crate::auth;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use session::{COOKIE, Sessions, Signed};
use std::net::SocketAddr;
use std::sync::Arc;

/// The largest form the console accepts (a CA registration carries two PEM certificates).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What console handlers see.
#[derive(Clone, Debug)]
pub(crate) struct Console {
    /// The API's state: the hub, auth, sessions of the MQTT hub, OTA.
    pub app: AppState,
    /// Sign-in sessions.
    pub sessions: Arc<Sessions>,
}

/// The console's routes, to nest at `/console`.
pub(crate) fn router(app: AppState) -> Router<AppState> {
    let console = Console {
        app,
        sessions: Arc::new(Sessions::default()),
    };
    let signed = Router::new()
        .route("/", get(fleet::overview))
        .route("/devices", get(devices::list).post(devices::create))
        .route("/devices/new", get(devices::new_form))
        .route("/devices/{id}", get(devices::show))
        .route("/devices/{id}/credentials", get(devices::credentials))
        .route("/devices/{id}/confirm/{action}", get(devices::confirm))
        .route("/devices/{id}/{action}", post(devices::act))
        .route("/sessions/{client_id}/kick", post(devices::kick))
        .route("/cas", get(fleet::cas).post(fleet::register_ca))
        .route("/cas/bundle.pem", get(fleet::ca_bundle))
        .route("/cas/registration-code", post(fleet::registration_code))
        .route("/firmware", get(fleet::firmware))
        .route("/campaigns/{id}", get(fleet::campaign))
        .route("/campaigns/{id}/{action}", post(fleet::campaign_action))
        .route("/audit", get(fleet::audit))
        .route("/posture", get(fleet::posture))
        .route("/cluster", get(fleet::cluster))
        .route("/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/static/app.css", get(stylesheet))
        .merge(signed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

async fn not_found() -> Response {
    ui::bare_error(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such console page.",
    )
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("app.css"),
    )
        .into_response()
}

/// Headers on every console response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The session cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether a state-changing request comes from a page of this origin: `Sec-Fetch-Site`
/// when the browser sends it, else `Origin` against `Host`. A request with neither (not a
/// browser) is left to the CSRF token.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            origin.strip_prefix("https://") == Some(host)
        }
    }
}

/// Middleware for every page after sign-in: finds the session (else to the sign-in page),
/// and for a state-changing request checks origin, CSRF token and role before the handler.
async fn require_session(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let Some(signed) = session_cookie(req.headers()).and_then(|v| c.sessions.get(v)) else {
        return if req.method() == Method::GET {
            Redirect::to("/console/login").into_response()
        } else {
            ui::bare_error(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Your session has ended; sign in again and repeat the action.",
            )
        };
    };
    // An operator deleted since signing in is signed out at once.
    if signed.principal.actor != moat_core::Actor::admin() {
        match c.app.hub.operators().await {
            Ok(ops) if ops.iter().any(|o| o.name == signed.principal.name) => {}
            Ok(_) => {
                c.sessions.end_for(&signed.principal.name);
                return Redirect::to("/console/login").into_response();
            }
            Err(e) => return ui::api_error(&signed, crate::problem::ApiError::Core(e)),
        }
    }
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let mut req = req;
        req.extensions_mut().insert(signed);
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let refuse = |why: &'static str, detail: &'static str| {
        let hub = c.app.hub.clone();
        let actor = signed.principal.actor.0.clone();
        let target = format!("{method} /console{path} from {}", peer.ip());
        async move {
            hub.record_security_event(&actor, why, &target).await;
            ui::bare_error(StatusCode::FORBIDDEN, "Refused", detail)
        }
    };
    if !same_origin(&parts.headers) {
        return refuse(
            "console.cross_origin",
            "This request did not come from a console page; nothing was changed.",
        )
        .await;
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return ui::bare_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "The form is larger than the console accepts (64 KiB).",
        );
    };
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if !token.is_some_and(|t| session::csrf_matches(&signed.csrf, t)) {
        return refuse(
            "console.csrf",
            "The form's security token is missing or wrong (the page may be stale): reload \
             the page and try again. Nothing was changed.",
        )
        .await;
    }
    if path != "/logout" && !auth::permitted(signed.principal.role, &method, &path) {
        c.app
            .hub
            .record_security_event(
                &signed.principal.actor.0,
                "console.forbidden",
                &format!("{method} /console{path}"),
            )
            .await;
        return ui::error_page(
            &signed,
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!(
                "{} has the {} role, which may not do this; ask an admin.",
                signed.principal.name,
                signed.principal.role.as_str()
            ),
        );
    }
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(signed);
    next.run(req).await
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form(State(c): State<Console>, headers: HeaderMap) -> Response {
    if session_cookie(&headers)
        .and_then(|v| c.sessions.get(v))
        .is_some()
    {
        return Redirect::to("/console/devices").into_response();
    }
    ui::login_page(None, StatusCode::OK)
}

async fn login(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return ui::bare_error(
            StatusCode::FORBIDDEN,
            "Refused",
            "Sign in from the console's own page.",
        );
    }
    let principal = match auth::authenticate(&c.app, peer.ip(), form.token.trim()).await {
        Ok(p) => p,
        Err(auth::AuthFailure::Limited) => {
            return ui::login_page(
                Some("Too many failed sign-ins from this address; wait a minute."),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Err(auth::AuthFailure::Wrong) => {
            return ui::login_page(
                Some(
                    "That token is not valid. Use the admin token (admin.token in the hub's data directory) or an operator's token.",
                ),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(auth::AuthFailure::Internal(e)) => {
            return e.into_problem().into_response();
        }
    };
    c.app
        .hub
        .record_admin_action(
            &principal.actor,
            "console.sign_in",
            None,
            "ok",
            Some(format!("from {}", peer.ip())),
        )
        .await;
    let cookie = c.sessions.create(principal);
    with_session_cookie(
        Redirect::to("/console/devices").into_response(),
        &cookie,
        "",
    )
}

/// `resp` setting the session cookie to `value` (hex, or empty to clear it with `extra` =
/// `; Max-Age=0`).
fn with_session_cookie(mut resp: Response, value: &str, extra: &str) -> Response {
    let cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict{extra}");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is hex"),
    );
    resp
}

async fn logout(
    State(c): State<Console>,
    axum::Extension(signed): axum::Extension<Signed>,
) -> Response {
    c.sessions.end(&signed.key);
    with_session_cookie(
        Redirect::to("/console/login").into_response(),
        "",
        "; Max-Age=0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "not a browser: left to the CSRF token");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8443"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:8443"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-moat_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
    }
}
