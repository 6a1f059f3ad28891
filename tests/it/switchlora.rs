//! SwitchLoRA: the layer (reference initialization, wrap, merge), the switch (output unchanged,
//! old vectors back in the pool, counterparts frozen for exactly `freeze_steps` steps), training
//! through `ModuleOptimizer`, exact resume, memory figures and bad input.

use crate::common;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Distribution, Tensor};
use common::{max_abs_diff, values};
use lowrank_optim::switchlora::AdapterFootprint;
use lowrank_optim::switchlora::{
    init_bounds, load_record, CandidatePlacement, Slots, SwitchLoraConfig, SwitchLoraLinear,
    SwitchLoraLinearConfig, SwitchLoraMemory, SwitchScheduleConfig, SwitchableLinear, Switcher,
};
use lowrank_optim::{Error, MemoryReport, MomentPrecision, Router, StateFootprint};

const D_IN: usize = 12;
const D_OUT: usize = 10;
const RANK: usize = 4;

fn device() -> Device {
    common::device().autodiff()
}

/// A SwitchLoRA layer followed by a dense head: one adapter and one plain AdamW parameter.
#[derive(Module, Debug)]
struct Net {
    layer: SwitchLoraLinear,
    head: Linear,
}

impl Net {
    fn new(rank: usize, device: &Device) -> Self {
        Net {
            layer: SwitchLoraLinearConfig::new(D_IN, D_OUT, rank)
                .init(device)
                .unwrap(),
            head: LinearConfig::new(D_OUT, 3).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.head.forward(self.layer.forward(x))
    }

    fn grads(&self, x: &Tensor<2>) -> GradientsParams {
        let loss = self.forward(x.clone()).square().mean();
        GradientsParams::from_grads(loss.backward(), self)
    }
}

fn input(device: &Device) -> Tensor<2> {
    Tensor::random([6, D_IN], Distribution::Normal(0.0, 1.0), device)
}

/// A schedule that switches often: `rank / interval` = 0.4 vectors per step at the start.
fn busy_schedule() -> SwitchScheduleConfig {
    SwitchScheduleConfig::new(1_000_000)
        .with_interval(10)
        .with_seed(7)
}

fn slots(layer: &SwitchLoraLinear) -> Slots {
    Slots::from_tensor(&layer.slots.0.val(), layer.rank()).unwrap()
}

fn column(t: &Tensor<2>, j: usize) -> Vec<f32> {
    let [rows, _] = t.dims();
    values(&t.clone().slice([0..rows, j..j + 1]))
}

fn row(t: &Tensor<2>, i: usize) -> Vec<f32> {
    let [_, cols] = t.dims();
    values(&t.clone().slice([i..i + 1, 0..cols]))
}

#[test]
fn wrapping_keeps_the_linear_and_follows_the_reference_initialization() {
    let device = device();
    let linear = LinearConfig::new(D_IN, D_OUT).init(&device);
    let x = input(&device);
    let expected = values(&linear.forward(x.clone()));
    let layer = SwitchLoraLinearConfig::new(D_IN, D_OUT, RANK)
        .with_bias(true)
        .wrap(linear)
        .unwrap();
    assert!(max_abs_diff(&values(&layer.forward(x)), &expected) < 1e-5);

    // Bounds from the formula, recomputed here.
    let gain = (1.0f64 / 3.0).sqrt();
    let (n, m, r) = (D_IN as f64, D_OUT as f64, RANK as f64);
    let bound_a = 3f64.sqrt() * ((m.sqrt() * r) / n.powf(1.5)).powf(0.25) * gain.sqrt();
    let bound_b = 3f64.sqrt() * (r / (m * n).sqrt()).powf(0.25) * gain.sqrt();
    let (a, b) = init_bounds(D_IN, D_OUT, RANK);
    assert!((a - bound_a).abs() < 1e-12 && (b - bound_b).abs() < 1e-12);
    let pool_a = layer.candidates_a.0.val();
    let pool_b = layer.candidates_b.0.val();
    assert_eq!(pool_a.dims(), [D_OUT, D_IN]); // min(in, out) vectors of length in
    assert_eq!(pool_b.dims(), [D_OUT, D_OUT]);
    for (pool, bound) in [(&pool_a, bound_a), (&pool_b, bound_b)] {
        let v = values(pool);
        assert!(v.iter().all(|x| x.abs() <= bound as f32));
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.5 * bound as f32, "entries should fill the range");
    }
    // The adapters start as the pool vectors the slots name; A and B switch from r/2 apart.
    let s = slots(&layer);
    assert_eq!((s.cursor_a, s.cursor_b), (0, RANK / 2));
    for i in 0..RANK {
        assert_eq!(
            column(&layer.lora_a.val(), i),
            row(&pool_a, s.selected_a[i])
        );
        assert_eq!(row(&layer.lora_b.val(), i), row(&pool_b, s.selected_b[i]));
    }
    // Only the adapters and the bias are trainable.
    assert!(!layer.weight.val().is_require_grad());
    assert!(layer.lora_a.val().is_require_grad() && layer.lora_b.val().is_require_grad());
}

