//! Interop with MCUboot's `imgtool` (PyPI): keys it generates, images it signs, refusals of
//! images it signed and we damaged. Skips loudly when imgtool is missing, unless `CI` is set:
//! then a missing imgtool fails (scripts/test installs it).
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use moat_image::sign::{ImageBuilder, SigningKey, append_unprotected_tlv};
use moat_image::{
    ImageDigest, ImageError, ImageVersion, KeyKind, TlvArea, TrustedKey, VerifiedImage, tlv, verify,
};

/// The imgtool command line (program and leading arguments), or `None` (after saying so) when
/// it is missing outside CI. `IMGTOOL` names it; else `imgtool` on the PATH, else the module.
fn imgtool() -> Option<Vec<String>> {
    let candidates: Vec<Vec<String>> = match std::env::var("IMGTOOL") {
        Ok(bin) => vec![vec![bin]],
        Err(_) => vec![
            vec!["imgtool".into()],
            vec!["python3".into(), "-m".into(), "imgtool.main".into()],
        ],
    };
    let mut tried = Vec::new();
    for argv in candidates {
        match Command::new(&argv[0])
            .args(&argv[1..])
            .arg("version")
            .output()
        {
            Ok(out) if out.status.success() => return Some(argv),
            found => tried.push(format!("{argv:?}: {found:?}")),
        }
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("imgtool not usable and CI is set (`pip install imgtool`): {tried:?}");
    }
    // Straight to stderr: the test harness captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n************************************************************\n\
         SKIPPED: imgtool not found. `pip install imgtool`, or set\n\
         IMGTOOL=/path/to/imgtool. With CI=1 this is a failure.\n\
         ************************************************************"
    );
    None
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Small xorshift: random payloads without another dependency; the seed is printed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("payload seed {seed:#x}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Tool {
    argv: Vec<String>,
    dir: tempfile::TempDir,
}

