//! Bad arguments to every command: a one-line error that says what to do, non-zero exit.

mod common;

use common::*;
use std::process::{Command, Stdio};

fn moat(args: &[&str]) -> std::process::Output {
    Command::new(MOAT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run moat")
}

#[test]
fn usage_errors_are_one_line_with_a_hint() {
    let cases: &[&[&str]] = &[
        &["frobnicate"],
        &["device", "create"],
        &["device", "create", "x", "--bogus"],
        &["device", "create", "x", "--csr", "a", "--cert", "b"],
        &["device", "revoke"],
        &["device", "list", "--limit", "many"],
        &["device", "show"],
        &["device", "disable"],
        &["device", "enable"],
        &["device", "delete"],
        &["cert", "revoke"],
        &["cert", "explain"],
        &["cert", "list", "--limit", "-1"],
        &["ca", "register", "--cert", "x"],
        &[
            "ca",
            "register",
            "--cert",
            "x",
            "--verification-cert",
            "y",
            "--identity",
            "serial",
        ],
        &["ca", "remove"],
        &["ca", "nonsense"],
        &["crl", "--ca"],
        &["audit", "--limit", "x"],
        &["serve", "--api-listen", "not-an-address"],
        &["config", "nonsense"],
        &["server", "rotate", "now"],
        &["session", "kick"],
        &["acl", "assign", "p"],
        &["allowlist", "add"],
        &["allowlist", "reset"],
        &["allowlist", "list", "--limit", "x"],
        &["station", "create", "line-1"],
        &["station", "delete"],
    ];
    for args in cases {
        let out = moat(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "moat {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = one_line_error(&out);
        assert!(
            line.contains("usage:") || line.contains("--help"),
            "moat {args:?}: {line}"
        );
    }
}

#[test]
fn commands_without_a_hub_say_how_to_find_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("p");
    for args in [
        vec!["--data-dir", d, "device", "list"],
        vec!["--data-dir", d, "ca", "bundle"],
        vec!["--data-dir", d, "crl"],
        vec!["--data-dir", d, "audit"],
        vec!["--data-dir", d, "cert", "list"],
    ] {
        let out = moat(&args);
        assert_eq!(out.status.code(), Some(1));
        let line = one_line_error(&out);
        assert!(
            line.contains("moat serve") && line.contains("--hub"),
            "{line}"
        );
    }
    // Pointing at a dead hub.
    let out = moat(&[
        "--data-dir",
        d,
        "--hub",
        "https://127.0.0.1:1",
        "--token-file",
        "/nonexistent",
        "device",
        "list",
    ]);
    let line = one_line_error(&out);
    assert!(line.contains("--token-file"), "{line}");
}

#[test]
fn semantic_errors_with_a_running_hub() {
    let hub = TestHub::start();
    let missing = hub.path("missing.pem");
    let m = missing.to_str().expect("p");
    let e = hub.fails(&["device", "create", "x"]);
    assert!(e.contains("--out"), "{e}");
    let e = hub.fails(&["device", "create", "x", "--csr", m]);
    assert!(e.contains("cannot read CSR"), "{e}");
    let e = hub.fails(&["device", "show", "nope"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["device", "revoke", "nope", "--reason", "because"]);
    assert!(e.contains("unknown --reason"), "{e}");
    let e = hub.fails(&["device", "revoke", "nope"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["device", "disable", "nope"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["device", "delete", "nope"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["cert", "revoke", "zz-not-hex"]);
    assert!(e.contains("serial"), "{e}");
    let e = hub.fails(&["cert", "revoke", "abcdef"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["cert", "explain", m]);
    assert!(e.contains("cannot read"), "{e}");
    let e = hub.fails(&["ca", "remove", "nope"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["ca", "register", "--cert", m, "--verification-cert", m]);
    assert!(e.contains("cannot read"), "{e}");
    let e = hub.fails(&["crl", "--ca", "nope"]);
    assert!(e.contains("not found"), "{e}");
    // A wrong admin token.
    let bad = hub.path("bad.token");
    std::fs::write(&bad, "moat_adm_wrong\n").expect("w");
    let e = hub.fails(&["--token-file", bad.to_str().expect("p"), "device", "list"]);
    assert!(e.contains("admin token"), "{e}");
    let audit = hub.json(&["audit"]);
    assert!(
        audit
            .as_array()
            .expect("a")
            .iter()
            .any(|e| e["action"] == "admin.authenticate" && e["outcome"] == "refused"),
        "failed admin logins are audited: {audit}"
    );
}

#[test]
fn config_default_is_valid_toml_that_serve_accepts() {
    let out = moat(&["config", "default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("[api]") && text.contains("8443") && text.contains("8080"));
    let dir = tempfile::tempdir().expect("tempdir");
    // A bad key in a config file is named, with a hint, before anything is created.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[vault]\nsorce = \"file\"\n").expect("w");
    let data = dir.path().join("data");
    let out = moat(&[
        "--data-dir",
        data.to_str().expect("p"),
        "serve",
        "--config",
        cfg.to_str().expect("p"),
    ]);
    let line = one_line_error(&out);
    assert!(
        line.contains("sorce") && line.contains("moat config default"),
        "{line}"
    );
    assert!(!data.exists(), "nothing created on a config error");
}
