#![allow(clippy::unwrap_used)]

use super::*;
use crate::sign::{ImageBuilder, SigningKey};
use crate::{ImageError, ImageVersion, KeyError};

#[derive(Debug, PartialEq, Eq)]
struct FlashError;

/// Two slots in RAM and the state, with a switch to make reads fail.
struct Mem {
    slots: [Vec<u8>; 2],
    state: BootState,
    broken_reads: bool,
}

impl Mem {
    fn new(a: Vec<u8>, b: Vec<u8>) -> Self {
        Mem {
            slots: [a, b],
            state: BootState::default(),
            broken_reads: false,
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut Vec<u8> {
        let [a, b] = &mut self.slots;
        match slot {
            Slot::A => a,
            Slot::B => b,
        }
    }
}

impl BootStorage for Mem {
    type Error = FlashError;

    fn slot_len(&self, slot: Slot) -> usize {
        let [a, b] = &self.slots;
        match slot {
            Slot::A => a.len(),
            Slot::B => b.len(),
        }
    }

    fn read(&mut self, slot: Slot, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        if self.broken_reads {
            return Err(FlashError);
        }
        let data = self.slot_mut(slot);
        buf.copy_from_slice(data.get(offset..offset + buf.len()).ok_or(FlashError)?);
        Ok(())
    }

    fn load_state(&mut self) -> Result<BootState, FlashError> {
        Ok(self.state)
    }

    fn store_state(&mut self, state: &BootState) -> Result<(), FlashError> {
        self.state = *state;
        Ok(())
    }
}

fn root() -> SigningKey {
    SigningKey::ed25519_from_bytes(&[1; 32])
}

fn stage_key() -> SigningKey {
    SigningKey::p256_from_bytes(&[2; 32]).unwrap()
}

fn version(minor: u8) -> ImageVersion {
    ImageVersion {
        major: 1,
        minor,
        revision: 0,
        build: 0,
    }
}

/// A two-stage slot: a loader signed by the root key carrying `stage_key`'s public key, then
/// the application signed by `app_signer`.
fn slot_with(minor: u8, loader_counter: u32, app_counter: u32, app_signer: &SigningKey) -> Vec<u8> {
    let next = stage_key().trusted_key().spki_der();
    let mut slot = ImageBuilder::new(version(minor))
        .with_security_counter(loader_counter)
        .with_protected_tlv(NEXT_STAGE_KEY, next.as_bytes())
        .sign(b"second-stage loader", &root())
        .unwrap();
    slot.resize(slot.len().next_multiple_of(STAGE_ALIGN), 0xff);
    let app = ImageBuilder::new(version(minor))
        .with_header_size(0x80)
        .with_security_counter(app_counter)
        .sign(&[minor; 3000], app_signer)
        .unwrap();
    slot.extend(app);
    // Unused slot space, as erased flash.
    slot.resize(slot.len() + 512, 0xff);
    slot
}

fn slot(minor: u8, app_counter: u32) -> Vec<u8> {
    slot_with(minor, 1, app_counter, &stage_key())
}

fn booted(outcome: BootOutcome<FlashError>) -> Booted<FlashError> {
    match outcome {
        BootOutcome::Booted(b) => b,
        BootOutcome::SafeMode { active, other } => {
            panic!("safe mode: active {active}, other {other:?}")
        }
    }
}

fn keys() -> [crate::TrustedKey; 1] {
    [root().trusted_key()]
}

#[test]
fn normal_boot_verifies_every_stage() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(slot(0, 1), Vec::new());
    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::A);
    assert!(matches!(b.mode, BootMode::Normal));
    let stages: Vec<_> = b.chain.stages().collect();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].offset, 0);
    assert_eq!(stages[1].offset % STAGE_ALIGN, 0);
    assert_eq!(stages[1].key_kind, crate::KeyKind::P256);
    assert_eq!(b.chain.counters(), [1, 1, 0, 0]);
}

#[test]
fn confirmed_update_becomes_permanent_and_only_then_raises_counters() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(slot(0, 1), slot(1, 2));
    mem.state.min_counters = [1, 1, 0, 0];
    request_test(&mut mem, Slot::B).unwrap();

    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::B);
    assert!(matches!(b.mode, BootMode::Trial));
    // Running under test: nothing stored moved yet.
    assert_eq!(mem.state.min_counters, [1, 1, 0, 0]);
    assert_eq!(mem.state.active, Slot::A);

    assert_eq!(
        confirm(&mut mem).unwrap(),
        Confirmation::Permanent {
            slot: Slot::B,
            min_counters: [1, 2, 0, 0]
        }
    );
    assert_eq!(mem.state.active, Slot::B);
    assert!(mem.state.other_confirmed);
    assert_eq!(confirm(&mut mem).unwrap(), Confirmation::AlreadyPermanent);

    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::B);
    assert!(matches!(b.mode, BootMode::Normal));
}