impl Tool {
    fn new() -> Option<Self> {
        Some(Tool {
            argv: imgtool()?,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        cmd
    }

    /// `imgtool keygen -t kind`; returns the private key's path.
    fn keygen(&self, name: &str, kind: &str) -> PathBuf {
        let path = self.path(name);
        run(self.cmd().args(["keygen", "-t", kind, "-k"]).arg(&path));
        path
    }

    /// The public key as `imgtool getpub -e pem` prints it, parsed by us.
    fn trusted(&self, key: &Path) -> TrustedKey {
        let pem = run(self.cmd().args(["getpub", "-e", "pem", "-k"]).arg(key));
        TrustedKey::from_pem(&pem).unwrap()
    }

    /// `imgtool sign ARGS in out` on `payload`; returns the signed image.
    fn sign(&self, key: &Path, args: &[&str], payload: &[u8]) -> Vec<u8> {
        let input = self.path("in.bin");
        let output = self.path("out.bin");
        std::fs::write(&input, payload).unwrap();
        run(self
            .cmd()
            .arg("sign")
            .arg("-k")
            .arg(key)
            .args(args)
            .arg(&input)
            .arg(&output));
        std::fs::read(&output).unwrap()
    }

    /// The digest `imgtool verify` prints for an image.
    fn digest(&self, key: &Path, image: &[u8]) -> String {
        let path = self.path("check.bin");
        std::fs::write(&path, image).unwrap();
        let out = run(self.cmd().arg("verify").arg("-k").arg(key).arg(&path));
        let out = String::from_utf8(out).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("Image digest: "))
            .unwrap_or_else(|| panic!("no digest in {out}"))
            .to_string()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn keys_from_imgtool_parse_in_pem_and_der() {
    let Some(t) = Tool::new() else { return };
    for (kind, want) in [("ed25519", KeyKind::Ed25519), ("ecdsa-p256", KeyKind::P256)] {
        let key = t.keygen(&format!("{kind}.pem"), kind);
        let from_pem = t.trusted(&key);
        assert_eq!(from_pem.kind(), want);
        let der = run(t.cmd().args(["getpub", "-e", "raw", "-k"]).arg(&key));
        let from_der = TrustedKey::from_spki_der(&der).unwrap();
        assert_eq!(from_der.key_hash(), from_pem.key_hash());
        assert_eq!(from_pem.spki_der().as_bytes(), der.as_slice());
        // A private key is not a public key.
        let private = std::fs::read(&key).unwrap();
        assert!(TrustedKey::from_pem(&private).is_err());
    }
}

#[test]
fn imgtool_images_verify() {
    let Some(t) = Tool::new() else { return };
    let mut rng = Rng::new();
    let ed = t.keygen("ed.pem", "ed25519");
    let ec = t.keygen("ec.pem", "ecdsa-p256");
    let other = t.keygen("other.pem", "ed25519");
    let keys = [t.trusted(&other), t.trusted(&ec), t.trusted(&ed)];

    struct Case {
        key: &'static str,
        args: &'static [&'static str],
        header: usize,
        counter: Option<u32>,
        pure: bool,
    }
    let cases = [
        Case {
            key: "ed",
            args: &["-H", "0x200", "--pad-header"],
            header: 0x200,
            counter: None,
            pure: false,
        },
        Case {
            key: "ec",
            args: &["-H", "0x200", "--pad-header"],
            header: 0x200,
            counter: None,
            pure: false,
        },
        // Without --pad-header the input starts with the (zeroed) header space.
        Case {
            key: "ed",
            args: &["-H", "0x20"],
            header: 0x20,
            counter: None,
            pure: false,
        },
        Case {
            key: "ec",
            args: &["-H", "0x100", "-s", "5"],
            header: 0x100,
            counter: Some(5),
            pure: false,
        },
        Case {
            key: "ed",
            args: &["-H", "0x200", "--pad-header", "-s", "42"],
            header: 0x200,
            counter: Some(42),
            pure: false,
        },
        // `auto`: major << 24 | minor << 16 | revision from -v 1.2.3.
        Case {
            key: "ec",
            args: &["-H", "0x200", "--pad-header", "-s", "auto", "--pad-sig"],
            header: 0x200,
            counter: Some(0x0102_0003),
            pure: false,
        },
        Case {
            key: "ed",
            args: &["-H", "0x200", "--pad-header", "--pure", "-s", "3"],
            header: 0x200,
            counter: Some(3),
            pure: true,
        },
        Case {
            key: "ed",
            args: &["-H", "0x200", "--pad-header", "--sha", "512"],
            header: 0x200,
            counter: None,
            pure: false,
        },
        Case {
            key: "ec",
            args: &["-H", "0x200", "--pad-header", "--public-key-format", "full"],
            header: 0x200,
            counter: None,
            pure: false,
        },
        // Padded to the slot with a trailer (--pad): the slot verifies as a whole.
        Case {
            key: "ed",
            args: &[
                "-H",
                "0x200",
                "--pad-header",
                "--pad",
                "--custom-tlv",
                "0xa0",
                "0x0102",
            ],
            header: 0x200,
            counter: None,
            pure: false,
        },
    ];
    for case in cases {
        let (key, index, kind) = match case.key {
            "ed" => (&ed, 2, KeyKind::Ed25519),
            _ => (&ec, 1, KeyKind::P256),
        };
        let len = 1 + (rng.next() % 6000) as usize;
        let body = rng.bytes(len);
        let input = if case.args.contains(&"--pad-header") {
            body.clone()
        } else {
            [vec![0; case.header], body.clone()].concat()
        };
        let mut args = vec!["-v", "1.2.3+77", "-S", "0x10000"];
        args.extend(case.args);
        let image = t.sign(key, &args, &input);
        let name = format!("{} {:?}", case.key, case.args);
        let v: VerifiedImage = verify(&image, &keys, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            v.version(),
            ImageVersion {
                major: 1,
                minor: 2,
                revision: 3,
                build: 77
            },
            "{name}"
        );
        assert_eq!(v.key_index, index, "{name}");
        assert_eq!(v.key_kind, kind, "{name}");
        assert_eq!(v.security_counter, case.counter, "{name}");
        assert_eq!(v.pure, case.pure, "{name}");
        assert_eq!(v.payload.start, case.header, "{name}");
        assert_eq!(&image[v.payload.clone()], &body[..], "{name}");
        if case.args.contains(&"--pad") {
            assert_eq!(image.len(), 0x10000, "{name}");
            assert!(v.end() < image.len(), "{name}");
            let mut value = [0u8; 4];
            let mut src = image.as_slice();
            let found = moat_image::read_protected_tlv(&mut src, &v, 0xa0, &mut value).unwrap();
            assert_eq!((found, &value[..2]), (Some(2), &[1u8, 2][..]), "{name}");
        } else {
            assert_eq!(v.end(), image.len(), "{name}");
        }
        if !case.pure {
            assert_eq!(hex(v.digest.as_bytes()), t.digest(key, &image), "{name}");
        }
        if case.args.contains(&"512") || case.pure {
            assert!(matches!(v.digest, ImageDigest::Sha512(_)), "{name}");
        }
        // Each key alone: only the signer's is enough.
        for (i, k) in keys.iter().enumerate() {
            let alone = verify(&image, std::slice::from_ref(k), 0);
            assert_eq!(alone.is_ok(), i == index, "{name} with key {i} alone");
        }
    }
}

/// Our signer lays images out byte for byte as imgtool does (Ed25519 is deterministic).
#[test]
fn our_signer_matches_imgtool_byte_for_byte() {
    let Some(t) = Tool::new() else { return };
    let key = t.keygen("ed.pem", "ed25519");
    let der = run(Command::new("openssl")
        .args(["pkey", "-outform", "der", "-in"])
        .arg(&key));
    let seed: [u8; 32] = der[der.len() - 32..].try_into().unwrap();
    let ours = SigningKey::ed25519_from_bytes(&seed);
    let payload = Rng::new().bytes(3000);
    for (pure, args) in [
        (false, &["-H", "0x200", "--pad-header", "-s", "9"][..]),
        (
            true,
            &["-H", "0x200", "--pad-header", "-s", "9", "--pure"][..],
        ),
    ] {
        let mut all = vec!["-v", "3.1.4+15", "-S", "0x10000"];
        all.extend(args);
        let theirs = t.sign(&key, &all, &payload);
        let mut b = ImageBuilder::new(ImageVersion {
            major: 3,
            minor: 1,
            revision: 4,
            build: 15,
        })
        .with_header_size(0x200)
        .with_security_counter(9);
        b.pure = pure;
        assert_eq!(b.sign(&payload, &ours).unwrap(), theirs, "pure: {pure}");
    }
}

/// Refusals of a ~1 KiB imgtool image, for both key types.
#[test]
fn damaged_imgtool_images_are_refused() {
    let Some(t) = Tool::new() else { return };
    let mut rng = Rng::new();
    for kind in ["ed25519", "ecdsa-p256"] {
        let key = t.keygen("k.pem", kind);
        let wrong = t.keygen("wrong.pem", kind);
        let keys = [t.trusted(&key)];
        let payload = rng.bytes(1024);
        let image = t.sign(
            &key,
            &[
                "-v",
                "1.0.0",
                "-H",
                "0x20",
                "--pad-header",
                "-S",
                "0x10000",
                "-s",
                "5",
            ],
            &payload,
        );
        let v = verify(&image, &keys, 5).unwrap();
        let hashed = v.protected_tlvs.end;
        let unprot = v.unprotected_tlvs.start;

        // Every byte of the image, hashed range and TLVs alike, flipped three ways.
        for i in 0..image.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = image.clone();
                bad[i] ^= mask;
                let r = verify(&bad, &keys, 0);
                assert!(r.is_err(), "{kind}: byte {i} ^ {mask:#x} accepted");
                if (0x20..hashed).contains(&i) {
                    // Payload and protected TLVs: the hash, or the structure, gives way.
                    assert!(
                        matches!(
                            r,
                            Err(ImageError::HashMismatch
                                | ImageError::BadTlvMagic { .. }
                                | ImageError::ProtectedSizeMismatch { .. }
                                | ImageError::TlvOverrun { .. }
                                | ImageError::TlvLength { .. }
                                | ImageError::MisplacedTlv { .. }
                                | ImageError::CounterTooLow { .. }
                                | ImageError::DuplicateTlv { .. }
                                | ImageError::UnprotectedCounter)
                        ),
                        "{kind}: byte {i}: {r:?}"
                    );
                }
            }
        }

        // A trusted key that is not the signer's.
        assert_eq!(
            verify(&image, &[t.trusted(&wrong)], 0),
            Err(ImageError::UntrustedKey)
        );

        // Every truncation.
        for n in 0..image.len() {
            assert!(verify(&image[..n], &keys, 0).is_err(), "{kind}: cut at {n}");
        }

        // Oversized length fields.
        let patched = |at: usize, bytes: &[u8]| {
            let mut bad = image.clone();
            bad[at..at + bytes.len()].copy_from_slice(bytes);
            verify(&bad, &keys, 0)
        };
        assert!(matches!(
            patched(12, &u32::MAX.to_le_bytes()),
            Err(ImageError::PayloadTruncated { .. })
        ));
        assert!(matches!(
            patched(8, &u16::MAX.to_le_bytes()),
            Err(ImageError::PayloadTruncated { .. })
        ));
        assert!(matches!(
            patched(10, &u16::MAX.to_le_bytes()),
            Err(ImageError::ProtectedSizeMismatch { .. })
        ));
        assert!(matches!(
            patched(unprot + 2, &u16::MAX.to_le_bytes()),
            Err(ImageError::TlvAreaTruncated {
                area: TlvArea::Unprotected,
                ..
            })
        ));
        assert!(matches!(
            patched(unprot + 6, &u16::MAX.to_le_bytes()),
            Err(ImageError::TlvOverrun {
                area: TlvArea::Unprotected,
                ..
            })
        ));

        // Security counter below the stored minimum; equal is fine.
        assert_eq!(
            verify(&image, &keys, 6),
            Err(ImageError::CounterTooLow {
                counter: 5,
                minimum: 6
            })
        );
        assert!(verify(&image, &keys, 5).is_ok());

        // SEC_CNT in the unprotected area, added by hand, with and without a protected one.
        let mut bad = image.clone();
        append_unprotected_tlv(&mut bad, unprot, tlv::SEC_CNT, &100u32.to_le_bytes()).unwrap();
        assert_eq!(verify(&bad, &keys, 0), Err(ImageError::UnprotectedCounter));
        let no_counter = t.sign(
            &key,
            &["-v", "1.0.0", "-H", "0x20", "--pad-header", "-S", "0x10000"],
            &payload,
        );
        let start = verify(&no_counter, &keys, 0)
            .unwrap()
            .unprotected_tlvs
            .start;
        let mut bad = no_counter.clone();
        append_unprotected_tlv(&mut bad, start, tlv::SEC_CNT, &100u32.to_le_bytes()).unwrap();
        assert_eq!(verify(&bad, &keys, 0), Err(ImageError::UnprotectedCounter));
        assert_eq!(
            verify(&no_counter, &keys, 1),
            Err(ImageError::CounterMissing { minimum: 1 })
        );
    }
}
