//! The GPU path: what an optimizer step reads back to the host, and what the optimizer state
//! occupies on the device allocator. Both assert on every backend: on a GPU backend (wgpu in
//! CI's second pass, over llvmpipe) a step between refreshes reads nothing and the allocator's
//! figures match the counted state; on a CPU backend the finiteness checks are host reads.

use pretrain_llama::{data, model};
use test_support as common;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use lowrank_optim::recipe::Recipe;
use lowrank_optim::switchlora::Switcher;
use lowrank_optim::{readback, MemoryReport, MomentPrecision, Router};

use model::{Llama, LlamaDims};

/// Burn draws initial weights from the device's global RNG, so runs that seed it must not
/// interleave.
static SEEDED_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

const DIMS: LlamaDims = LlamaDims {
    vocab: 256,
    d_model: 64,
    layers: 2,
    heads: 4,
    ffn: 128,
    max_seq: 32,
};

/// Every bundled recipe, and the quantized variants of two (their dense group is then
/// `DenseAdamW`).
fn recipes() -> Vec<Recipe> {
    let files = pretrain_llama::compare::recipe_files(&pretrain_llama::repo_path("optimizers"));
    let mut recipes: Vec<Recipe> = (files.unwrap().iter())
        .map(|file| {
            let mut recipe = Recipe::load(file).unwrap();
            if recipe.table.get("rank").and_then(|v| v.as_integer()) > Some(1) {
                recipe.table.set("rank", 8);
            }
            recipe
        })
        .collect();
    for name in ["adamw", "galore"] {
        let mut recipe = recipes.iter().find(|r| r.name == name).unwrap().clone();
        recipe.set_moments(MomentPrecision::Q8);
        recipe.table.set("min_quantized_len", 256);
        recipe.name = format!("{name}-q8");
        recipes.push(recipe);
    }
    recipes
}

/// A model and its optimizer for `recipe`, seeded.
fn build(recipe: &Recipe, device: &Device) -> (Llama, ModuleOptimizer, Option<Switcher>) {
    device.seed(7);
    let model = DIMS.init(device, recipe.adapter().unwrap()).unwrap();
    let (optim, switcher) = recipe
        .build_with_switcher(&model, &Router::llama(), 1000)
        .unwrap();
    (model, optim, switcher)
}

/// One training step; the host reads the optimizer step made.
fn step(
    model: Llama,
    optim: &mut ModuleOptimizer,
    switcher: Option<&Switcher>,
    batches: &mut data::Batches,
    tokens: &[u32],
    step: usize,
) -> (Llama, usize) {
    let device = model.tok_embeddings.weight.device();
    let loss = model.loss(batches.next(tokens, &device));
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = match switcher {
        Some(s) => s.switch(model, step).unwrap().0,
        None => model,
    };
    let before = readback::reads();
    let model = optim.step(1e-3, model, grads);
    (model, readback::reads() - before)
}

fn corpus() -> data::Corpus {
    let text = std::fs::read_to_string(pretrain_llama::repo_path("data/shakespeare.txt")).unwrap();
    data::Corpus::from_text(&text, 0.1, DIMS.max_seq + 1).unwrap()
}

/// Between refreshes (the recipes refresh every 200 steps or more; the first step computes
/// every subspace), a step of every optimizer reads nothing back on a GPU backend: the
/// non-finite check stays on the device. On a CPU backend each of the crate's optimizers
/// reads its flags on the host (Burn's AdamW, the whole of the `adamw` recipe, reads nothing).
#[test]
fn a_step_between_refreshes_reads_nothing_back_on_a_gpu_backend() {
    let _guard = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device().autodiff();
    let corpus = corpus();
    for recipe in recipes() {
        let (mut model, mut optim, switcher) = build(&recipe, &device);
        let mut batches = data::Batches::new(3, 4, DIMS.max_seq);
        let mut reads = vec![];
        for i in 0..4 {
            let (next, n) = step(
                model,
                &mut optim,
                switcher.as_ref(),
                &mut batches,
                &corpus.train,
                i,
            );
            model = next;
            reads.push(n);
        }
        let name = &recipe.name;
        assert!(
            reads[0] > 0 || name == "adamw",
            "{name}: the first step read nothing: {reads:?}"
        );
        let steady = &reads[1..];
        if lowrank_optim::is_host_device(&device) {
            let ours = name != "adamw";
            assert!(
                steady.iter().all(|&n| (n > 0) == ours),
                "{name} on the CPU: host reads {steady:?}"
            );
        } else {
            assert_eq!(steady, [0, 0, 0], "{name}: host reads between refreshes");
        }
    }
}

