//! A session of our own on a SoftHSM2 (any PKCS#11) token, logged in as the user: tests read
//! what the token holds (is the key sensitive, never extractable?) without going through the
//! code under test.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::Path;

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
