//! The device side of gateways, for devices without IP (LoRa, BLE, a serial bus): each
//! message is a COSE_Sign1 object ([`moat_cose`]) signed with the device's key, naming its
//! certificate (`x5t`) and carrying a counter; downlinks come back the same way, signed by an
//! application whose certificate the device trusts.
//!
//! ```text
//!  device: CounterFile::take ─▶ sign_frame (≤ 222 bytes) ─▶ link ─▶ gateway ─▶ hub (checks)
//!  device: link ─▶ DownlinkCheck::accept (trusted signer, signature, window kept in a file)
//! ```
//!
//! - [`CounterFile`]: the next counter, written (temporary file, fsync, rename) before the
//!   message that uses it leaves, so a power cut never makes the device reuse one (the hub
//!   would refuse the message as a replay; worse, two messages would share a counter).
//! - [`sign_frame`]: the object for one payload, refused if it exceeds [`MAX_FRAME`]. Signing
//!   goes through [`moat_cose::Sign1Signer`] (a digest in, r ‖ s out), so a secure element can
//!   do it; a software P-256 key implements it.
//! - [`sign_sealed_frame`]: the same, with the payload first encrypted to the receiving
//!   application's key ([`moat_cose::seal`]: COSE_Encrypt, ECDH-ES + HKDF-256, A128GCM): the
//!   gateway and the hub relay and store only ciphertext, and still check who sent it.
//!   [`application_key`] reads that key. 14 bytes of plaintext fit a 222-byte frame.
//! - [`DownlinkCheck`]: the device's check of a downlink: the `x5t` names a signer it trusts,
//!   the signature verifies, the counter is fresh in its [`ReplayWindow`], whose new state is
//!   written before the command is acted on.
//!
//! The same `no_std` code (moat-cose) runs on a microcontroller; this module adds the files a
//! device with a file system keeps.

use std::path::{Path, PathBuf};

use moat_cose::{ReplayWindow, Sign1Signer, Tagging, X5t, decode_sign1, encode_sign1};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;

use crate::{Error, files};

/// The largest frame on the simulated link: a LoRaWAN frame payload at its largest data rate.
pub const MAX_FRAME: usize = 222;

/// A device's next message counter, in a file.
#[derive(Clone, Debug)]
pub struct CounterFile {
    path: PathBuf,
}

impl CounterFile {
    /// The counter kept at `path` (0 when the file does not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CounterFile { path: path.into() }
    }

    /// The counter to use now; the next one is stored before this returns.
    pub fn take(&self) -> Result<u64, Error> {
        let now = match std::fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| Error::BadInput {
                what: self.path.display().to_string(),
                problem: "not a message counter (a decimal number)".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(&self.path)(e)),
        };
        if now > moat_cose::MAX_COUNTER {
            return Err(Error::Cose(moat_cose::Error::CounterOutOfRange {
                counter: now,
            }));
        }
        files::write_atomic(&self.path, format!("{}\n", now + 1).as_bytes())?;
        Ok(now)
    }
}

/// The signed object for `payload` with `counter`, naming the certificate `cert_der`:
/// untagged (a byte less on the link), at most [`MAX_FRAME`] bytes.
pub fn sign_frame<S: Sign1Signer + ?Sized>(
    signer: &S,
    cert_der: &[u8],
    counter: u64,
    payload: &[u8],
) -> Result<Vec<u8>, Error>
where
    S::Error: std::fmt::Display,
{
    let mut frame = [0u8; MAX_FRAME];
    let x5t = X5t::of_certificate(cert_der);
    let len = encode_sign1(
        &mut frame,
        payload,
        counter,
        &x5t,
        Tagging::Untagged,
        signer,
    )
    .map_err(|e| match e {
        moat_cose::EncodeError::BufferTooSmall { .. } => Error::FrameTooLarge {
            payload: payload.len(),
            max: moat_cose::max_payload_len(MAX_FRAME, counter, Tagging::Untagged).unwrap_or(0),
        },
        other => Error::BadInput {
            what: "signing the message".into(),
            problem: other.to_string(),
        },
    })?;
    Ok(frame[..len].to_vec())
}

/// The largest plaintext whose sealed and signed object fits a frame, at `counter`.
pub fn max_sealed_payload(counter: u64) -> usize {
    (0..MAX_FRAME)
        .rev()
        .find(|&p| {
            moat_cose::encoded_len(moat_cose::sealed_len(p), counter, Tagging::Untagged)
                <= MAX_FRAME
        })
        .unwrap_or(0)
}

