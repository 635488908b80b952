//! `/api/v1/cluster`: the nodes of the cluster as their heartbeats in the shared registry
//! describe them.

use crate::AppState;
use crate::dto::{ClusterNodeView, ClusterView};
use crate::problem::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use moat_core::Actor;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The cluster's nodes: up or down, sessions, the last event each applied, NATS. A single
/// node (no `[cluster]`) lists no nodes.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, body = ClusterView), (status = 503, body = crate::problem::Problem)))]
pub(crate) async fn cluster_status(
    State(s): State<AppState>,
) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(cluster_view(&s).await?))
}

/// The cluster as the registry records it (the API's answer and the console's page).
pub(crate) async fn cluster_view(s: &AppState) -> Result<ClusterView, ApiError> {
    let now = OffsetDateTime::now_utc();
    let head = s.hub.cluster_log_head().await?;
    let nodes = s.hub.cluster_nodes().await?;
    let leader = s.hub.cluster_lease_holder("leader").await?;
    let ts = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    Ok(ClusterView {
        answered_by: s.hub.config().server_identity_scope.clone(),
        event_log_head: head,
        leader,
        nodes: nodes
            .into_iter()
            .map(|n| ClusterNodeView {
                state: if n.alive(now) { "up" } else { "down" }.to_string(),
                last_heartbeat_seconds_ago: (now - n.heartbeat_at).whole_seconds().max(0) as u64,
                events_behind: head.saturating_sub(n.applied_seq),
                name: n.name,
                started_at: ts(n.started_at),
                heartbeat_at: ts(n.heartbeat_at),
                sessions: n.sessions,
                applied_seq: n.applied_seq,
                nats: if n.nats_ok {
                    "connected"
                } else {
                    "disconnected"
                }
                .to_string(),
                mqtt: n.mqtt,
                api: n.api,
            })
            .collect(),
    })
}

/// Forget a node removed from the cluster for good (refused while it is up).
#[utoipa::path(delete, path = "/api/v1/cluster/nodes/{name}", tag = "cluster",
    params(("name" = String, Path, description = "Node name")),
    responses((status = 204), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)))]
pub(crate) async fn forget_cluster_node(
    Extension(actor): Extension<Actor>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.hub.forget_cluster_node(&name, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
