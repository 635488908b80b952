//! Operator accounts and roles over the real API and CLI: a read-only operator reads but
//! cannot revoke (CLI and curl), an operator runs the fleet but cannot touch the hub's trust,
//! every action is audited under the operator's name, and a deleted account's token stops
//! working.

mod common;

use common::*;

/// curl against the admin API with a bearer token: (status, body).
fn api(hub: &TestHub, token: &str, method: &str, path: &str) -> (u16, String) {
    let out = hub.path(&format!("roles-{}", rand_u64()));
    let (_, status) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            hub.bundle().to_str().expect("p"),
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-o",
            out.to_str().expect("p"),
            "-w",
            "%{http_code}",
            &format!("{}{path}", hub.admin_url),
        ],
    );
    (
        status.trim().parse().unwrap_or(0),
        std::fs::read_to_string(&out).unwrap_or_default(),
    )
}

fn token_of(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("moat_op_"))
        .expect("token printed")
        .to_string()
}

#[test]
fn roles_limit_what_operators_may_do() {
    let hub = TestHub::start();
    let dir = hub.path("creds");
    let o = dir.to_str().expect("p");
    hub.ok(&["device", "create", "d1", "--out", o]);
    hub.ok(&["device", "create", "d2", "--out", o]);
    let viewer = token_of(&hub.ok(&["operator", "create", "viewer", "--role", "read-only"]));
    let ops = token_of(&hub.ok(&["operator", "create", "ops", "--role", "operator"]));
    let e = hub.fails(&["operator", "create", "admin", "--role", "admin"]);
    assert!(e.contains("bootstrap"), "{e}");
    let e = hub.fails(&["operator", "create", "viewer", "--role", "admin"]);
    assert!(e.contains("already exists"), "{e}");
    let viewer_file = hub.path("viewer.token");
    std::fs::write(&viewer_file, &viewer).expect("write");
    let ops_file = hub.path("ops.token");
    std::fs::write(&ops_file, &ops).expect("write");
    let as_viewer = |args: &[&str]| {
        let mut a = vec!["--token-file", viewer_file.to_str().expect("p")];
        a.extend_from_slice(args);
        hub.cli(&a)
    };
    let as_ops = |args: &[&str]| {
        let mut a = vec!["--token-file", ops_file.to_str().expect("p")];
        a.extend_from_slice(args);
        hub.cli(&a)
    };

    // Read-only: reads everything, changes nothing, through the CLI and the API.
    let out = as_viewer(&["device", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("d1"));
    let out = as_viewer(&["device", "revoke", "d1"]);
    assert!(!out.status.success());
    let line = one_line_error(&out);
    assert!(
        line.contains("read-only") && line.contains("ask an admin"),
        "{line}"
    );
    let (status, body) = api(&hub, &viewer, "POST", "/api/v1/devices/d1/revoke");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("\"forbidden\"") || body.contains("forbidden"),
        "{body}"
    );
    assert_eq!(api(&hub, &viewer, "GET", "/api/v1/operators").0, 403);
    assert_eq!(api(&hub, &viewer, "GET", "/api/v1/posture").0, 200);
    assert_eq!(
        hub.json(&["device", "show", "d1"])["device"]["state"],
        "active"
    );

    // Operator: runs the fleet, audited under its own name; the hub's trust is admin only.
    let out = as_ops(&["device", "revoke", "d1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        hub.json(&["device", "show", "d1"])["device"]["state"],
        "revoked"
    );
    let audit = hub.json(&["audit", "--limit", "20"]);
    assert!(
        audit
            .as_array()
            .expect("a")
            .iter()
            .any(|e| e["actor"] == "operator:ops"
                && e["action"] == "device.revoke"
                && e["outcome"] == "ok"),
        "{audit}"
    );
    let out = as_ops(&["ca", "registration-code"]);
    assert!(!out.status.success());
    assert!(one_line_error(&out).contains("operator role"), "{out:?}");
    assert_eq!(api(&hub, &ops, "POST", "/api/v1/server/rotate").0, 403);
    let out = as_ops(&["operator", "create", "sneaky", "--role", "admin"]);
    assert!(!out.status.success());
    assert!(
        hub.ok(&["audit", "--limit", "20"])
            .contains("admin.forbidden"),
        "refusals are audited"
    );

    // Accounts end: a deleted operator's token is refused at once; wrong tokens too.
    hub.ok(&["operator", "delete", "viewer"]);
    assert_eq!(api(&hub, &viewer, "GET", "/api/v1/devices").0, 401);
    assert_eq!(
        api(&hub, "moat_op_nonsense", "GET", "/api/v1/devices").0,
        401
    );
    let list = hub.json(&["operator", "list"]);
    assert_eq!(list.as_array().expect("a").len(), 1, "{list}");
    assert_eq!(list[0]["role"], "operator");
}
