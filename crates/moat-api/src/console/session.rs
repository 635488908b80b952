//! Console sign-in sessions, held in the hub's memory (a restart signs everyone out).
//!
//! The browser holds a random 256-bit session id in the `__Host-moat_session` cookie
//! (`HttpOnly; Secure; SameSite=Strict; Path=/`); the hub keeps only its SHA-256, so a memory
//! dump or a log line never yields a usable cookie. Each session has its own CSRF token,
//! which every form carries and every state-changing request must present.
//!
//! A session ends after [`IDLE`] without a request, after [`ABSOLUTE`] in any case, on sign
//! out, and when its operator account is deleted (checked on each request).

use moat_core::{Principal, Secret};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name (the `__Host-` prefix makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`).
pub(crate) const COOKIE: &str = "__Host-moat_session";
/// A session ends after this long without a request.
pub(crate) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, active or not.
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);
/// Live sessions kept at most; the oldest go first beyond that.
const MAX_SESSIONS: usize = 10_000;

/// Credentials created by an action and shown once: the next page that displays them takes
/// them out of the session, so a reload shows nothing.
#[derive(Debug)]
pub(crate) struct Reveal {
    /// The device they belong to.
    pub device_id: String,
    /// What happened (`created`, `rotated`).
    pub what: &'static str,
    /// The certificate chain, PEM.
    pub certificate_pem: String,
    /// The hub-generated private key, PEM (not kept by the hub).
    pub private_key_pem: Option<Secret>,
    /// The device token, when its policy allows token authentication.
    pub token: Option<Secret>,
}

/// A one-line message for the next page (after a redirect).
#[derive(Clone, Debug)]
pub(crate) struct Flash {
    /// `ok` or `error`.
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

#[derive(Debug)]
struct Session {
    principal: Principal,
    csrf: String,
    created: Instant,
    last_used: Instant,
    reveal: Option<Reveal>,
    flash: Option<Flash>,
}

/// What a request learns from its session.
#[derive(Clone, Debug)]
pub(crate) struct Signed {
    /// Who.
    pub principal: Principal,
    /// The session's CSRF token (forms embed it).
    pub csrf: String,
    /// The session key (hash of the cookie), to reach the session again.
    pub key: String,
}

/// The live sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

fn key_of(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave a session half-written (every change
        // is one assignment), so a poisoned map is still sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs `principal` in: returns the cookie value (the only copy of the session id).
    pub(crate) fn create(&self, principal: Principal) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key_of(&id),
            Session {
                principal,
                csrf: random_hex(),
                created: now,
                last_used: now,
                reveal: None,
                flash: None,
            },
        );
        id
    }

    /// The session a cookie names, if it is alive (and marks it used).
    pub(crate) fn get(&self, cookie: &str) -> Option<Signed> {
        let key = key_of(cookie);
        let now = Instant::now();
        let mut map = self.lock();
        let s = map.get_mut(&key)?;
        if !alive(s, now) {
            map.remove(&key);
            return None;
        }
        s.last_used = now;
        Some(Signed {
            principal: s.principal.clone(),
            csrf: s.csrf.clone(),
            key,
        })
    }

    /// Ends a session.
    pub(crate) fn end(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Ends every session of the operator `name`.
    pub(crate) fn end_for(&self, name: &str) {
        self.lock().retain(|_, s| s.principal.name != name);
    }

    /// Leaves credentials for the next page to show once.
    pub(crate) fn set_reveal(&self, key: &str, reveal: Reveal) {
        if let Some(s) = self.lock().get_mut(key) {
            s.reveal = Some(reveal);
        }
    }

    /// Takes the credentials left for `device_id`, if any (they are gone afterwards).
    pub(crate) fn take_reveal(&self, key: &str, device_id: &str) -> Option<Reveal> {
        let mut map = self.lock();
        let s = map.get_mut(key)?;
        match &s.reveal {
            Some(r) if r.device_id == device_id => s.reveal.take(),
            _ => None,
        }
    }

    /// Leaves a message for the next page.
    pub(crate) fn set_flash(&self, key: &str, kind: &'static str, text: impl Into<String>) {
        if let Some(s) = self.lock().get_mut(key) {
            s.flash = Some(Flash {
                kind,
                text: text.into(),
            });
        }
    }

    /// Takes the message left for this page.
    pub(crate) fn take_flash(&self, key: &str) -> Option<Flash> {
        self.lock().get_mut(key).and_then(|s| s.flash.take())
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_used) < IDLE && now.duration_since(s.created) < ABSOLUTE
}

/// Whether `presented` is the session's CSRF token. Digests are compared, not the tokens,
/// so the comparison's timing tells an attacker nothing about the token.
pub(crate) fn csrf_matches(expected: &str, presented: &str) -> bool {
    Sha256::digest(expected.as_bytes()) == Sha256::digest(presented.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_reveal_once_and_end() {
        let s = Sessions::default();
        let cookie = s.create(Principal::bootstrap_admin());
        let signed = s.get(&cookie).expect("alive");
        assert_eq!(signed.principal.name, "admin");
        assert!(s.get("not-a-session").is_none());
        s.set_reveal(
            &signed.key,
            Reveal {
                device_id: "d1".into(),
                what: "created",
                certificate_pem: "c".into(),
                private_key_pem: Some(Secret::new("k".into())),
                token: None,
            },
        );
        assert!(s.take_reveal(&signed.key, "d2").is_none());
        assert!(s.take_reveal(&signed.key, "d1").is_some());
        assert!(s.take_reveal(&signed.key, "d1").is_none(), "shown once");
        assert!(csrf_matches(&signed.csrf, &signed.csrf.clone()));
        assert!(!csrf_matches(&signed.csrf, "forged"));
        s.end_for("admin");
        assert!(s.get(&cookie).is_none());
    }
}