/// A refresh reads back what its kind needs: the gradient for an exact SVD plus the
/// finiteness flag (two reads per matrix), the flag alone for a Gaussian basis (APOLLO);
/// counted at the first step, where every matrix refreshes.
#[test]
fn a_refresh_reads_back_what_its_basis_kind_needs() {
    let _guard = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device().autodiff();
    let corpus = corpus();
    let matrices = 7 * DIMS.layers;
    for (name, per_matrix) in [("galore", 2), ("apollo", 1)] {
        let recipe = recipes().into_iter().find(|r| r.name == name).unwrap();
        let (model, mut optim, _) = build(&recipe, &device);
        let mut batches = data::Batches::new(3, 4, DIMS.max_seq);
        let (_, reads) = step(model, &mut optim, None, &mut batches, &corpus.train, 0);
        assert_eq!(reads, per_matrix * matrices, "{name}: reads at a refresh");
    }
}

/// The optimizer state on the device allocator: after a few steps (gradients freed), the
/// bytes in use that a recipe's run added, less its model's, minus the same for AdamW, equal
/// the counted state difference from `MemoryReport` within 5% of AdamW's state. What the
/// allocator holds beyond the record: its padding of each buffer, the one-element step and
/// skip counters, and APOLLO's Gaussian bases, which a record stores as a seed (about 2% of
/// AdamW's state here). Every recipe runs once before the measured pass, so the DCT matrices
/// the DCT recipes share (cached per size) are already there. On a CPU backend there is no
/// allocator report; the test then checks that every recipe holds state.
#[test]
fn device_memory_in_use_matches_the_counted_state() {
    let _guard = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device().autodiff();
    let corpus = corpus();
    let in_use = || {
        device.sync().unwrap();
        device.memory_cleanup();
        device.memory_pool_usage().map(|u| u.bytes_in_use as i64)
    };
    let mut rows = vec![];
    for pass in 0..2 {
        for recipe in recipes() {
            let before = in_use();
            let (mut model, mut optim, switcher) = build(&recipe, &device);
            let mut batches = data::Batches::new(3, 4, DIMS.max_seq);
            for i in 0..3 {
                let s = switcher.as_ref();
                model = step(model, &mut optim, s, &mut batches, &corpus.train, i).0;
            }
            let added = in_use().zip(before).map(|(after, before)| after - before);
            let model_bytes: usize = lowrank_optim::ParamInfo::collect(&model)
                .iter()
                .filter(|p| p.role != lowrank_optim::ParamRole::CandidatePool)
                .map(|p| 4 * p.numel())
                .sum();
            let measured = MemoryReport::measure(&optim, &model).unwrap();
            let state = added.map(|a| a - model_bytes as i64);
            if pass == 1 {
                rows.push((
                    recipe.name.clone(),
                    state,
                    measured.state_bytes(),
                    measured.adamw_bytes(),
                ));
            }
        }
    }
    let adamw = rows.iter().find(|r| r.0 == "adamw").unwrap().clone();
    for (name, on_device, counted, adamw_bytes) in &rows {
        let counted_diff = *counted as f64 - adamw.2 as f64;
        match (on_device, adamw.1) {
            (Some(on_device), Some(base)) => {
                let device_diff = *on_device as f64 - base as f64;
                let tolerance = 0.05 * *adamw_bytes as f64;
                eprintln!(
                    "{name}: device {device_diff:+} bytes vs AdamW, counted {counted_diff:+} \
                     ({:.2}% of AdamW's state apart)",
                    100.0 * (device_diff - counted_diff).abs() / *adamw_bytes as f64
                );
                assert!(
                    (device_diff - counted_diff).abs() <= tolerance,
                    "{name}: device memory {device_diff:+} bytes vs AdamW, counted \
                     {counted_diff:+} (tolerance {tolerance})"
                );
            }
            _ => assert!(
                lowrank_optim::is_host_device(&device),
                "{name}: no allocator report on {device:?}"
            ),
        }
        assert!(*counted > 0 && *adamw_bytes > 0, "{name}: no state counted");
    }
}
