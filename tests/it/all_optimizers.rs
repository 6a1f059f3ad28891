//! Every optimizer with every projection kind as a drop-in Burn optimizer: training through
//! `ModuleOptimizer`, exact resume from a saved record, memory accounting against the record,
//! any tensor rank, and a clear error for state loaded from another model.

use crate::common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::optim::{AdamWConfig, ModuleOptimizer, Optimizer};
use burn::tensor::Tensor;
use common::toy::{device, train, Toy, VOCAB};
use common::{tensor, values, PROJECTION_KINDS};
use lowrank_optim::{
    ApolloConfig, FiraConfig, FrugalConfig, GaLoreConfig, MatrixOptimizer, MemoryReport,
    ProjectionMethod, Residual, Router, StateFootprint,
};

/// One optimizer under test: a name, a builder for the toy model and the footprint.
struct Case {
    name: String,
    build: Box<dyn Fn(&Toy) -> ModuleOptimizer>,
    footprint: Box<dyn Fn(&Toy) -> MemoryReport>,
    lr: f64,
}

fn case<O>(name: String, lr: f64, make: impl Fn() -> O + 'static + Clone) -> Case
where
    O: lowrank_optim::MatrixOptimizer + StateFootprint + 'static,
{
    let router = || Router::llama().with_vocab_size(VOCAB);
    let dense = || AdamWConfig::new().with_weight_decay(0.0).build();
    let make2 = make.clone();
    Case {
        name,
        build: Box::new(move |model| router().build(model, make(), dense()).unwrap()),
        footprint: Box::new(move |model| {
            MemoryReport::estimate(model, &router(), &make2(), &dense())
        }),
        lr,
    }
}

/// Every optimizer, each with every projection kind (gap 3: resumes cross refreshes).
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for kind in PROJECTION_KINDS {
        out.push(case(format!("galore/{kind:?}"), 0.02, move || {
            let c = GaLoreConfig::new().with_rank(4).with_update_proj_gap(3);
            c.with_scale(1.0).with_projection(kind).build().unwrap()
        }));
        out.push(case(format!("fira/{kind:?}"), 0.01, move || {
            let c = FiraConfig::new().with_rank(4).with_update_proj_gap(3);
            c.with_projection(kind).build().unwrap()
        }));
        out.push(case(format!("frugal/{kind:?}"), 0.01, move || {
            let c = FrugalConfig::new().with_update_proj_gap(3);
            c.with_projection(kind).build().unwrap()
        }));
        out.push(case(format!("apollo/{kind:?}"), 0.01, move || {
            let c = ApolloConfig::new().with_rank(4).with_update_proj_gap(3);
            c.with_projection(kind).build().unwrap()
        }));
    }
    out.push(case("apollo-mini".into(), 0.003, || {
        ApolloConfig::mini()
            .with_update_proj_gap(3)
            .build()
            .unwrap()
    }));
    out.push(case("frugal/block".into(), 0.01, || {
        let c = FrugalConfig::new()
            .with_projection(ProjectionMethod::Block)
            .with_rho(0.5);
        c.with_update_proj_gap(3).build().unwrap()
    }));
    out.push(case("dct-adamw".into(), 0.01, || {
        let c = FrugalConfig::new().with_density(None).with_rank(4);
        c.with_projection(ProjectionMethod::Dct)
            .with_residual(Residual::None)
            .with_update_proj_gap(1)
            .build()
            .unwrap()
    }));
    out
}

/// A fresh toy model trained `steps` steps with `case`: the model, its optimizer, the losses.
fn trained(case: &Case, steps: usize) -> (Toy, ModuleOptimizer, Vec<f32>) {
    let model = Toy::new(&device());
    let mut optim = (case.build)(&model);
    let (model, losses) = train(model, &mut optim, steps, case.lr);
    (model, optim, losses)
}

#[test]
fn every_optimizer_trains_the_toy_model() {
    for case in cases() {
        let (_, _, losses) = trained(&case, 40);
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(
            last.is_finite() && last < 0.8 * first,
            "{}: loss {first} -> {last}",
            case.name
        );
    }
}

