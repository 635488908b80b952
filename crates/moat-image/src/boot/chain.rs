//! One slot's chain of stages: the boot ROM's keys verify stage 0, each stage carries (in a
//! protected TLV) the key that verifies the next, the last stage carries none.
//!
//! ```text
//!  slot:  ┌──────────────────────────┬pad┬──────────────────────────┐
//!         │ stage 0 image            │   │ stage 1 image (the app)  │
//!         │  protected: SEC_CNT,     │   │  protected: SEC_CNT      │
//!         │   NEXT_STAGE_KEY = SPKI ─┼───┼─▶ verifies this          │
//!         └──────────────────────────┴───┴──────────────────────────┘
//!          ▲ verified by the root keys    stage i+1 starts at the end of stage i,
//!                                         rounded up to STAGE_ALIGN
//! ```

use crate::boot::{BootStorage, Slot};
use crate::key::MAX_SPKI_LEN;
use crate::{
    ImageDigest, ImageError, ImageSource, ImageVersion, KeyError, KeyKind, SourceError, TrustedKey,
    read_protected_tlv, tlv, verify_source,
};

/// Most stages a slot may hold.
pub const MAX_STAGES: usize = 4;
/// Protected TLV type that carries the next stage's public key (SubjectPublicKeyInfo DER): the
/// first of the types imgtool leaves to vendors (`imgtool sign --custom-tlv-file 0xa0 key.der`).
pub const NEXT_STAGE_KEY: u16 = tlv::VENDOR_MIN;
/// Stage `i + 1` starts at the end of stage `i` rounded up to this.
pub const STAGE_ALIGN: usize = 8;

/// One security counter per stage (0 for stages an image does not have).
pub type Counters = [u32; MAX_STAGES];

/// A stage that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Where its image starts in the slot.
    pub offset: usize,
    /// Its version.
    pub version: ImageVersion,
    /// Its security counter, if it has one.
    pub security_counter: Option<u32>,
    /// Its image hash.
    pub digest: ImageDigest,
    /// The algorithm of the key that signed it.
    pub key_kind: KeyKind,
}

/// The stages of a slot, all verified, in boot order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    stages: [Option<Stage>; MAX_STAGES],
}

impl Chain {
    /// The stages, first (verified by the boot ROM) to last (the application).
    pub fn stages(&self) -> impl Iterator<Item = &Stage> {
        self.stages.iter().map_while(Option::as_ref)
    }

    /// The security counter of each stage, 0 where a stage has none or does not exist.
    pub fn counters(&self) -> Counters {
        let mut out = [0; MAX_STAGES];
        for (c, s) in out.iter_mut().zip(&self.stages) {
            *c = s.and_then(|s| s.security_counter).unwrap_or(0);
        }
        out
    }
}

/// Why a slot does not boot.
#[derive(Debug, thiserror::Error)]
pub enum SlotError<E> {
    /// A stage's image was refused.
    #[error("stage {stage}: {error}")]
    Image {
        /// Which stage (0 is verified by the boot ROM's keys).
        stage: usize,
        /// Why.
        #[source]
        error: ImageError,
    },
    /// Reading the slot failed.
    #[error("stage {stage}: reading the slot failed")]
    Read {
        /// Which stage was being read.
        stage: usize,
        /// The storage's error.
        #[source]
        error: E,
    },
    /// A stage carries a next-stage key that does not parse.
    #[error("stage {stage}: invalid next-stage key: {error}")]
    NextKey {
        /// The stage that carries it.
        stage: usize,
        /// Why it was refused.
        #[source]
        error: KeyError,
    },
    /// A stage carries a next-stage key longer than any supported key.
    #[error("stage {stage}: next-stage key of {len} bytes is longer than any supported key")]
    NextKeyTooLong {
        /// The stage that carries it.
        stage: usize,
        /// Its length.
        len: usize,
    },
    /// The last allowed stage still names a next one.
    #[error("more than {MAX_STAGES} stages")]
    TooManyStages,
}

/// A window on one slot, starting at one stage's image.
struct SlotReader<'a, S: ?Sized> {
    storage: &'a mut S,
    slot: Slot,
    base: usize,
    len: usize,
}

impl<S: BootStorage + ?Sized> ImageSource for SlotReader<'_, S> {
    type Error = S::Error;

    fn len(&self) -> usize {
        self.len
    }

    fn read_exact_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), S::Error> {
        self.storage
            .read(self.slot, self.base.saturating_add(offset), buf)
    }
}

/// Verifies every stage of `slot`, stage `i` against `min[i]`.
pub(crate) fn verify_chain<S: BootStorage + ?Sized>(
    storage: &mut S,
    slot: Slot,
    root_keys: &[TrustedKey],
    next_key_tlv: u16,
    min: &Counters,
) -> Result<Chain, SlotError<S::Error>> {
    let mut chain = Chain::default();
    let mut next_key: Option<TrustedKey> = None;
    let mut base = 0usize;
    for stage in 0..MAX_STAGES {
        let keys = match &next_key {
            Some(k) => core::slice::from_ref(k),
            None => root_keys,
        };
        let from_source = |e: SourceError<S::Error>| match e {
            SourceError::Image(error) => SlotError::Image { stage, error },
            SourceError::Read(error) => SlotError::Read { stage, error },
        };
        let len = storage.slot_len(slot).saturating_sub(base);
        let mut src = SlotReader {
            storage: &mut *storage,
            slot,
            base,
            len,
        };
        let minimum = min.get(stage).copied().unwrap_or(0);
        let v = verify_source(&mut src, keys, minimum).map_err(from_source)?;
        if let Some(entry) = chain.stages.get_mut(stage) {
            *entry = Some(Stage {
                offset: base,
                version: v.version(),
                security_counter: v.security_counter,
                digest: v.digest,
                key_kind: v.key_kind,
            });
        }
        let mut spki = [0u8; MAX_SPKI_LEN];
        let der =
            match read_protected_tlv(&mut src, &v, next_key_tlv, &mut spki).map_err(from_source)? {
                None => return Ok(chain),
                Some(len) => spki
                    .get(..len)
                    .ok_or(SlotError::NextKeyTooLong { stage, len })?,
            };
        next_key = Some(
            TrustedKey::from_spki_der(der).map_err(|error| SlotError::NextKey { stage, error })?,
        );
        // Past the end of any slot on overflow: the next stage then reads as too short.
        base = base
            .checked_add(v.end())
            .and_then(|end| end.checked_next_multiple_of(STAGE_ALIGN))
            .unwrap_or(usize::MAX);
    }
    Err(SlotError::TooManyStages)
}
