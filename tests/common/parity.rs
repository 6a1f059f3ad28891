//! The parity-fixture format shared by the reference fixtures (`fixtures/*.py`): one parameter
//! stepped a few times from `w0` with recorded gradients, and the weights after every step.

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

/// Steps a rank-`D` parameter through the case and returns the weights after each step.
pub fn run<O: Optimizer, const D: usize>(
    optim: &O,
    case: &Case,
    shape: [usize; D],
) -> Vec<Vec<f32>> {
    let mut w: Tensor<D> = super::tensor(&case.w0, shape);
    let mut state = None;
    let mut out = Vec::new();
    for g in &case.grads {
        let (next, next_state) = optim.step(case.lr, w, super::tensor(g, shape), state);
        w = next;
        state = next_state;
        out.push(super::values(&w));
    }
    out
}

/// Every weight after every step within `tolerance(case)` of the reference.
pub fn check_all<O: Optimizer>(
    fixture: &Fixture,
    build: impl Fn(&Case) -> O,
    tolerance: impl Fn(&Case) -> f32,
) {
    for case in &fixture.cases {
        assert_eq!(case.grads.len(), fixture.steps);
        let optim = build(case);
        let ours = match case.shape[..] {
            [m, n] => run(&optim, case, [m, n]),
            [n] => run(&optim, case, [n]),
            _ => panic!("{}: unsupported fixture shape", case.name),
        };
        let tolerance = tolerance(case);
        for (step, (got, want)) in ours.iter().zip(&case.weights).enumerate() {
            let diff = super::max_abs_diff(got, want);
            assert!(
                diff <= tolerance,
                "{} step {}: max |ours - reference| = {diff:e} > {tolerance:e}",
                case.name,
                step + 1
            );
        }
    }
}