/// Eight steps straight, and four, a save, a fresh optimizer loading it, four more; `train`
/// runs the given steps. Asserts every projected weight of the two runs is the same.
fn assert_resumes_exactly(
    case: &Case,
    train: impl Fn(Toy, &mut ModuleOptimizer, std::ops::Range<usize>) -> Toy,
) {
    let start = Toy::new(&device());
    let mut straight_optim = (case.build)(&start);
    let straight = train(start.clone(), &mut straight_optim, 0..8);

    let mut first_optim = (case.build)(&start);
    let halfway = train(start, &mut first_optim, 0..4);
    let bytes = first_optim.into_bytes().unwrap();
    let mut resumed_optim = (case.build)(&halfway).from_bytes(bytes).unwrap();
    let resumed = train(halfway, &mut resumed_optim, 4..8);

    let projected = |m: &Toy| {
        let (a, f) = (&m.attention, &m.feed_forward);
        [&a.wq.weight, &a.wo.weight, &f.w1.weight, &f.w2.weight].map(|w| values(&w.val()))
    };
    for (a, b) in projected(&straight).iter().zip(&projected(&resumed)) {
        common::assert_reproduced(a, b, &format!("{}: resumed run", case.name));
    }
}

#[test]
fn every_optimizer_resumes_exactly_from_a_saved_record() {
    for case in cases() {
        assert_resumes_exactly(&case, |model, optim, steps| {
            train(model, optim, steps.len(), case.lr).0
        });
    }
}

#[test]
fn estimated_state_bytes_match_the_saved_record() {
    for case in cases() {
        let (model, optim, _) = trained(&case, 2);
        let measured = MemoryReport::measure(&optim, &model).unwrap();
        let estimated = (case.footprint)(&model);
        assert_eq!(measured.params, estimated.params, "{}", case.name);
        assert!(
            measured.state_bytes() < measured.adamw_bytes(),
            "{}",
            case.name
        );
    }
}

#[test]
fn block_mode_keeps_about_rho_of_the_tensors_state_full() {
    let optim = FrugalConfig::new()
        .with_projection(ProjectionMethod::Block)
        .with_rho(0.25)
        .with_update_proj_gap(2)
        .with_seed(7)
        .build()
        .unwrap();
    let blocks = 40;
    // Numbered as a Router numbers the tensors it routes (alike tensors, distinct ordinals).
    let numbered: Vec<_> = (0..blocks).map(|i| optim.for_matrix(i)).collect();
    let mut states: Vec<Option<lowrank_optim::FrugalState<2>>> = vec![None; blocks];
    let g = tensor(&[0.5; 12], [3, 4]);
    let mut active_sets = Vec::new();
    for step in 0..6 {
        let mut active = Vec::new();
        for (i, state) in states.iter_mut().enumerate() {
            let (_, next) =
                numbered[i].step(0.01, tensor(&[0.0; 12], [3, 4]), g.clone(), state.take());
            let next = next.unwrap();
            if next.moments.is_some() {
                active.push(i);
            }
            *state = Some(next);
        }
        assert!(
            (9..=11).contains(&active.len()),
            "step {step}: {} of {blocks} active",
            active.len()
        );
        active_sets.push(active);
    }
    // Fixed within a period, reshuffled across periods.
    assert_eq!(active_sets[0], active_sets[1]);
    assert_ne!(active_sets[1], active_sets[2]);
    // Inactive blocks hold no moments; the footprint names the first period's blocks exactly.
    let adamw = 2 * 4 * 12;
    let footprint: Vec<usize> = (0..blocks).map(|i| optim.state_bytes(&[3, 4], i)).collect();
    let expected: Vec<usize> = (0..blocks)
        .map(|i| {
            if active_sets[0].contains(&i) {
                adamw
            } else {
                0
            }
        })
        .collect();
    assert_eq!(footprint, expected);
}