/// The signed object for `plaintext` encrypted to `application` (see [`sign_frame`]): a new
/// ephemeral key and IV per message, at most [`MAX_FRAME`] bytes.
pub fn sign_sealed_frame<S: Sign1Signer + ?Sized>(
    signer: &S,
    cert_der: &[u8],
    counter: u64,
    plaintext: &[u8],
    application: &p256::PublicKey,
) -> Result<Vec<u8>, Error>
where
    S::Error: std::fmt::Display,
{
    let max = max_sealed_payload(counter);
    if plaintext.len() > max {
        return Err(Error::FrameTooLarge {
            payload: plaintext.len(),
            max,
        });
    }
    let sealed =
        moat_cose::seal_to_vec(plaintext, application, &mut rand_core::OsRng).map_err(|e| {
            Error::BadInput {
                what: "encrypting the payload".into(),
                problem: e.to_string(),
            }
        })?;
    sign_frame(signer, cert_der, counter, &sealed)
}

/// The key of the application a device encrypts to, from a PEM file: a P-256 public key
/// (`PUBLIC KEY`, as `openssl pkey -pubout` writes it) or a certificate (its key).
pub fn application_key(path: &Path) -> Result<p256::PublicKey, Error> {
    use p256::pkcs8::DecodePublicKey;
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let bad = |problem: &str| Error::BadInput {
        what: path.display().to_string(),
        problem: problem.into(),
    };
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        return p256::PublicKey::from_public_key_pem(text.trim())
            .map_err(|_| bad("not a P-256 public key (ECDH-ES on P-256 needs one)"));
    }
    let chain = files::read_certs(path)?;
    let der = chain
        .first()
        .ok_or_else(|| bad("holds neither a PUBLIC KEY nor a CERTIFICATE"))?;
    let info = moat_pki::cert_info(der).map_err(Error::pki(path.display().to_string()))?;
    p256::PublicKey::from_public_key_der(&info.spki_der)
        .map_err(|_| bad("the certificate's key is not P-256 (ECDH-ES on P-256 needs one)"))
}

/// A downlink the device accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its counter (now in the window).
    pub counter: u64,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Which trusted signer signed it (index in the list given).
    pub signer: usize,
}

/// The device's check of downlinks: trusted signers and a replay window kept in a file.
#[derive(Debug)]
pub struct DownlinkCheck {
    signers: Vec<(X5t, VerifyingKey)>,
    window: PathBuf,
}

impl DownlinkCheck {
    /// Trusts the P-256 keys of `certificates` (DER); keeps the replay window at `window`.
    pub fn new(certificates: &[Vec<u8>], window: impl Into<PathBuf>) -> Result<Self, Error> {
        let mut signers = Vec::new();
        for der in certificates {
            let info = moat_pki::cert_info(der).map_err(Error::pki("a trusted signer"))?;
            let key =
                VerifyingKey::from_public_key_der(&info.spki_der).map_err(|_| Error::BadInput {
                    what: format!("trusted signer {}", info.subject),
                    problem: "not a P-256 key (ES256 needs one)".into(),
                })?;
            signers.push((X5t::of_certificate(der), key));
        }
        Ok(DownlinkCheck {
            signers,
            window: window.into(),
        })
    }

    /// Verifies `frame` and moves the window (stored before this returns): the payload may be
    /// acted on. Refused: not the format, an untrusted signer, a bad signature, a replay.
    pub fn accept(&self, frame: &[u8]) -> Result<Accepted, Error> {
        let msg = decode_sign1(frame).map_err(Error::Cose)?;
        let signer = self
            .signers
            .iter()
            .position(|(x5t, _)| x5t == msg.x5t())
            .ok_or(Error::UntrustedSigner)?;
        let (_, key) = &self.signers[signer];
        msg.verify(key).map_err(Error::Cose)?;
        let window = load_window(&self.window)?;
        let next = window.check(msg.counter()).map_err(Error::Cose)?;
        files::write_atomic(&self.window, &next.to_bytes())?;
        Ok(Accepted {
            counter: msg.counter(),
            payload: msg.payload().to_vec(),
            signer,
        })
    }
}

