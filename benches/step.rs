//! One optimizer step on LLaMA-shaped matrices for every optimizer, against Burn's AdamW and
//! against each optimizer's own floor, all on the same backend (`BURN_DEVICE`, flex by
//! default) in the same run.
//!
//! Floors: the matmuls an optimizer cannot avoid plus one elementwise pass over the matrix:
//! project and project back (GaLore, Fira, DCT-AdamW), project and two back-projections
//! (FRUGAL with signSGD needs `back(R)` for its residual), project only (APOLLO: nothing is
//! projected back). Subspace steps are timed between refreshes (gap 10^9, the basis is
//! computed in warm-up), like `benches/peers/peer_speed.py` times the PyTorch references;
//! `dct-adamw/every-step` adds the published reselection on every step. `.../q8` and `.../q4`
//! are the same optimizers with 8-bit and 4-bit moments (their state bytes are printed first).
//! Run: `cargo bench --bench step`.

mod common;

use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::{Device, Tensor};
use common::{random, SHAPES};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use lowrank_optim::optim::DenseAdamWConfig;
use lowrank_optim::{
    ApolloConfig, FiraConfig, FrugalConfig, GaLoreConfig, MomentPrecision, ProjectionMethod,
    Residual, StateFootprint,
};

const NEVER: usize = 1_000_000_000;

fn sync(t: &Tensor<2>) {
    // Reading one value waits for the (possibly asynchronous) device to finish the step.
    let _ = t.clone().slice([0..1, 0..1]).into_data();
}

/// Times `optim.step` from a warmed-up state.
fn time<O: Optimizer>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: String,
    optim: O,
    w: &Tensor<2>,
    g: &Tensor<2>,
) {
    let (_, mut state) = optim.step(1e-3, w.clone(), g.clone(), None);
    group.bench_function(name, |b| {
        b.iter(|| {
            let (w, s) = optim.step(1e-3, w.clone(), g.clone(), state.take());
            state = s;
            sync(&w);
        })
    });
}

/// `matmuls` projection-sized matmuls (`m x n` by `n x r`, or back) plus one elementwise pass.
fn floor(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: String,
    w: &Tensor<2>,
    g: &Tensor<2>,
    p: &Tensor<2>,
    back_projections: usize,
) {
    group.bench_function(name, |b| {
        b.iter(|| {
            let low = g.clone().matmul(p.clone());
            let mut update = g.clone();
            for _ in 0..back_projections {
                update = update.add(low.clone().matmul(p.clone().transpose()));
            }
            let w = w.clone().sub(update.mul_scalar(1e-3));
            sync(&w);
        })
    });
}

fn bench_step(c: &mut Criterion) {
    let device = Device::default();
    let mut group = c.benchmark_group("step");
    group.sample_size(10);
    for (m, n, r) in SHAPES {
        let id = format!("{m}x{n}_r{r}");
        let w = random(m, n, 0.02, &device);
        let g = random(m, n, 1.0, &device);
        let p = random(n, r, 0.05, &device);

        time(
            &mut group,
            format!("adamw/{id}"),
            AdamWConfig::new().build(),
            &w,
            &g,
        );
        let galore = GaLoreConfig::new().with_rank(r).with_update_proj_gap(NEVER);
        time(
            &mut group,
            format!("galore/{id}"),
            galore.build().unwrap(),
            &w,
            &g,
        );
        let fira = FiraConfig::new().with_rank(r).with_update_proj_gap(NEVER);
        time(
            &mut group,
            format!("fira/{id}"),
            fira.build().unwrap(),
            &w,
            &g,
        );
        let frugal = FrugalConfig::new()
            .with_projection(ProjectionMethod::Svd)
            .with_update_proj_gap(NEVER);
        time(
            &mut group,
            format!("frugal-svd/{id}"),
            frugal.build().unwrap(),
            &w,
            &g,
        );
        let dct = FrugalConfig::new()
            .with_density(None)
            .with_rank(r)
            .with_projection(ProjectionMethod::Dct)
            .with_residual(Residual::None);
        let between = dct.clone().with_update_proj_gap(NEVER).build().unwrap();
        time(&mut group, format!("dct-adamw/{id}"), between, &w, &g);
        let every = dct.with_update_proj_gap(1).build().unwrap();
        time(
            &mut group,
            format!("dct-adamw/every-step/{id}"),
            every,
            &w,
            &g,
        );
        let apollo = ApolloConfig::new().with_rank(r).with_update_proj_gap(NEVER);
        time(
            &mut group,
            format!("apollo/{id}"),
            apollo.build().unwrap(),
            &w,
            &g,
        );
        let mini = ApolloConfig::mini().with_update_proj_gap(NEVER);
        time(
            &mut group,
            format!("apollo-mini/{id}"),
            mini.build().unwrap(),
            &w,
            &g,
        );

        for precision in [
            MomentPrecision::F32,
            MomentPrecision::Q8,
            MomentPrecision::Q4,
        ] {
            let at = |name: &str| format!("{name}/{id}/{}", precision.name());
            let adamw = DenseAdamWConfig::new()
                .with_moments(precision)
                .build()
                .unwrap();
            let galore = galore.clone().with_moments(precision).build().unwrap();
            let fira = fira.clone().with_moments(precision).build().unwrap();
            for (name, bytes) in [
                ("dense-adamw", adamw.state_bytes(&[m, n], 0)),
                ("galore", galore.state_bytes(&[m, n], 0)),
                ("fira", fira.state_bytes(&[m, n], 0)),
            ] {
                eprintln!("state bytes {}: {bytes}", at(name));
            }
            time(&mut group, at("dense-adamw"), adamw, &w, &g);
            time(&mut group, at("galore"), galore, &w, &g);
            time(&mut group, at("fira"), fira, &w, &g);
        }

        floor(&mut group, format!("floor-1-back/{id}"), &w, &g, &p, 1);
        floor(&mut group, format!("floor-2-back/{id}"), &w, &g, &p, 2);
        floor(&mut group, format!("floor-0-back/{id}"), &w, &g, &p, 0);
        let p1 = random(n, 1, 0.05, &device);
        floor(&mut group, format!("floor-0-back-r1/{id}"), &w, &g, &p1, 0);
    }
    group.finish();
}

/// Quantizing and dequantizing one projected moment (`m x r`), alone.
fn bench_quantizer(c: &mut Criterion) {
    use lowrank_optim::quant::{dequantize, quantize, CodeMap, Normalization};
    let device = Device::default();
    let mut group = c.benchmark_group("quantizer");
    group.sample_size(10);
    for (m, _, r) in SHAPES {
        let moment = random(m, r, 1.0, &device);
        let id = format!("{m}x{r}");
        for (map, norm) in [
            (CodeMap::Signed8, Normalization::Blocks(256)),
            (CodeMap::Linear4, Normalization::Rank1 { rows: m, cols: r }),
        ] {
            let moment = if map == CodeMap::Linear4 {
                moment.clone().abs()
            } else {
                moment.clone()
            };
            group.bench_function(format!("quantize/{map:?}/{id}"), |b| {
                b.iter(|| quantize(moment.clone(), map, norm))
            });
            let codes = quantize(moment.clone(), map, norm);
            group.bench_function(format!("dequantize/{map:?}/{id}"), |b| {
                b.iter(|| sync(&dequantize(&codes, map, norm, [m, r])))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_step, bench_quantizer);
criterion_main!(benches);
