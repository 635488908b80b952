//! The overview, certificate authorities (with the registration-code flow), firmware and
//! campaigns (wave-by-wave chart), the audit log and the posture audit.

use super::Console;
use super::devices::audit_table;
use super::session::Signed;
use super::ui::{self, Page, Section, badge, csrf, may, tone, when_str};
use crate::dto::CaView;
use crate::dto_ota::{CampaignInfo, FirmwareKeyView, FirmwareView, WaveView};
use crate::problem::ApiError;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use moat_core::{AuditFilter, DeviceQuery, DeviceState};
use moat_core::{IdentityRule, RegisterCa};
use serde::Deserialize;

/// Campaign states, in the order the chart stacks them, with their chart class.
const WAVE_STATES: [(&str, &str); 9] = [
    ("confirmed", "s-good"),
    ("installed", "s-info"),
    ("downloading", "s-info2"),
    ("notified", "s-warn"),
    ("pending", "s-idle"),
    ("failed", "s-bad"),
    ("rolled_back", "s-bad2"),
    ("skipped", "s-idle2"),
    ("cancelled", "s-idle2"),
];

/// The page for a hub that runs without firmware updates.
fn ota_off(s: &Signed) -> Response {
    ui::error_page(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "Firmware updates are off",
        "This hub runs without firmware updates ([ota] enabled = false).",
    )
}

pub(crate) async fn overview(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
) -> Response {
    let hub = &c.app.hub;
    let mut counts = Vec::new();
    for (label, state) in [
        ("Devices", None),
        ("Active", Some(DeviceState::Active)),
        ("Disabled", Some(DeviceState::Disabled)),
        ("Revoked", Some(DeviceState::Revoked)),
    ] {
        let q = DeviceQuery { text: None, state };
        match hub.device_page(&q, 0, 1).await {
            Ok(p) => counts.push((label, state, p.total)),
            Err(e) => return ui::api_error(&s, ApiError::Core(e)),
        }
    }
    let connected = c.app.sessions.as_ref().map(|ctl| ctl.list().len());
    let refused = match hub
        .audit_search(
            &AuditFilter {
                outcome: Some("refused".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return ui::api_error(&s, ApiError::Core(e)),
    };
    // The hub's last periodic audit (`[posture] interval`), not a fresh run: the overview
    // must stay cheap on a large fleet. Without one (e.g. a test harness), run it now.
    let posture = match c.app.posture.as_ref().and_then(|p| p.last_run()) {
        Some(summary) => summary,
        None => match crate::posture::report(&c.app, None, None).await {
            Ok(r) => crate::PostureSummary {
                at: time::OffsetDateTime::now_utc(),
                by_severity: r.counts,
            },
            Err(e) => return ui::api_error(&s, e),
        },
    };
    let findings: u64 = posture.by_severity.values().sum();
    Page::new(&s, Section::Overview, "Overview").render(html! {
        div.cards {
            @for (label, state, n) in &counts {
                a.card href={ "/console/devices?state=" (state.map(|s| s.as_str()).unwrap_or("")) } {
                    span.num { (n) } span.label { (label) }
                }
            }
            @if let Some(n) = connected {
                div.card { span.num data-testid="connected" { (n) } span.label { "Connected now" } }
            }
            a.card href="/console/posture" title={ "Last audit " (ui::when(posture.at)) } {
                span.num data-testid="posture-findings" { (findings) }
                span.label { "Posture findings"
                    @for sev in ["critical", "high", "medium", "low"] {
                        @let n = posture.by_severity.get(sev).copied().unwrap_or(0);
                        @if n > 0 { " · " (n) " " (sev) }
                    }
                }
            }
        }
        h2 { "Latest security events" }
        (audit_table(&refused))
        p { a href="/console/audit?outcome=refused" { "All security events →" } }
    })
}

pub(crate) async fn cas(State(c): State<Console>, Extension(s): Extension<Signed>) -> Response {
    let list = match c.app.hub.list_cas().await {
        Ok(v) => v,
        Err(e) => return ui::api_error(&s, ApiError::Core(e)),
    };
    let views: Vec<CaView> = list.iter().map(CaView::from).collect();
    let (hub_cas, registered): (Vec<&CaView>, Vec<&CaView>) =
        views.iter().partition(|v| v.kind != "registered");
    let admin = may(&s, &Method::POST, "/cas");
    let mut page = Page::new(&s, Section::Cas, "Certificate authorities");
    page.flash = c.sessions.take_flash(&s.key);
    page.render(html! {
        h2 { "The hub's CA" }
        p { "Devices and relying parties trust the hub through this bundle (root and device-issuing CA). "
            a.button href="/console/cas/bundle.pem" download="moat-ca-bundle.pem" { "Download the CA bundle" } }
        (ca_table(&hub_cas, false))
        h2 { "Registered CAs" }
        p.muted { "Third-party CAs (a secure-element vendor's, a factory's) whose certificates identify devices; each was registered with proof of possession of its key." }
        (ca_table(&registered, true))
        @if admin {
            h2 { "Register a CA" }
            ol.steps {
                li {
                    "Get a one-time registration code. "
                    form.inline method="post" action="/console/cas/registration-code" {
                        (csrf(&s)) button type="submit" { "Get a code" }
                    }
                }
                li { "Prove you hold the CA's key: make a certificate whose CN is the code, signed by the CA, e.g. "
                     pre { "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout v.key -subj \"/CN=CODE\" -out v.csr\n"
                           "openssl x509 -req -in v.csr -CA vendor-ca.pem -CAkey vendor-ca.key -days 1 -out verification.pem" } }
                li {
                    "Upload the CA certificate and the verification certificate."
                    form.stack method="post" action="/console/cas" {
                        (csrf(&s))
                        label for="ca-name" { "Name (optional)" }
                        input #ca-name name="name" maxlength="64";
                        label for="ca-cert" { "CA certificate (PEM)" }
                        textarea #ca-cert name="cert" rows="6" required {}
                        label for="ca-verification" { "Verification certificate (PEM)" }
                        textarea #ca-verification name="verification_cert" rows="6" required {}
                        label for="ca-identity" { "Device identity comes from" }
                        select #ca-identity name="identity" {
                            option value="cn" { "Subject CN" }
                            option value="san-dns" { "SAN DNS name" }
                            option value="san-uri" { "SAN URI" }
                        }
                        label.check { input type="checkbox" name="auto_register" value="true"; " Auto-register devices on first connection" }
                        div.row { button.primary type="submit" { "Register" } }
                    }
                }
            }
        }
    })
}

fn ca_table(cas: &[&CaView], registered: bool) -> Markup {
    html! {
        div.scroll { table.list {
            thead { tr { th { "Name" } th { "Subject" } th { "Expires" }
                @if registered { th { "Identity" } th { "Auto-register" } } @else { th { "Role" } }
                th { "SHA-256 fingerprint" } } }
            tbody {
                @for ca in cas { tr {
                    td { (ca.name) } td { (ca.subject) } td { (when_str(&ca.not_after)) }
                    @if registered { td { (ca.identity_rule) } td { (if ca.auto_register { "on" } else { "off" }) } }
                    @else { td { (ca.kind) } }
                    td { code.fp { (ca.fingerprint) } }
                } }
                @if cas.is_empty() { tr { td colspan="6" .muted { "None." } } }
            }
        } }
    }
}

pub(crate) async fn ca_bundle(State(c): State<Console>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"moat-ca-bundle.pem\"",
            ),
        ],
        c.app.hub.ca_bundle_pem(),
    )
        .into_response()
}

