//! A/B boot, simulated: which slot a device boots, given two slots of flash and a persisted
//! state, and how an update becomes permanent (MCUboot's test → confirm → permanent flow).
//!
//! ```text
//!            request_test(B)              boot()                  confirm()
//!  active A ───────────────▶ Pending(B) ──────────▶ Running(B) ───────────────▶ active B
//!                               │ B refused            │ reset before confirm    counters raised
//!                               ▼                      ▼                         A is the fallback
//!                           boot A (TrialRefused)   boot A (Reverted)
//! ```
//!
//! - Every boot verifies the whole chain of the slot it boots ([`chain`]): a slot that fails
//!   is not booted. If the active slot fails, the other slot boots (and becomes active) only
//!   if it holds a confirmed image; otherwise the device stays in safe mode.
//! - The trial state is persisted *before* the trial image runs, so a reset (crash, watchdog,
//!   power loss) before [`confirm`] reverts to the previous image.
//! - The stored minimum security counters move up to the new image's counters only at
//!   [`confirm`]: a trial image that never confirms cannot lock the device out of the
//!   previous one. Every boot, trial or not, refuses counters below the stored minimum.
//!
//! Not simulated: copying or swapping images between slots (this is MCUboot's direct-XIP
//! model: either slot runs in place), and writing the images (an update agent does that
//! between [`begin_update`] and [`request_test`]).

pub mod chain;

pub use chain::{Chain, Counters, MAX_STAGES, NEXT_STAGE_KEY, STAGE_ALIGN, SlotError, Stage};

use crate::TrustedKey;

/// One of the two image slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first slot.
    A,
    /// The second slot.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    /// No update in progress.
    None,
    /// An update was written to this slot and should be booted once, for test.
    Pending(Slot),
    /// The update in this slot booted; it must [`confirm`] before the next reset.
    Running {
        /// The slot under test.
        slot: Slot,
        /// Its chain's security counters, stored once it confirms.
        counters: Counters,
    },
}

/// What the device persists between resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootState {
    /// The slot that boots when no update is in progress.
    pub active: Slot,
    /// The update in progress, if any.
    pub trial: Trial,
    /// Whether the slot that is not active holds a confirmed image (the fallback).
    pub other_confirmed: bool,
    /// Anti-rollback: the lowest security counter accepted, per stage.
    pub min_counters: Counters,
}

impl Default for BootState {
    /// A factory-fresh device: slot A, nothing else.
    fn default() -> Self {
        BootState {
            active: Slot::A,
            trial: Trial::None,
            other_confirmed: false,
            min_counters: [0; MAX_STAGES],
        }
    }
}

/// Two slots of flash and the persisted state: what the boot flow needs from a device.
pub trait BootStorage {
    /// A flash driver's error.
    type Error;

    /// Size of `slot` in bytes.
    fn slot_len(&self, slot: Slot) -> usize;

    /// Fills `buf` from `slot` at `offset` (never past [`slot_len`](Self::slot_len)).
    fn read(&mut self, slot: Slot, offset: usize, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Reads the persisted state.
    fn load_state(&mut self) -> Result<BootState, Self::Error>;

    /// Persists `state` atomically (both copies of a two-sector scheme, a transaction, ...).
    fn store_state(&mut self, state: &BootState) -> Result<(), Self::Error>;
}

/// How the booted slot was chosen.
#[derive(Debug)]
pub enum BootMode<E> {
    /// The active slot, as usual.
    Normal,
    /// A pending update, booted once for test: it must [`confirm`] before the next reset.
    Trial,
    /// The update under test did not confirm before this reset: back to the active slot.
    Reverted,
    /// The pending update failed verification; the active slot booted instead.
    TrialRefused(SlotError<E>),
}

/// A slot that verified and boots.
#[derive(Debug)]
pub struct Booted<E> {
    /// The slot.
    pub slot: Slot,
    /// Why this slot.
    pub mode: BootMode<E>,
    /// Set when the active slot failed and its confirmed fallback booted (and is now active).
    pub fell_back_from: Option<SlotError<E>>,
    /// Its verified stages.
    pub chain: Chain,
}

/// What a boot ends in.
#[derive(Debug)]
// No allocator to box the chain into; one outcome per boot lives on the stack.
#[allow(clippy::large_enum_variant)]
pub enum BootOutcome<E> {
    /// A slot boots.
    Booted(Booted<E>),
    /// Nothing bootable: the device waits for recovery (serial, USB, a new image).
    SafeMode {
        /// Why the active slot did not boot.
        active: SlotError<E>,
        /// Why the other did not; `None` if it holds no confirmed image to fall back to.
        other: Option<SlotError<E>>,
    },
}

/// The boot ROM: the root keys that verify stage 0 of a slot.
#[derive(Debug, Clone, Copy)]
pub struct Bootloader<'k> {
    root_keys: &'k [TrustedKey],
    next_key_tlv: u16,
}

impl<'k> Bootloader<'k> {
    /// A boot ROM trusting `root_keys` for stage 0.
    pub fn new(root_keys: &'k [TrustedKey]) -> Self {
        Bootloader {
            root_keys,
            next_key_tlv: NEXT_STAGE_KEY,
        }
    }

    /// Reads next-stage keys from protected TLVs of type `kind` instead of [`NEXT_STAGE_KEY`].
    pub fn with_next_key_tlv(mut self, kind: u16) -> Self {
        self.next_key_tlv = kind;
        self
    }

    /// Verifies every stage of `slot` against the minimum counters `min`.
    pub fn verify_slot<S: BootStorage + ?Sized>(
        &self,
        storage: &mut S,
        slot: Slot,
        min: &Counters,
    ) -> Result<Chain, SlotError<S::Error>> {
        chain::verify_chain(storage, slot, self.root_keys, self.next_key_tlv, min)
    }

