//! `proj_type` on a real Burn `Linear`: the rule reduces the dimension of the layer that
//! galore-torch reduces for the same layer, although Burn stores the weight as `[d_in, d_out]`,
//! the transpose of PyTorch's `[out, in]`.
//!
//! The gradient is chosen so that the answer is visible without any SVD: with the batch
//! `x = I` and the loss `sum(y ∘ C)`, the weight's gradient is exactly `C`. For
//! `C = diag(s) Q + noise` (rows of distinct norms, `r` of them large, `Q` orthogonal, noise
//! 1e-3) the top-`r` singular vectors on the input side are close to the first `r` unit
//! vectors, so a GaLore step that reduces the input dimension changes (almost) only the first
//! `r` rows of the Burn weight; one that reduces the output dimension instead keeps Adam's sign
//! of the noise in every row. `C = Q diag(s) + noise` tells the output dimension apart the same
//! way, by columns.

use crate::common;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use common::{Dense, PrepareFirst};
use lowrank_optim::{ApolloConfig, GaLoreConfig, ProjType, Router};

const RANK: usize = 3;

/// Which dimension of the layer galore-torch reduces (read from `galore_projector.py`, for its
/// `[out, in]` tensor: `right` reduces `in`, `left` reduces `out`, `std` picks right when
/// `out >= in`, `reverse_std` left).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduced {
    Input,
    Output,
}

fn galore_torch_reduces(proj_type: ProjType, d_in: usize, d_out: usize) -> Reduced {
    let right = match proj_type {
        ProjType::Std => d_out >= d_in,
        ProjType::ReverseStd => d_out < d_in,
        ProjType::Right => true,
        ProjType::Left => false,
        ProjType::Full => unreachable!("two-sided reduces both"),
    };
    if right {
        Reduced::Input
    } else {
        Reduced::Output
    }
}

/// `C = diag(s) Q + noise` (`reduced == Input`, singular vectors on the rows) or
/// `C = Q diag(s) + noise` (`Output`, on the columns), `[d_in, d_out]`, with `s` decreasing
/// from the first index (`r` leading values, then a small tail) and a small deterministic noise
/// that no rank-`r` subspace captures.
fn gradient(d_in: usize, d_out: usize, reduced: Reduced) -> Dense {
    // r leading values well above the rest, so the noise tilts the top subspace by < 1%.
    let s = |i: usize| {
        if i < RANK {
            1.0 - 0.2 * i as f64
        } else {
            0.05 * 0.5f64.powi((i - RANK) as i32)
        }
    };
    let noise = |i: usize, j: usize| 1e-3 * (1.7 * i as f64 + 2.3 * j as f64 + 0.5).sin();
    match reduced {
        Reduced::Input => {
            let q = Dense::orthonormal_dct(d_out);
            Dense::from_fn(d_in, d_out, |i, j| {
                let aligned = if i < d_out { s(i) * q.at(i, j) } else { 0.0 };
                aligned + noise(i, j)
            })
        }
        Reduced::Output => {
            let q = Dense::orthonormal_dct(d_in);
            Dense::from_fn(d_in, d_out, |i, j| {
                let aligned = if j < d_in { q.at(i, j) * s(j) } else { 0.0 };
                aligned + noise(i, j)
            })
        }
    }
}

/// One GaLore step through a routed `ModuleOptimizer` on a `Linear` whose weight gradient is
/// `c`; returns the change of the weight, `[d_in, d_out]`.
fn weight_change(proj_type: ProjType, c: &Dense) -> Dense {
    let galore = GaLoreConfig::new()
        .with_rank(RANK)
        .with_proj_type(proj_type)
        .with_scale(1.0)
        .build()
        .unwrap();
    step_layer(galore, c)
}

/// One step of `projected` (on the weight; AdamW on the bias) on a `Linear` whose weight
/// gradient is `c`; returns the change of the weight, `[d_in, d_out]`.
fn step_layer(projected: impl lowrank_optim::MatrixOptimizer, c: &Dense) -> Dense {
    let device = common::device().autodiff();
    let (d_in, d_out) = (c.rows, c.cols);
    let layer: Linear = LinearConfig::new(d_in, d_out).init(&device);
    let before = Dense::from_tensor(&layer.weight.val().inner());
    let mut optim = Router::from_predicate(|p| p.shape.len() == 2)
        .build(
            &layer,
            projected,
            AdamWConfig::new().with_weight_decay(0.0).build(),
        )
        .unwrap();
    let x = Dense::identity(d_in).to_tensor_on(&device);
    let loss = layer.forward(x).mul(c.to_tensor_on(&device)).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &layer);
    let layer = optim.step(0.01, layer, grads);
    let after = Dense::from_tensor(&layer.valid().weight.val());
    Dense::from_fn(d_in, d_out, |i, j| after.at(i, j) - before.at(i, j))
}