#[test]
fn a_switch_leaves_the_output_unchanged_and_returns_old_vectors_to_the_pool() {
    let device = device();
    let model = Net::new(RANK, &device);
    let (_optim, switcher) = SwitchLoraConfig::new(busy_schedule())
        .build(&model, AdamWConfig::new().build())
        .unwrap();
    let x = input(&device);
    let mut model = model;
    let mut switched = 0;
    for step in 0..40 {
        let before = values(&model.forward(x.clone()));
        let old = (
            model.layer.lora_a.val(),
            model.layer.lora_b.val(),
            slots(&model.layer),
        );
        let (next, count) = switcher.switch(model, step).unwrap();
        model = next;
        let after = values(&model.forward(x.clone()));
        assert!(max_abs_diff(&before, &after) < 1e-5, "step {step}");
        assert_eq!(count.a, count.b);
        if count.a == 0 {
            assert_eq!(slots(&model.layer), old.2);
            continue;
        }
        switched += count.a;
        let new = slots(&model.layer);
        let pool_a = model.layer.candidates_a.0.val();
        let pool_b = model.layer.candidates_b.0.val();
        let changed_a: Vec<usize> = (0..RANK)
            .filter(|&i| new.selected_a[i] != old.2.selected_a[i])
            .collect();
        let changed_b: Vec<usize> = (0..RANK)
            .filter(|&i| new.selected_b[i] != old.2.selected_b[i])
            .collect();
        assert_eq!((changed_a.len(), changed_b.len()), (count.a, count.b));
        assert!(
            changed_a.iter().all(|i| !changed_b.contains(i)),
            "A and B share a slot"
        );
        for &i in &changed_a {
            // The old column is back in its pool row; the new column is its candidate.
            assert_eq!(row(&pool_a, old.2.selected_a[i]), column(&old.0, i));
            assert_eq!(
                column(&model.layer.lora_a.val(), i),
                row(&pool_a, new.selected_a[i])
            );
            assert_eq!(new.switched_a[i], step as i64);
        }
        for &i in &changed_b {
            assert_eq!(row(&pool_b, old.2.selected_b[i]), row(&old.1, i));
            assert_eq!(
                row(&model.layer.lora_b.val(), i),
                row(&pool_b, new.selected_b[i])
            );
        }
    }
    assert!(
        switched >= 5,
        "the schedule should switch ~16 vectors in 40 steps, got {switched}"
    );
}

/// Runs `steps` training steps with switching, returning the model and the steps at which
/// each `lora_b` row was frozen by a switch of its `lora_a` column.
fn train(
    model: Net,
    optim: &mut ModuleOptimizer,
    switcher: &Switcher,
    x: &Tensor<2>,
    steps: std::ops::Range<usize>,
) -> Net {
    let mut model = model;
    for step in steps {
        let grads = model.grads(x);
        let (switched, _) = switcher.switch(model, step).unwrap();
        model = optim.step(1e-2, switched, grads);
        assert!(
            !switcher.has_pending(),
            "every queued reset is applied by the step"
        );
    }
    model
}

