//! A bounded per-device dedup horizon for redelivered messages.
//!
//! MQTT QoS 1 is at-least-once: after a reconnect the broker may deliver a
//! message again. Each device's messages carry a sequence number; we remember,
//! per device, the highest seq seen and a bitmap of the `horizon` seqs below it.
//! A seq inside the horizon that was already seen is a duplicate.
//!
//! Bounded twice: the bitmap is `horizon` bits per device, and the device map is
//! a two-generation cache (when the current generation fills half the device cap
//! it becomes the previous one and the old previous is dropped), so memory is at
//! most `max_devices` entries whatever the fleet size. A device forgotten that
//! way loses its history, which can at worst let one redelivery through; the
//! reconciler repairs such a bucket from cold storage.
//!
//! A seq far below the horizon is treated as a device restart (seq reset) and
//! accepted, rather than dropping the device's data.

use std::collections::HashMap;

use devices::DeviceId;

/// What the horizon says about one (device, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: count it.
    New,
    /// Seen before within the horizon: skip it.
    Duplicate,
    /// Far below the horizon: taken as a device restart; counted, window reset.
    Reset,
}

#[derive(Debug, Clone)]
struct Window {
    /// Highest seq seen.
    hi: u64,
    /// Bit `i` of the bitmap: whether `hi - i` was seen.
    bits: Box<[u64]>,
}

impl Window {
    fn new(seq: u64, words: usize) -> Self {
        let mut bits = vec![0u64; words].into_boxed_slice();
        bits[0] = 1;
        Self { hi: seq, bits }
    }

    fn horizon(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn get(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64) {
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Shifts the bitmap so that bit 0 stands for `new_hi`.
    fn advance(&mut self, by: u64) {
        if by >= self.horizon() {
            self.bits.iter_mut().for_each(|w| *w = 0);
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let n = self.bits.len();
        for i in (0..n).rev() {
            let src = i.checked_sub(words);
            let lo = src.map_or(0, |s| self.bits[s]);
            let carry = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.bits[s]);
            self.bits[i] = if bits == 0 {
                lo
            } else {
                (lo << bits) | (carry >> (64 - bits))
            };
        }
    }

    fn check(&mut self, seq: u64) -> Verdict {
        if seq > self.hi {
            self.advance(seq - self.hi);
            self.hi = seq;
            self.set(0);
            return Verdict::New;
        }
        let behind = self.hi - seq;
        if behind >= self.horizon() {
            *self = Window::new(seq, self.bits.len());
            return Verdict::Reset;
        }
        if self.get(behind) {
            Verdict::Duplicate
        } else {
            self.set(behind);
            Verdict::New
        }
    }
}

/// Per-device dedup horizons, bounded in devices and seqs per device.
#[derive(Debug)]
pub struct Dedup {
    words: usize,
    generation_cap: usize,
    current: HashMap<DeviceId, Window>,
    previous: HashMap<DeviceId, Window>,
}

impl Dedup {
    /// `horizon` seqs per device (rounded up to a multiple of 64, at least 64);
    /// at most `max_devices` devices remembered.
    pub fn new(horizon: u32, max_devices: usize) -> Self {
        Self {
            words: (horizon as usize).div_ceil(64).max(1),
            generation_cap: (max_devices / 2).max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    pub fn check(&mut self, device: &DeviceId, seq: u64) -> Verdict {
        if let Some(w) = self.current.get_mut(device) {
            return w.check(seq);
        }
        let (window, verdict) = match self.previous.remove(device) {
            Some(mut w) => {
                let v = w.check(seq);
                (w, v)
            }
            None => (Window::new(seq, self.words), Verdict::New),
        };
        if self.current.len() >= self.generation_cap {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(device.clone(), window);
        verdict
    }

    /// Devices currently remembered.
    pub fn devices(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn duplicates_within_horizon() {
        let mut d = Dedup::new(128, 100);
        let a = dev("a");
        assert_eq!(d.check(&a, 5), Verdict::New);
        assert_eq!(d.check(&a, 5), Verdict::Duplicate);
        assert_eq!(d.check(&a, 3), Verdict::New);
        assert_eq!(d.check(&a, 200), Verdict::New);
        assert_eq!(
            d.check(&a, 3),
            Verdict::Reset,
            "3 is 197 below 200: outside a 128 horizon"
        );
        assert_eq!(d.check(&a, 3), Verdict::Duplicate);
        assert_eq!(
            d.check(&dev("b"), 3),
            Verdict::New,
            "devices are independent"
        );
    }

    #[test]
    fn device_map_is_bounded() {
        let mut d = Dedup::new(64, 10);
        for i in 0..1000 {
            d.check(&dev(&format!("d{i}")), 1);
            assert!(d.devices() <= 10);
        }
    }

    proptest! {
        /// Against a reference set: within the horizon, a seq is a duplicate
        /// exactly when it was seen before.
        #[test]
        fn matches_reference(seqs in prop::collection::vec(0u64..300, 1..500)) {
            let mut d = Dedup::new(512, 10);
            let a = dev("a");
            let mut seen = std::collections::HashSet::new();
            for s in seqs {
                let v = d.check(&a, s);
                prop_assert_eq!(v == Verdict::Duplicate, !seen.insert(s), "seq {}", s);
            }
        }
    }
}
