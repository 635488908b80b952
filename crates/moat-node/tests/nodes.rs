//! The hub as a library: two nodes started in one test process, on port 0, each with its own
//! data dir, registry and CAs, serving at once; each admits its own devices (OpenSSL clients
//! over real sockets) and refuses the other's; both stop cleanly.

use moat_core::{Actor, CreateDevice, Credential};
use moat_node::{Config, Node};
use moat_testkit::peer::{Proto, TlsPeer};
use std::path::Path;

/// Defaults, every listener on 127.0.0.1:0, data in `dir`.
fn config(dir: &Path) -> Config {
    Config::loopback(&dir.join("data"))
}

/// Creates `id` on `node` with a hub-generated key; writes ID.crt, ID.key and the node's CA
/// bundle (bundle.pem) into `dir`.
async fn device(node: &Node, id: &str, dir: &Path) {
    let created = node
        .hub()
        .create_device(
            CreateDevice {
                id: id.into(),
                credential: Credential::GenerateKey,
                allow_insecure: false,
            },
            &Actor::admin(),
        )
        .await
        .expect("create device");
    std::fs::write(dir.join(format!("{id}.crt")), &created.chain_pem).expect("w");
    let key = created.private_key_pem.expect("generated key");
    std::fs::write(dir.join(format!("{id}.key")), key.expose()).expect("w");
    std::fs::write(dir.join("bundle.pem"), node.hub().ca_bundle_pem()).expect("w");
}

/// One MQTT CONNECT with `id`'s certificate to `mqtt` (host:port), trusting `server_ca`.
async fn connack(mqtt: &str, server_ca: &Path, dir: &Path, id: &str) -> Option<u8> {
    let (mqtt, server_ca, dir, id) = (
        mqtt.to_string(),
        server_ca.to_path_buf(),
        dir.to_path_buf(),
        id.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let mut peer = TlsPeer::new(
            &mqtt,
            &server_ca,
            &dir.join(format!("{id}.crt")),
            &dir.join(format!("{id}.key")),
            Proto::Mqtt { client_id: &id },
        );
        peer.full().connack
    })
    .await
    .expect("peer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_side_by_side_in_one_process() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = Node::start(config(a_dir.path())).await.expect("node a");
    let b = Node::start(config(b_dir.path())).await.expect("node b");
    assert_ne!(a.endpoints().mqtt_tls, b.endpoints().mqtt_tls);
    assert!(a.data_dir().join("hub.json").exists());

    device(&a, "dev-a", a_dir.path()).await;
    device(&b, "dev-b", b_dir.path()).await;
    let (a_ca, b_ca) = (
        a_dir.path().join("bundle.pem"),
        b_dir.path().join("bundle.pem"),
    );
    // Each node admits its own device…
    assert_eq!(
        connack(&a.endpoints().mqtt_tls, &a_ca, a_dir.path(), "dev-a").await,
        Some(0)
    );
    assert_eq!(
        connack(&b.endpoints().mqtt_tls, &b_ca, b_dir.path(), "dev-b").await,
        Some(0)
    );
    // …and not the other's: another CA, refused at the TLS handshake.
    assert_eq!(
        connack(&b.endpoints().mqtt_tls, &b_ca, a_dir.path(), "dev-a").await,
        None
    );

    let a_data = a.data_dir().to_path_buf();
    a.shutdown().await;
    assert!(
        !a_data.join("hub.json").exists(),
        "hub.json stays after shutdown"
    );
    // B still serves after A stopped.
    assert_eq!(
        connack(&b.endpoints().mqtt_tls, &b_ca, b_dir.path(), "dev-b").await,
        Some(0)
    );
    b.shutdown().await;
}
