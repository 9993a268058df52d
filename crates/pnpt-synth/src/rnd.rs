//! The deterministic random helper of the synthetic dataset and the pseudo-anomaly generator.
//!
//! Both draw each image from its own ChaCha8 stream, keyed through [`splitmix`], so the output
//! is byte-identical whatever the thread count. The exact sequence of draws is part of that
//! output: changing what a method draws, or how it maps the draws to a value, changes the
//! synthetic set (bump `synthetic::GENERATOR_VERSION`) and every pseudo-anomaly.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64's finaliser: mixes a key into a well-spread seed.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded ChaCha8 stream with the few draws the renderers need. `Clone` replays the stream,
/// which the synthetic set uses to redraw a scene with a structural fault.
#[derive(Clone)]
pub(crate) struct Rnd(ChaCha8Rng);

impl Rnd {
    pub(crate) fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in [0, 1).
    pub(crate) fn u(&mut self) -> f32 {
        self.0.random::<f32>()
    }

    /// Uniform in [a, b).
    pub(crate) fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.u()
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f32) -> bool {
        self.u() < p
    }

    /// -1 or +1, evenly.
    pub(crate) fn sign(&mut self) -> f32 {
        if self.u() < 0.5 { -1.0 } else { 1.0 }
    }

    /// Approximately standard normal (Irwin–Hall of 4), cheap and deterministic.
    pub(crate) fn gauss(&mut self) -> f32 {
        (self.u() + self.u() + self.u() + self.u() - 2.0) * 1.732_050_8
    }

    /// Uniform in `0..n` from one `f32` draw (0 when `n` is 0). The synthetic set's choice.
    ///
    /// [`Rnd::below_u64`] draws differently (one `u64`, so it also moves the stream on
    /// differently); both are kept because each generator's output depends on its own.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.u() * n as f32) as usize).min(n.saturating_sub(1))
    }

    /// Uniform in `0..n` (`n` > 0) from one `u64` draw; the modulo bias is irrelevant here. The
    /// pseudo-anomaly generator's choice (see [`Rnd::below`]).
    pub(crate) fn below_u64(&mut self, n: usize) -> usize {
        (self.0.random::<u64>() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_clone_replays() {
        let mut a = Rnd::new(7);
        let mut b = Rnd::new(7);
        let first: Vec<f32> = (0..8).map(|_| a.u()).collect();
        let mut replay = a.clone();
        assert_eq!(first, (0..8).map(|_| b.u()).collect::<Vec<_>>());
        assert_eq!(a.below_u64(1000), replay.below_u64(1000));
        assert_ne!(Rnd::new(8).u(), first[0]);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = Rnd::new(1);
        for n in [1usize, 2, 5, 1000] {
            for _ in 0..200 {
                assert!(r.below(n) < n && r.below_u64(n) < n);
                let x = r.range(-2.0, 3.0);
                assert!((-2.0..3.0).contains(&x));
                assert!(r.sign().abs() == 1.0);
            }
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below_u64(0), 0);
    }
}
