//! Several hub nodes, one fleet: nodes on one PostgreSQL registry and a NATS server, each
//! started by the test (in-process nodes, mosquitto clients as devices).
//!
//! Needs `nats-server` and `MOAT_TEST_DATABASE_URL`; skipped without them unless `CI` is set.

mod common;

use common::TestHub;
use moat_testkit::nats::NatsServer;
use moat_testkit::postgres;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// One cluster test at a time: each runs several nodes, NATS and clients on the machine's
/// cores, and the timings they assert need those cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A cluster of in-process nodes on one fresh database and one NATS server.
struct Cluster {
    _one: std::sync::MutexGuard<'static, ()>,
    nats: NatsServer,
    server: String,
    db_name: String,
    db_url: String,
    nodes: Vec<TestHub>,
    catch_up: Duration,
    /// Room for the test's own files.
    nodes_dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes (`node-0` …) that read the registry's event log every `catch_up`, or None
    /// when NATS or PostgreSQL is missing (outside CI).
    fn start(name: &str, n: usize, catch_up: Duration) -> Option<Cluster> {
        let one = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let server = postgres::server_url()?;
        if !NatsServer::available() {
            return None;
        }
        let nats = NatsServer::start_new();
        let db_name = format!("moat_cluster_{name}_{}", std::process::id());
        let db_url = postgres::fresh_database(&server, &db_name);
        let mut c = Cluster {
            _one: one,
            nats,
            server,
            db_name,
            db_url,
            nodes: Vec::new(),
            catch_up,
            nodes_dir: tempfile::tempdir().expect("tempdir"),
        };
        for i in 0..n {
            c.add_node(i);
        }
        Some(c)
    }

    /// Starts node `i`. Node 0 makes the CAs, the vault's master key and the admin token;
    /// the others open the same master key file and get a copy of the token, as an
    /// operator sets up a second machine.
    fn add_node(&mut self, i: usize) {
        let shared = self.nodes.first().map(|n| n.data.clone());
        let (db, nats, catch_up) = (self.db_url.clone(), self.nats.url(), self.catch_up);
        let node = TestHub::start_node(move |cfg| {
            cfg.cluster.catch_up_interval = catch_up;
            configure(cfg, i, &db, &nats, shared.as_deref())
        })
        .expect("node starts");
        self.nodes.push(node);
    }
}

fn configure(cfg: &mut moat_node::Config, i: usize, db: &str, nats: &str, first: Option<&Path>) {
    cfg.database = Some(db.to_string());
    cfg.cluster.nats = vec![nats.to_string()];
    cfg.cluster.node = Some(format!("node-{i}"));
    cfg.cluster.heartbeat_interval = Duration::from_millis(500);
    if let Some(first) = first {
        cfg.vault.key_file = first.join("master.key");
        std::fs::create_dir_all(&cfg.data_dir).expect("data dir");
        std::fs::copy(first.join("admin.token"), cfg.data_dir.join("admin.token"))
            .expect("admin token");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        postgres::drop_database(&self.server, &self.db_name);
    }
}

/// Creates device `id` through `node`; returns its certificate and key paths.
fn device(node: &TestHub, id: &str) -> (PathBuf, PathBuf) {
    let out = node.path(&format!("dev-{id}"));
    node.ok(&["device", "create", id, "--out", out.to_str().expect("path")]);
    (out.join(format!("{id}.crt")), out.join(format!("{id}.key")))
}

