//! SoftHSM2 for tests: a private token directory with initialised tokens ([`SoftHsm`]), the
//! module's path, test scenarios run in a child process (a PKCS#11 library is initialised
//! once per process), and a session of our own on a token, logged in as the user, to read
//! what the token holds (is the key sensitive, never extractable?) without going through the
//! code under test.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// SoftHSM2's PKCS#11 module on this machine: `MOAT_SOFTHSM_MODULE`, else where Debian,
/// Fedora and a source build put it.
pub fn module_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOAT_SOFTHSM_MODULE") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A SoftHSM2 token directory of the test's own, removed when dropped. Point the code under
/// test at it with `SOFTHSM2_CONF` = [`SoftHsm::conf`] and the module [`SoftHsm::module`].
#[derive(Debug)]
pub struct SoftHsm {
    dir: tempfile::TempDir,
    /// The configuration file naming the token directory.
    pub conf: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
}

impl SoftHsm {
    /// Initialises one token per label, each with user PIN `pin` and SO PIN `so_pin`. Where
    /// SoftHSM2 is not installed: None after saying so, or a panic when `CI` is set (a
    /// missing peer is a failure there, not a skip).
    pub fn new(labels: &[&str], pin: &str, so_pin: &str) -> Option<SoftHsm> {
        let util = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let Some(module) = module_path().filter(|_| util) else {
            let msg = "softhsm2-util or libsofthsm2.so not found (apt-get install -y softhsm2)";
            assert!(
                std::env::var_os("CI").is_none(),
                "{msg}; CI is set, so this is a failure, not a skip"
            );
            eprintln!("SKIPPED: {msg}");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        for label in labels {
            let out = Command::new("softhsm2-util")
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--pin",
                    pin,
                    "--so-pin",
                    so_pin,
                ])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("run softhsm2-util");
            assert!(
                out.status.success(),
                "softhsm2-util --init-token --label {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(SoftHsm { dir, conf, module })
    }

    /// The directory holding the tokens and the configuration (scratch space of the test).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the `#[ignore]`d test `name` of the current test binary, alone, in a process of
    /// its own with `SOFTHSM2_CONF`, `MOAT_TEST_MODULE` and `env` set.
    pub fn run_child(&self, name: &str, env: &[(&str, &OsStr)]) -> Output {
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &self.conf)
        .env("MOAT_TEST_MODULE", &self.module);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run the child test")
    }
}

/// Opens a session on the token labelled `token` of `module` and logs in with `pin`;
/// read-write when `rw`. Tolerates a library or user already initialised/logged in by the
/// code under test in the same process.
pub fn token_session(module: &Path, token: &str, pin: &str, rw: bool) -> Session {
    let ctx = Pkcs11::new(module).expect("load module");
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| ctx.get_token_info(*s).expect("info").label().trim_end() == token)
        .expect("token");
    let session = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .expect("session");
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    session
}
