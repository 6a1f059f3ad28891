//! FRUGAL, APOLLO and Fira's paths that have no published fixture (other subspace kinds,
//! residual modes, granularities, block mode) against a dense f64 implementation written here
//! from ALGORITHMS.md, given the same projection matrix (read back from the optimizer state).

use crate::common;
use common::FromBasis;

use burn::optim::Optimizer;
use common::{Dense, TestRng};
use lowrank_optim::{
    ApolloConfig, FiraConfig, FrugalConfig, GaLoreState, ProjType, ProjectionMethod, Residual,
    ScaleGranularity, Side, SubspaceState,
};

const STEPS: usize = 3;
const LR: f64 = 0.01;

/// f64 Adam moments.
struct Adam {
    m: Dense,
    v: Dense,
    t: i32,
    b1: f64,
    b2: f64,
    eps: f64,
}

impl Adam {
    fn new(rows: usize, cols: usize, b1: f64, b2: f64, eps: f64) -> Self {
        let zeros = Dense::from_fn(rows, cols, |_, _| 0.0);
        Adam {
            m: zeros.clone(),
            v: zeros,
            t: 0,
            b1,
            b2,
            eps,
        }
    }

    fn update(&mut self, g: &Dense) {
        self.t += 1;
        self.m = Dense::from_fn(g.rows, g.cols, |i, j| {
            self.b1 * self.m.at(i, j) + (1.0 - self.b1) * g.at(i, j)
        });
        self.v = Dense::from_fn(g.rows, g.cols, |i, j| {
            self.b2 * self.v.at(i, j) + (1.0 - self.b2) * g.at(i, j).powi(2)
        });
    }

    /// `m / (sqrt(v) + eps)` (no bias correction).
    fn normalized(&self) -> Dense {
        Dense::from_fn(self.m.rows, self.m.cols, |i, j| {
            self.m.at(i, j) / (self.v.at(i, j).sqrt() + self.eps)
        })
    }

    fn hf_step(&self, lr: f64) -> f64 {
        lr * (1.0 - self.b2.powi(self.t)).sqrt() / (1.0 - self.b1.powi(self.t))
    }

    /// PyTorch AdamW: `lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`.
    fn torch_update(&self, lr: f64) -> Dense {
        let (bc1, bc2) = (1.0 - self.b1.powi(self.t), 1.0 - self.b2.powi(self.t));
        Dense::from_fn(self.m.rows, self.m.cols, |i, j| {
            lr / bc1 * self.m.at(i, j) / (self.v.at(i, j).sqrt() / bc2.sqrt() + self.eps)
        })
    }
}

fn zip(a: &Dense, b: &Dense, f: impl Fn(f64, f64) -> f64) -> Dense {
    Dense::from_fn(a.rows, a.cols, |i, j| f(a.at(i, j), b.at(i, j)))
}

/// The basis and side an optimizer chose, as dense f64.
fn basis_of(state: &SubspaceState<2>) -> (Side, Dense) {
    let s = state.subspace.as_ref().unwrap();
    let basis = s.right().or(s.left()).unwrap();
    (s.side(), Dense::from_basis(basis))
}

fn project(side: Side, p: &Dense, g: &Dense) -> Dense {
    match side {
        Side::Right => g.matmul(p),
        _ => p.t().matmul(g),
    }
}

fn back(side: Side, p: &Dense, low: &Dense) -> Dense {
    match side {
        Side::Right => low.matmul(&p.t()),
        _ => p.matmul(low),
    }
}

/// `||x||` along the low-rank axis (per full-size row for `Right`, per column for `Left`) or
/// for the whole matrix, broadcast back to `x`'s full-size shape `rows x cols`.
fn channel_norms(x: &Dense, side: Side, per_channel: bool) -> Box<dyn Fn(usize, usize) -> f64> {
    let norm = |values: Vec<f64>| values.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !per_channel {
        let n = norm(x.data.clone());
        return Box::new(move |_, _| n);
    }
    match side {
        Side::Right => {
            let rows: Vec<f64> = (0..x.rows)
                .map(|i| norm((0..x.cols).map(|j| x.at(i, j)).collect()))
                .collect();
            Box::new(move |i, _| rows[i])
        }
        _ => {
            let cols: Vec<f64> = (0..x.cols)
                .map(|j| norm((0..x.rows).map(|i| x.at(i, j)).collect()))
                .collect();
            Box::new(move |_, j| cols[j])
        }
    }
}

/// Runs `STEPS` steps of `optim` from `w0` with `grads`; returns the weights and the last state.
fn run<O>(optim: &O, w0: &Dense, grads: &[Dense]) -> (Dense, GaLoreState<2>)
where
    O: Optimizer<State<2> = GaLoreState<2>>,
{
    let mut w = w0.to_tensor();
    let mut state = None;
    for g in grads {
        let (next, s) = optim.step(LR, w, g.to_tensor(), state);
        w = next;
        state = s;
    }
    (Dense::from_tensor(&w), state.unwrap())
}

