//! One epoch of GaLore training through burn-train's `Learner` against the same epoch in a
//! hand-written loop (forward, backward, `ModuleOptimizer::step`), on the same model, data and
//! optimizer, with one validation batch each: what the Learner's machinery (event processing,
//! metrics, its threads) costs per epoch.
//! Run: `cargo bench --bench learner`; compare `learner` to `own_loop`.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use burn_train::logger::InMemoryMetricLogger;
use burn_train::metric::LossMetric;
use burn_train::{Learner, SupervisedTraining};
use criterion::{criterion_group, criterion_main, Criterion};
use learner_steps::TokenBatcher;
use lowrank_optim::{GaLoreConfig, Router};
use model::{Llama, LlamaDims};
use pretrain_llama::{data, learner_steps, model};

const SEQ: usize = 64;
const BATCH: usize = 8;
const STEPS: usize = 16;

fn bench_learner_epoch(c: &mut Criterion) {
    let device = Device::default().autodiff();
    let dims = LlamaDims {
        vocab: data::BYTE_VOCAB,
        d_model: 64,
        layers: 2,
        heads: 4,
        ffn: 172,
        max_seq: SEQ,
    };
    let text = std::fs::read_to_string(pretrain_llama::repo_path("data/shakespeare.txt"))
        .expect("bundled text");
    let tokens: Vec<i64> = text.bytes().map(i64::from).collect();
    let items: Vec<Vec<i64>> = tokens
        .chunks_exact(SEQ + 1)
        .take(STEPS * BATCH + BATCH)
        .map(<[i64]>::to_vec)
        .collect();
    let (train, valid) = items.split_at(STEPS * BATCH);
    let fresh = || {
        device.seed(1);
        let model = dims.init(&device, None).unwrap();
        let galore = GaLoreConfig::new().with_rank(16).build().unwrap();
        let adamw = AdamWConfig::new().with_weight_decay(0.0).build();
        let optim = Router::llama()
            .with_vocab_size(data::BYTE_VOCAB)
            .build(&model, galore, adamw)
            .unwrap();
        (model, optim)
    };
    let loader = |items: &[Vec<i64>]| {
        DataLoaderBuilder::new(TokenBatcher)
            .batch_size(BATCH)
            .build(InMemDataset::new(items.to_vec()))
    };
    let dir = std::env::temp_dir().join(format!("lowrank-optim-bench-{}", std::process::id()));

    let mut group = c.benchmark_group("epoch_of_16_steps");
    group.sample_size(10);
    group.bench_function("learner", |b| {
        b.iter_batched(
            fresh,
            |(model, optim)| {
                let result = SupervisedTraining::new(&dir, loader(train), loader(valid))
                    .metrics((LossMetric::new(),))
                    .with_metric_logger(InMemoryMetricLogger::new())
                    .with_application_logger(None)
                    .launch(Learner::new(model, optim, 1e-3));
                assert!(result.error.is_none());
                result.model
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("own_loop", |b| {
        b.iter_batched(
            fresh,
            |(mut model, mut optim): (Llama, ModuleOptimizer)| {
                for batch in train.chunks(BATCH) {
                    let loss = model.loss(TokenBatcher.batch(batch.to_vec(), &device));
                    // Read back like the Learner's loss metric.
                    let _: f32 = loss.clone().into_scalar();
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    model = optim.step(1e-3, model, grads);
                }
                let valid_batch = TokenBatcher.batch(valid.to_vec(), &device);
                let loss: f32 = model.valid().loss(valid_batch).into_scalar();
                assert!(loss.is_finite());
                model
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_learner_epoch);
criterion_main!(benches);
