//! What SwitchLoRA adds to a step on a LLaMA-350M MLP matrix (`d_in` 1024, `d_out` 2736, rank
//! 256, candidate pools in host memory), against a dense AdamW step of the same matrix:
//! `adapters` is the adapter optimizer's step of `lora_a` and `lora_b`; `switch_and_adapters` adds
//! one switcher call at the start-of-run rate (about 6 vectors per side, the most frequent
//! switching of a run); `adamw_dense` is Burn's AdamW on the full `1024 x 2736` weight.
//! Run: `cargo bench --bench switch`.

mod common;

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use lowrank_optim::switchlora::{SwitchLoraConfig, SwitchLoraLinearConfig, SwitchScheduleConfig};

const D_IN: usize = 1024;
const D_OUT: usize = 2736;
const RANK: usize = 256;

fn bench_switch(c: &mut Criterion) {
    let device = Device::default().autodiff();
    let mut group = c.benchmark_group("switchlora_350m_mlp");
    group.sample_size(10);

    let layer = SwitchLoraLinearConfig::new(D_IN, D_OUT, RANK)
        .init(&device)
        .unwrap();
    // A run long enough that the rate stays at its start value: RANK / 40 vectors per step.
    let config = SwitchLoraConfig::new(SwitchScheduleConfig::new(1 << 30));
    let (mut optim, switcher) = config.build(&layer, AdamWConfig::new().build()).unwrap();
    let (grad_a, grad_b) = (
        common::random(D_IN, RANK, 1e-3, &device),
        common::random(RANK, D_OUT, 1e-3, &device),
    );
    let grads_for = |layer: &lowrank_optim::switchlora::SwitchLoraLinear| {
        let mut grads = GradientsParams::new();
        grads.register(layer.lora_a.id, grad_a.clone());
        grads.register(layer.lora_b.id, grad_b.clone());
        grads
    };

    let mut model = Some(layer);
    let mut step = 0;
    group.bench_function("adapters", |b| {
        b.iter(|| {
            let m = model.take().unwrap();
            let grads = grads_for(&m);
            model = Some(optim.step(1e-3, m, grads));
        })
    });
    group.bench_function("switch_and_adapters", |b| {
        b.iter(|| {
            let (next, _) = switcher.switch(model.take().unwrap(), step).unwrap();
            step += 1;
            let grads = grads_for(&next);
            model = Some(optim.step(1e-3, next, grads));
        })
    });

    let dense = burn::nn::LinearConfig::new(D_IN, D_OUT)
        .with_bias(false)
        .init(&device);
    let mut adamw = ModuleOptimizer::from(AdamWConfig::new().build());
    let grad_w = common::random(D_IN, D_OUT, 1e-3, &device);
    let mut dense = Some(dense);
    group.bench_function("adamw_dense", |b| {
        b.iter(|| {
            let m = dense.take().unwrap();
            let mut grads = GradientsParams::new();
            grads.register(m.weight.id, grad_w.clone());
            dense = Some(adamw.step(1e-3, m, grads));
        })
    });
    group.finish();
}

criterion_group!(benches, bench_switch);
criterion_main!(benches);
