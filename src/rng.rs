//! A tiny, version-stable seeded random number generator.
//!
//! Random projections and sketches must be reproducible from a seed stored in the optimizer
//! state, on every backend and across crate upgrades. `rand`'s `StdRng` explicitly does not
//! promise a stable stream between versions, and Burn's device RNGs differ between backends, so
//! the sketches are drawn on the host from SplitMix64 (Steele et al., 2014) and uploaded.

/// SplitMix64: 64 bits of state, passes BigCrush, and is trivially portable.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is fully determined by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from the open interval (0, 1): never exactly 0, so `ln` is safe.
    pub(crate) fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Fills `out` with standard normal draws (Box–Muller, both outputs of each pair used).
    pub(crate) fn fill_gaussian(&mut self, out: &mut [f32]) {
        for pair in out.chunks_mut(2) {
            let radius = (-2.0 * self.next_open01().ln()).sqrt();
            let (sin, cos) = (2.0 * core::f64::consts::PI * self.next_open01()).sin_cos();
            pair[0] = (radius * cos) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = (radius * sin) as f32;
            }
        }
    }
}

/// Fills `out` with standard normal draws determined by `seed` alone, in parallel chunks.
pub(crate) fn fill_gaussian_seeded(seed: u64, out: &mut [f32]) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 15;
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| SplitMix64::new(mix_seed(seed, i as u64)).fill_gaussian(chunk));
}

/// A uniformly random subset of `k` distinct indices of `0..n`, ascending (partial
/// Fisher–Yates).
pub(crate) fn random_subset(seed: u64, n: usize, k: usize) -> Vec<i64> {
    let mut rng = SplitMix64::new(seed);
    let mut pool: Vec<i64> = (0..n as i64).collect();
    for i in 0..k.min(n) {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(k.min(n));
    pool.sort_unstable();
    pool
}

/// Combines two values into one well-mixed seed (used to derive a per-refresh seed).
pub(crate) fn mix_seed(a: u64, b: u64) -> u64 {
    SplitMix64::new(a ^ b.rotate_left(32).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seed_different_stream() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .scan(SplitMix64::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Published first output of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn gaussian_draws_have_unit_variance() {
        let n = 200_001;
        let mut values = vec![0.0f32; n];
        SplitMix64::new(42).fill_gaussian(&mut values);
        let draws: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