pub(crate) async fn registration_code(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
) -> Response {
    match c.app.hub.registration_code(&s.principal.actor).await {
        Ok(code) => {
            let ttl = c.app.hub.config().registration_code_ttl;
            c.sessions.set_flash(
                &s.key,
                "ok",
                format!(
                    "Registration code: {} (valid for {} minutes, once). Put it in the CN of the verification certificate.",
                    code.expose(),
                    ttl.whole_minutes()
                ),
            );
            Redirect::to("/console/cas").into_response()
        }
        Err(e) => ui::api_error(&s, ApiError::Core(e)),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RegisterForm {
    name: Option<String>,
    cert: String,
    verification_cert: String,
    identity: String,
    auto_register: Option<String>,
}

pub(crate) async fn register_ca(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    axum::Form(f): axum::Form<RegisterForm>,
) -> Response {
    let Some(identity) = IdentityRule::parse(&f.identity) else {
        return ui::error_page(
            &s,
            StatusCode::BAD_REQUEST,
            "Bad identity rule",
            "Use cn, san-dns or san-uri.",
        );
    };
    let req = RegisterCa {
        name: f.name.filter(|n| !n.trim().is_empty()),
        cert: f.cert.into_bytes(),
        verification_cert: f.verification_cert.into_bytes(),
        identity,
        auto_register: f.auto_register.as_deref() == Some("true"),
    };
    match c.app.hub.register_ca(req, &s.principal.actor).await {
        Ok(ca) => {
            c.sessions
                .set_flash(&s.key, "ok", format!("CA {} is registered.", ca.name));
            Redirect::to("/console/cas").into_response()
        }
        Err(e) => ui::api_error(&s, ApiError::Core(e)),
    }
}

pub(crate) async fn firmware(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
) -> Response {
    let Some(ota) = c.app.ota.clone() else {
        return ota_off(&s);
    };
    let (images, keys, campaigns) =
        match tokio::try_join!(ota.list_firmware(), ota.keys(), ota.campaigns()) {
            Ok(v) => v,
            Err(e) => return ui::api_error(&s, ApiError::from(e)),
        };
    let images: Vec<FirmwareView> = images.iter().map(FirmwareView::from).collect();
    let keys: Vec<FirmwareKeyView> = keys.iter().map(FirmwareKeyView::from).collect();
    let campaigns: Vec<CampaignInfo> = campaigns.iter().map(CampaignInfo::from).collect();
    Page::new(&s, Section::Firmware, "Firmware").render(html! {
        h2 { "Campaigns" }
        div.scroll { table.list data-testid="campaigns" {
            thead { tr { th { "Campaign" } th { "State" } th { "Image" } th { "Target" } th { "Wave" } th { "Started" } } }
            tbody {
                @for cm in &campaigns { tr {
                    td { a href={ "/console/campaigns/" (cm.id) } { (cm.id) } }
                    td { (badge(tone(&cm.state), &cm.state)) }
                    td { code { (short(&cm.firmware)) } }
                    td { (cm.target) }
                    td { (cm.current_wave.min(cm.waves)) " of " (cm.waves) }
                    td { (when_str(&cm.created_at)) }
                } }
                @if campaigns.is_empty() { tr { td colspan="6" .muted { "No campaigns yet: " code { "moat campaign create --firmware ID --target model:M" } } } }
            }
        } }
        h2 { "Images" }
        div.scroll { table.list {
            thead { tr { th { "Id" } th { "Model" } th { "Version" } th { "Security counter" } th { "Size" } th { "Signed by" } th { "Uploaded" } } }
            tbody {
                @for i in &images { tr {
                    td { code { (short(&i.id)) } } td { (i.model) } td { (i.version) } td { (i.security_counter) }
                    td { (size(i.size)) } td { (i.key) } td { (when_str(&i.created_at)) }
                } }
                @if images.is_empty() { tr { td colspan="7" .muted { "No images: " code { "moat fw upload FILE --model M" } } } }
            }
        } }
        h2 { "Signing keys" }
        div.scroll { table.list {
            thead { tr { th { "Name" } th { "Type" } th { "Held" } th { "Added" } } }
            tbody {
                @for k in &keys { tr {
                    td { (k.name) } td { (k.kind) }
                    td { (if k.hub_held { "by the hub (sealed)" } else { "offline (public key only)" }) }
                    td { (when_str(&k.created_at)) }
                } }
                @if keys.is_empty() { tr { td colspan="4" .muted { "No keys." } } }
            }
        } }
    })
}

fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

pub(crate) async fn campaign(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Path(id): Path<String>,
) -> Response {
    let Some(ota) = c.app.ota.clone() else {
        return ota_off(&s);
    };
    let view = match ota.campaign(&id).await {
        Ok(v) => v,
        Err(e) => return ui::api_error(&s, ApiError::from(e)),
    };
    let info = CampaignInfo::from(&view);
    let mut page = Page::new(&s, Section::Firmware, format!("Campaign {id}"));
    page.flash = c.sessions.take_flash(&s.key);
    if info.state == "running" {
        page.refresh = Some(2);
    }
    let act = |a: &str| may(&s, &Method::POST, &format!("/campaigns/{id}/{a}"));
    page.render(html! {
        dl.facts {
            dt { "State" } dd data-testid="campaign-state" { (badge(tone(&info.state), &info.state)) }
            @if let Some(r) = &info.reason { dt { "Why" } dd { (r) } }
            dt { "Image" } dd { code { (info.firmware) } }
            dt { "Target" } dd { (info.target) }
            dt { "Wave" } dd { (info.current_wave.min(info.waves)) " of " (info.waves) }
            dt { "Advance at" } dd { (info.success_threshold) "% confirmed" }
            dt { "Abort at" } dd { (info.abort_threshold) "% failed" }
            dt { "Started" } dd { (when_str(&info.created_at)) }
            dt { "Updated" } dd { (when_str(&info.updated_at)) }
        }
        @if matches!(info.state.as_str(), "running" | "paused") {
            section.actions {
                @if info.state == "running" && act("pause") { (action_form(&s, &id, "pause", "Pause", false)) }
                @if info.state == "paused" && act("resume") { (action_form(&s, &id, "resume", "Resume", false)) }
                @if act("cancel") { (action_form(&s, &id, "cancel", "Cancel campaign", true)) }
            }
        }
        h2 { "Progress by wave" }
        (wave_chart(&info.progress))
        div.scroll { table.list data-testid="waves" {
            thead { tr { th { "Wave" } th { "Devices" } @for (st, _) in WAVE_STATES { th { (st.replace('_', " ")) } } } }
            tbody { @for w in &info.progress { tr {
                td { (w.wave) } td { (w.devices) }
                @for (st, _) in WAVE_STATES { td data-state=(st) { (w.states.get(st).copied().unwrap_or(0)) } }
            } } }
        } }
    })
}

fn action_form(s: &Signed, id: &str, action: &str, label: &str, danger: bool) -> Markup {
    html! {
        form.inline method="post" action={ "/console/campaigns/" (id) "/" (action) } {
            (csrf(s))
            button class=(if danger { "danger" } else { "" }) type="submit" { (label) }
        }
    }
}

/// One stacked horizontal bar per wave (an inline SVG: no script, colours from the
/// stylesheet, so it follows the light or dark theme).
fn wave_chart(waves: &[WaveView]) -> Markup {
    const W: f64 = 900.0;
    const BAR: f64 = 22.0;
    const GAP: f64 = 12.0;
    const LABEL: f64 = 80.0;
    let height = (BAR + GAP) * waves.len() as f64 + 30.0;
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W + LABEL) " " (height) } role="img" aria-label="Devices per state in each wave" data-testid="wave-chart" {
                @for (i, w) in waves.iter().enumerate() {
                    @let y = i as f64 * (BAR + GAP);
                    text x="0" y=(y + BAR * 0.7) class="c-label" { "Wave " (w.wave) }
                    rect x=(LABEL) y=(y) width=(W) height=(BAR) class="s-track" {}
                    @for (x, width, st, class, n) in segments(w, LABEL, W) {
                        rect x=(x) y=(y) width=(width) height=(BAR) class=(class) { title { (st.replace('_', " ")) ": " (n) } }
                    }
                }
                @let ly = (BAR + GAP) * waves.len() as f64 + 8.0;
                @for (i, (st, class)) in WAVE_STATES.iter().take(7).enumerate() {
                    rect x=(LABEL + i as f64 * 120.0) y=(ly) width="10" height="10" class=(class) {}
                    text x=(LABEL + 14.0 + i as f64 * 120.0) y=(ly + 9.0) class="c-legend" { (st.replace('_', " ")) }
                }
            }
        }
    }
}

