//! The public endpoint (plain HTTP): CRLs at the stable URL named in certificates' CRL
//! distribution points, and the CA bundle. No authentication: both are public by nature.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use moat_core::Hub;
use std::sync::Arc;

/// `GET /crl/{ca}.crl` (DER, `application/pkix-crl`), `GET /crl/{ca}.pem`,
/// `GET /ca/bundle.pem`, `GET /healthz`.
pub fn public_router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/crl/{file}", get(crl))
        .route("/ca/bundle.pem", get(bundle))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn(crate::serve::request_id))
        .with_state(hub)
}

async fn crl(State(hub): State<Arc<Hub>>, Path(file): Path<String>) -> Response {
    let (ca, pem) = match (file.strip_suffix(".crl"), file.strip_suffix(".pem")) {
        (Some(ca), _) => (ca, false),
        (None, Some(ca)) => (ca, true),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "use /crl/{ca}.crl or /crl/{ca}.pem\n",
            )
                .into_response();
        }
    };
    match hub.crl(ca).await {
        Ok(crl) if pem => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            moat_pki::pem_of_crl(&crl.der),
        )
            .into_response(),
        Ok(crl) => ([(header::CONTENT_TYPE, "application/pkix-crl")], crl.der).into_response(),
        Err(moat_core::Error::NotFound { .. }) => {
            (StatusCode::NOT_FOUND, "no CRL for that CA\n").into_response()
        }
        Err(e) => {
            tracing::error!(error = ?e, "CRL lookup failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "CRL temporarily unavailable\n",
            )
                .into_response()
        }
    }
}

async fn bundle(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        hub.ca_bundle_pem(),
    )
}