fn data(seed: u64, m: usize, n: usize) -> (Dense, Vec<Dense>) {
    let mut rng = TestRng::new(seed);
    let w0 = rng.dense(m, n).map(|x| 0.5 * x);
    let grads = (0..STEPS)
        .map(|k| rng.dense(m, n).map(|x| x * (1.0 + 0.3 * k as f64)))
        .collect();
    (w0, grads)
}

fn assert_close(got: &Dense, want: &Dense, what: &str) {
    let diff = got.max_abs_diff(want);
    assert!(diff < 2e-5, "{what}: max |ours - f64 reference| = {diff:e}");
}

#[test]
fn frugal_matches_the_dense_reference() {
    let cases = [
        (
            "svd/sign_sgd/right",
            ProjectionMethod::Svd,
            Residual::SignSgd,
            24,
            12,
        ),
        (
            "coordinates/sgd/left",
            ProjectionMethod::Coordinates,
            Residual::Sgd,
            12,
            24,
        ),
        (
            "random/sign_sgd/right",
            ProjectionMethod::RandomOrthogonal,
            Residual::SignSgd,
            20,
            16,
        ),
        (
            "dct/none/left",
            ProjectionMethod::Dct,
            Residual::None,
            10,
            30,
        ),
    ];
    for (name, kind, residual, m, n) in cases {
        let (wd, proj_scale, inactive_scale) = (0.1, 0.5, 0.3);
        let optim = FrugalConfig::new()
            .with_rho(0.25)
            .with_projection(kind)
            .with_residual(residual)
            .with_update_proj_gap(100)
            .with_weight_decay(wd)
            .with_proj_lr_scale(proj_scale)
            .with_inactive_lr_scale(inactive_scale)
            .build()
            .unwrap();
        let (w0, grads) = data(31, m, n);
        let (got, state) = run(&optim, &w0, &grads);
        let (side, p) = basis_of(&state);
        assert_eq!(
            p.cols,
            (0.25 * m.min(n) as f64).round() as usize,
            "{name}: rank from rho"
        );

        let mut w = w0.clone();
        let [a, b] = if side == Side::Right {
            [m, p.cols]
        } else {
            [p.cols, n]
        };
        let mut adam = Adam::new(a, b, 0.9, 0.999, 1e-8);
        let (lr_sf, lr_free) = (
            LR * proj_scale as f64,
            LR * (proj_scale * inactive_scale) as f64,
        );
        for g in &grads {
            w = w.map(|x| x * (1.0 - LR * wd as f64));
            let low = project(side, &p, g);
            adam.update(&low);
            let stateful = back(side, &p, &adam.torch_update(lr_sf));
            let res = zip(g, &back(side, &p, &low), |x, y| x - y);
            let free = match residual {
                Residual::SignSgd => res.map(|x| lr_free * x.signum()),
                Residual::Sgd => res.map(|x| lr_free * x),
                Residual::None => res.map(|_| 0.0),
            };
            w = zip(&zip(&w, &stateful, |x, y| x - y), &free, |x, y| x - y);
        }
        assert_close(&got, &w, name);
    }
}

#[test]
fn frugal_blocks_are_adamw_when_active_and_sign_sgd_when_not() {
    let (w0, grads) = data(37, 6, 5);
    for (rho, active) in [(1.0, true), (1e-9, false)] {
        let optim = FrugalConfig::new()
            .with_projection(ProjectionMethod::Block)
            .with_rho(rho)
            .with_weight_decay(0.1)
            .build()
            .unwrap();
        let (got, state) = run(&optim, &w0, &grads);
        assert_eq!(state.moments.is_some(), active);
        let mut w = w0.clone();
        let mut adam = Adam::new(6, 5, 0.9, 0.999, 1e-8);
        for g in &grads {
            w = w.map(|x| x * (1.0 - LR * 0.1));
            let update = if active {
                adam.update(g);
                adam.torch_update(LR)
            } else {
                g.map(|x| LR * x.signum())
            };
            w = zip(&w, &update, |x, y| x - y);
        }
        assert_close(&got, &w, &format!("block active = {active}"));
    }
}

/// f64 norm-growth limiter: returns the divisor and updates `prev`.
fn limit(norm: f64, prev: &mut Option<f64>, gamma: f64) -> f64 {
    let divisor = match *prev {
        None => 1.0,
        Some(p) => (norm / (p + 1e-8)).max(gamma) / gamma,
    };
    *prev = Some(norm / divisor);
    divisor
}