/// A wave's bar segments: (x, width, state, class, devices), left to right.
fn segments(
    w: &WaveView,
    left: f64,
    width: f64,
) -> Vec<(f64, f64, &'static str, &'static str, u64)> {
    let total = w.devices.max(1) as f64;
    let mut x = left;
    let mut out = Vec::new();
    for (st, class) in WAVE_STATES {
        let n = w.states.get(st).copied().unwrap_or(0);
        if n > 0 {
            let wd = width * n as f64 / total;
            out.push((x, wd, st, class, n));
            x += wd;
        }
    }
    out
}

pub(crate) async fn campaign_action(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let Some(ota) = c.app.ota.clone() else {
        return ota_off(&s);
    };
    let actor = &s.principal.actor;
    let done = match action.as_str() {
        "pause" => ota.pause(&id, actor).await,
        "resume" => ota.resume(&id, actor).await,
        "cancel" => ota.cancel(&id, actor).await,
        _ => {
            return ui::error_page(
                &s,
                StatusCode::NOT_FOUND,
                "No such action",
                "Use pause, resume or cancel.",
            );
        }
    };
    match done {
        Ok(v) => {
            c.sessions.set_flash(
                &s.key,
                "ok",
                format!("Campaign {id} is {}.", v.campaign.state.as_str()),
            );
            Redirect::to(&format!("/console/campaigns/{id}")).into_response()
        }
        Err(e) => ui::api_error(&s, ApiError::from(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditParams {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    outcome: String,
    before: Option<i64>,
}

pub(crate) async fn audit(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Query(p): Query<AuditParams>,
) -> Response {
    let some = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let filter = AuditFilter {
        actor: some(&p.actor),
        action: some(&p.action),
        target: some(&p.target),
        outcome: some(&p.outcome),
    };
    const LIMIT: u32 = 100;
    let entries = match c.app.hub.audit_search(&filter, p.before, LIMIT).await {
        Ok(v) => v,
        Err(e) => return ui::api_error(&s, ApiError::Core(e)),
    };
    let older = (entries.len() == LIMIT as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let title = if p.outcome == "refused" {
        "Security events"
    } else {
        "Audit log"
    };
    Page::new(&s, Section::Audit, title).render(html! {
        form.search method="get" action="/console/audit" {
            input name="actor" value=(p.actor) placeholder="Who (admin, operator:NAME, device:ID)" aria-label="Actor";
            input name="action" value=(p.action) placeholder="What (prefix: device., cert.revoke)" aria-label="Action";
            input name="target" value=(p.target) placeholder="On (device id, serial, CA)" aria-label="Target";
            select name="outcome" aria-label="Outcome" {
                @for (v, label) in [("", "Any outcome"), ("ok", "ok"), ("error", "error"), ("refused", "refused (security events)")] {
                    @if v == p.outcome { option value=(v) selected { (label) } } @else { option value=(v) { (label) } }
                }
            }
            button type="submit" { "Filter" }
            a href="/console/audit?outcome=refused" { "Security events" }
        }
        (audit_table(&entries))
        @if let Some(before) = older {
            nav.pager { a rel="next" href={ "/console/audit?actor=" (ui::urlencode(&p.actor)) "&action=" (ui::urlencode(&p.action)) "&target=" (ui::urlencode(&p.target)) "&outcome=" (ui::urlencode(&p.outcome)) "&before=" (before) } { "Older →" } }
        }
    })
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PostureParams {
    within_days: Option<u32>,
}

pub(crate) async fn posture(
    State(c): State<Console>,
    Extension(s): Extension<Signed>,
    Query(p): Query<PostureParams>,
) -> Response {
    let report = match crate::posture::report(&c.app, p.within_days, None).await {
        Ok(r) => r,
        Err(e) => return ui::api_error(&s, e),
    };
    Page::new(&s, Section::Posture, "Security posture").render(html! {
        p.muted { "Generated " (when_str(&report.generated_at)) ". The same checks as " code { "moat audit posture" } "." }
        div.cards {
            @for (sev, n) in &report.counts {
                div.card { span.num { (n) } span.label { (badge(tone(sev), sev)) } }
            }
            @if report.findings.is_empty() { div.card { span.num { "0" } span.label { "findings" } } }
        }
        div.scroll { table.list data-testid="findings" {
            thead { tr { th { "Severity" } th { "Check" } th { "Subject" } th { "Finding" } th { "Suggested action" } } }
            tbody {
                @for f in &report.findings { tr {
                    td { (badge(tone(&f.severity), &f.severity)) }
                    td { code { (f.check) } }
                    td { (f.subject) }
                    td { (f.detail) }
                    td { (f.action) }
                } }
                @if report.findings.is_empty() { tr { td colspan="5" .muted { "No findings." } } }
            }
        } }
    })
}

/// The cluster's nodes, as `moat cluster status` shows them.
pub(crate) async fn cluster(State(c): State<Console>, Extension(s): Extension<Signed>) -> Response {
    let view = match crate::routes::cluster_view(&c.app).await {
        Ok(v) => v,
        Err(e) => return ui::api_error(&s, e),
    };
    Page::new(&s, Section::Cluster, "Cluster").render(html! {
        @if view.nodes.is_empty() {
            p.muted { "This hub runs as a single node (see " code { "[cluster]" } " in " code { "moat config default" } ")." }
        } @else {
            p.muted {
                "Event log at " (view.event_log_head) "; leader "
                (view.leader.as_deref().unwrap_or("(none)")) "; this page from "
                (view.answered_by.as_deref().unwrap_or("?")) "."
            }
            div.scroll { table.list data-testid="cluster-nodes" {
                thead { tr { th { "Node" } th { "State" } th { "Sessions" } th { "Events behind" } th { "NATS" } th { "Last heartbeat" } th { "MQTT" } th { "API" } } }
                tbody {
                    @for n in &view.nodes { tr {
                        td { (n.name) }
                        td { (badge(tone(&n.state), &n.state)) }
                        td { (n.sessions) }
                        td { (n.events_behind) }
                        td { (badge(tone(&n.nats), &n.nats)) }
                        td { (n.last_heartbeat_seconds_ago) " s ago" }
                        td { code { (n.mqtt) } }
                        td { code { (n.api) } }
                    } }
                }
            } }
        }
    })
}
