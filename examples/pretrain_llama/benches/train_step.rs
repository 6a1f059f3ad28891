//! One whole training step (forward, backward, global-norm clipping, optimizer) of the
//! pretraining example's `tiny` model, per bundled recipe, on the same backend in one run.
//! `switchlora` switches at the schedule's start-of-run rate (its most frequent); `lora` is the
//! same SwitchLoRA model and optimizer without switching (plain LoRA).
//! Run: `cargo bench --bench train_step`; compare each recipe's time to `adamw`'s.

use burn::optim::GradientsParams;
use burn::tensor::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use lowrank_optim::clip::clip_grad_norm;
use lowrank_optim::recipe::Recipe;
use lowrank_optim::Router;
use pretrain_llama::{data, model};

fn bench_train_step(c: &mut Criterion) {
    let device = Device::default().autodiff();
    // The `tiny` preset: d_model 128, 4 layers, 4 heads, MLP 344, 16 x 128 tokens, rank 32.
    let dims = model::LlamaDims {
        vocab: data::BYTE_VOCAB,
        d_model: 128,
        layers: 4,
        heads: 4,
        ffn: 344,
        max_seq: 128,
    };
    let text = std::fs::read_to_string(pretrain_llama::repo_path("data/shakespeare.txt"))
        .expect("bundled text");
    let corpus = data::Corpus::from_text(&text, 0.1, 129).unwrap();
    let mut group = c.benchmark_group("train_step_tiny");
    group.sample_size(10);
    // Every bundled recipe, and SwitchLoRA's adapters without switching ("lora").
    let files = pretrain_llama::compare::recipe_files(&pretrain_llama::repo_path("optimizers"));
    let files = files.unwrap();
    let lora = files
        .iter()
        .find(|f| f.ends_with("switchlora.toml"))
        .cloned();
    let runs = (files.into_iter())
        .map(|file| (None, file))
        .chain(lora.map(|f| (Some("lora"), f)));
    for (label, file) in runs {
        let mut recipe = Recipe::load(&file).unwrap();
        let name = label.map_or(recipe.name.clone(), str::to_string);
        // The preset's rank, as the example uses it (APOLLO-Mini keeps rank 1, FRUGAL its rho).
        let rank = recipe.table.get("rank").and_then(|v| v.as_integer());
        if rank.is_some_and(|r| r > 1) {
            recipe.table.set("rank", 32);
        }
        device.seed(1);
        let mut model = Some(dims.init(&device, recipe.adapter().unwrap()).unwrap());
        // A run long enough that the switching rate stays at its start value.
        let (mut optim, switcher) = recipe
            .build_with_switcher(model.as_ref().unwrap(), &Router::llama(), 1 << 30)
            .unwrap();
        let switcher = switcher.filter(|_| name != "lora");
        let mut batches = data::Batches::new(1, 16, 128);
        let mut step = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                let m = model.take().unwrap();
                let loss = m.loss(batches.next(&corpus.train, &device));
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                let (grads, _) = clip_grad_norm(grads, &m, 1.0);
                let m = match &switcher {
                    Some(s) => s.switch(m, step).unwrap().0,
                    None => m,
                };
                step += 1;
                model = Some(optim.step(1e-3, m, grads));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