fn load_window(path: &Path) -> Result<ReplayWindow, Error> {
    match std::fs::read(path) {
        Ok(bytes) => ReplayWindow::from_bytes(&bytes).map_err(|_| Error::BadInput {
            what: path.display().to_string(),
            problem: "not a replay window's state".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReplayWindow::new()),
        Err(e) => Err(Error::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn signer() -> (p256::ecdsa::SigningKey, Vec<u8>) {
        use p256::pkcs8::DecodePrivateKey;
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["app".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&key.serialize_der()).unwrap();
        (sk, cert.der().to_vec())
    }

    #[test]
    fn counters_survive_and_frames_fit() {
        let dir = tempfile::tempdir().unwrap();
        let counter = CounterFile::new(dir.path().join("counter"));
        assert_eq!(counter.take().unwrap(), 0);
        assert_eq!(counter.take().unwrap(), 1);
        assert_eq!(
            CounterFile::new(dir.path().join("counter")).take().unwrap(),
            2
        );
        let (key, cert) = signer();
        let frame = sign_frame(&key, &cert, 2, &[7; 106]).unwrap();
        assert_eq!(frame.len(), 222);
        assert!(matches!(
            sign_frame(&key, &cert, 2, &[7; 107]),
            Err(Error::FrameTooLarge {
                payload: 107,
                max: 106
            })
        ));
    }

    #[test]
    fn sealed_frames_fit_and_open_for_the_application_only() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = signer();
        let app = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = {
            use p256::pkcs8::EncodePublicKey;
            app.public_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .unwrap()
        };
        std::fs::write(dir.path().join("app.pub"), pem).unwrap();
        let to = application_key(&dir.path().join("app.pub")).unwrap();
        assert_eq!(max_sealed_payload(3), 14);
        let frame = sign_sealed_frame(&key, &cert, 3, &[7; 14], &to).unwrap();
        assert_eq!(frame.len(), MAX_FRAME);
        assert!(matches!(
            sign_sealed_frame(&key, &cert, 3, &[7; 15], &to),
            Err(Error::FrameTooLarge {
                payload: 15,
                max: 14
            })
        ));
        let msg = moat_cose::decode_sign1(&frame).unwrap();
        assert!(moat_cose::is_sealed(msg.payload()));
        assert_eq!(
            moat_cose::open_to_vec(msg.payload(), &app).unwrap(),
            [7; 14]
        );
        std::fs::write(dir.path().join("not-a-key"), "hello").unwrap();
        assert!(application_key(&dir.path().join("not-a-key")).is_err());
    }

    #[test]
    fn downlinks_from_trusted_signers_once() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = signer();
        let (other, other_cert) = signer();
        let check =
            DownlinkCheck::new(std::slice::from_ref(&cert), dir.path().join("window")).unwrap();
        let frame = sign_frame(&key, &cert, 5, b"open").unwrap();
        let ok = check.accept(&frame).unwrap();
        assert_eq!((ok.counter, ok.payload.as_slice()), (5, &b"open"[..]));
        // Replayed, also by a new check on the same window file (a restart).
        let again =
            DownlinkCheck::new(std::slice::from_ref(&cert), dir.path().join("window")).unwrap();
        assert!(matches!(
            again.accept(&frame),
            Err(Error::Cose(moat_cose::Error::Replayed { counter: 5 }))
        ));
        // Altered.
        let mut bad = sign_frame(&key, &cert, 6, b"open").unwrap();
        let at = bad.len() - 67;
        bad[at] ^= 1;
        assert!(matches!(
            check.accept(&bad),
            Err(Error::Cose(moat_cose::Error::BadSignature))
        ));
        // Signed by another key, naming the trusted certificate; or naming its own.
        let mut forged = sign_frame(&other, &other_cert, 7, b"open").unwrap();
        assert!(matches!(check.accept(&forged), Err(Error::UntrustedSigner)));
        forged = {
            let x5t = X5t::of_certificate(&cert);
            moat_cose::encode_sign1_to_vec(b"open", 8, &x5t, Tagging::Untagged, &other).unwrap()
        };
        assert!(matches!(
            check.accept(&forged),
            Err(Error::Cose(moat_cose::Error::BadSignature))
        ));
        assert_eq!(
            check
                .accept(&sign_frame(&key, &cert, 9, b"x").unwrap())
                .unwrap()
                .counter,
            9
        );
    }
}