/// Largest |change| inside and outside the first `RANK` rows (or columns).
fn inside_outside(delta: &Dense, reduced: Reduced) -> (f64, f64) {
    let (mut inside, mut outside) = (0.0f64, 0.0f64);
    for i in 0..delta.rows {
        for j in 0..delta.cols {
            let index = if reduced == Reduced::Input { i } else { j };
            let slot = if index < RANK {
                &mut inside
            } else {
                &mut outside
            };
            *slot = slot.max(delta.at(i, j).abs());
        }
    }
    (inside, outside)
}

/// `max |change|` outside the first `r` rows (columns) over `max |change|` inside them.
fn leak(proj_type: ProjType, c: &Dense, reduced: Reduced) -> f64 {
    let (inside, outside) = inside_outside(&weight_change(proj_type, c), reduced);
    assert!(
        inside > 1e-3,
        "{proj_type:?}: the weight did not move ({inside:e})"
    );
    outside / inside
}

#[test]
fn every_proj_type_reduces_the_dimension_galore_torch_reduces_for_the_same_layer() {
    let shapes = [(12, 12), (16, 8), (8, 16)];
    let rules = [
        ProjType::Std,
        ProjType::ReverseStd,
        ProjType::Left,
        ProjType::Right,
    ];
    for (d_in, d_out) in shapes {
        for proj_type in rules {
            let reduced = galore_torch_reduces(proj_type, d_in, d_out);
            let what = format!("{proj_type:?} on Linear({d_in} -> {d_out})");
            let c = gradient(d_in, d_out, reduced);
            // Confined to the reduced dimension's top-r subspace: the first r rows (columns),
            // up to the noise's tilt of the singular vectors (~1e-2 of the update).
            let ours = leak(proj_type, &c, reduced);
            assert!(
                ours < 0.05,
                "{what}: reduces the other dimension (leak {ours:.3})"
            );
            // The measure tells the two apart: reducing the other dimension leaks fully.
            let opposite = match reduced {
                Reduced::Input => ProjType::Left,
                Reduced::Output => ProjType::Right,
            };
            let theirs = leak(opposite, &c, reduced);
            assert!(theirs > 0.5, "{what}: {opposite:?} leaks only {theirs:.3}");
        }
    }
}

#[test]
fn the_square_attention_weight_keeps_galore_torch_state_shape() {
    // galore-torch on a square [out, in] weight: right projection, state [out, r]. In Burn's
    // layout that is [r, d_out]: the projected moments of `Pᵀ G`.
    let galore = GaLoreConfig::new().with_rank(RANK).build().unwrap();
    let grad = gradient(12, 12, Reduced::Input).to_tensor();
    let prepared = galore
        .manager()
        .prepare_first(grad)
        .expect("finite gradient");
    assert_eq!(prepared.low_grad.dims(), [RANK, 12]);
    assert_eq!(prepared.moments.dims(), [RANK, 12]);
}

/// APOLLO's channels follow the side: apollo-torch projects a square `[out, in]` weight on the
/// right and scales each of its rows, i.e. each output feature. In Burn's layout that is one
/// factor per column: `ΔW = G diag(c)` with `c` varying from column to column.
#[test]
fn apollo_scales_each_output_feature_of_a_square_layer() {
    let d = 12;
    // Entries of order one, so the change of the weight is far above its f32 round-off.
    let c = Dense::from_fn(d, d, |i, j| {
        1.0 + 0.5 * (1.7 * i as f64 + 2.3 * j as f64).sin()
    });
    let apollo = ApolloConfig::new().with_rank(RANK).build().unwrap();
    let delta = step_layer(apollo, &c);
    let ratio = |i: usize, j: usize| delta.at(i, j) / c.at(i, j);
    for j in 0..d {
        for i in 1..d {
            let spread = (ratio(i, j) - ratio(0, j)).abs() / ratio(0, j).abs();
            assert!(
                spread < 1e-3,
                "column {j}: factor differs down the column ({spread:e})"
            );
        }
    }
    let columns: Vec<f64> = (0..d).map(|j| ratio(0, j)).collect();
    let (lo, hi) = columns
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(
        (hi - lo).abs() > 1e-3 * hi.abs(),
        "one factor for every column: not channel-wise ({lo:e} .. {hi:e})"
    );
}
