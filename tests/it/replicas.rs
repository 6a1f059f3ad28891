//! Replica-safe, order-free optimizer state: a matrix's random bases and FRUGAL's block draws
//! depend on the seed and the matrix itself, never on which clone of an optimizer, which thread
//! or which run met it first. Data-parallel training (Burn's DDP) relies on this: every replica
//! steps its own clone of one `ModuleOptimizer`, and the weights are never re-broadcast.

use crate::common;

use std::collections::BTreeMap;

use burn::module::{Module, Param, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use common::{TestRng, PROJECTION_KINDS};
use lowrank_optim::{FrugalConfig, GaLoreConfig, ProjectionMethod};

/// Matrices of repeated and distinct shapes (both projection sides) and a vector.
const SHAPES: [[usize; 2]; 5] = [[12, 8], [8, 12], [12, 8], [6, 6], [12, 8]];

/// The parameters in a visiting order of our choosing: `ModuleOptimizer` walks `mats` in order.
#[derive(Module, Debug)]
struct Params {
    mats: Vec<Param<Tensor<2>>>,
    bias: Param<Tensor<1>>,
}

impl Params {
    fn new() -> Self {
        let device = common::toy::device();
        let mut rng = TestRng::new(7);
        let mats = SHAPES
            .iter()
            .map(|&[m, n]| Param::from_tensor(rng.dense(m, n).to_tensor_on(&device).require_grad()))
            .collect();
        let bias = Tensor::<1>::from_floats([0.1, -0.2, 0.3, 0.0, 0.5, -0.1, 0.2, 0.4], &device);
        Params {
            mats,
            bias: Param::from_tensor(bias.require_grad()),
        }
    }

    /// The same parameters (same ids), visited from matrix `first` on.
    fn rotated(&self, first: usize) -> Self {
        let mut mats = self.mats.clone();
        mats.rotate_left(first);
        Params {
            mats,
            bias: self.bias.clone(),
        }
    }

    /// Every parameter's values by id.
    fn values(&self) -> BTreeMap<ParamId, Vec<f32>> {
        let mut out: BTreeMap<_, _> = self
            .mats
            .iter()
            .map(|p| (p.id, common::values(&p.val())))
            .collect();
        out.insert(self.bias.id, common::values(&self.bias.val()));
        out
    }
}

/// Gradients for `step`, the same whatever the order; matrix `late` gets none before step 3.
fn grads(params: &Params, step: usize, late: Option<ParamId>) -> GradientsParams {
    let device = common::device();
    let mut grads = GradientsParams::new();
    let mut sorted: Vec<_> = params.mats.iter().collect();
    sorted.sort_by_key(|p| p.id);
    for (k, p) in sorted.into_iter().enumerate() {
        if Some(p.id) == late && step < 3 {
            continue;
        }
        let [m, n] = p.val().dims();
        let g = TestRng::new(1000 * step as u64 + k as u64).dense(m, n);
        grads.register(p.id, g.to_tensor_on(&device));
    }
    let bias = TestRng::new(99 + step as u64)
        .dense(1, 8)
        .to_tensor_on(&device);
    grads.register(params.bias.id, bias.reshape([8]));
    grads
}

/// An optimizer record in a canonical form: tensors by name (their bytes), then scalars.
fn canonical(optim: &ModuleOptimizer) -> Vec<(String, String)> {
    let reader = burn_pack::Reader::from_bytes(optim.into_bytes().unwrap()).unwrap();
    let tensors = common::record_tensors(&reader).into_iter();
    let mut out: Vec<(String, String)> = tensors.map(|(n, b)| (n, format!("{b:?}"))).collect();
    out.extend(
        reader
            .scalars()
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:?}"))),
    );
    out
}

/// Every projection kind through the bare optimizer's `init()` (no Router numbering).
fn cases() -> Vec<(String, Box<dyn Fn() -> ModuleOptimizer + Sync>)> {
    let mut out: Vec<(String, Box<dyn Fn() -> ModuleOptimizer + Sync>)> = PROJECTION_KINDS
        .iter()
        .map(|&kind| {
            let build = move || {
                let config = GaLoreConfig::new().with_rank(3).with_update_proj_gap(2);
                config.with_projection(kind).init().unwrap()
            };
            (format!("galore/{kind:?}"), Box::new(build) as Box<_>)
        })
        .collect();
    let block = || {
        let config = FrugalConfig::new().with_projection(ProjectionMethod::Block);
        config.with_rho(0.5).with_update_proj_gap(2).init().unwrap()
    };
    out.push(("frugal/block".into(), Box::new(block)));
    out
}

const STEPS: usize = 6;

/// `steps` of training from `params` with `optim`.
fn run(
    mut params: Params,
    optim: &mut ModuleOptimizer,
    steps: std::ops::Range<usize>,
    late: Option<ParamId>,
) -> Params {
    for step in steps {
        let g = grads(&params, step, late);
        params = optim.step(1e-2, params, g);
    }
    params
}

#[test]
fn replicas_stepping_clones_in_any_order_stay_identical() {
    const REPLICAS: usize = 3;
    for (name, build) in cases() {
        let start = Params::new();
        let optim = build();
        // Each replica steps its own clone of one optimizer, visiting the matrices from a
        // different one first, all at once on their own threads.
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..REPLICAS)
                .map(|r| {
                    let mut optim = optim.clone();
                    let params = start.rotated(r);
                    scope.spawn(move || {
                        let params = run(params, &mut optim, 0..STEPS, None);
                        (params.values(), canonical(&optim))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut alone = build();
        let reference = run(start.rotated(1), &mut alone, 0..STEPS, None);
        let want = (reference.values(), canonical(&alone));
        for (r, got) in results.iter().enumerate() {
            assert!(got.0 == want.0, "{name}: replica {r}'s weights differ");
            assert!(
                got.1 == want.1,
                "{name}: replica {r}'s optimizer record differs"
            );
        }
    }
}

#[test]
fn a_matrix_first_seen_after_a_resume_matches_the_straight_run() {
    for (name, build) in cases() {
        let start = Params::new();
        // Matrix 0 is visited first and gets its first gradient at step 3, after the resume.
        let late = Some(start.mats[0].id);
        let mut straight_optim = build();
        let straight = run(start.rotated(0), &mut straight_optim, 0..STEPS, late);

        let mut first_optim = build();
        let halfway = run(start.rotated(0), &mut first_optim, 0..3, late);
        let bytes = first_optim.into_bytes().unwrap();
        let mut resumed_optim = build().from_bytes(bytes).unwrap();
        let resumed = run(halfway, &mut resumed_optim, 3..STEPS, late);

        assert!(
            straight.values() == resumed.values(),
            "{name}: the resumed run's weights differ"
        );
        assert!(
            canonical(&straight_optim) == canonical(&resumed_optim),
            "{name}: the resumed run's optimizer record differs"
        );
    }
}
