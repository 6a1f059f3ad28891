//! Bad input: invalid configs are typed errors naming the field; non-finite gradients skip the
//! update without touching state; every tensor rank works; foreign state is a clear error.

use crate::common;

use burn::optim::Optimizer;
use burn::tensor::Tensor;
use common::{tensor, values, TestRng};
use lowrank_optim::optim::{SubspaceOptimizer, SubspaceRule};
use lowrank_optim::{
    ApolloConfig, Error, FiraConfig, FrugalConfig, GaLoreConfig, GaLoreState, Residual, Router,
};

fn field_of(result: Result<lowrank_optim::GaLore, Error>) -> &'static str {
    match result {
        Err(Error::InvalidConfig { field, .. }) => field,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted an invalid config"),
    }
}

#[test]
fn each_invalid_field_is_named() {
    let base = GaLoreConfig::new;
    assert_eq!(field_of(base().with_rank(0).build()), "rank");
    assert_eq!(
        field_of(base().with_update_proj_gap(0).build()),
        "update_proj_gap"
    );
    assert_eq!(field_of(base().with_scale(0.0).build()), "scale");
    assert_eq!(field_of(base().with_scale(-1.0).build()), "scale");
    assert_eq!(field_of(base().with_scale(f32::NAN).build()), "scale");
    assert_eq!(field_of(base().with_beta_1(1.0).build()), "beta_1");
    assert_eq!(field_of(base().with_beta_1(-0.1).build()), "beta_1");
    assert_eq!(field_of(base().with_beta_2(1.0).build()), "beta_2");
    assert_eq!(field_of(base().with_epsilon(-1e-8).build()), "epsilon");
    assert_eq!(
        field_of(base().with_weight_decay(-0.1).build()),
        "weight_decay"
    );
    assert!(base().build().is_ok());
    let message = base().with_rank(0).build().unwrap_err().to_string();
    assert!(
        message.contains("rank") && message.contains("at least 1"),
        "{message}"
    );
}

/// The field named by a config's `init` error.
fn named<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    match result {
        Err(Error::InvalidConfig { field, .. }) => field,
        other => panic!("expected an invalid-config error, got {other:?}"),
    }
}

#[test]
fn invalid_fields_of_the_other_optimizers_are_named() {
    use lowrank_optim::{ApolloConfig, FiraConfig, FrugalConfig};
    assert_eq!(named(FrugalConfig::new().with_rho(0.0).build()), "rho");
    assert_eq!(named(FrugalConfig::new().with_rho(1.5).build()), "rho");
    assert_eq!(named(FrugalConfig::new().with_rho(f32::NAN).build()), "rho");
    assert_eq!(
        named(
            FrugalConfig::new()
                .with_density(None)
                .with_projection(lowrank_optim::ProjectionMethod::Block)
                .build()
        ),
        "rho"
    );
    assert_eq!(
        named(FrugalConfig::new().with_proj_lr_scale(0.0).build()),
        "proj_lr_scale"
    );
    assert_eq!(
        named(FrugalConfig::new().with_inactive_lr_scale(-1.0).build()),
        "inactive_lr_scale"
    );
    assert_eq!(named(FiraConfig::new().with_gamma(0.99).build()), "gamma");
    assert_eq!(
        named(FiraConfig::new().with_gamma(f32::INFINITY).build()),
        "gamma"
    );
    assert_eq!(named(FiraConfig::new().with_rank(0).build()), "rank");
    assert_eq!(named(ApolloConfig::new().with_gamma(0.5).build()), "gamma");
    assert_eq!(named(ApolloConfig::new().with_scale(0.0).build()), "scale");
    let mut gap = GaLoreConfig::new().with_adaptive_gap(true);
    gap.subspace.adaptive_gap_window = 0;
    assert_eq!(named(gap.build()), "adaptive_gap_window");
    let mut gap = GaLoreConfig::new().with_adaptive_gap(true);
    gap.subspace.adaptive_gap_threshold = 1.5;
    assert_eq!(named(gap.build()), "adaptive_gap_threshold");
    assert_eq!(
        named(GaLoreConfig::new().with_density(Some(2.0)).build()),
        "density"
    );
}