#[test]
fn update_that_does_not_confirm_is_reverted_at_the_next_reset() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(slot(0, 1), slot(1, 2));
    request_test(&mut mem, Slot::B).unwrap();
    assert!(matches!(
        booted(rom.boot(&mut mem).unwrap()).mode,
        BootMode::Trial
    ));
    // Reset without confirm (crash, watchdog, power loss).
    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::A);
    assert!(matches!(b.mode, BootMode::Reverted));
    assert_eq!(mem.state.trial, Trial::None);
    assert_eq!(mem.state.min_counters, [0; MAX_STAGES]);
    // It is never tried again on its own, nor used as a fallback.
    assert!(!mem.state.other_confirmed);
    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::A);
    assert!(matches!(b.mode, BootMode::Normal));
    // A confirm from the old image after the revert changes nothing.
    assert_eq!(confirm(&mut mem).unwrap(), Confirmation::AlreadyPermanent);
    assert_eq!(mem.state.active, Slot::A);
}

#[test]
fn update_that_fails_verification_is_not_booted() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut bad = slot(1, 2);
    bad[0x300] ^= 1; // inside the application's payload
    let mut mem = Mem::new(slot(0, 1), bad);
    request_test(&mut mem, Slot::B).unwrap();
    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::A);
    match b.mode {
        BootMode::TrialRefused(SlotError::Image { stage: 1, error }) => {
            assert_eq!(error, ImageError::HashMismatch)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mem.state.trial, Trial::None);
}

