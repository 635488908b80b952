//! `/api/v1/sessions`: live MQTT sessions on this node.

use crate::AppState;
use crate::dto::SessionView;
use crate::problem::{ApiError, Problem};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use moat_core::Actor;

/// Live sessions, as the MQTT hub reports them.
pub trait SessionControl: Send + Sync + std::fmt::Debug {
    /// Every live session.
    fn list(&self) -> Vec<SessionView>;
    /// Closes the session with this client id; false if none.
    fn kick(&self, client_id: &str) -> bool;
    /// The live session of `client_id`, if connected (implementations should not list all).
    fn get(&self, client_id: &str) -> Option<SessionView> {
        self.list().into_iter().find(|s| s.client_id == client_id)
    }
}

fn control(s: &AppState) -> Result<&dyn SessionControl, ApiError> {
    s.sessions.as_deref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-mqtt",
            "Service Unavailable",
            "the MQTT hub is not running on this node",
        )
        .into()
    })
}

/// List live MQTT sessions.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", responses((status = 200, body = [SessionView])))]
pub(crate) async fn list_sessions(
    State(s): State<AppState>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let mut v = control(&s)?.list();
    v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(Json(v))
}

/// Close a live MQTT session.
#[utoipa::path(post, path = "/api/v1/sessions/{client_id}/kick", tag = "sessions",
    params(("client_id" = String, Path, description = "MQTT client id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn kick_session(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    kick_audited(&s, &actor, &client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes `client_id`'s live session, audited (the API and the console).
pub(crate) async fn kick_audited(
    s: &AppState,
    actor: &Actor,
    client_id: &str,
) -> Result<(), ApiError> {
    let kicked = control(s)?.kick(client_id);
    let result = if kicked {
        Ok(())
    } else {
        Err(moat_core::Error::NotFound {
            kind: "session",
            id: client_id.to_string(),
        })
    };
    s.hub
        .audited(actor, "session.kick", Some(client_id), result)
        .await?;
    Ok(())
}