#[test]
fn an_invalid_routing_pattern_is_an_error() {
    match Router::from_regex("attention.(wq") {
        Err(Error::InvalidPattern { pattern, .. }) => assert_eq!(pattern, "attention.(wq"),
        other => panic!("expected InvalidPattern, got {other:?}"),
    }
}

fn random(rng: &mut TestRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// Steps `[m, n]` weights through `grads`; returns the weights after each step and the state.
fn run_matrix(
    grads: &[Vec<f32>],
    w0: &[f32],
    shape: [usize; 2],
) -> (Vec<Vec<f32>>, Option<GaLoreState<2>>) {
    let optim = GaLoreConfig::new()
        .with_rank(2)
        .with_update_proj_gap(2)
        .build()
        .unwrap();
    let mut w = tensor(w0, shape);
    let mut state = None;
    let mut out = Vec::new();
    for g in grads {
        let (next, s) = optim.step(0.01, w, tensor(g, shape), state);
        w = next;
        state = s;
        out.push(values(&w));
    }
    (out, state)
}

#[test]
fn a_non_finite_gradient_skips_the_update_and_keeps_the_state() {
    let mut rng = TestRng::new(1);
    let shape = [8, 4];
    let w0 = random(&mut rng, 32);
    let good: Vec<Vec<f32>> = (0..4).map(|_| random(&mut rng, 32)).collect();
    for bad_value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut bad = good[0].clone();
        bad[5] = bad_value;
        // The bad gradient arrives first (no state yet), then mid-run on a refresh step (2).
        let mut grads = vec![
            bad.clone(),
            good[0].clone(),
            good[1].clone(),
            bad.clone(),
            good[2].clone(),
            good[3].clone(),
        ];
        let (with_bad, state) = run_matrix(&grads, &w0, shape);
        assert_eq!(with_bad[0], w0, "{bad_value}: first-step weights moved");
        assert_eq!(
            with_bad[3], with_bad[2],
            "{bad_value}: weights moved on a bad gradient"
        );
        assert_eq!(state.as_ref().unwrap().step, 4);
        grads.retain(|g| g.iter().all(|x| x.is_finite()));
        let (clean, _) = run_matrix(&grads, &w0, shape);
        assert_eq!(
            with_bad.last(),
            clean.last(),
            "{bad_value}: the skip changed later steps"
        );
    }
}

#[test]
fn a_non_finite_gradient_on_a_vector_is_skipped_too() {
    let optim = GaLoreConfig::new().build().unwrap();
    let w = tensor(&[1.0, 2.0, 3.0], [3]);
    let (w, state) = optim.step(0.1, w, tensor(&[0.1, 0.2, 0.3], [3]), None);
    let before = values(&w);
    let (w, state) = optim.step(0.1, w, tensor(&[0.1, f32::NAN, 0.3], [3]), state);
    assert_eq!(values(&w), before);
    assert_eq!(common::applied_steps(&state.unwrap()), 1);
}

/// Dense f64 reference of GaLore's unprojected update (HF bias correction, decay after).
fn adam_reference(w0: &[f32], grads: &[Vec<f32>], lr: f64, wd: f64) -> Vec<f64> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-6f64);
    let mut w: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
    let mut m = vec![0.0; w.len()];
    let mut v = vec![0.0; w.len()];
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        let step = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for i in 0..w.len() {
            let gi = g[i] as f64;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            w[i] -= step * m[i] / (v[i].sqrt() + eps);
            w[i] *= 1.0 - lr * wd;
        }
    }
    w
}

fn check_rank<const D: usize>(shape: [usize; D]) {
    let n: usize = shape.iter().product();
    let mut rng = TestRng::new(D as u64);
    let w0 = random(&mut rng, n);
    let grads: Vec<Vec<f32>> = (0..5).map(|_| random(&mut rng, n)).collect();
    let optim = GaLoreConfig::new().with_weight_decay(0.1).build().unwrap();
    let mut w: Tensor<D> = tensor(&w0, shape);
    let mut state = None;
    for g in &grads {
        let (next, s) = optim.step(0.01, w, tensor(g, shape), state);
        w = next;
        state = s;
    }
    let want = adam_reference(&w0, &grads, 0.01, 0.1);
    let got = values(&w);
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-5, "rank {D}: max error {err:e}");
    assert!(state.unwrap().subspace.is_none());
}

