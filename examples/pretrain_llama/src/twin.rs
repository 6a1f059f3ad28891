//! What a run starts from, written for a twin run of the published PyTorch code
//! (`benches/peers/twin.py`): the same initial weights, batches, learning rates and clipping.
//!
//! `<dir>/<recipe>/init.safetensors` holds every trained parameter as f32 under its module path
//! without Burn's enum variants (`layers.0.attention.wq.weight`, `tok_embeddings.weight`,
//! `layers.0.attention_norm.gamma`, `output.weight`), in Burn's layouts: a `Linear` weight is
//! `[d_in, d_out]`, the transpose of PyTorch's `nn.Linear.weight`; the embedding is
//! `[vocab, d_model]`, a norm's `gamma` `[d_model]`. `twin.json` ([`TwinStart`]) holds the
//! rest, step by step.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use lowrank_optim::ParamInfo;
use serde::Serialize;

use lowrank_optim::recipe::Recipe;

use crate::args::{Args, RunSettings};
use crate::data::{Batches, Corpus};
use crate::model::{Llama, NORM_EPSILON, ROPE_THETA};

/// `twin.json`: everything but the weights.
#[derive(Debug, Serialize)]
pub struct TwinStart {
    /// The recipe's name and its TOML text as written (the twin reads its hyperparameters).
    pub recipe: String,
    pub recipe_toml: String,
    /// The subspace keys as this run uses them (`rank`, `update_proj_gap`): the recipe's, or
    /// what the run put in their place (the preset's rank, `--update-proj-gap`).
    pub subspace_keys: HashMap<String, i64>,
    pub vocab: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub rope_theta: f64,
    pub norm_epsilon: f64,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub steps: usize,
    pub eval_every: usize,
    /// The text file (UTF-8 bytes are the tokens) and where its validation split starts.
    pub data: String,
    pub train_tokens: usize,
    /// The learning rate of each step.
    pub lr: Vec<f64>,
    /// Global gradient-norm clipping threshold (0: none), applied to the summed micro-batch
    /// gradients of a step.
    pub clip: f64,
    /// Per step, the start of each `seq_len + 1`-token window in the training split, micro-batch
    /// after micro-batch (`grad_accum * batch_size` of them); each micro-batch's loss is divided
    /// by `grad_accum` before the backward pass.
    pub starts: Vec<Vec<usize>>,
}

impl TwinStart {
    /// What a run of `recipe` (as the run uses it) starts from, with its per-step `lr`.
    pub fn new(
        args: &Args,
        settings: &RunSettings,
        recipe: &Recipe,
        corpus: &Corpus,
        lr: Vec<f64>,
        clip: f64,
    ) -> Result<Self, String> {
        let recipe_toml = match &args.optimizer {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            None => return Err("--export-twin needs a recipe file".into()),
        };
        let subspace_keys = ["rank", "update_proj_gap"]
            .into_iter()
            .filter_map(|key| {
                let value = recipe.table.get(key).and_then(|v| v.as_integer())?;
                Some((key.to_string(), value))
            })
            .collect();
        let dims = &settings.dims;
        Ok(Self {
            recipe: recipe.name.clone(),
            recipe_toml,
            subspace_keys,
            vocab: dims.vocab,
            d_model: dims.d_model,
            layers: dims.layers,
            heads: dims.heads,
            ffn: dims.ffn,
            rope_theta: ROPE_THETA,
            norm_epsilon: NORM_EPSILON,
            seq_len: settings.seq_len,
            batch_size: settings.batch_size,
            grad_accum: settings.grad_accum,
            steps: settings.steps,
            eval_every: settings.eval_every,
            data: args.data.display().to_string(),
            train_tokens: corpus.train.len(),
            lr,
            clip,
            starts: batch_starts(args.seed, settings, corpus),
        })
    }
}

/// Writes `init.safetensors` and `twin.json` of a run into `dir`, before its first step.
pub fn export(dir: &Path, model: &Llama, start: &TwinStart) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut values = Values(HashMap::new());
    model.visit(&mut values);
    let mut tensors = Vec::new();
    for param in ParamInfo::collect(model) {
        let data = values
            .0
            .remove(&param.id)
            .ok_or("a parameter without a value")?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((param.path.replace(".Dense.", "."), param.shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let weights = dir.join("init.safetensors");
    safetensors::serialize_to_file(views, None, &weights)
        .map_err(|e| format!("cannot write {}: {e}", weights.display()))?;
    let text = serde_json::to_string(start).map_err(|e| e.to_string())?;
    let json = dir.join("twin.json");
    std::fs::write(&json, text).map_err(|e| format!("cannot write {}: {e}", json.display()))
}

/// The window starts of every step of a run seeded with `seed` (the stream training draws).
fn batch_starts(seed: u64, settings: &RunSettings, corpus: &Corpus) -> Vec<Vec<usize>> {
    let mut batches = Batches::new(seed, settings.batch_size, settings.seq_len);
    (0..settings.steps)
        .map(|_| {
            (0..settings.grad_accum)
                .flat_map(|_| batches.next_starts(corpus.train.len()))
                .collect()
        })
        .collect()
}

/// Every float parameter's values, by id.
struct Values(HashMap<ParamId, Vec<f32>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data().convert::<f32>();
        let values = data.try_to_vec::<f32>().expect("f32 after convert");
        self.0.insert(param.id, values);
    }
}