#[test]
fn the_counterpart_of_a_switched_vector_stays_frozen_for_exactly_five_steps() {
    let device = device();
    let x = input(&device);
    let config = SwitchLoraConfig::new(busy_schedule());
    let mut model = Net::new(RANK, &device);
    let (mut optim, switcher) = config.build(&model, AdamWConfig::new().build()).unwrap();
    // Train until the first switch of a lora_a column.
    let mut step = 0;
    let (frozen_rows, start) = loop {
        let grads = model.grads(&x);
        let before = (slots(&model.layer), model.layer.lora_b.val());
        let (switched, count) = switcher.switch(model, step).unwrap();
        model = optim.step(1e-2, switched, grads);
        step += 1;
        if count.a > 0 {
            let after = slots(&model.layer);
            let rows: Vec<usize> = (0..RANK)
                .filter(|&i| after.selected_a[i] != before.0.selected_a[i])
                .collect();
            for &i in &rows {
                let (old, new) = (row(&before.1, i), row(&model.layer.lora_b.val(), i));
                assert_eq!(
                    old, new,
                    "row {i} moved in the step that switched its column"
                );
            }
            break (rows, step - 1);
        }
    };
    // Follow with steps that do not switch, to see the freeze alone.
    let mut history = vec![model.layer.lora_b.val()];
    for _ in 0..6 {
        let grads = model.grads(&x);
        model = optim.step(1e-2, model, grads);
        history.push(model.layer.lora_b.val());
    }
    let moved = |k: usize, i: usize| row(&history[k], i) != row(&history[k + 1], i);
    for &i in &frozen_rows {
        // Frozen in the switching step (checked above) and the 4 steps after it.
        for k in 0..4 {
            assert!(
                !moved(k, i),
                "row {i} moved {} steps after the switch at {start}",
                k + 1
            );
        }
        assert!(
            moved(4, i),
            "row {i} should train again 5 steps after the switch"
        );
    }
    for i in (0..RANK).filter(|i| !frozen_rows.contains(i)) {
        assert!(
            moved(0, i),
            "row {i} was not switched and must keep training"
        );
    }
}

#[test]
fn non_adapter_parameters_train_as_plain_adamw() {
    let device = device();
    let x = input(&device);
    let model = Net::new(RANK, &device);
    let adamw = || AdamWConfig::new().with_weight_decay(0.01).build();
    let (mut optim, _) = SwitchLoraConfig::new(busy_schedule())
        .build(&model, adamw())
        .unwrap();
    let mut reference = ModuleOptimizer::from(adamw());
    let grads = model.grads(&x);
    let head_id = model.head.weight.id;
    let head_grad: Tensor<2> = grads.get(head_id).unwrap();
    let mut only_head = GradientsParams::new();
    only_head.register(head_id, head_grad);
    let ours = optim.step(1e-2, model.clone(), grads);
    let theirs = reference.step(1e-2, model, only_head);
    assert_eq!(
        values(&ours.head.weight.val()),
        values(&theirs.head.weight.val())
    );
    assert_ne!(
        values(&ours.layer.lora_a.val()),
        values(&theirs.layer.lora_a.val())
    );
    // The frozen base weight has no gradient and never moves.
    assert_eq!(
        values(&ours.layer.weight.val()),
        values(&theirs.layer.weight.val())
    );
}

/// The adapters' moments at every precision (8 and 4 bits with the size threshold lowered to
/// the toy's 40-entry adapters).
fn precisions() -> [SwitchLoraConfig; 3] {
    [
        MomentPrecision::F32,
        MomentPrecision::Q8,
        MomentPrecision::Q4,
    ]
    .map(|p| {
        SwitchLoraConfig::new(busy_schedule())
            .with_moments(p)
            .with_min_quantized_len(16)
    })
}

#[test]
fn module_and_optimizer_records_restore_a_switching_run_exactly() {
    for config in precisions() {
        let what = format!("{:?}", config.adam.moments);
        let device = device();
        let x = input(&device);
        let model = Net::new(RANK, &device);
        let (mut optim, switcher) = config.build(&model, AdamWConfig::new().build()).unwrap();
        let model = train(model, &mut optim, &switcher, &x, 0..12);
        let module_bytes = model.clone().into_record().into_bytes().unwrap();
        let optim_bytes = optim.into_bytes().unwrap();
        let straight = train(model, &mut optim, &switcher, &x, 12..30);

        // A fresh process: new model (other weights, pools and ids), new optimizer, then the
        // records.
        let fresh = Net::new(RANK, &device);
        let (optim, switcher) = config.build(&fresh, AdamWConfig::new().build()).unwrap();
        let record = ModuleRecord::from_bytes(module_bytes).unwrap();
        let resumed = load_record(fresh, record).unwrap();
        let mut optim = optim.from_bytes(optim_bytes).unwrap();
        let resumed = train(resumed, &mut optim, &switcher, &x, 12..30);
        for (a, b) in [
            (straight.layer.lora_a.val(), resumed.layer.lora_a.val()),
            (straight.layer.lora_b.val(), resumed.layer.lora_b.val()),
            (straight.layer.weight.val(), resumed.layer.weight.val()),
            (
                straight.layer.candidates_a.0.val(),
                resumed.layer.candidates_a.0.val(),
            ),
            (straight.head.weight.val(), resumed.head.weight.val()),
        ] {
            assert_eq!(values(&a), values(&b), "{what}");
        }
        assert_eq!(slots(&straight.layer), slots(&resumed.layer), "{what}");
        assert_ne!(
            slots(&straight.layer),
            Slots::initial(RANK, D_OUT),
            "{what}: the run should switch"
        );
    }
}

