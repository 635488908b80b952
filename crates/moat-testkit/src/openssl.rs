//! openssl as a peer: keys and CSRs of every type the hub is asked about, `verify` against a
//! bundle with CRLs.

use crate::process::{run, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs openssl and requires success; returns its output.
pub fn openssl(args: &[&str]) -> String {
    let (ok, text) = run("openssl", args);
    assert!(ok, "openssl {args:?} failed: {text}");
    text
}

/// Runs openssl in `dir` (relative paths are files there); the caller judges the outcome.
pub fn openssl_in(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (apt-get install openssl)")
}

/// Runs openssl in `dir` and requires success; returns its output.
pub fn openssl_ok_in(dir: &Path, args: &[&str]) -> String {
    let out = openssl_in(dir, args);
    let t = text(&out);
    assert!(out.status.success(), "openssl {args:?}: {t}");
    t
}

/// Makes `dir/name.key` and `dir/name.csr` (subject CN=`name`) with openssl. `kind`: p256,
/// p384, ed25519, rsa2048, rsa1024; `extra` goes to `openssl req`.
pub fn make_csr(dir: &Path, name: &str, kind: &str, extra: &[&str]) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let key_s = key.to_str().expect("path");
    let mut args: Vec<&str> = vec!["req", "-new", "-nodes", "-subj"];
    let subj = format!("/CN={name}");
    args.push(&subj);
    let newkey: Vec<&str> = match kind {
        "p256" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "ed25519" => vec!["-newkey", "ed25519"],
        "rsa2048" => vec!["-newkey", "rsa:2048"],
        "rsa1024" => vec!["-newkey", "rsa:1024"],
        other => panic!("unknown key kind {other}"),
    };
    args.extend(newkey);
    args.extend(["-keyout", key_s, "-out", csr.to_str().expect("path")]);
    args.extend_from_slice(extra);
    openssl(&args);
    csr
}

/// `openssl verify` of a leaf (first cert in `chain_file`) against `bundle`, with the rest
/// of the file as untrusted intermediates, for client authentication, and `crl` checked if
/// given. Returns (ok, output).
pub fn openssl_verify(bundle: &Path, chain_file: &Path, crl: Option<&Path>) -> (bool, String) {
    let b = bundle.to_str().expect("path");
    let c = chain_file.to_str().expect("path");
    let mut args = vec![
        "verify",
        "-CAfile",
        b,
        "-untrusted",
        c,
        "-purpose",
        "sslclient",
    ];
    if let Some(crl) = crl {
        args.extend(["-crl_check", "-CRLfile", crl.to_str().expect("path")]);
    }
    args.push(c);
    run("openssl", &args)
}