#[test]
fn every_tensor_rank_gets_unprojected_adam() {
    check_rank([7]);
    check_rank([3, 4, 5]);
    check_rank([2, 3, 2, 2]);
    check_rank([1, 1, 1, 1, 2]);
}

#[test]
fn empty_tensors_are_left_alone() {
    let optim = GaLoreConfig::new().build().unwrap();
    let w: Tensor<2> = tensor(&[], [0, 4]);
    let (w, state) = optim.step(0.01, w, tensor(&[], [0, 4]), None);
    assert_eq!(w.dims(), [0, 4]);
    assert!(state.is_none());
}

#[test]
#[should_panic(expected = "loaded from another model")]
fn state_from_a_differently_shaped_parameter_is_a_clear_error() {
    let optim = GaLoreConfig::new().with_rank(2).build().unwrap();
    let (_, state) = optim.step(
        0.01,
        tensor(&[0.5; 32], [8, 4]),
        tensor(&[0.1; 32], [8, 4]),
        None,
    );
    let _ = optim.step(
        0.01,
        tensor(&[0.5; 24], [6, 4]),
        tensor(&[0.1; 24], [6, 4]),
        state,
    );
}

/// Steps `optim` on a `[6, 8]` matrix: a good gradient, then (optionally) one with `bad` at
/// `position`, then a good one; returns the final weights and the updates the state counts as
/// applied (on a GPU backend the skip is counted on the device: `step - skipped`).
fn good_bad_good<R: SubspaceRule>(
    optim: &SubspaceOptimizer<R>,
    bad: Option<(usize, f32)>,
) -> (Vec<f32>, usize) {
    // The same ordinal (so the same random bases) on every run.
    let optim = lowrank_optim::MatrixOptimizer::for_matrix(optim, 0);
    let mut rng = TestRng::new(3);
    let shape = [6, 8];
    let grads: Vec<Vec<f32>> = (0..3).map(|_| random(&mut rng, 48)).collect();
    let mut w: Tensor<2> = tensor(&random(&mut rng, 48), shape);
    let mut state = None;
    for (i, g) in grads.iter().enumerate() {
        let mut g = g.clone();
        if i == 1 {
            match bad {
                Some((position, value)) => g[position] = value,
                None => continue,
            }
        }
        let before = values(&w);
        let (next, s) = optim.step(0.01, w, tensor(&g, shape), state);
        if i == 1 {
            assert_eq!(values(&next), before, "weights moved on a bad gradient");
        }
        (w, state) = (next, s);
    }
    (values(&w), common::applied_steps(&state.unwrap()))
}

fn skips_every_bad_entry<R: SubspaceRule>(name: &str, optim: SubspaceOptimizer<R>) {
    let (clean, steps) = good_bad_good(&optim, None);
    assert_eq!(steps, 2, "{name}");
    for value in [f32::NAN, f32::INFINITY] {
        // Every row and column of the matrix holds one of these positions.
        for position in (0..48).step_by(7) {
            let (after, steps) = good_bad_good(&optim, Some((position, value)));
            assert_eq!(
                steps, 2,
                "{name}: {value} at {position} was counted as an update"
            );
            // Bit for bit on a CPU backend; on a GPU backend the step after a skip takes its
            // bias correction from the device's count (f32 `exp`/`ln`).
            let cpu = lowrank_optim::is_host_device(&common::device());
            let tolerance = if cpu { 0.0 } else { 1e-6 };
            assert!(
                common::max_abs_diff(&after, &clean) <= tolerance,
                "{name}: {value} at {position} changed later steps: {after:?} vs {clean:?}"
            );
        }
    }
}

