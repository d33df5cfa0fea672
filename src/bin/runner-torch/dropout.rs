//! Dropout masks drawn here from the stream libtorch would have drawn them from, bit for bit.
//!
//! libtorch's CPU dropout fills a mask one element at a time (`bernoulli_`: two 32-bit outputs
//! of its Mersenne twister per element, through a function call and a lock each), which was a
//! tenth of the wine MLP's time. The generator is the standard MT19937, seeded with the fit's
//! seed: runner follows it here, from the position libtorch reached after initialising the
//! weights, and draws each mask with libtorch's rule (keep when `u < 1 - p`, `u` the low 53 bits
//! of `(first << 32) | second` over 2^53). The mask is then scaled and applied by the same
//! libtorch ops as before (`div_`, then a product), so a network trains to the same weights.
//!
//! The position is found, not assumed: before training, libtorch draws a few uniform doubles and
//! a Bernoulli mask, and runner finds them in its own stream; if it does not (another libtorch,
//! another generator), libtorch keeps drawing the masks itself.

use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

const STATE: usize = 624;
const SHIFT: usize = 397;

/// The 32-bit Mersenne twister (Matsumoto and Nishimura 1998), as `std::mt19937` and libtorch's
/// CPU generator. A block of 624 outputs is made at once (the twist, then the tempering).
#[derive(Clone)]
pub(crate) struct Mt19937 {
    state: [u32; STATE],
    /// The tempered outputs of the current block.
    block: [u32; STATE],
    next: usize,
}

impl Mt19937 {
    pub(crate) fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; STATE];
        state[0] = seed;
        for i in 1..STATE {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            block: [0; STATE],
            next: STATE,
        }
    }

    fn twist(&mut self) {
        let s = &mut self.state;
        let mix = |upper: u32, lower: u32, far: u32| {
            let y = (upper & 0x8000_0000) | (lower & 0x7fff_ffff);
            far ^ (y >> 1) ^ ((y & 1).wrapping_neg() & 0x9908_b0df)
        };
        for i in 0..STATE - SHIFT {
            s[i] = mix(s[i], s[i + 1], s[i + SHIFT]);
        }
        for i in STATE - SHIFT..STATE - 1 {
            s[i] = mix(s[i], s[i + 1], s[i + SHIFT - STATE]);
        }
        s[STATE - 1] = mix(s[STATE - 1], s[0], s[SHIFT - 1]);
        for (out, y) in self.block.iter_mut().zip(s.iter()) {
            let mut y = *y;
            y ^= y >> 11;
            y ^= (y << 7) & 0x9d2c_5680;
            y ^= (y << 15) & 0xefc6_0000;
            *out = y ^ (y >> 18);
        }
        self.next = 0;
    }

    #[inline]
    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.next >= STATE {
            self.twist();
        }
        self.next += 1;
        self.block[self.next - 1]
    }

    /// One Bernoulli draw by libtorch's rule: kept when the 53 bits of two outputs are below
    /// `bound` ([`keep_bound`]).
    #[inline]
    pub(crate) fn keeps(&mut self, bound: u64) -> bool {
        let first = self.next_u32();
        bits53(first, self.next_u32()) < bound
    }

    /// A mask of `out.len()` Bernoulli draws ([`Mt19937::keeps`], in order): `scale` where
    /// kept, else 0. The same draws as one `keeps` after another, taken from the block in pairs.
    pub(crate) fn fill_mask(&mut self, bound: u64, scale: f32, out: &mut [f32]) {
        let mut rest = out;
        while !rest.is_empty() {
            if self.next + 2 > STATE {
                // A pair across two blocks (or none left): one draw the plain way.
                rest[0] = if self.keeps(bound) { scale } else { 0.0 };
                rest = &mut rest[1..];
                continue;
            }
            let pairs = ((STATE - self.next) / 2).min(rest.len());
            let outputs = &self.block[self.next..self.next + 2 * pairs];
            let (now, later) = rest.split_at_mut(pairs);
            for (m, pair) in now.iter_mut().zip(outputs.chunks_exact(2)) {
                *m = if bits53(pair[0], pair[1]) < bound {
                    scale
                } else {
                    0.0
                };
            }
            self.next += 2 * pairs;
            rest = later;
        }
    }
}

/// The bound of [`Mt19937::keeps`] for keep probability `keep`: `u < keep` on the 53 bits
/// themselves (u is bits / 2^53 exactly, and so is the bound).
pub(crate) fn keep_bound(keep: f64) -> u64 {
    (keep * (1u64 << 53) as f64).ceil() as u64
}

/// Outputs searched for libtorch's position: initialising a network of up to about a million
/// weights draws fewer.
const SEARCH: usize = 1 << 21;

/// The 53 bits of libtorch's uniform double, from two outputs (the first as the high half).
fn bits53(first: u32, second: u32) -> u64 {
    ((u64::from(first) << 32) | u64::from(second)) & ((1 << 53) - 1)
}

