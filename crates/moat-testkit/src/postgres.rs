//! Fresh databases on the test suite's PostgreSQL server (`MOAT_TEST_DATABASE_URL`, which
//! `scripts/test` sets after starting one), made and dropped with `psql`.

use crate::process::run;

/// The server's URL, if the suite has one. With `CI` set it must: the test fails instead of
/// skipping.
pub fn server_url() -> Option<String> {
    match std::env::var("MOAT_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but MOAT_TEST_DATABASE_URL is not (scripts/test starts PostgreSQL)"
            );
            eprintln!("SKIPPED: set MOAT_TEST_DATABASE_URL to run this test on PostgreSQL");
            None
        }
    }
}

/// An empty database named `name` (dropped first if it exists) on `server`; returns its URL.
pub fn fresh_database(server: &str, name: &str) -> String {
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        let (ok, text) = run("psql", &[server, "-X", "-q", "-c", &sql]);
        assert!(ok, "{sql}: {text}");
    }
    let base = server.rsplit_once('/').expect("the URL names a database").0;
    format!("{base}/{name}")
}

/// Drops database `name` on `server` (best effort: end of a test).
pub fn drop_database(server: &str, name: &str) {
    let _ = run(
        "psql",
        &[
            server,
            "-X",
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ],
    );
}