/// `DenseAdamW` (f32 and 8-bit moments) skips a non-finite gradient the same way: the run
/// with a NaN or an infinity between two good gradients ends where the run without it does,
/// with two updates counted once the guard's count is read back.
#[test]
fn dense_adamw_skips_a_non_finite_gradient() {
    use lowrank_optim::optim::DenseAdamWConfig;
    let shape = [64, 128];
    let mut rng = TestRng::new(5);
    let grads: Vec<Vec<f32>> = (0..2).map(|_| random(&mut rng, 64 * 128)).collect();
    let w0 = random(&mut rng, 64 * 128);
    for precision in [
        lowrank_optim::MomentPrecision::F32,
        lowrank_optim::MomentPrecision::Q8,
    ] {
        let optim = DenseAdamWConfig::new()
            .with_moments(precision)
            .build()
            .unwrap();
        let run = |bad: Option<f32>| {
            let mut w: Tensor<2> = tensor(&w0, shape);
            let mut state = None;
            for (i, g) in grads.iter().enumerate() {
                if let (1, Some(value)) = (i, bad) {
                    let mut poisoned = g.clone();
                    poisoned[77] = value;
                    let before = values(&w);
                    let (next, s) = optim.step(0.01, w, tensor(&poisoned, shape), state);
                    assert_eq!(values(&next), before, "{precision:?}: weights moved");
                    (w, state) = (next, s);
                }
                (w, state) = optim.step(0.01, w, tensor(g, shape), state);
            }
            (values(&w), state.unwrap().applied().step())
        };
        let (clean, steps) = run(None);
        assert_eq!(steps, 2);
        let cpu = lowrank_optim::is_host_device(&common::device());
        let tolerance = if cpu { 0.0 } else { 1e-6 };
        for value in [f32::NAN, f32::INFINITY] {
            let (after, steps) = run(Some(value));
            assert_eq!(steps, 2, "{precision:?}: {value} was counted as an update");
            let apart = common::max_abs_diff(&after, &clean);
            assert!(apart <= tolerance, "{precision:?}: {value}: {apart}");
        }
    }
}

/// The skip holds for every optimizer, basis kind and residual, wherever the bad entry sits,
/// including entries a coordinate basis never reads.
#[test]
fn a_non_finite_gradient_is_skipped_by_every_optimizer_and_basis() {
    use lowrank_optim::ProjectionMethod as P;
    let kinds = [
        P::Svd,
        P::Randomized,
        P::Dct,
        P::Gaussian,
        P::RandomOrthogonal,
        P::Coordinates,
    ];
    for kind in kinds {
        let galore = GaLoreConfig::new().with_rank(2).with_projection(kind);
        skips_every_bad_entry(&format!("galore/{kind:?}"), galore.build().unwrap());
        let fira = FiraConfig::new().with_rank(2).with_projection(kind);
        skips_every_bad_entry(&format!("fira/{kind:?}"), fira.build().unwrap());
        let apollo = ApolloConfig::new().with_rank(2).with_projection(kind);
        skips_every_bad_entry(&format!("apollo/{kind:?}"), apollo.build().unwrap());
        for residual in [Residual::SignSgd, Residual::Sgd, Residual::None] {
            let frugal = FrugalConfig::new()
                .with_projection(kind)
                .with_residual(residual);
            let name = format!("frugal/{kind:?}/{residual:?}");
            skips_every_bad_entry(&name, frugal.build().unwrap());
        }
    }
    let blocks = FrugalConfig::new().with_projection(P::Block).with_rho(1.0);
    skips_every_bad_entry("frugal/block", blocks.build().unwrap());
}

/// A routing rule that matches nothing would leave the projected optimizer unused: an error
/// naming the router, as SwitchLoRA's build reports a model without SwitchLoRA layers.
#[test]
fn a_router_that_routes_nothing_is_an_error() {
    use burn::nn::{Linear, LinearConfig};
    let model: Linear = LinearConfig::new(8, 8).init(&common::device());
    let galore = GaLoreConfig::new().with_rank(2).build().unwrap();
    let adamw = burn::optim::AdamWConfig::new().build();
    let router = Router::from_regex("no_such_layer").unwrap();
    match router.build(&model, galore, adamw) {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "router"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a router matching nothing was accepted"),
    }
}