/// libtorch's uniform double in [0, 1): the 53 bits over 2^53.
fn uniform_of(first: u32, second: u32) -> f64 {
    bits53(first, second) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Where the stream of `seed` holds `probe` (uniform doubles) followed by the Bernoulli `mask`
/// drawn with keep probability `keep`: the generator at the probe's start.
fn locate(seed: u32, probe: &[f64], mask: &[f32], keep: f64) -> Option<Mt19937> {
    let mut mt = Mt19937::new(seed);
    let need = 2 * (probe.len() + mask.len());
    let mut outputs: Vec<u32> = Vec::new();
    let found = (0..SEARCH).find(|at| {
        while outputs.len() < at + need {
            outputs.push(mt.next_u32());
        }
        let mut draws = outputs[*at..at + need]
            .chunks(2)
            .map(|pair| uniform_of(pair[0], pair[1]));
        probe.iter().all(|p| draws.next() == Some(*p))
            && mask
                .iter()
                .all(|m| draws.next().map(|u| u < keep) == Some(*m == 1.0))
    })?;
    let mut at = Mt19937::new(seed);
    (0..found).for_each(|_| {
        at.next_u32();
    });
    Some(at)
}

/// The source of one network's dropout masks while it trains: runner's follower of libtorch's
/// generator once [`Masks::follow`] found its position, else libtorch itself. Shared by the
/// network's dropout layers, which draw in the order they run.
#[derive(Clone, Default)]
pub(crate) struct Masks(Arc<Mutex<Option<Mt19937>>>);

impl std::fmt::Debug for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let following = self.0.lock().map(|s| s.is_some()).unwrap_or(false);
        write!(f, "Masks {{ following: {following} }}")
    }
}

impl Masks {
    /// Takes over libtorch's generator (seeded with `seed`, the weights initialised) for masks
    /// of keep probability `1 - p`; whether it did. libtorch's generator is left further on, and
    /// nothing else in training may draw from it.
    pub(crate) fn follow(&self, seed: i64, p: f64) -> bool {
        let keep = 1.0 - p;
        let probe = Vec::<f64>::try_from(
            Tensor::empty([4], (Kind::Double, Device::Cpu)).uniform_(0.0, 1.0),
        );
        let mask = Vec::<f32>::try_from(
            Tensor::empty([64], (Kind::Float, Device::Cpu)).bernoulli_float_(keep),
        );
        let (Ok(probe), Ok(mask)) = (probe, mask) else {
            return false;
        };
        let found = locate(seed as u32, &probe, &mask, keep);
        let engaged = found.is_some();
        if let Ok(mut slot) = self.0.lock() {
            *slot = found;
        }
        engaged
    }

    /// `x` with dropout `p` when training: the mask drawn here when following, else libtorch's.
    /// (The dense layers' inputs are an activation's output, contiguous floats: while following,
    /// libtorch draws none itself.)
    pub(crate) fn apply(&self, x: &Tensor, p: f64, train: bool) -> Tensor {
        let eligible = train
            && p > 0.0
            && p < 1.0
            && x.device() == Device::Cpu
            && x.kind() == Kind::Float
            && x.is_contiguous();
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stream) = slot.as_mut().filter(|_| eligible) else {
            return x.dropout(p, train);
        };
        let keep = 1.0 - p;
        let bound = keep_bound(keep);
        let mut mask = vec![0.0f32; x.numel()];
        stream.fill_mask(bound, 1.0, &mut mask);
        drop(slot);
        let mut noise = Tensor::from_slice(&mask).view(x.size().as_slice());
        // As libtorch's dropout scales its mask and applies it: the same ops, the same values.
        let _ = noise.g_div_scalar_(keep);
        x * noise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask filled from the block in pairs is the one drawn a `keeps` at a time, whatever the
    /// position in the block (pairs that straddle two blocks included).
    #[test]
    fn a_filled_mask_is_the_masks_drawn_one_by_one() {
        let bound = keep_bound(0.7);
        let (mut filled, mut one_by_one) = (Mt19937::new(9), Mt19937::new(9));
        for len in [0, 1, 5, 311, 312, 313, 1000, 623, 7, 2500] {
            let mut mask = vec![-1.0f32; len];
            filled.fill_mask(bound, 2.5, &mut mask);
            let drawn: Vec<f32> = (0..len)
                .map(|_| if one_by_one.keeps(bound) { 2.5 } else { 0.0 })
                .collect();
            assert_eq!(mask, drawn, "{len}");
        }
        assert_eq!(filled.next_u32(), one_by_one.next_u32());
    }

    #[test]
    fn the_twister_gives_the_standard_sequence() {
        // The 10,000th output of std::mt19937 with its default seed 5489 (C++11, 26.5.5).
        let mut mt = Mt19937::new(5489);
        let last = (0..10_000).map(|_| mt.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }

    #[test]
    fn masks_follow_libtorchs_generator_bit_for_bit() {
        let _turn = crate::generator_turn();
        tch::manual_seed(7);
        let x = Tensor::rand([64, 33], (Kind::Float, Device::Cpu));
        // The draws a network's initialisation makes before training.
        let initialise = |seed: i64| {
            tch::manual_seed(seed);
            let _ = Tensor::empty([1000], (Kind::Float, Device::Cpu)).uniform_(-0.5, 0.5);
        };
        let bits = |t: Tensor| -> Vec<u32> {
            let v = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
            v.iter().map(|f| f.to_bits()).collect()
        };
        for seed in [0i64, 42, 1 << 40] {
            initialise(seed);
            let masks = Masks::default();
            assert!(
                masks.follow(seed, 0.1),
                "seed {seed}: libtorch's position not found"
            );
            initialise(seed);
            for layer in 0..3 {
                let theirs = bits(x.dropout(0.1, true));
                assert!(theirs.contains(&0) && theirs.iter().any(|b| *b != 0));
                assert_eq!(
                    theirs,
                    bits(masks.apply(&x, 0.1, true)),
                    "seed {seed}, mask {layer}"
                );
            }
        }
        // Not training, or a position it cannot find: libtorch's own dropout.
        let masks = Masks::default();
        assert_eq!(bits(masks.apply(&x, 0.1, false)), bits(x.shallow_clone()));
        tch::manual_seed(3);
        let _ = Tensor::empty([1 << 22], (Kind::Float, Device::Cpu)).uniform_(0.0, 1.0);
        assert!(!masks.follow(3, 0.1));
    }
}
