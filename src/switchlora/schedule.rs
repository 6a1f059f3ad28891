//! How many adapter vectors a layer switches at each step.
//!
//! The reference's exponential schedule: `rate(t) = max(0.3^((t + 1) / D), 1e-8)` with
//! `D = descent_fraction * total_steps`, `interval(t) = interval / rate(t)`, and `r / interval(t)`
//! vectors switched per step, the fractional part realized by a Bernoulli draw. Switching is
//! frequent early (every `interval / r` steps per vector) and fades to almost never.

use burn::config::Config;

use crate::rng::{mix_seed, SplitMix64};

/// The switching schedule of [`Switcher`](super::Switcher).
///
/// ```
/// use lowrank_optim::switchlora::SwitchScheduleConfig;
///
/// let schedule = SwitchScheduleConfig::new(10_000);
/// schedule.validate()?;
/// // At D = 1000 steps the rate has fallen to 0.3.
/// assert!((schedule.rate(999) - 0.3).abs() < 1e-12);
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct SwitchScheduleConfig {
    /// Length of the run in optimizer steps (the decay length `D` is a fraction of it).
    pub total_steps: usize,
    /// Base interval: at rate 1 each adapter vector is switched once per `interval` steps.
    #[config(default = 40)]
    pub interval: usize,
    /// `D / total_steps`: the rate falls to 0.3 after this fraction of the run.
    #[config(default = 0.1)]
    pub descent_fraction: f64,
    /// Steps the counterpart of a switched vector stays frozen (the reference's Adam warm-up).
    #[config(default = 5)]
    pub freeze_steps: usize,
    /// Seed of the draws that round fractional switch counts.
    #[config(default = 0)]
    pub seed: u64,
}

impl SwitchScheduleConfig {
    /// Checks every field; an interval shorter than two freezes is rejected as by the
    /// reference (A and B each need their counterpart's freeze to end before switching again).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::{check, Error};
        check::positive_count("total_steps", self.total_steps)?;
        check::positive_count("interval", self.interval)?;
        check::density("descent_fraction", self.descent_fraction)?;
        if self.interval < 2 * self.freeze_steps {
            return Err(Error::InvalidConfig {
                field: "interval",
                value: format!("{} (freeze_steps = {})", self.interval, self.freeze_steps),
                expected: "at least 2 * freeze_steps",
            });
        }
        Ok(())
    }

    /// The decay length `D` in steps (at least 1).
    pub fn descent_steps(&self) -> f64 {
        (self.descent_fraction * self.total_steps as f64).max(1.0)
    }

    /// The switching rate at `step`, in `[1e-8, 1)`.
    pub fn rate(&self, step: usize) -> f64 {
        let x = 0.3f64.powf(1.0 / self.descent_steps());
        x.powf(step as f64 + 1.0).max(1e-8)
    }

    /// The expected number of vectors of a rank-`rank` adapter switched at `step`.
    pub fn expected_switches(&self, rank: usize, step: usize) -> f64 {
        rank as f64 * self.rate(step) / self.interval as f64
    }

    /// The number of vectors switched at `step` in the layer with ordinal `layer`: the integer
    /// part of the expectation plus one with probability of its fractional part. The draw is a
    /// function of (seed, layer, step) alone, so a resumed run draws what the original would
    /// have: the generator's position is the step.
    pub fn switches(&self, rank: usize, step: usize, layer: usize) -> usize {
        let expected = self.expected_switches(rank, step);
        let whole = expected.floor();
        let u =
            SplitMix64::new(mix_seed(mix_seed(self.seed, layer as u64), step as u64)).next_open01();
        whole as usize + usize::from(u < expected - whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_the_reference_formula() {
        let s = SwitchScheduleConfig::new(5000);
        // D = 500: rate(t) = (0.3^(1/500))^(t+1).
        for t in [0usize, 10, 499, 2000, 4999] {
            let expected = (0.3f64.powf(1.0 / 500.0)).powf(t as f64 + 1.0).max(1e-8);
            assert!((s.rate(t) - expected).abs() < 1e-12, "t = {t}");
        }
        assert!((s.rate(499) - 0.3).abs() < 1e-12);
        assert_eq!(SwitchScheduleConfig::new(10).rate(1_000_000), 1e-8);
    }

    #[test]
    fn fractional_switch_counts_are_right_on_average_and_reproducible() {
        let s = SwitchScheduleConfig::new(1000).with_seed(3);
        let (rank, step) = (128, 50);
        let expected = s.expected_switches(rank, step); // 128 * 0.3^(51/100) / 40 ≈ 1.74
        let draws: Vec<usize> = (0..20_000)
            .map(|layer| s.switches(rank, step, layer))
            .collect();
        assert!(draws.iter().all(|&n| n == 1 || n == 2));
        let mean = draws.iter().sum::<usize>() as f64 / draws.len() as f64;
        // Bernoulli on the fractional part: standard error sqrt(p(1-p)/n) < 0.004.
        assert!((mean - expected).abs() < 0.015, "mean {mean} vs {expected}");
        assert_eq!(s.switches(rank, step, 17), draws[17]);
        let other = s.clone().with_seed(4);
        let differs = (0..100).any(|l| other.switches(rank, step, l) != draws[l]);
        assert!(differs, "the seed must matter");
    }
}
