//! Norm-ratio scaling and the norm-growth limiter shared by Fira and APOLLO.
//!
//! Both estimate how much Adam would rescale the gradient from the low-rank state alone:
//! `phi = ||N|| / (||R|| + 1e-8)` with `N = M / (sqrt(V) + eps)` and `R` the projected
//! gradient, one factor per full-size row or column (along the low-rank axis) or one per
//! matrix. Everything stays on the device: no host round trip per step.

use burn::config::Config;
use burn::tensor::Tensor;

use crate::projection::Side;

/// Where the norm-ratio scaling factors are computed.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ScaleGranularity {
    /// One factor per full-size row (right projection) or column (left projection), the norm
    /// taken along the low-rank axis: Fira's default and APOLLO's `channel`. Two-sided
    /// subspaces have no such axis and use one factor per matrix.
    Channel,
    /// One factor for the whole matrix: Fira's matrix-level ablation, APOLLO's `tensor`
    /// (APOLLO-Mini).
    Tensor,
}

/// Added to the denominator of every norm ratio, as the reference code does.
const RATIO_EPS: f32 = 1e-8;

/// The dimension summed over for per-channel norms, or `None` for one norm per matrix.
pub(crate) fn channel_axis(side: Side, granularity: ScaleGranularity) -> Option<usize> {
    match (granularity, side) {
        (ScaleGranularity::Channel, Side::Right) => Some(1),
        (ScaleGranularity::Channel, Side::Left) => Some(0),
        _ => None,
    }
}

/// Squared norms along `axis` (shape `[m, 1]` or `[1, n]`), or the squared Frobenius norm
/// (shape `[1, 1]`).
pub(crate) fn squared_norms(x: Tensor<2>, axis: Option<usize>) -> Tensor<2> {
    match axis {
        Some(axis) => x.square().sum_dim(axis),
        None => x.square().sum().reshape([1, 1]),
    }
}

/// `phi = ||N|| / (||R|| + 1e-8)` along `axis`, broadcastable against the full matrix, given
/// `low_sq`, the squared norms of `R` along `axis` (callers reuse them).
pub(crate) fn norm_ratio(
    normalized: Tensor<2>,
    low_sq: Tensor<2>,
    axis: Option<usize>,
) -> Tensor<2> {
    let numerator = squared_norms(normalized, axis).sqrt();
    numerator.div(low_sq.sqrt().add_scalar(RATIO_EPS))
}

/// Fira's norm-growth limiter: the scaled residual may grow by at most `gamma` per step.
///
/// Given the residual's norm and the previous (limited) norm, returns the divisor to apply
/// (`max(norm / (prev + 1e-8), gamma) / gamma`, or 1 on the first step) and the new
/// previous norm `norm / divisor`, both as one-element tensors.
pub(crate) fn limit(
    norm: Tensor<1>,
    previous: Option<Tensor<1>>,
    gamma: f32,
) -> (Tensor<1>, Tensor<1>) {
    match previous {
        None => (norm.ones_like(), norm),
        Some(previous) => {
            let divisor = norm
                .clone()
                .div(previous.add_scalar(RATIO_EPS))
                .clamp_min(gamma)
                .div_scalar(gamma);
            let limited = norm.div(divisor.clone());
            (divisor, limited)
        }
    }
}
