//! One optimizer step on LLaMA-shaped matrices: Burn's AdamW, GaLore's projected step, and
//! GaLore's floor (the two projection matmuls plus one elementwise pass over the matrix), all on
//! the same backend (`BURN_DEVICE`, flex by default) in the same run.
//!
//! The GaLore step is timed between refreshes (gap 10^9, the basis is computed in warm-up), like
//! `../shared/tools/peer_speed.py` times `galore-torch`. Run: `cargo bench --bench step`.

mod common;

use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::{Device, Tensor};
use common::{random, SHAPES};
use criterion::{criterion_group, criterion_main, Criterion};
use lowrank_optim::GaLoreConfig;

fn sync(t: &Tensor<2>) {
    // Reading one value waits for the (possibly asynchronous) device to finish the step.
    let _ = t.clone().slice([0..1, 0..1]).into_data();
}

fn bench_step(c: &mut Criterion) {
    let device = Device::default();
    let mut group = c.benchmark_group("step");
    group.sample_size(10);
    for (m, n, r) in SHAPES {
        let id = format!("{m}x{n}_r{r}");
        let w = random(m, n, 0.02, &device);
        let g = random(m, n, 1.0, &device);

        let adamw = AdamWConfig::new().build();
        let (_, mut state) = adamw.step(1e-3, w.clone(), g.clone(), None);
        group.bench_function(format!("adamw/{id}"), |b| {
            b.iter(|| {
                let (w, s) = adamw.step(1e-3, w.clone(), g.clone(), state.take());
                state = s;
                sync(&w);
            })
        });

        let galore = GaLoreConfig::new()
            .with_rank(r)
            .with_update_proj_gap(1_000_000_000)
            .init()
            .unwrap();
        let (_, mut state) = galore.step(1e-3, w.clone(), g.clone(), None);
        let basis = state
            .as_ref()
            .unwrap()
            .subspace
            .as_ref()
            .unwrap()
            .right
            .as_ref()
            .unwrap()
            .matrix();
        group.bench_function(format!("galore/{id}"), |b| {
            b.iter(|| {
                let (w, s) = galore.step(1e-3, w.clone(), g.clone(), state.take());
                state = s;
                sync(&w);
            })
        });

        group.bench_function(format!("floor/{id}"), |b| {
            b.iter(|| {
                let low = g.clone().matmul(basis.clone());
                let back = low.matmul(basis.clone().transpose());
                let w = w.clone().sub(back);
                sync(&w);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