#[test]
fn apollo_matches_the_dense_reference() {
    let cases = [
        (
            "channel/right",
            ScaleGranularity::Channel,
            false,
            4.0,
            24,
            12,
        ),
        (
            "channel/left",
            ScaleGranularity::Channel,
            false,
            1.0,
            12,
            24,
        ),
        (
            "tensor/scale_front",
            ScaleGranularity::Tensor,
            true,
            128.0,
            20,
            16,
        ),
    ];
    for (name, scaling, front, scale, m, n) in cases {
        let optim = ApolloConfig::new()
            .with_rank(3)
            .with_scaling(scaling)
            .with_scale_front(front)
            .with_scale(scale)
            .with_weight_decay(0.05)
            .build()
            .unwrap();
        let (w0, grads) = data(41, m, n);
        let (got, state) = run(&optim, &w0, &grads);
        let (side, p) = basis_of(&state);
        // A Gaussian N(0, 1/r) basis, not orthonormal.
        assert!(
            p.t().matmul(&p).max_abs_diff(&Dense::identity(3)) > 1e-2,
            "{name}"
        );

        let mut w = w0.clone();
        let [a, b] = if side == Side::Right { [m, 3] } else { [3, n] };
        let mut adam = Adam::new(a, b, 0.9, 0.999, 1e-6);
        let mut prev = None;
        let root = (scale as f64).sqrt();
        for g in &grads {
            let low = project(side, &p, g);
            adam.update(&low);
            let per_channel = scaling == ScaleGranularity::Channel;
            let num = channel_norms(&adam.normalized(), side, per_channel);
            let den = channel_norms(&low, side, per_channel);
            let mut s = Dense::from_fn(m, n, |i, j| g.at(i, j) * num(i, j) / (den(i, j) + 1e-8));
            if front {
                s = s.map(|x| x * root);
            }
            let divisor = limit(s.frobenius_sq().sqrt(), &mut prev, 1.01);
            s = s.map(|x| x / divisor);
            if !front {
                s = s.map(|x| x * root);
            }
            let step = adam.hf_step(LR);
            w = zip(&w, &s, |x, y| x - step * y).map(|x| x * (1.0 - LR * 0.05));
        }
        assert_close(&got, &w, name);
    }
}

#[test]
fn fira_matches_the_dense_reference_on_every_path() {
    let cases = [
        // Fast path (orthonormal, alpha <= 1/2), both sides and both granularities.
        (
            "dct/channel/right",
            ProjectionMethod::Dct,
            ScaleGranularity::Channel,
            0.25,
            24,
            12,
        ),
        (
            "svd/matrix/left",
            ProjectionMethod::Svd,
            ScaleGranularity::Tensor,
            0.25,
            12,
            24,
        ),
        (
            "coordinates/channel/left",
            ProjectionMethod::Coordinates,
            ScaleGranularity::Channel,
            0.5,
            12,
            24,
        ),
        // Explicit residual: a Gaussian basis, or alpha > 1/2.
        (
            "gaussian/channel/right",
            ProjectionMethod::Gaussian,
            ScaleGranularity::Channel,
            0.25,
            24,
            12,
        ),
        (
            "svd/channel/alpha_0.8",
            ProjectionMethod::Svd,
            ScaleGranularity::Channel,
            0.8,
            24,
            12,
        ),
    ];
    for (name, kind, scaling, alpha, m, n) in cases {
        let optim = FiraConfig::new()
            .with_rank(3)
            .with_projection(kind)
            .with_proj_type(ProjType::Std)
            .with_scaling(scaling)
            .with_scale(alpha)
            .with_gamma(1.05)
            .with_weight_decay(0.05)
            .build()
            .unwrap();
        let (w0, grads) = data(43, m, n);
        let (got, state) = run(&optim, &w0, &grads);
        let (side, p) = basis_of(&state);
        let mut w = w0.clone();
        let [a, b] = if side == Side::Right { [m, 3] } else { [3, n] };
        let mut adam = Adam::new(a, b, 0.9, 0.999, 1e-6);
        let mut prev = None;
        let alpha = alpha as f64;
        for g in &grads {
            let low = project(side, &p, g);
            adam.update(&low);
            let normalized = adam.normalized();
            let per_channel = scaling == ScaleGranularity::Channel;
            let num = channel_norms(&normalized, side, per_channel);
            let den = channel_norms(&low, side, per_channel);
            let back_low = back(side, &p, &low);
            let mut s = Dense::from_fn(m, n, |i, j| {
                (g.at(i, j) - alpha * back_low.at(i, j)) * num(i, j) / (den(i, j) + 1e-8)
            });
            let divisor = limit(s.frobenius_sq().sqrt(), &mut prev, 1.05);
            s = s.map(|x| x / divisor);
            let update = zip(&back(side, &p, &normalized), &s, |x, y| alpha * x + y);
            let step = adam.hf_step(LR);
            w = zip(&w, &update, |x, y| x - step * y).map(|x| x * (1.0 - LR * 0.05));
        }
        assert_close(&got, &w, name);
    }
}
