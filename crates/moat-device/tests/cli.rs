//! The device subcommands of `moat-device` on bad and good input: one `error:` line that
//! names the fix, never a panic; a file key store made and reopened from the command line.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_moat-device");

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("MOAT_DEVICE_PASSPHRASE")
        .env_remove("MOAT_DEVICE_PIN");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run moat-device")
}

/// Requires failure with exactly one `error:` line on stderr (no panic); returns it.
fn error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    lines[0].to_owned()
}

#[test]
fn key_generate_and_show_with_a_file_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("file:{}", tmp.path().join("ks").display());
    let pw = [("MOAT_DEVICE_PASSPHRASE", "s3cret passphrase")];
    let out = run(
        &["key", "generate", "--store", &store, "--label", "dev"],
        &pw,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(made["backend"], "software");
    assert!(
        made["public_key_pem"]
            .as_str()
            .expect("pem")
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    let out = run(&["key", "show", "--store", &store, "--label", "dev"], &pw);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["public_key_pem"], made["public_key_pem"]);

    let e = error_line(&run(
        &["key", "generate", "--store", &store, "--label", "dev"],
        &pw,
    ));
    assert!(e.contains("never overwritten"), "{e}");
    let e = error_line(&run(
        &["key", "show", "--store", &store, "--label", "dev"],
        &[("MOAT_DEVICE_PASSPHRASE", "wrong")],
    ));
    assert!(e.contains("wrong passphrase"), "{e}");
    let e = error_line(&run(
        &["key", "show", "--store", &store, "--label", "dev"],
        &[],
    ));
    assert!(e.contains("MOAT_DEVICE_PASSPHRASE"), "{e}");
    let e = error_line(&run(
        &["key", "show", "--store", &store, "--label", "nope"],
        &pw,
    ));
    assert!(e.contains("key generate"), "{e}");
}

#[test]
fn bad_input_gets_one_line_that_names_the_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = error_line(&run(&["key", "generate", "--store", "/tmp/x"], &[]));
    assert!(e.contains("file:DIR") && e.contains("pkcs11:"), "{e}");
    let e = error_line(&run(
        &[
            "key",
            "generate",
            "--store",
            "pkcs11:token=t?pin-value=1234",
        ],
        &[],
    ));
    assert!(e.contains("module-path") && !e.contains("1234"), "{e}");
    let e = error_line(&run(
        &[
            "key",
            "generate",
            "--store",
            "pkcs11:token=t?module-path=/nonexistent/lib.so",
        ],
        &[("MOAT_DEVICE_PIN", "1")],
    ));
    assert!(e.contains("no such PKCS#11 module"), "{e}");

    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").expect("write");
    let e = error_line(&run(
        &[
            "cacerts",
            "--est",
            "https://127.0.0.1:1",
            "--ca",
            ca.to_str().expect("p"),
        ],
        &[],
    ));
    assert!(e.contains("--ca") && e.contains("CERTIFICATE"), "{e}");
    let e = error_line(&run(
        &[
            "est-enroll",
            "--est",
            "https://127.0.0.1:1",
            "--ca",
            ca.to_str().expect("p"),
            "--store",
            "file:/x",
            "--serial",
            "S",
            "--out",
            "/tmp/never",
        ],
        &[],
    ));
    assert!(e.contains("--station-cert") || e.contains("--ca"), "{e}");
}