/// Steps a tensor of any rank twice with each optimizer: nothing panics, the weights move.
fn steps_any_rank<const D: usize>(shape: [usize; D]) {
    let numel: usize = shape.iter().product();
    let w: Vec<f32> = (0..numel).map(|i| (i as f32 * 0.37).sin()).collect();
    let g: Vec<f32> = (0..numel).map(|i| (i as f32 * 0.11).cos()).collect();
    fn run<O: Optimizer, const D: usize>(o: O, w: Tensor<D>, g: Tensor<D>) -> Tensor<D> {
        let (w, s) = o.step(0.01, w, g.clone(), None);
        o.step(0.01, w, g, s).0
    }
    let (w0, g0) = (tensor(&w, shape), tensor(&g, shape));
    let results = [
        run(
            GaLoreConfig::new().with_rank(2).build().unwrap(),
            w0.clone(),
            g0.clone(),
        ),
        run(
            FiraConfig::new().with_rank(2).build().unwrap(),
            w0.clone(),
            g0.clone(),
        ),
        run(FrugalConfig::new().build().unwrap(), w0.clone(), g0.clone()),
        run(
            FrugalConfig::new()
                .with_projection(ProjectionMethod::Block)
                .with_rho(1.0)
                .build()
                .unwrap(),
            w0.clone(),
            g0.clone(),
        ),
        run(
            ApolloConfig::new().with_rank(2).build().unwrap(),
            w0.clone(),
            g0.clone(),
        ),
    ];
    for (i, r) in results.iter().enumerate() {
        let after = values(r);
        assert!(
            after.iter().all(|x| x.is_finite()),
            "optimizer {i} on {shape:?}"
        );
        if numel > 0 {
            assert_ne!(after, w, "optimizer {i} on {shape:?} did not move");
        }
    }
}

#[test]
fn every_optimizer_accepts_any_tensor_rank() {
    steps_any_rank([7]);
    steps_any_rank([6, 5]);
    steps_any_rank([3, 4, 5]);
    steps_any_rank([2, 3, 2, 2]);
    steps_any_rank([0, 4]);
}

#[test]
fn state_from_another_shape_is_a_clear_error() {
    fn check<O: Optimizer>(name: &str, o: O) {
        let (_, state) = o.step(
            0.01,
            tensor(&[0.1; 24], [6, 4]),
            tensor(&[0.2; 24], [6, 4]),
            None,
        );
        let result = catch_unwind(AssertUnwindSafe(|| {
            o.step(
                0.01,
                tensor(&[0.1; 40], [8, 5]),
                tensor(&[0.2; 40], [8, 5]),
                state,
            )
        }));
        let message = match result {
            Ok(_) => panic!("{name}: a mismatched state was accepted"),
            Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        assert!(
            message.contains("loaded from another model"),
            "{name}: {message}"
        );
    }
    check("galore", GaLoreConfig::new().with_rank(2).build().unwrap());
    check("fira", FiraConfig::new().with_rank(2).build().unwrap());
    check("frugal", FrugalConfig::new().build().unwrap());
    check(
        "frugal/block",
        FrugalConfig::new()
            .with_projection(ProjectionMethod::Block)
            .build()
            .unwrap(),
    );
    check("apollo", ApolloConfig::new().with_rank(2).build().unwrap());
}

/// Trains like `toy::train`, but `attention.wq` gets a NaN gradient on the steps before
/// `poisoned`.
fn train_poisoned(
    model: Toy,
    optim: &mut ModuleOptimizer,
    steps: std::ops::Range<usize>,
    poisoned: usize,
    lr: f64,
) -> Toy {
    let (xs, ys) = common::toy::batch(&model.output.weight.device());
    let mut model = model;
    for step in steps {
        let loss = model.loss(xs.clone(), ys.clone());
        let mut grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
        if step < poisoned {
            let id = model.attention.wq.weight.id;
            let grad = grads.remove::<2>(id).unwrap();
            grads.register(id, grad.mul_scalar(f32::NAN));
        }
        model = optim.step(lr, model, grads);
    }
    model
}

/// A matrix whose gradients are non-finite until after a resume is first stepped by the
/// resumed optimizer; it must still draw its own random basis (or block activity), exactly as
/// in the uninterrupted run, not the one of the matrix first seen by the fresh optimizer.
#[test]
fn a_matrix_first_stepped_after_a_resume_keeps_its_own_ordinal() {
    for case in cases() {
        assert_resumes_exactly(&case, |model, optim, steps| {
            train_poisoned(model, optim, steps, 5, case.lr)
        });
    }
}
