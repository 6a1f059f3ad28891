//! The parity-fixture format shared by the reference fixtures (`fixtures/*.py`): one parameter
//! stepped a few times from `w0` with recorded gradients, and the weights after every step.
//!
//! Fixtures hold PyTorch tensors, a matrix in PyTorch's `[out, in]` layout. Our optimizers are
//! stepped in **Burn's** layout: the same layer's weight is the transpose, `[d_in, d_out]`, so a
//! matrix case is fed as `W0ᵀ, Gᵀ` and compared with the reference trajectory transposed. That
//! is the parity a user training a Burn `Linear` gets (`proj_type` names the same dimension of
//! the layer as in the reference).

use burn::optim::Optimizer;
use burn::tensor::Tensor;
use lowrank_optim::ProjType;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Fixture {
    pub steps: usize,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub shape: Vec<usize>,
    pub rank: Option<usize>,
    pub proj_type: Option<String>,
    pub scale: Option<f32>,
    pub lr: f64,
    pub weight_decay: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub eps: f32,
    pub w0: Vec<f32>,
    pub grads: Vec<Vec<f32>>,
    pub weights: Vec<Vec<f32>>,
}

pub fn fixture(json: &str) -> Fixture {
    serde_json::from_str(json).expect("valid fixture")
}

/// The reference's `proj_type` name (`std` when absent).
pub fn proj_type(name: Option<&str>) -> ProjType {
    match name.unwrap_or("std") {
        "std" => ProjType::Std,
        "reverse_std" => ProjType::ReverseStd,
        "left" => ProjType::Left,
        "right" => ProjType::Right,
        "full" => ProjType::Full,
        other => panic!("unknown proj_type {other}"),
    }
}

/// Steps a rank-`D` parameter through the case as given (no transposition) and returns the
/// weights after each step.
pub fn run<O: Optimizer, const D: usize>(
    optim: &O,
    case: &Case,
    shape: [usize; D],
) -> Vec<Vec<f32>> {
    run_values(optim, case.lr, &case.w0, &case.grads, shape)
}

fn run_values<O: Optimizer, const D: usize>(
    optim: &O,
    lr: f64,
    w0: &[f32],
    grads: &[Vec<f32>],
    shape: [usize; D],
) -> Vec<Vec<f32>> {
    let mut w: Tensor<D> = super::tensor(w0, shape);
    let mut state = None;
    let mut out = Vec::new();
    for g in grads {
        let (next, next_state) = optim.step(lr, w, super::tensor(g, shape), state);
        w = next;
        state = next_state;
        out.push(super::values(&w));
    }
    out
}

/// Row-major `rows x cols` values transposed (row-major `cols x rows`).
pub fn transpose(values: &[f32], [rows, cols]: [usize; 2]) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "transpose: length mismatch");
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| values[i * cols + j]))
        .collect()
}

/// The case in Burn's layout: the shape, initial weights, gradients and reference weights of a
/// matrix transposed (`[out, in]` becomes `[in, out]`); other ranks unchanged.
pub struct BurnLayout {
    pub shape: Vec<usize>,
    pub w0: Vec<f32>,
    pub grads: Vec<Vec<f32>>,
    pub weights: Vec<Vec<f32>>,
}

impl BurnLayout {
    pub fn of(case: &Case) -> Self {
        let matrix = match case.shape[..] {
            [rows, cols] => Some([rows, cols]),
            _ => None,
        };
        let flip = |x: &[f32]| match matrix {
            Some(dims) => transpose(x, dims),
            None => x.to_vec(),
        };
        let all = |xs: &[Vec<f32>]| xs.iter().map(|x| flip(x)).collect();
        Self {
            shape: match matrix {
                Some([rows, cols]) => vec![cols, rows],
                None => case.shape.clone(),
            },
            w0: flip(&case.w0),
            grads: all(&case.grads),
            weights: all(&case.weights),
        }
    }

    /// Our weights after every step, stepped in this layout.
    pub fn run<O: Optimizer>(&self, optim: &O, case: &Case) -> Vec<Vec<f32>> {
        match self.shape[..] {
            [m, n] => run_values(optim, case.lr, &self.w0, &self.grads, [m, n]),
            [n] => run_values(optim, case.lr, &self.w0, &self.grads, [n]),
            _ => panic!("{}: unsupported fixture shape", case.name),
        }
    }
}

/// Every weight after every step, stepped in Burn's layout, within `tolerance(case)` of the
/// reference's (transposed) weights.
pub fn check_all<O: Optimizer>(
    fixture: &Fixture,
    build: impl Fn(&Case) -> O,
    tolerance: impl Fn(&Case) -> f32,
) {
    for case in &fixture.cases {
        assert_eq!(case.grads.len(), fixture.steps);
        assert_eq!(
            case.weights.len(),
            fixture.steps,
            "{}: the fixture holds reference weights for {} of its {} steps",
            case.name,
            case.weights.len(),
            fixture.steps
        );
        let burn = BurnLayout::of(case);
        let ours = burn.run(&build(case), case);
        let tolerance = tolerance(case);
        for (step, (got, want)) in ours.iter().zip(&burn.weights).enumerate() {
            let diff = super::max_abs_diff(got, want);
            assert!(
                diff <= tolerance,
                "{} (Burn layout {:?}) step {}: max |ours - reference| = {diff:e} > {tolerance:e}",
                case.name,
                burn.shape,
                step + 1
            );
        }
    }
}
