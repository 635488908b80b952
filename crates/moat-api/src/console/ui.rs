//! The console's layout and the small pieces every page uses. Markup is maud: every
//! interpolated value is HTML-escaped unless wrapped in `PreEscaped`, which this crate never
//! does with data.

use super::session::{Flash, Signed};
use crate::problem::ApiError;
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;

/// The console's sections (the navigation bar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Devices,
    Cas,
    Firmware,
    Audit,
    Posture,
    Cluster,
}

const SECTIONS: [(Section, &str, &str); 7] = [
    (Section::Overview, "Overview", "/console"),
    (Section::Devices, "Devices", "/console/devices"),
    (Section::Cas, "Certificate authorities", "/console/cas"),
    (Section::Firmware, "Firmware", "/console/firmware"),
    (Section::Audit, "Audit log", "/console/audit"),
    (Section::Posture, "Posture", "/console/posture"),
    (Section::Cluster, "Cluster", "/console/cluster"),
];

/// A page after sign-in.
pub(crate) struct Page<'a> {
    /// Who is signed in.
    pub signed: &'a Signed,
    /// The `<title>` and the heading.
    pub title: String,
    /// Highlighted in the navigation.
    pub section: Section,
    /// A message left by the previous request.
    pub flash: Option<Flash>,
    /// Reload the page every so many seconds (a running campaign).
    pub refresh: Option<u32>,
}

impl<'a> Page<'a> {
    /// A page titled `title` in `section`.
    pub fn new(signed: &'a Signed, section: Section, title: impl Into<String>) -> Self {
        Page {
            signed,
            title: title.into(),
            section,
            flash: None,
            refresh: None,
        }
    }

    /// Renders the page around `body` with status 200.
    pub fn render(self, body: Markup) -> Response {
        self.render_status(StatusCode::OK, body)
    }

    /// Renders the page around `body`.
    pub fn render_status(self, status: StatusCode, body: Markup) -> Response {
        let s = self.signed;
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                (head(&self.title, self.refresh))
                body {
                    header.top {
                        a.brand href="/console" { "Moat" }
                        nav {
                            @for (sec, label, href) in SECTIONS {
                                @if sec == self.section {
                                    a.current href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        div.who {
                            span data-testid="who" { (s.principal.name) " · " (s.principal.role.as_str()) }
                            form method="post" action="/console/logout" {
                                (csrf(s))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                    main {
                        h1 { (self.title) }
                        @if let Some(f) = &self.flash {
                            p class={ "flash " (f.kind) } role="status" { (f.text) }
                        }
                        (body)
                    }
                }
            }
        };
        (status, Html(markup.into_string())).into_response()
    }
}

/// Every page's `<head>`: `refresh` reloads the page every so many seconds.
fn head(title: &str, refresh: Option<u32>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            @if let Some(secs) = refresh {
                meta http-equiv="refresh" content=(secs);
            }
            title { (title) " · Moat" }
            link rel="stylesheet" href="/console/static/app.css";
        }
    }
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf(s: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// Whether the signed-in role may do `method` on the API path `path` (the console's own
/// action paths are the same).
pub(crate) fn may(s: &Signed, method: &Method, path: &str) -> bool {
    crate::auth::permitted(s.principal.role, method, path)
}

/// A page that says what went wrong, inside the layout.
pub(crate) fn error_page(s: &Signed, status: StatusCode, title: &str, detail: &str) -> Response {
    Page::new(s, Section::Overview, title).render_status(
        status,
        html! {
            p.error role="alert" { (detail) }
            p { a href="/console" { "Back to the overview" } }
        },
    )
}

/// An API error (a problem document) as a console page with the same status and detail.
pub(crate) fn api_error(s: &Signed, e: ApiError) -> Response {
    let p = e.into_problem();
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_page(s, status, &p.title, &p.detail)
}

/// A page outside the layout (no session).
pub(crate) fn bare_error(status: StatusCode, title: &str, detail: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body.bare {
                main.narrow {
                    h1 { (title) }
                    p.error role="alert" { (detail) }
                    p { a href="/console" { "Back to the console" } }
                }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// The sign-in page.
pub(crate) fn login_page(error: Option<&str>, status: StatusCode) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in", None))
            body.bare {
                main.narrow {
                    h1 { "Moat" }
                    p.muted { "Device security hub console" }
                    @if let Some(e) = error {
                        p.flash.error role="alert" { (e) }
                    }
                    form.stack method="post" action="/console/login" {
                        label for="token" { "Token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        p.hint { "The admin token (" code { "admin.token" } " in the hub's data directory) or an operator's token from " code { "moat operator create" } "." }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// A time as `2026-12-05 06:33 UTC`.
pub(crate) fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// An RFC 3339 string (as the API's views carry) as [`when`] gives, or as it is.
pub(crate) fn when_str(s: &str) -> String {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(when)
        .unwrap_or_else(|_| s.to_string())
}

/// How long ago, roughly (`4 min ago`, `3 h ago`, `12 d ago`).
pub(crate) fn ago(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - t).whole_seconds().max(0);
    match secs {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// Percent-encodes a value for a query string.
pub(crate) fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .map(|e| e.trim_start_matches("v=").to_string())
        .unwrap_or_default()
}

/// A small coloured label.
pub(crate) fn badge(kind: &str, text: &str) -> Markup {
    html! { span class={ "badge " (kind) } { (text) } }
}

/// The badge colour of a device lifecycle, certificate or finding state.
pub(crate) fn tone(state: &str) -> &'static str {
    match state {
        "active" | "confirmed" | "succeeded" | "ok" | "connected" | "low" => "good",
        "suspended" | "disabled" | "paused" | "medium" | "retiring" | "downloading"
        | "notified" | "installed" | "running" => "warn",
        "decommissioned" | "revoked" | "failed" | "rolled_back" | "aborted" | "refused"
        | "error" | "high" | "critical" | "cancelled" | "down" | "disconnected" => "bad",
        "up" => "good",
        _ => "neutral",
    }
}

/// A download link for text (a `data:` URL, so the text never has to be kept server-side).
pub(crate) fn download(name: &str, text: &str, label: &str) -> Markup {
    use base64::Engine;
    let href = format!(
        "data:application/x-pem-file;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(text)
    );
    html! { a.button download=(name) href=(href) { (label) } }
}