#[test]
fn rollback_to_a_lower_counter_is_refused() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(slot(0, 5), slot(1, 3));
    mem.state.min_counters = [1, 5, 0, 0];
    request_test(&mut mem, Slot::B).unwrap();
    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::A);
    match b.mode {
        BootMode::TrialRefused(SlotError::Image { stage: 1, error }) => assert_eq!(
            error,
            ImageError::CounterTooLow {
                counter: 3,
                minimum: 5
            }
        ),
        other => panic!("{other:?}"),
    }
    // The loader stage has its own counter.
    let mut mem = Mem::new(
        slot_with(0, 2, 1, &stage_key()),
        slot_with(1, 1, 9, &stage_key()),
    );
    mem.state.min_counters = [2, 0, 0, 0];
    request_test(&mut mem, Slot::B).unwrap();
    match booted(rom.boot(&mut mem).unwrap()).mode {
        BootMode::TrialRefused(SlotError::Image { stage: 0, error }) => assert_eq!(
            error,
            ImageError::CounterTooLow {
                counter: 1,
                minimum: 2
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn broken_active_slot_falls_back_to_the_confirmed_one() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    // Same counter: the previous image stays acceptable after the update.
    let mut mem = Mem::new(slot(0, 2), slot(1, 2));
    request_test(&mut mem, Slot::B).unwrap();
    booted(rom.boot(&mut mem).unwrap());
    confirm(&mut mem).unwrap();

    mem.slot_mut(Slot::B)[40] ^= 0x80; // the loader's payload
    let b = booted(rom.boot(&mut mem).unwrap());
    assert_eq!(b.slot, Slot::A);
    assert!(matches!(
        b.fell_back_from,
        Some(SlotError::Image {
            stage: 0,
            error: ImageError::HashMismatch
        })
    ));
    assert_eq!(mem.state.active, Slot::A);
    assert!(!mem.state.other_confirmed);
    // Stays on A; B is no fallback any more.
    assert_eq!(booted(rom.boot(&mut mem).unwrap()).slot, Slot::A);
}

#[test]
fn fallback_respects_the_anti_rollback_counter() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(slot(0, 1), slot(1, 2));
    request_test(&mut mem, Slot::B).unwrap();
    booted(rom.boot(&mut mem).unwrap());
    confirm(&mut mem).unwrap();
    mem.slot_mut(Slot::B)[40] ^= 0x80;
    match rom.boot(&mut mem).unwrap() {
        BootOutcome::SafeMode {
            active: SlotError::Image { stage: 0, .. },
            other:
                Some(SlotError::Image {
                    stage: 1,
                    error:
                        ImageError::CounterTooLow {
                            counter: 1,
                            minimum: 2,
                        },
                }),
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn safe_mode_when_nothing_verifies() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(vec![0xff; 4096], slot(1, 1));
    // B verifies, but was never confirmed: no fallback to it.
    match rom.boot(&mut mem).unwrap() {
        BootOutcome::SafeMode {
            active:
                SlotError::Image {
                    stage: 0,
                    error: ImageError::BadMagic { found: 0xffff_ffff },
                },
            other: None,
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(mem.state, BootState::default());
}

#[test]
fn each_stage_is_verified_with_the_key_the_previous_one_carries() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    // The application signed by the root key, not the key the loader names.
    let mut mem = Mem::new(slot_with(0, 1, 1, &root()), Vec::new());
    match rom.boot(&mut mem).unwrap() {
        BootOutcome::SafeMode {
            active:
                SlotError::Image {
                    stage: 1,
                    error: ImageError::UntrustedKey,
                },
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    // A loader signed by anyone else is refused before its key is looked at.
    let rogue = SigningKey::ed25519_from_bytes(&[9; 32]);
    let mut image = ImageBuilder::new(version(0))
        .with_protected_tlv(NEXT_STAGE_KEY, rogue.trusted_key().spki_der().as_bytes())
        .sign(b"loader", &rogue)
        .unwrap();
    image.resize(4096, 0xff);
    let mut mem = Mem::new(image, Vec::new());
    assert!(matches!(
        rom.boot(&mut mem).unwrap(),
        BootOutcome::SafeMode {
            active: SlotError::Image {
                stage: 0,
                error: ImageError::UntrustedKey
            },
            ..
        }
    ));
}

#[test]
fn invalid_next_stage_key_and_too_many_stages() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let image = ImageBuilder::new(version(0))
        .with_protected_tlv(NEXT_STAGE_KEY, b"not a key")
        .sign(b"loader", &root())
        .unwrap();
    let mut mem = Mem::new(image, Vec::new());
    assert!(matches!(
        rom.boot(&mut mem).unwrap(),
        BootOutcome::SafeMode {
            active: SlotError::NextKey {
                stage: 0,
                error: KeyError::Der(_)
            },
            ..
        }
    ));
    // Every stage signed by the root key and naming it as the next: never ends.
    let spki = root().trusted_key().spki_der();
    let mut chain = Vec::new();
    for _ in 0..=MAX_STAGES {
        chain.extend(
            ImageBuilder::new(version(0))
                .with_protected_tlv(NEXT_STAGE_KEY, spki.as_bytes())
                .sign(b"stage", &root())
                .unwrap(),
        );
        chain.resize(chain.len().next_multiple_of(STAGE_ALIGN), 0xff);
    }
    let mut mem = Mem::new(chain, Vec::new());
    assert!(matches!(
        rom.boot(&mut mem).unwrap(),
        BootOutcome::SafeMode {
            active: SlotError::TooManyStages,
            ..
        }
    ));
}

#[test]
fn request_rules_and_read_errors() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(slot(0, 1), slot(1, 1));
    assert!(matches!(
        request_test(&mut mem, Slot::A),
        Err(RequestError::SlotIsActive(Slot::A))
    ));
    request_test(&mut mem, Slot::B).unwrap();
    booted(rom.boot(&mut mem).unwrap());
    assert!(matches!(
        request_test(&mut mem, Slot::B),
        Err(RequestError::TrialRunning)
    ));
    mem.broken_reads = true;
    // The reset reverts the trial, and the active slot cannot be read.
    assert!(matches!(
        rom.boot(&mut mem).unwrap(),
        BootOutcome::SafeMode {
            active: SlotError::Read {
                stage: 0,
                error: FlashError
            },
            other: None,
        }
    ));
}

#[test]
fn a_slot_being_written_is_no_fallback() {
    let keys = keys();
    let rom = Bootloader::new(&keys);
    let mut mem = Mem::new(slot(0, 1), slot(1, 1));
    mem.state.other_confirmed = true;
    assert!(matches!(
        begin_update(&mut mem, Slot::A),
        Err(RequestError::SlotIsActive(Slot::A))
    ));
    begin_update(&mut mem, Slot::B).unwrap();
    // B still verifies (the old image, or a new one written in full but not yet requested),
    // yet a broken A does not fall back to it.
    mem.slot_mut(Slot::A)[40] ^= 1;
    assert!(matches!(
        rom.boot(&mut mem).unwrap(),
        BootOutcome::SafeMode { other: None, .. }
    ));
}