/// Quantized adapter moments: the record's bytes per parameter equal the footprint's estimate
/// from the dense model's shapes, below the f32 state (at this toy size the 4-bit rank-1
/// scales, `rows + cols` floats, outweigh what 4 bits save over 8).
#[test]
fn quantized_adapter_state_matches_its_footprint() {
    let device = device();
    let x = input(&device);
    let mut f32_bytes = None;
    for config in precisions() {
        let model = Net::new(RANK, &device);
        let (mut optim, switcher) = config.build(&model, AdamWConfig::new().build()).unwrap();
        let model = train(model, &mut optim, &switcher, &x, 0..2);
        let measured = MemoryReport::measure(&optim, &model).unwrap();
        let adapters: usize = (measured.params.iter())
            .filter(|p| p.path.contains("lora_"))
            .map(|p| p.state_bytes)
            .sum();
        let footprint = AdapterFootprint {
            rank: RANK,
            moments: config.adam.moment_format(),
        };
        // The footprint counts both adapters and their 4 r counters against the dense weight.
        assert_eq!(
            adapters,
            footprint.state_bytes(&[D_IN, D_OUT], 0),
            "{:?}",
            config.adam.moments
        );
        match f32_bytes {
            None => f32_bytes = Some(adapters),
            Some(full) => assert!(adapters < full, "{:?}", config.adam.moments),
        }
    }
}

#[test]
fn merging_gives_the_dense_linear_the_layer_computes_and_only_once() {
    let device = device();
    let x = input(&device);
    let mut model = Net::new(RANK, &device);
    let (mut optim, switcher) = SwitchLoraConfig::new(busy_schedule())
        .build(&model, AdamWConfig::new().build())
        .unwrap();
    model = train(model, &mut optim, &switcher, &x, 0..8);
    let expected = values(&model.layer.forward(x.clone()));
    let layer = SwitchableLinear::SwitchLora(model.layer);
    let merged = layer.merge().unwrap();
    assert!(max_abs_diff(&values(&merged.forward(x)), &expected) < 1e-5);
    let SwitchableLinear::Dense(linear) = &merged else {
        panic!("merge must give a dense linear");
    };
    assert!(
        linear.weight.val().is_require_grad(),
        "the merged weight trains again"
    );
    assert_eq!(merged.merge().unwrap_err(), Error::AlreadyMerged);
}