/// How long `child` takes to end, at most `limit` (None: still running).
fn ends_within(child: &mut Child, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Whether `id` can connect to `node` over mutual TLS now (mosquitto_sub, one message wait
/// of 1 s: a refused connection ends at once with an error).
fn connects(node: &TestHub, id: &str, cert: &Path, key: &Path) -> bool {
    let (host, port) = node.mqtt_tls.rsplit_once(':').expect("addr");
    let out = moat_testkit::process::run_bounded(
        {
            let mut c = std::process::Command::new("mosquitto_sub");
            let topic = format!("devices/{id}/x");
            c.args([
                "-h", host, "-p", port, "-i", id, "-t", &topic, "-W", "1", "-V", "mqttv5",
            ])
            .arg("--cafile")
            .arg(node.bundle())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
            c
        },
        Duration::from_secs(10),
    );
    let text = moat_testkit::process::text(&out);
    // -W 1 ends a connected client with "Timed out" (exit 27); a refusal says why.
    text.contains("Timed out") || out.status.code() == Some(27)
}

#[test]
fn a_change_on_one_node_closes_sessions_and_refuses_handshakes_on_the_others() {
    // The log is read only every 30 s here: what is measured is NATS's path.
    let Some(mut cluster) = Cluster::start("revoke", 3, Duration::from_secs(30)) else {
        return;
    };
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    // `moat server rotate` through one node: every node serves a new certificate of its own.
    let before: Vec<String> = [a, b, c]
        .iter()
        .map(|n| common::served_serial(&n.mqtt_tls))
        .collect();
    a.ok(&["server", "rotate"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: Vec<String> = [a, b, c]
            .iter()
            .map(|n| common::served_serial(&n.mqtt_tls))
            .collect();
        if now
            .iter()
            .zip(&before)
            .all(|(n, b)| n != b && !n.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node rotated: {before:?} → {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every node sees the one fleet.
    let (cert, key) = device(a, "dev-1");
    assert!(b.json(&["device", "show", "dev-1"])["device"]["id"] == "dev-1");

    // Revoked on C while connected to A: A closes the session, fast.
    let mut sub = a.mqtt_sub(
        "dev-1",
        &cert,
        &key,
        &["-t", "devices/dev-1/#", "-V", "mqttv5"],
    );
    if !matches!(sub.try_wait(), Ok(None)) {
        let out = sub.wait_with_output().expect("output");
        panic!(
            "dev-1 did not stay connected to node A: {}",
            moat_testkit::process::text(&out)
        );
    }
    let t0 = Instant::now();
    c.ok(&["device", "revoke", "dev-1"]);
    let returned = t0.elapsed();
    ends_within(&mut sub, Duration::from_secs(5))
        .expect("node A closed dev-1's session after node C revoked it");
    let took = t0.elapsed();
    eprintln!(
        "revoke on node C (the CLI took {returned:?}): session on node A closed {took:?} after the CLI started"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // And every node refuses it at the handshake.
    for n in [a, b, c] {
        assert!(
            !connects(n, "dev-1", &cert, &key),
            "a revoked device connects to {}",
            n.mqtt_tls
        );
    }

    // Suspended on A while connected to C; resumed on B: allowed again on C.
    let (cert2, key2) = device(b, "dev-2");
    let mut sub = c.mqtt_sub(
        "dev-2",
        &cert2,
        &key2,
        &["-t", "devices/dev-2/#", "-V", "mqttv5"],
    );
    a.ok(&["device", "suspend", "dev-2", "--reason", "maintenance"]);
    assert!(
        ends_within(&mut sub, Duration::from_secs(1)).is_some(),
        "suspend on A closed dev-2 on C"
    );
    assert!(!connects(c, "dev-2", &cert2, &key2));
    b.ok(&["device", "resume", "dev-2"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connects(c, "dev-2", &cert2, &key2) {
        assert!(
            Instant::now() < deadline,
            "dev-2 resumed on B still refused on C"
        );
    }

    // A node that was down while a device was revoked refuses it when it comes back.
    let (cert3, key3) = device(a, "dev-3");
    assert!(connects(b, "dev-3", &cert3, &key3));
    cluster.nodes[1].stop();
    cluster.nodes[0].ok(&["device", "revoke", "dev-3"]);
    cluster.nodes[1].spawn().expect("node B restarts");
    assert!(!connects(&cluster.nodes[1], "dev-3", &cert3, &key3));
    let _ = sub.kill();

    // `moat cluster status` through any node: three nodes, then one down.
    let status = cluster.nodes[1].json(&["cluster", "status"]);
    assert_eq!(status["answered_by"], "node-1");
    let names: Vec<&str> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["node-0", "node-1", "node-2"]);
    cluster.nodes[2].stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster.nodes[0].json(&["cluster", "status"]);
        let states: Vec<&str> = status["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["state"].as_str().expect("state"))
            .collect();
        if states == ["up", "up", "down"] {
            break;
        }
        assert!(Instant::now() < deadline, "node-2 not shown down: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The console's page says the same (signed in with curl, the admin token).
    let page = console_page(&cluster.nodes[1], "/console/cluster");
    assert!(page.contains("data-testid=\"cluster-nodes\""), "{page}");
    for name in ["node-0", "node-1", "node-2"] {
        assert!(page.contains(name), "{name} missing: {page}");
    }
    assert!(page.contains(">down<") && page.contains(">up<"), "{page}");
    let table = cluster.nodes[0].ok(&["cluster", "status"]);
    assert!(
        table.contains("node-2") && table.contains("down"),
        "{table}"
    );

    // A node removed for good is forgotten; one that is up cannot be.
    let said = cluster.nodes[0].fails(&["cluster", "forget", "node-1"]);
    assert!(said.contains("is up"), "{said}");
    cluster.nodes[0].ok(&["cluster", "forget", "node-2"]);
    let names: Vec<String> = cluster.nodes[0].json(&["cluster", "status"])["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["node-0", "node-1"]);
    let said = cluster.nodes[0].fails(&["cluster", "forget", "node-9"]);
    assert!(
        said.contains("not found") || said.contains("node-9"),
        "{said}"
    );

    // One leader (the periodic work runs there); when it stops, another node takes over
    // once its lease has expired (three heartbeats).
    assert_eq!(
        cluster.nodes[1].json(&["cluster", "status"])["leader"],
        "node-0"
    );
    cluster.nodes[0].stop();
    let t0 = Instant::now();
    loop {
        let leader = cluster.nodes[1].json(&["cluster", "status"])["leader"].clone();
        if leader == "node-1" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no new leader: {leader}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "leadership moved {:?} after the leader stopped",
        t0.elapsed()
    );
}

#[test]
fn with_nats_down_changes_still_arrive_through_the_registry_log() {
    let Some(mut cluster) = Cluster::start("natsdown", 2, Duration::from_secs(1)) else {
        return;
    };
    let (cert, key) = device(&cluster.nodes[0], "dev-n");
    let (cert2, key2) = device(&cluster.nodes[0], "dev-m");
    let (rcert, rkey) = device(&cluster.nodes[0], "dev-r");
    let mut sub = cluster.nodes[1].mqtt_sub(
        "dev-n",
        &cert,
        &key,
        &["-t", "devices/dev-n/#", "-V", "mqttv5"],
    );
    cluster.nats.stop();
    // A retained message published on node 0 while NATS is away.
    let out = cluster.nodes[0].mqtt_pub(
        "dev-r",
        &rcert,
        &rkey,
        &[
            "-t",
            "devices/dev-r/state",
            "-m",
            "while-away",
            "-q",
            "1",
            "-r",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        moat_testkit::process::text(&out)
    );
    // Devices keep being served while NATS is down; the node says it is degraded.
    assert!(connects(&cluster.nodes[1], "dev-m", &cert2, &key2));
    let ready = curl(&format!("{}/readyz", cluster.nodes[1].metrics_url));
    assert!(ready.starts_with("degraded: NATS unreachable"), "{ready}");
    let metrics = curl(&format!("{}/metrics", cluster.nodes[1].metrics_url));
    assert!(
        metrics.contains("moat_cluster_nats_connected 0"),
        "{metrics}"
    );
    cluster.nodes[0].ok(&["device", "suspend", "dev-n", "--reason", "maintenance"]);
    // Within the catch-up interval (1 s) and a margin for a busy machine.
    let took = ends_within(&mut sub, Duration::from_secs(5))
        .expect("node 1 closed the session of a device suspended on node 0 while NATS was down");
    eprintln!("with NATS down: closed after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!connects(&cluster.nodes[1], "dev-n", &cert, &key));
    // NATS back: the fast path again.
    cluster.nats.start();
    std::thread::sleep(Duration::from_millis(2500));
    let mut sub = cluster.nodes[1].mqtt_sub(
        "dev-m",
        &cert2,
        &key2,
        &["-t", "devices/dev-m/#", "-V", "mqttv5"],
    );
    cluster.nodes[0].ok(&["device", "revoke", "dev-m"]);
    let took = ends_within(&mut sub, Duration::from_secs(5)).expect("closed after NATS returned");
    eprintln!("NATS back: closed after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        curl(&format!("{}/readyz", cluster.nodes[1].metrics_url)),
        "ready\n"
    );
    // Node 1 read what was retained meanwhile from the registry when NATS came back.
    let sub = cluster.nodes[1].mqtt_sub(
        "dev-r",
        &rcert,
        &rkey,
        &["-t", "devices/dev-r/state", "-C", "1", "-W", "5"],
    );
    assert_eq!(lines_of(sub, Duration::from_secs(6)), ["while-away"]);
    // Messages cross nodes again (the subscriptions were made again on reconnection).
    let (acert, akey) = app(&cluster.nodes[0], "listener", &["--subscribe", "devices/#"]);
    let (cert3, key3) = device(&cluster.nodes[0], "dev-o");
    let sub = cluster.nodes[1].mqtt_sub(
        "listener",
        &acert,
        &akey,
        &["-t", "devices/dev-o/#", "-C", "1", "-W", "10"],
    );
    std::thread::sleep(INTEREST_SETTLES);
    cluster.nodes[0].mqtt_pub(
        "dev-o",
        &cert3,
        &key3,
        &["-t", "devices/dev-o/t", "-m", "back"],
    );
    assert_eq!(lines_of(sub, Duration::from_secs(10)), ["back"]);
}

/// A console page of `node` (signed in with its admin token; curl keeps the cookie).
fn console_page(node: &TestHub, path: &str) -> String {
    let jar = node.path("console-cookies");
    let jar = jar.to_str().expect("path");
    let token = format!("token@{}", node.data.join("admin.token").display());
    let (ok, said) = moat_testkit::process::run(
        "curl",
        &[
            "-sk",
            "-c",
            jar,
            "-b",
            jar,
            "--data-urlencode",
            &token,
            &format!("{}/console/login", node.admin_url),
        ],
    );
    assert!(ok, "{said}");
    let (ok, body) = moat_testkit::process::run(
        "curl",
        &["-sk", "-b", jar, &format!("{}{path}", node.admin_url)],
    );
    assert!(ok, "{body}");
    body
}

/// GET `url` with curl; the body.
fn curl(url: &str) -> String {
    let (_, body) = moat_testkit::process::run("curl", &["-s", url]);
    body
}

/// Creates application `name` through `node` with `args` (its topic filters).
fn app(node: &TestHub, name: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let out = node.path(&format!("app-{name}"));
    let mut all = vec!["app", "create", name, "--out", out.to_str().expect("path")];
    all.extend_from_slice(args);
    node.ok(&all);
    (
        out.join(format!("{name}.crt")),
        out.join(format!("{name}.key")),
    )
}

/// Waits for `child` (a bounded client) and returns its stdout lines.
fn lines_of(child: Child, limit: Duration) -> Vec<String> {
    let mut child = child;
    if ends_within(&mut child, limit).is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// mosquitto_sub does not say when its SUBACK came (a SUBACK means the subscription is in
/// effect on every node: `after_a_suback_…`); the session is listed at CONNECT, so a
/// publisher waits a moment for the SUBSCRIBE that follows.
const INTEREST_SETTLES: Duration = Duration::from_millis(300);

#[test]
fn messages_cross_nodes_in_every_qos_and_both_versions_once_each() {
    let Some(cluster) = Cluster::start("pubsub", 2, Duration::from_secs(30)) else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (dcert, dkey) = device(a, "sensor-1");
    let (acert, akey) = app(a, "backend", &["--subscribe", "devices/#"]);
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            // Two overlapping filters: NATS delivers to the node once per filter, the node
            // to the subscriber once.
            let sub = b.mqtt_sub(
                "backend",
                &acert,
                &akey,
                &[
                    "-t",
                    "devices/sensor-1/#",
                    "-t",
                    "devices/+/temp",
                    "-q",
                    qos,
                    "-V",
                    version,
                    "-C",
                    "4",
                    "-W",
                    "10",
                ],
            );
            std::thread::sleep(INTEREST_SETTLES);
            let sent: Vec<String> = (0..3).map(|i| format!("{version}-q{qos}-{i}")).collect();
            for m in &sent {
                let out = a.mqtt_pub(
                    "sensor-1",
                    &dcert,
                    &dkey,
                    &[
                        "-t",
                        "devices/sensor-1/temp",
                        "-m",
                        m,
                        "-q",
                        qos,
                        "-V",
                        version,
                    ],
                );
                assert!(
                    out.status.success(),
                    "{}",
                    moat_testkit::process::text(&out)
                );
            }
            // A fourth message on a topic only one filter matches ends the subscriber.
            let end = format!("{version}-q{qos}-end");
            a.mqtt_pub(
                "sensor-1",
                &dcert,
                &dkey,
                &[
                    "-t",
                    "devices/sensor-1/x",
                    "-m",
                    &end,
                    "-q",
                    qos,
                    "-V",
                    version,
                ],
            );
            let mut want = sent.clone();
            want.push(end);
            assert_eq!(
                lines_of(sub, Duration::from_secs(10)),
                want,
                "{version} QoS {qos}"
            );
        }
    }
}

#[test]
fn a_shared_subscription_spread_over_nodes_gets_each_message_once() {
    let Some(cluster) = Cluster::start("shared", 2, Duration::from_secs(30)) else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (dcert, dkey) = device(a, "dispatcher");
    let shared = [
        "-t",
        "$share/workers/devices/+/jobs",
        "-q",
        "1",
        "-V",
        "mqttv5",
        "-W",
        "15",
    ];
    let mut workers = Vec::new();
    for (i, node) in [a, b, b].into_iter().enumerate() {
        let name = format!("worker-{i}");
        let (c, k) = app(a, &name, &["--subscribe", "devices/+/jobs"]);
        workers.push(node.mqtt_sub(&name, &c, &k, &shared));
    }
    // A plain subscriber beside the group gets every message.
    let (ocert, okey) = app(a, "observer", &["--subscribe", "devices/+/jobs"]);
    let observer = b.mqtt_sub(
        "observer",
        &ocert,
        &okey,
        &["-t", "devices/+/jobs", "-q", "1", "-C", "30", "-W", "15"],
    );
    std::thread::sleep(INTEREST_SETTLES);
    let sent: Vec<String> = (0..30).map(|i| format!("job-{i}")).collect();
    for m in &sent {
        publish_q1(a, "dispatcher", &dcert, &dkey, "devices/dispatcher/jobs", m);
    }
    assert_eq!(lines_of(observer, Duration::from_secs(15)), sent);
    std::thread::sleep(Duration::from_millis(500));
    let mut got: Vec<Vec<String>> = Vec::new();
    for mut w in workers {
        let _ = w.kill();
        got.push(lines_of(w, Duration::from_secs(1)));
    }
    let mut all: Vec<String> = got.iter().flatten().cloned().collect();
    all.sort_by_key(|m| m[4..].parse::<u32>().unwrap_or(0));
    assert_eq!(all, sent, "each job to exactly one worker: {got:?}");
    let on_a = got[0].len();
    assert!(
        on_a > 0 && on_a < sent.len(),
        "the group spans both nodes: {on_a} on A, {} on B",
        sent.len() - on_a
    );
}

#[test]
fn after_a_suback_a_message_published_on_another_node_arrives() {
    let Some(cluster) = Cluster::start("suback", 2, Duration::from_secs(30)) else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (dcert, dkey) = device(a, "burst");
    let (acert, akey) = app(a, "tail", &["--subscribe", "devices/#"]);
    let (mut publisher, said) = moat_testkit::paho::Paho::connect_tls(
        &a.mqtt_tls,
        "5",
        "burst",
        &a.bundle(),
        &dcert,
        &dkey,
    );
    assert_eq!(said, "connack 0");
    let (mut subscriber, said) =
        moat_testkit::paho::Paho::connect_tls(&b.mqtt_tls, "5", "tail", &a.bundle(), &acert, &akey);
    assert_eq!(said, "connack 0");
    // Each round a filter no session had: the SUBACK is the moment it is in effect on every
    // node, so the message published right after it on the other node must arrive.
    for round in 0..20 {
        let topic = format!("devices/burst/r{round}");
        subscriber.send(&format!("sub {topic} 1"));
        let suback = subscriber.next_line(|l| l.starts_with("suback"), Duration::from_secs(5));
        assert_eq!(suback.as_deref(), Some("suback 1"), "round {round}");
        let mid = publisher.publish(&topic, &format!("m{round}"), 1);
        assert_eq!(publisher.ack(mid, Duration::from_secs(5)), Some(0));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < 20 && Instant::now() < deadline {
        // Everything received so far, each time.
        got = subscriber
            .messages()
            .into_iter()
            .map(|(_, payload, _)| payload)
            .collect();
        std::thread::sleep(Duration::from_millis(100));
    }
    let want: Vec<String> = (0..20).map(|r| format!("m{r}")).collect();
    assert_eq!(got, want);
    publisher.quit();
    subscriber.quit();
}

#[test]
fn retained_messages_and_wills_reach_every_node() {
    let Some(mut cluster) = Cluster::start("retained", 2, Duration::from_secs(30)) else {
        return;
    };
    let (dcert, dkey) = device(&cluster.nodes[0], "sensor-r");
    let (acert, akey) = app(&cluster.nodes[0], "watcher", &["--subscribe", "devices/#"]);
    let out = cluster.nodes[0].mqtt_pub(
        "sensor-r",
        &dcert,
        &dkey,
        &["-t", "devices/sensor-r/state", "-m", "on", "-q", "1", "-r"],
    );
    assert!(
        out.status.success(),
        "{}",
        moat_testkit::process::text(&out)
    );
    // Node 1 had it forwarded (memory); a node started later reads it from the registry.
    cluster.add_node(2);
    for n in [1, 2] {
        let sub = cluster.nodes[n].mqtt_sub(
            "watcher",
            &acert,
            &akey,
            &["-t", "devices/sensor-r/state", "-C", "1", "-W", "5"],
        );
        assert_eq!(
            lines_of(sub, Duration::from_secs(6)),
            ["on"],
            "retained on node {n}"
        );
    }

    // A will of a device on node 0 that vanishes reaches a subscriber on node 2.
    let sub = cluster.nodes[2].mqtt_sub(
        "watcher",
        &acert,
        &akey,
        &[
            "-t",
            "devices/sensor-r/status",
            "-C",
            "1",
            "-W",
            "10",
            "-V",
            "mqttv5",
        ],
    );
    std::thread::sleep(INTEREST_SETTLES);
    let mut device = cluster.nodes[0].mqtt_sub(
        "sensor-r",
        &dcert,
        &dkey,
        &[
            "-t",
            "devices/sensor-r/cmd",
            "--will-topic",
            "devices/sensor-r/status",
            "--will-payload",
            "gone",
            "-V",
            "mqttv5",
        ],
    );
    let _ = device.kill();
    let _ = device.wait();
    assert_eq!(lines_of(sub, Duration::from_secs(10)), ["gone"]);
}

/// Whether `node` lists a live session of `client_id`.
fn has_session(node: &TestHub, client_id: &str) -> bool {
    node.json(&["session", "list"])
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s["client_id"] == client_id))
}

#[test]
fn a_client_moving_to_another_node_takes_its_session_along() {
    let Some(cluster) = Cluster::start("takeover", 3, Duration::from_secs(30)) else {
        return;
    };
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let (cert, key) = device(a, "mover");
    let (acert, akey) = app(a, "commander", &["--publish", "devices/+/cmd"]);
    let persistent = [
        "-t",
        "devices/mover/cmd",
        "-q",
        "1",
        "-c",
        "-x",
        "3600",
        "-V",
        "mqttv5",
    ];
    // A persistent session on node A, then offline.
    let mut sub = a.mqtt_sub("mover", &cert, &key, &persistent);
    let _ = sub.kill();
    let _ = sub.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while has_session(a, "mover") {
        assert!(Instant::now() < deadline, "mover still connected to A");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Commands sent through node B while it is offline are kept for it (on node A)...
    for i in 0..3 {
        publish_q1(
            b,
            "commander",
            &acert,
            &akey,
            "devices/mover/cmd",
            &format!("cmd-{i}"),
        );
    }
    // ...and it gets them when it comes back on node C, its session resumed there.
    let mut args = persistent.to_vec();
    args.extend(["-C", "3", "-W", "10"]);
    let sub = c.mqtt_sub("mover", &cert, &key, &args);
    assert_eq!(
        lines_of(sub, Duration::from_secs(10)),
        ["cmd-0", "cmd-1", "cmd-2"]
    );

    // Connected to C, it connects to A: C closes the old connection (session taken over).
    let mut on_c = c.mqtt_sub("mover", &cert, &key, &persistent);
    assert!(has_session(c, "mover"));
    let mut on_a = a.mqtt_sub("mover", &cert, &key, &persistent);
    assert!(
        ends_within(&mut on_c, Duration::from_secs(5)).is_some(),
        "node C kept the connection node A took over"
    );
    assert!(has_session(a, "mover") && !has_session(c, "mover"));
    let _ = on_a.kill();
    let _ = on_a.wait();

    // Two CONNECTs with one client id at once on two nodes: one session remains.
    for round in 0..3 {
        let mut x = b.mqtt_sub_nowait("mover", &cert, &key, &persistent);
        let mut y = c.mqtt_sub_nowait("mover", &cert, &key, &persistent);
        std::thread::sleep(Duration::from_secs(2));
        let alive = [x.try_wait(), y.try_wait()]
            .iter()
            .filter(|s| matches!(s, Ok(None)))
            .count();
        let listed = [b, c].iter().filter(|n| has_session(n, "mover")).count();
        assert_eq!(
            (alive, listed),
            (1, 1),
            "round {round}: connections alive, nodes listing it"
        );
        for p in [&mut x, &mut y] {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// `n` `moat serve` processes of one cluster (kill -9 works on them), each restarted on the
/// same MQTT address.
fn process_nodes(c: &Cluster, n: usize) -> Vec<TestHub> {
    let mut nodes: Vec<TestHub> = Vec::new();
    for i in 0..n {
        let dir = c.nodes_dir.path().join(format!("p{i}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut cfg = format!(
            "database = \"{}\"\n[cluster]\nnats = [\"{}\"]\nnode = \"proc-{i}\"\nheartbeat_interval = \"500ms\"\n",
            c.db_url,
            c.nats.url()
        );
        let mut hub_args = vec!["--config".to_string()];
        let first = nodes.first().map(|f| f.data.clone());
        if let Some(first) = &first {
            cfg.push_str(&format!(
                "[vault]\nkey_file = \"{}\"\n",
                first.join("master.key").display()
            ));
        }
        let file = dir.join("moat.toml");
        std::fs::write(&file, cfg).expect("config");
        hub_args.push(file.display().to_string());
        let args: Vec<&str> = hub_args.iter().map(String::as_str).collect();
        let mut hub = TestHub::unstarted_process(&args, &[]);
        if let Some(first) = &first {
            std::fs::create_dir_all(&hub.data).expect("data dir");
            std::fs::copy(first.join("admin.token"), hub.data.join("admin.token")).expect("token");
        }
        hub.spawn().expect("node starts");
        hub.keep_mqtt_address();
        nodes.push(hub);
    }
    nodes
}

#[test]
fn a_node_killed_its_devices_resume_their_sessions_on_another_through_haproxy() {
    let Some(cluster) = Cluster::start("killed", 0, Duration::from_secs(1)) else {
        return;
    };
    if !moat_testkit::haproxy::Haproxy::available() {
        return;
    }
    let mut nodes = process_nodes(&cluster, 2);
    let lb = moat_testkit::haproxy::Haproxy::start(
        &nodes.iter().map(|n| n.mqtt_tls.clone()).collect::<Vec<_>>(),
    );
    let (cert, key) = device(&nodes[0], "roamer");
    let (acert, akey) = app(&nodes[0], "ops", &["--publish", "devices/+/cmd"]);
    let bundle = nodes[0].bundle();
    let via_lb = |id: &str, cert: &Path, key: &Path, args: &[&str]| {
        let port = lb.port().to_string();
        let mut c = std::process::Command::new("mosquitto_sub");
        c.args(["-h", "localhost", "-p", &port, "-i", id])
            .args(args)
            .arg("--cafile")
            .arg(&bundle)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().expect("mosquitto_sub")
    };
    let persistent = [
        "-t",
        "devices/roamer/cmd",
        "-q",
        "1",
        "-c",
        "-x",
        "3600",
        "-V",
        "mqttv5",
    ];
    // A persistent session through the balancer, on whichever node it picked.
    let mut sub = via_lb("roamer", &cert, &key, &persistent);
    let deadline = Instant::now() + Duration::from_secs(10);
    let on = loop {
        if let Some(i) = (0..2).find(|&i| has_session(&nodes[i], "roamer")) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "roamer never connected through HAProxy"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let other = 1 - on;
    let _ = sub.kill();
    let _ = sub.wait();
    std::thread::sleep(Duration::from_millis(300));
    // Commands acknowledged by its node while it is away...
    for i in 0..5 {
        publish_q1(
            &nodes[on],
            "ops",
            &acert,
            &akey,
            "devices/roamer/cmd",
            &format!("before-{i}"),
        );
    }
    // ...survive that node's kill -9: the device comes back through the balancer on the
    // other node, its session (and the commands) resumed there.
    nodes[on].kill();
    let mut args = persistent.to_vec();
    args.extend(["-C", "6", "-W", "20"]);
    let sub = via_lb("roamer", &cert, &key, &args);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !has_session(&nodes[other], "roamer") {
        assert!(
            Instant::now() < deadline,
            "roamer did not reconnect to the surviving node"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    publish_q1(
        &nodes[other],
        "ops",
        &acert,
        &akey,
        "devices/roamer/cmd",
        "after",
    );
    assert_eq!(
        lines_of(sub, Duration::from_secs(20)),
        [
            "before-0", "before-1", "before-2", "before-3", "before-4", "after"
        ]
    );
    // The killed node comes back and the device is not resurrected there.
    nodes[on].spawn().expect("the killed node restarts");
    assert!(!has_session(&nodes[on], "roamer"));
}

/// Publishes `msg` on `topic` at QoS 1 over MQTT 5 as `id` through `node`; requires the PUBACK.
fn publish_q1(node: &TestHub, id: &str, cert: &Path, key: &Path, topic: &str, msg: &str) {
    let out = node.mqtt_pub(
        id,
        cert,
        key,
        &["-t", topic, "-m", msg, "-q", "1", "-V", "mqttv5"],
    );
    assert!(
        out.status.success(),
        "{}",
        moat_testkit::process::text(&out)
    );
}

/// What mosquitto_sub says when `id` tries to connect to `node` over mutual TLS (`version`).
fn connect_says(node: &TestHub, id: &str, cert: &Path, key: &Path, version: &str) -> String {
    let topic = format!("devices/{id}/x");
    let out = node.mqtt_pub(id, cert, key, &["-t", &topic, "-m", "x", "-V", version]);
    moat_testkit::process::text(&out)
}

#[test]
fn with_postgresql_gone_new_work_is_refused_live_sessions_go_on_and_it_recovers() {
    let Some(mut cluster) = Cluster::start("pgdown", 0, Duration::from_secs(1)) else {
        return;
    };
    // The nodes reach PostgreSQL through a relay the test cuts.
    let (head, rest) = cluster.db_url.split_once('@').expect("user@host");
    let (hostport, db) = rest.split_once('/').expect("host/db");
    let target: std::net::SocketAddr = hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("host:port");
    let relay = moat_testkit::proxy::TcpProxy::start(target);
    cluster.db_url = format!("{head}@{}/{db}", relay.addr());
    cluster.add_node(0);
    cluster.add_node(1);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (cert, key) = device(a, "steady");
    let (cert2, key2) = device(a, "newcomer");
    let (acert, akey) = app(a, "watch", &["--subscribe", "devices/#"]);
    // Connected before: a publisher on A (one message per line) and a watcher on B.
    let (host, port) = a.mqtt_tls.rsplit_once(':').expect("addr");
    let mut publisher = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-i",
            "steady",
            "-t",
            "devices/steady/t",
            "-l",
            "-q",
            "1",
        ])
        .arg("--cafile")
        .arg(a.bundle())
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    let watcher = b.mqtt_sub(
        "watch",
        &acert,
        &akey,
        &["-t", "devices/steady/#", "-C", "2", "-W", "30"],
    );
    std::thread::sleep(INTEREST_SETTLES);
    let mut stdin = publisher.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"before\n").expect("write");

    relay.cut();
    // New CONNECTs: Server unavailable (v5 0x88, v3.1.1 return code 3), on both nodes.
    for (n, version) in [(a, "mqttv5"), (b, "mqttv311")] {
        let said = connect_says(n, "newcomer", &cert2, &key2, version).to_lowercase();
        assert!(said.contains("unavailable"), "{version}: {said}");
    }
    // Admin writes: 503 with a problem document.
    let said = a.fails(&[
        "device",
        "create",
        "late",
        "--out",
        a.path("late").to_str().expect("p"),
    ]);
    assert!(said.contains("unavailable"), "{said}");
    // The live session goes on: across nodes, without the registry.
    std::io::Write::write_all(&mut stdin, b"during\n").expect("write");
    assert_eq!(
        lines_of(watcher, Duration::from_secs(30)),
        ["before", "during"]
    );

    relay.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let said = connect_says(a, "newcomer", &cert2, &key2, "mqttv5");
        if !said.to_lowercase().contains("unavailable") && !said.contains("rror") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after PostgreSQL came back: {said}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.ok(&[
        "device",
        "create",
        "late",
        "--out",
        a.path("late2").to_str().expect("p"),
    ]);
    drop(stdin);
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[test]
fn a_cluster_on_sqlite_is_refused_with_what_to_use() {
    let err = match TestHub::start_node(|cfg| {
        cfg.cluster.nats = vec!["nats://127.0.0.1:4222".into()];
    }) {
        Ok(_) => panic!("a cluster node started on SQLite"),
        Err(e) => e,
    };
    assert!(err.contains("PostgreSQL"), "{err}");
    assert!(err.contains("--database postgres://"), "{err}");
}