    /// Decides what boots after a reset, and persists what that decision changes. `Err` only
    /// if the state cannot be read or written.
    pub fn boot<S: BootStorage + ?Sized>(
        &self,
        storage: &mut S,
    ) -> Result<BootOutcome<S::Error>, S::Error> {
        let mut state = storage.load_state()?;
        let mut mode = BootMode::Normal;
        match state.trial {
            // A request for the active slot cannot come from `request_test`: drop it.
            Trial::Pending(slot) if slot == state.active => {
                state.trial = Trial::None;
                storage.store_state(&state)?;
            }
            Trial::Pending(slot) => {
                // The request is used up whatever happens.
                state.trial = Trial::None;
                match self.verify_slot(storage, slot, &state.min_counters) {
                    Ok(chain) => {
                        state.trial = Trial::Running {
                            slot,
                            counters: chain.counters(),
                        };
                        // Persisted before the image runs: a reset from here on reverts.
                        storage.store_state(&state)?;
                        return Ok(BootOutcome::Booted(Booted {
                            slot,
                            mode: BootMode::Trial,
                            fell_back_from: None,
                            chain,
                        }));
                    }
                    Err(e) => {
                        storage.store_state(&state)?;
                        mode = BootMode::TrialRefused(e);
                    }
                }
            }
            Trial::Running { .. } => {
                state.trial = Trial::None;
                storage.store_state(&state)?;
                mode = BootMode::Reverted;
            }
            Trial::None => {}
        }

        let active = state.active;
        let active_error = match self.verify_slot(storage, active, &state.min_counters) {
            Ok(chain) => {
                return Ok(BootOutcome::Booted(Booted {
                    slot: active,
                    mode,
                    fell_back_from: None,
                    chain,
                }));
            }
            Err(e) => e,
        };
        if !state.other_confirmed {
            return Ok(BootOutcome::SafeMode {
                active: active_error,
                other: None,
            });
        }
        match self.verify_slot(storage, active.other(), &state.min_counters) {
            Ok(chain) => {
                state.active = active.other();
                // The slot just left is broken: no fallback until an update is confirmed.
                state.other_confirmed = false;
                storage.store_state(&state)?;
                Ok(BootOutcome::Booted(Booted {
                    slot: state.active,
                    mode,
                    fell_back_from: Some(active_error),
                    chain,
                }))
            }
            Err(other) => Ok(BootOutcome::SafeMode {
                active: active_error,
                other: Some(other),
            }),
        }
    }
}

/// Why an update could not be scheduled.
#[derive(Debug, thiserror::Error)]
pub enum RequestError<E> {
    /// The slot asked for is the one that boots already.
    #[error("slot {0:?} is the active slot; write updates to the other one")]
    SlotIsActive(Slot),
    /// An update is running and has neither confirmed nor been reverted.
    #[error("an update is under test; confirm it or reset first")]
    TrialRunning,
    /// The state could not be read or written.
    #[error("boot state storage failed")]
    Storage(#[source] E),
}

/// Called by the update agent before it erases or writes `slot`: from now on the slot is not
/// a fallback, so a reset mid-write (or a broken active slot) never boots a half-written or
/// untested image in its place.
pub fn begin_update<S: BootStorage + ?Sized>(
    storage: &mut S,
    slot: Slot,
) -> Result<(), RequestError<S::Error>> {
    let mut state = storage.load_state().map_err(RequestError::Storage)?;
    if slot == state.active {
        return Err(RequestError::SlotIsActive(slot));
    }
    if let Trial::Running { .. } = state.trial {
        return Err(RequestError::TrialRunning);
    }
    state.trial = Trial::None;
    state.other_confirmed = false;
    storage.store_state(&state).map_err(RequestError::Storage)
}

/// Called by the update agent once it has written a new image to `slot` (after
/// [`begin_update`]): the next boot tries it once. The slot holds no confirmed image any more,
/// so it stops being a fallback (also when `begin_update` was skipped).
pub fn request_test<S: BootStorage + ?Sized>(
    storage: &mut S,
    slot: Slot,
) -> Result<(), RequestError<S::Error>> {
    let mut state = storage.load_state().map_err(RequestError::Storage)?;
    if slot == state.active {
        return Err(RequestError::SlotIsActive(slot));
    }
    if let Trial::Running { .. } = state.trial {
        return Err(RequestError::TrialRunning);
    }
    state.trial = Trial::Pending(slot);
    state.other_confirmed = false;
    storage.store_state(&state).map_err(RequestError::Storage)
}

/// What [`confirm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The running update is now the active image; the minimum counters are now these.
    Permanent {
        /// The newly active slot.
        slot: Slot,
        /// The stored minimum counters after the update.
        min_counters: Counters,
    },
    /// Nothing was under test: the running image already is the active one.
    AlreadyPermanent,
}

/// Called by the running image once it has checked itself (it came up, reached the hub):
/// makes an update under test permanent and only then raises the anti-rollback counters.
/// Idempotent, so an image may call it on every start.
pub fn confirm<S: BootStorage + ?Sized>(storage: &mut S) -> Result<Confirmation, S::Error> {
    let mut state = storage.load_state()?;
    let Trial::Running { slot, counters } = state.trial else {
        return Ok(Confirmation::AlreadyPermanent);
    };
    state.active = slot;
    state.trial = Trial::None;
    // The slot it replaces held the confirmed image that booted before it.
    state.other_confirmed = true;
    for (min, new) in state.min_counters.iter_mut().zip(counters) {
        *min = (*min).max(new);
    }
    storage.store_state(&state)?;
    Ok(Confirmation::Permanent {
        slot,
        min_counters: state.min_counters,
    })
}

#[cfg(test)]
mod tests;