#[test]
fn memory_figures_match_the_optimizer_record() {
    let device = device();
    let x = input(&device);
    let model = Net::new(RANK, &device);
    let (mut optim, switcher) = SwitchLoraConfig::new(busy_schedule())
        .build(&model, AdamWConfig::new().build())
        .unwrap();
    let model = train(model, &mut optim, &switcher, &x, 0..2);
    let memory = SwitchLoraMemory::estimate(&model);
    let measured = MemoryReport::measure(&optim, &model).unwrap();
    assert_eq!(memory.optimizer_bytes, measured.state_bytes());
    let head = D_OUT * 3 + 3;
    assert_eq!(
        memory.trainable_bytes,
        4 * (D_IN * RANK + RANK * D_OUT + head)
    );
    assert_eq!(memory.frozen_bytes, 4 * D_IN * D_OUT);
    assert_eq!(memory.candidate_bytes, 4 * D_OUT * (D_IN + D_OUT));
    assert_eq!(memory.adamw_bytes, 8 * (D_IN * D_OUT + head));
    assert_eq!(measured.adamw_bytes(), memory.adamw_bytes);

    // The same figures from the dense model's shapes alone (what `--report-memory` uses).
    #[derive(Module, Debug)]
    struct DenseNet {
        layer: Linear,
        head: Linear,
    }
    let dense = DenseNet {
        layer: LinearConfig::new(D_IN, D_OUT)
            .with_bias(false)
            .init(&device),
        head: LinearConfig::new(D_OUT, 3).init(&device),
    };
    let router = Router::from_regex(r"^layer\.").unwrap();
    let footprint = AdapterFootprint {
        rank: RANK,
        moments: lowrank_optim::adam::AdamParams::new().moment_format(),
    };
    let estimate = MemoryReport::estimate(&dense, &router, &footprint, &AdamWConfig::new().build());
    assert_eq!(estimate.state_bytes(), memory.optimizer_bytes);
    assert_eq!(estimate.adamw_bytes(), memory.adamw_bytes);
}

#[test]
fn bad_input_gets_typed_errors_naming_the_problem() {
    let device = device();
    for rank in [0, 11] {
        let err = SwitchLoraLinearConfig::new(D_IN, D_OUT, rank)
            .init(&device)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "rank", .. }),
            "{err}"
        );
    }
    let err = SwitchScheduleConfig::new(100)
        .with_interval(0)
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "interval",
                ..
            }
        ),
        "{err}"
    );
    let err = SwitchScheduleConfig::new(100)
        .with_interval(8)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("2 * freeze_steps"), "{err}");

    // A record of another rank.
    let record = Net::new(2, &device).into_record();
    let err = load_record(Net::new(RANK, &device), record).unwrap_err();
    assert_eq!(
        err,
        Error::RankMismatch {
            path: "layer".into(),
            model: RANK,
            record: 2
        }
    );

    // A switcher built for another model does not know this one's adapters.
    #[derive(Module, Debug)]
    struct Other {
        inner: Net,
    }
    let other = Other {
        inner: Net::new(RANK, &device),
    };
    let (_, switcher) = SwitchLoraConfig::new(busy_schedule())
        .build(&other, AdamWConfig::new().build())
        .unwrap();
    let mut model = Net::new(RANK, &device);
    let err = (0..200)
        .find_map(|step| match switcher.switch(model.clone(), step) {
            Ok((next, _)) => {
                model = next;
                None
            }
            Err(e) => Some(e),
        })
        .expect("a switch must happen within 200 steps");
    assert!(matches!(err, Error::NotWired { .. }), "{err}");
    assert!(!switcher.has_pending(), "a refused switch queues no reset");

    // No SwitchLoRA layer at all.
    let dense = LinearConfig::new(4, 4).init(&device);
    let Err(err) = SwitchLoraConfig::new(busy_schedule()).build(&dense, AdamWConfig::new().build())
    else {
        panic!("a model without SwitchLoRA layers must be refused");
    };
    assert!(
        matches!(err, Error::InvalidConfig { field: "model", .. }),
        "{err}"
    );
}

#[test]
fn candidate_pools_live_where_the_config_says_and_switch_from_either_place() {
    let device = device();
    let host = SwitchLoraLinearConfig::new(D_IN, D_OUT, RANK)
        .init(&device)
        .unwrap();
    let pool = host.candidates_a.0.val();
    assert!(!pool.is_autodiff(), "host pools never join autodiff");
    assert_eq!(pool.device(), Device::flex());

    let local = SwitchLoraLinearConfig::new(D_IN, D_OUT, RANK)
        .with_candidates(CandidatePlacement::Device)
        .init(&device)
        .unwrap();
    assert_eq!(local.candidates_b.0.val().device(), device);
    let (_optim, switcher) = SwitchLoraConfig::new(busy_schedule())
        .build(&local, AdamWConfig::new().build())
        .unwrap();
    let x = input(&device);
    let before = values(&local.forward(x.clone()));
    let (mut layer, mut switched) = (local, 0);
    for step in 0..30 {
        let (next, count) = switcher.switch(layer, step).unwrap();
        (layer, switched) = (next, switched + count.a);
    }
    assert!(switched > 0);
    assert!(max_abs_diff(&before, &values(&layer.forward(x))) < 1e-5);
}
