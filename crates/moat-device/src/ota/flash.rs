//! Simulated flash: two image slots and the persisted boot state, in RAM.

use moat_image::ImageVersion;
use moat_image::boot::{BootState, BootStorage, Chain, Slot};

/// A payload containing this never confirms itself after it boots (the simulation of an
/// image that crashes before its health check), so the device rolls back.
pub const NO_CONFIRM_MARKER: &[u8] = b"MOAT-SIM:NO-CONFIRM";

/// Two slots of flash and the boot state. Erased bytes are `0xff`; only written bytes are
/// held in memory (a fleet of a thousand simulated devices stays small).
#[derive(Debug, Clone)]
pub struct SimFlash {
    /// Size of each slot.
    slot_len: usize,
    /// What was written at the start of each slot; the rest reads as erased.
    slots: [Vec<u8>; 2],
    state: BootState,
    /// The slot that runs and its version (what the last boot chose).
    running: (Slot, ImageVersion),
}

impl SimFlash {
    /// A device straight from the factory: `factory` (a signed image) in slot A, slot B
    /// erased, both `slot_len` bytes. Its anti-rollback floor starts at the factory image's
    /// security counter.
    pub fn with_factory_image(
        factory: &[u8],
        slot_len: usize,
        version: ImageVersion,
        counter: u32,
    ) -> Self {
        let mut state = BootState::default();
        state.min_counters[0] = counter;
        SimFlash {
            slot_len: slot_len.max(factory.len()),
            slots: [factory.to_vec(), Vec::new()],
            state,
            running: (Slot::A, version),
        }
    }

    /// Size of a slot.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// The slot updates go to.
    pub fn inactive(&self) -> Slot {
        self.running.0.other()
    }

    /// The version that runs.
    pub fn running_version(&self) -> ImageVersion {
        self.running.1
    }

    /// The anti-rollback floor of the application stage.
    pub fn min_counter(&self) -> u32 {
        self.state.min_counters[0]
    }

    /// The persisted state.
    pub fn state(&self) -> &BootState {
        &self.state
    }

    /// Erases `slot` and writes `image` at its start.
    pub fn write_slot(&mut self, slot: Slot, image: &[u8]) {
        let n = image.len().min(self.slot_len);
        let s = self.slot_mut(slot);
        s.clear();
        s.extend_from_slice(&image[..n]);
    }

    /// Records what the bootloader booted.
    pub(crate) fn booted(&mut self, slot: Slot, chain: &Chain) {
        let version = chain.stages().last().map(|s| s.version).unwrap_or_default();
        self.running = (slot, version);
    }

    /// Whether the image in `slot` confirms itself once it runs (it does unless its payload
    /// carries [`NO_CONFIRM_MARKER`]).
    pub(crate) fn healthy(&self, slot: Slot) -> bool {
        let s = self.slot(slot);
        !s.windows(NO_CONFIRM_MARKER.len())
            .any(|w| w == NO_CONFIRM_MARKER)
    }

    fn slot(&self, slot: Slot) -> &Vec<u8> {
        match slot {
            Slot::A => &self.slots[0],
            Slot::B => &self.slots[1],
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut Vec<u8> {
        match slot {
            Slot::A => &mut self.slots[0],
            Slot::B => &mut self.slots[1],
        }
    }
}

/// Flash never fails in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

impl BootStorage for SimFlash {
    type Error = Never;

    fn slot_len(&self, _slot: Slot) -> usize {
        self.slot_len
    }

    fn read(&mut self, slot: Slot, offset: usize, buf: &mut [u8]) -> Result<(), Never> {
        let s = self.slot(slot);
        let start = offset.min(s.len());
        let end = offset.saturating_add(buf.len()).min(s.len()).max(start);
        let n = end - start;
        buf[..n].copy_from_slice(&s[start..end]);
        buf[n..].fill(0xff);
        Ok(())
    }

    fn load_state(&mut self) -> Result<BootState, Never> {
        Ok(self.state)
    }

    fn store_state(&mut self, state: &BootState) -> Result<(), Never> {
        self.state = *state;
        Ok(())
    }
}
