//! Verification throughput on a 16 MiB image, next to `openssl dgst -sha256` on the same file.
//!
//! Run: `cargo bench -p moat-image --bench verify` (`-- ROUNDS` to change the 15 rounds).
//! Each figure is the best of the rounds (the least disturbed by the other processes on the
//! machine); the median is printed beside it.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use moat_image::sign::{ImageBuilder, SigningKey};
use moat_image::{ImageVersion, IoSource, TrustedKey, verify, verify_source};

const PAYLOAD: usize = 16 << 20;

fn payload() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..PAYLOAD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Best and median of `rounds` runs of `f`.
fn time(rounds: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    f(); // warm caches and page tables
    let mut t: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[0], t[t.len() / 2])
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn line(what: &str, bytes: usize, (best, median): (Duration, Duration)) -> f64 {
    let rate = mib_s(bytes, best);
    println!(
        "{what:<48} {:>8.2} ms  {rate:>8.1} MiB/s   (median {:.2} ms)",
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3
    );
    rate
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    let payload = payload();
    let ed = SigningKey::ed25519_from_bytes(&[1; 32]);
    let p256 = SigningKey::p256_from_bytes(&[2; 32]).unwrap();
    let keys: Vec<TrustedKey> = vec![ed.trusted_key(), p256.trusted_key()];
    let builder = ImageBuilder::new(ImageVersion::default())
        .with_header_size(0x200)
        .with_security_counter(1);
    let ed_image = builder.sign(&payload, &ed).unwrap();
    let p_image = builder.sign(&payload, &p256).unwrap();
    let pure_image = builder.clone().with_pure().sign(&payload, &ed).unwrap();
    let n = ed_image.len();
    println!(
        "image: {n} bytes ({} MiB payload), {rounds} rounds, best of",
        PAYLOAD >> 20
    );

    let ours = line(
        "verify, slice, Ed25519 (SHA-256)",
        n,
        time(rounds, || {
            verify(&ed_image, &keys, 1).unwrap();
        }),
    );
    line(
        "verify, slice, ECDSA P-256 (SHA-256)",
        n,
        time(rounds, || {
            verify(&p_image, &keys, 1).unwrap();
        }),
    );
    line(
        "verify, slice, Ed25519 pure (SHA-512 twice)",
        n,
        time(rounds, || {
            verify(&pure_image, &keys, 1).unwrap();
        }),
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.bin");
    std::fs::write(&path, &ed_image).unwrap();
    let file = line(
        "verify, file (IoSource, 256 KiB reads), Ed25519",
        n,
        time(rounds, || {
            let f = std::fs::File::open(&path).unwrap();
            verify_source(&mut IoSource::new(f).unwrap(), &keys, 1).unwrap();
        }),
    );

    let openssl = Command::new("openssl").arg("version").output();
    if openssl.is_err() {
        println!("openssl not found: no comparison");
        return;
    }
    let dgst = || {
        let out = Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    let theirs = line(
        "openssl dgst -sha256 FILE (whole process)",
        n,
        time(rounds, dgst),
    );
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let (start_best, _) = time(rounds, || {
        Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(&empty)
            .output()
            .unwrap();
    });
    println!(
        "openssl dgst -sha256 on an empty file (start-up)   {:>8.2} ms",
        start_best.as_secs_f64() * 1e3
    );
    println!(
        "ratio to openssl dgst (our MiB/s / its MiB/s): slice {:.2}, file {:.2}",
        ours / theirs,
        file / theirs
    );
    // Hashing alone, in one process, no file: the fair ceiling for the SHA-256 part.
    let out = Command::new("openssl")
        .args([
            "speed", "-seconds", "3", "-evp", "sha256", "-bytes", "1048576",
        ])
        .output()
        .unwrap();
    let speed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.trim_end_matches('k').parse::<f64>().ok())
        .map(|k| k * 1000.0 / (1 << 20) as f64);
    if let Some(speed) = speed {
        println!(
            "openssl speed -evp sha256 -bytes 1048576        {speed:>20.1} MiB/s\n\
             ratio to openssl speed: slice {:.2}",
            ours / speed
        );
    }
}
