//! Devices: the searchable, paged list; a device's page (certificates, live sessions, events)
//! with its actions behind a confirmation; creating a device, whose hub-generated key is
//! shown once.

use super::Console;
use super::session::{Reveal, Signed};
use super::ui::{self, Page, Section, badge, csrf, may, tone, when};
use crate::problem::ApiError;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use moat_core::{CreateDevice, Credential};
use moat_core::{DeviceQuery, DeviceState};
use serde::Deserialize;
use time::OffsetDateTime;

/// Devices per page of the list.
const PAGE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    /// Search text (id, serial, owner, model).
    #[serde(default)]
    q: String,
    /// `active`, `disabled` or `revoked`; empty for all.
    #[serde(default)]
    state: String,
    /// 1-based page number.
    page: Option<u64>,
}

/// The live MQTT session of a device (its client id is its identity), if connected.
fn live_session(c: &Console, id: &str) -> Option<crate::dto::SessionView> {
    c.app.sessions.as_ref().and_then(|ctl| ctl.get(id))
}

pub(crate) async fn list(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Query(p): Query<ListParams>,
) -> Response {
    let state = match p.state.as_str() {
        "" => None,
        other => match DeviceState::parse(other) {
            Some(st) => Some(st),
            None => {
                return ui::error_page(
                    &s,
                    StatusCode::BAD_REQUEST,
                    "Bad filter",
                    "state is one of active, disabled, revoked",
                );
            }
        },
    };
    let query = DeviceQuery {
        text: Some(p.q.trim().to_string()).filter(|t| !t.is_empty()),
        state,
    };
    let page_no = p.page.unwrap_or(1).max(1);
    let result = match c
        .app
        .hub
        .device_page(&query, (page_no - 1).saturating_mul(u64::from(PAGE)), PAGE)
        .await
    {
        Ok(r) => r,
        Err(e) => return ui::api_error(&s, ApiError::Core(e)),
    };
    let now = OffsetDateTime::now_utc();
    let pages = result.total.div_ceil(u64::from(PAGE)).max(1);
    let link = |n: u64| {
        format!(
            "/console/devices?q={}&state={}&page={n}",
            ui::urlencode(&p.q),
            ui::urlencode(&p.state)
        )
    };
    let mut page = Page::new(&s, Section::Devices, "Devices");
    page.flash = c.sessions.take_flash(&s.key);
    page.render(html! {
        div.toolbar {
            form.search method="get" action="/console/devices" role="search" {
                input type="search" name="q" value=(p.q) placeholder="Search id, serial, owner, model" aria-label="Search devices";
                select name="state" aria-label="State" {
                    @for (v, label) in [("", "Any state"), ("active", "Active"), ("disabled", "Disabled"), ("revoked", "Revoked")] {
                        @if v == p.state { option value=(v) selected { (label) } } @else { option value=(v) { (label) } }
                    }
                }
                button type="submit" { "Search" }
            }
            @if may(&s, &Method::POST, "/devices") {
                a.button.primary href="/console/devices/new" { "Create device" }
            }
        }
        p.muted data-testid="device-count" { (result.total) " devices · page " (page_no) " of " (pages) }
        div.scroll {
            table.list {
                thead { tr {
                    th { "Device" } th { "State" } th { "Connections" } th title="Connected now, or when it last connected (to 5 minutes)" { "Last connected" }
                    th { "Firmware" } th { "Certificate expires" } th { "Owner" }
                } }
                tbody {
                    @for row in &result.rows {
                        @let d = &row.device;
                        @let lifecycle = d.lifecycle().as_str();
                        tr {
                            td { a href={ "/console/devices/" (d.id) } { (d.id) }
                                 @if let Some(f) = &d.factory { br; span.muted { (f.serial) } } }
                            td { (badge(tone(lifecycle), lifecycle)) }
                            td { (policy_label(d.policy.as_str())) }
                            td {
                                @if live_session(&c, &d.id).is_some() { (badge("good", "connected")) }
                                @else if let Some(t) = row.last_seen { span title=(when(t)) { (ui::ago(t, now)) } }
                                @else { span.muted { "never" } }
                            }
                            td { (row.firmware_version.as_deref().unwrap_or("—")) }
                            td { @match row.cert_expires {
                                Some(t) if t < now => (badge("bad", "expired")),
                                Some(t) if t - now < time::Duration::days(30) => span.warn-text title=(when(t)) { (when(t)) },
                                Some(t) => (when(t)),
                                None => span.muted { "no live certificate" },
                            } }
                            td { (d.owner.as_deref().unwrap_or("—")) }
                        }
                    }
                    @if result.rows.is_empty() {
                        tr { td colspan="7" .muted { "No device matches." } }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if page_no > 1 { a href=(link(page_no - 1)) rel="prev" { "← Previous" } }
            @if page_no < pages { a href=(link(page_no + 1)) rel="next" { "Next →" } }
        }
    })
}

fn policy_label(policy: &str) -> Markup {
    match policy {
        "deny_insecure" => html! { span title="mutual TLS only" { "mTLS only" } },
        _ => badge("warn", "insecure allowed"),
    }
}

pub(crate) async fn show(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Path(id): Path<String>,
) -> Response {
    let hub = &c.app.hub;
    let device = match hub.device(&id).await {
        Ok(d) => d,
        Err(e) => return ui::api_error(&s, ApiError::Core(e)),
    };
    let certs = match hub.list_certs(Some(&id), 100).await {
        Ok(v) => v,
        Err(e) => return ui::api_error(&s, ApiError::Core(e)),
    };
    let events = match hub
        .audit_search(
            &moat_core::AuditFilter {
                target: Some(id.clone()),
                ..Default::default()
            },
            None,
            50,
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return ui::api_error(&s, ApiError::Core(e)),
    };
    let sessions: Vec<_> = live_session(&c, &id).into_iter().collect();
    let now = OffsetDateTime::now_utc();
    let lifecycle = device.lifecycle().as_str();
    let act = |action: &str| may(&s, &Method::POST, &format!("/devices/{id}/{action}"));
    let mut page = Page::new(&s, Section::Devices, format!("Device {id}"));
    page.flash = c.sessions.take_flash(&s.key);
    page.render(html! {
        dl.facts {
            dt { "State" } dd data-testid="device-state" { (badge(tone(lifecycle), lifecycle)) }
            @if let Some(r) = &device.status_reason { dt { "Reason" } dd { (r) } }
            dt { "Connections" } dd { (policy_label(device.policy.as_str())) }
            dt { "Identity from" } dd { "CA " (device.ca_name) }
            @if let Some(f) = &device.factory {
                dt { "Serial" } dd { (f.serial) }
                @if let Some(m) = &f.mac { dt { "MAC" } dd { (m) } }
                @if let Some(m) = &f.model { dt { "Model" } dd { (m) } }
            }
            dt { "Owner" } dd { (device.owner.as_deref().unwrap_or("unclaimed")) }
            dt { "Created" } dd { (when(device.created_at)) }
        }
        section.actions aria-label="Actions" {
            @if device.state == DeviceState::Active && act("disable") {
                a.button href={ "/console/devices/" (id) "/confirm/disable" } { "Disable" }
            }
            @if device.state == DeviceState::Disabled && act("enable") {
                a.button href={ "/console/devices/" (id) "/confirm/enable" } { "Enable" }
            }
            @if device.state != DeviceState::Revoked && act("rotate") {
                a.button href={ "/console/devices/" (id) "/confirm/rotate" } { "Rotate certificate" }
            }
            @if !sessions.is_empty() && may(&s, &Method::POST, &format!("/sessions/{id}/kick")) {
                a.button href={ "/console/devices/" (id) "/confirm/kick" } { "Kick session" }
            }
            @if device.state != DeviceState::Revoked && act("revoke") {
                a.button.danger href={ "/console/devices/" (id) "/confirm/revoke" } { "Revoke" }
            }
        }
        h2 { "Certificates" }
        div.scroll { table.list {
            thead { tr { th { "Serial" } th { "Status" } th { "Valid" } th { "Issued by" } th { "Source" } } }
            tbody {
                @for cert in &certs {
                    @let status = cert_status(cert, now);
                    tr {
                        td { code { (cert.serial) } }
                        td { (badge(tone(status), status))
                             @if let Some(r) = &cert.revocation_reason { " " span.muted { (r) } } }
                        td { (when(cert.not_before)) " → " (when(cert.not_after)) }
                        td { (cert.ca_name) }
                        td { (cert.source.as_str()) }
                    }
                }
                @if certs.is_empty() { tr { td colspan="5" .muted { "No certificates." } } }
            }
        } }
        h2 { "Live sessions" }
        @if sessions.is_empty() {
            p.muted data-testid="sessions" { "Not connected to this hub." }
        } @else {
            div.scroll { table.list data-testid="sessions" {
                thead { tr { th { "Client id" } th { "Mode" } th { "Protocol" } th { "From" } th { "Since" } } }
                tbody { @for v in &sessions { tr {
                    td { (v.client_id) } td { (v.mode) } td { "MQTT " (v.protocol) } td { (v.peer) }
                    td { (ui::when_str(&v.connected_at)) }
                } } }
            } }
        }
        h2 { "Events" }
        (audit_table(&events))
    })
}

fn cert_status(c: &moat_core::CertRecord, now: OffsetDateTime) -> &'static str {
    if c.revoked_at.is_some() {
        "revoked"
    } else if c.not_after < now {
        "expired"
    } else if c.retire_at.is_some() {
        "retiring"
    } else {
        "active"
    }
}

/// Audit entries as a table (the device page and the audit page).
pub(crate) fn audit_table(entries: &[moat_core::AuditEntry]) -> Markup {
    html! {
        div.scroll { table.list data-testid="audit" {
            thead { tr { th { "When" } th { "Who" } th { "What" } th { "On" } th { "Outcome" } th { "Detail" } } }
            tbody {
                @for e in entries { tr {
                    td { (when(e.at)) }
                    td { (e.actor) }
                    td { code { (e.action) } }
                    td { (e.target.as_deref().unwrap_or("")) }
                    td { (badge(tone(&e.outcome), &e.outcome)) }
                    td { (e.detail.as_deref().unwrap_or("")) }
                } }
                @if entries.is_empty() { tr { td colspan="6" .muted { "Nothing recorded." } } }
            }
        } }
    }
}

/// What each action does, for its confirmation page.
fn describe(action: &str) -> Option<(&'static str, &'static str, bool)> {
    Some(match action {
        "disable" => (
            "Disable",
            "Its live sessions are closed and its connections refused until it is enabled again. Certificates are kept.",
            false,
        ),
        "enable" => ("Enable", "It may connect again within its policy.", false),
        "rotate" => (
            "Rotate certificate",
            "The hub generates a new key and certificate (shown once, on the next page). The current certificate stays valid until the configured overlap ends.",
            false,
        ),
        "kick" => (
            "Kick session",
            "Its live MQTT sessions are closed now; it may reconnect.",
            false,
        ),
        "revoke" => (
            "Revoke",
            "Every certificate of this device is revoked and published in the CRL, its live sessions are dropped, and it can never connect again. This cannot be undone.",
            true,
        ),
        _ => return None,
    })
}

pub(crate) async fn confirm(
    Extension(s): Extension<Signed>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let Some((label, what, danger)) = describe(&action) else {
        return ui::error_page(
            &s,
            StatusCode::NOT_FOUND,
            "No such action",
            "Use disable, enable, rotate, kick or revoke.",
        );
    };
    let target = if action == "kick" {
        format!("/console/sessions/{id}/kick")
    } else {
        format!("/console/devices/{id}/{action}")
    };
    Page::new(&s, Section::Devices, format!("{label} {id}?")).render(html! {
        p { (what) }
        form.stack method="post" action=(target) {
            (csrf(&s))
            @if action == "revoke" {
                label for="reason" { "Reason" }
                select #reason name="reason" {
                    option value="unspecified" { "Unspecified" }
                    option value="key_compromise" { "Key compromise" }
                    option value="cessation_of_operation" { "Cessation of operation" }
                    option value="superseded" { "Superseded" }
                }
            }
            div.row {
                button class=(if danger { "danger" } else { "primary" }) type="submit" { (label) }
                a.button href={ "/console/devices/" (id) } { "Cancel" }
            }
        }
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActForm {
    reason: Option<String>,
}

pub(crate) async fn act(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Path((id, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<ActForm>,
) -> Response {
    let hub = &c.app.hub;
    let actor = &s.principal.actor;
    let back = Redirect::to(&format!("/console/devices/{id}")).into_response();
    let result: Result<String, ApiError> = match action.as_str() {
        "disable" => hub
            .disable_device(&id, actor)
            .await
            .map(|_| format!("{id} is disabled; its sessions were closed."))
            .map_err(ApiError::Core),
        "enable" => hub
            .enable_device(&id, actor)
            .await
            .map(|_| format!("{id} is enabled."))
            .map_err(ApiError::Core),
        "revoke" => {
            let reason = match crate::routes::parse_reason(form.reason.as_deref()) {
                Ok(r) => r,
                Err(p) => return ui::api_error(&s, ApiError::Problem(p)),
            };
            hub.revoke_device(&id, reason, actor)
                .await
                .map(|serials| {
                    format!(
                        "{id} is revoked ({} certificate{} added to the CRL).",
                        serials.len(),
                        if serials.len() == 1 { "" } else { "s" }
                    )
                })
                .map_err(ApiError::Core)
        }
        "rotate" => match hub.rotate_device(&id, actor).await {
            Ok(r) => {
                c.sessions.set_reveal(
                    &s.key,
                    Reveal {
                        device_id: id.clone(),
                        what: "rotated",
                        certificate_pem: r.created.chain_pem.clone(),
                        private_key_pem: r.created.private_key_pem,
                        token: None,
                    },
                );
                return Redirect::to(&format!("/console/devices/{id}/credentials")).into_response();
            }
            Err(e) => Err(ApiError::Core(e)),
        },
        _ => {
            return ui::error_page(
                &s,
                StatusCode::NOT_FOUND,
                "No such action",
                "Use disable, enable, rotate or revoke.",
            );
        }
    };
    match result {
        Ok(msg) => {
            c.sessions.set_flash(&s.key, "ok", msg);
            back
        }
        Err(e) => ui::api_error(&s, e),
    }
}

pub(crate) async fn kick(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Path(client_id): Path<String>,
) -> Response {
    match crate::routes::kick_audited(&c.app, &s.principal.actor, &client_id).await {
        Ok(()) => {
            c.sessions
                .set_flash(&s.key, "ok", format!("{client_id}'s session was closed."));
            Redirect::to(&format!("/console/devices/{client_id}")).into_response()
        }
        Err(e) => ui::api_error(&s, e),
    }
}

pub(crate) async fn new_form(Extension(s): Extension<Signed>) -> Response {
    Page::new(&s, Section::Devices, "Create a device").render(html! {
        p { "The hub generates the device's key pair and issues its certificate from the hub CA. "
            "The private key is shown " strong { "once" } ", on the next page: the hub does not keep it." }
        p.muted { "To keep the key on the device (or in its secure element), send a CSR instead: "
            code { "moat device create ID --csr device.csr" } "." }
        form.stack method="post" action="/console/devices" {
            (csrf(&s))
            label for="id" { "Device id" }
            input #id name="id" required maxlength="64" pattern="[A-Za-z0-9_:][A-Za-z0-9._:\\-]{0,63}" placeholder="sensor-0042";
            p.hint { "1–64 characters: letters, digits, " code { ". _ : -" } "; it becomes the certificate's CN and the MQTT client id." }
            label.check { input type="checkbox" name="allow_insecure" value="true"; " Allow insecure connections (server TLS or plain TCP with a device token)" }
            p.hint { "Leave unchecked for the default policy: mutual TLS only." }
            div.row {
                button.primary type="submit" { "Create" }
                a.button href="/console/devices" { "Cancel" }
            }
        }
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreateForm {
    id: String,
    allow_insecure: Option<String>,
}

pub(crate) async fn create(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    axum::Form(form): axum::Form<CreateForm>,
) -> Response {
    let id = form.id.trim().to_string();
    let created = c
        .app
        .hub
        .create_device(
            CreateDevice {
                id: id.clone(),
                credential: Credential::GenerateKey,
                allow_insecure: form.allow_insecure.as_deref() == Some("true"),
            },
            &s.principal.actor,
        )
        .await;
    match created {
        Ok(d) => {
            c.sessions.set_reveal(
                &s.key,
                Reveal {
                    device_id: id.clone(),
                    what: "created",
                    certificate_pem: d.chain_pem,
                    private_key_pem: d.private_key_pem,
                    token: d.token,
                },
            );
            Redirect::to(&format!("/console/devices/{id}/credentials")).into_response()
        }
        Err(e) => ui::api_error(&s, ApiError::Core(e)),
    }
}

/// Shows the credentials an action just made, once: they leave the session as this page
/// renders, so a reload (or the back button) finds nothing.
pub(crate) async fn credentials(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Path(id): Path<String>,
) -> Response {
    let Some(r) = c.sessions.take_reveal(&s.key, &id) else {
        return Page::new(&s, Section::Devices, format!("Credentials of {id}")).render_status(
            StatusCode::GONE,
            html! {
                p.error data-testid="key-gone" { "The private key was shown once and is not kept by the hub. "
                    "If it was not saved, rotate the device's certificate to get a new key." }
                p { a.button href={ "/console/devices/" (id) } { "Back to the device" } }
            },
        );
    };
    let title = format!("Device {id} {}", r.what);
    Page::new(&s, Section::Devices, title).render(html! {
        p.warning role="alert" data-testid="key-warning" {
            strong { "Save the private key now. " }
            "It is shown on this page only: the hub does not keep it, and reloading this page will not show it again."
        }
        h2 { "Certificate" }
        pre.pem data-testid="certificate" { (r.certificate_pem) }
        (ui::download(&format!("{id}.crt.pem"), &r.certificate_pem, "Download certificate"))
        @if let Some(k) = &r.private_key_pem {
            h2 { "Private key" }
            pre.pem data-testid="private-key" { (k.expose()) }
            (ui::download(&format!("{id}.key.pem"), k.expose(), "Download private key"))
        }
        @if let Some(t) = &r.token {
            h2 { "Device token" }
            p.muted { "For server-TLS or plain connections: MQTT username " code { (id) } ", password:" }
            pre.pem data-testid="token" { (t.expose()) }
        }
        p { a.button href={ "/console/devices/" (id) } { "Done" } }
    })
}
