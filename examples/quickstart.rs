//! Quickstart: the same small byte-level language model trained with AdamW and with GaLore
//! (through `Router`, as a drop-in `ModuleOptimizer`), printing the loss and the optimizer-state
//! memory of each.
//!
//! Run: `cargo run --release --example quickstart`

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{activation, Device, Int, Tensor, TensorData};
use lowrank_optim::memory::format_bytes;
use lowrank_optim::{GaLoreConfig, MemoryReport, Router};

const TEXT: &str = "Adam keeps two full-size moments for every weight of a model. \
GaLore keeps them in a low-rank subspace of each weight matrix instead, refreshed from the \
gradient's top singular vectors every few hundred steps, and still trains like Adam. \
The gradient of a large weight matrix is close to low rank, so little is lost by the projection, \
while the optimizer state shrinks by a factor close to the ratio of the rank to the matrix size. ";
const CONTEXT: usize = 8;
const VOCAB: usize = 256;
const EMBED: usize = 32;
const HIDDEN: usize = 192;
const BATCH: usize = 64;
const STEPS: usize = 300;
const LR: f64 = 3e-3;

/// Predicts the next byte from the previous `CONTEXT` bytes.
#[derive(Module, Debug)]
struct ByteModel {
    embed: Embedding,
    mlp: Mlp,
    norm: RmsNorm,
    output: Linear,
}

#[derive(Module, Debug)]
struct Mlp {
    w_in: Linear,
    w_hidden: Linear,
    w_out: Linear,
}

impl ByteModel {
    fn new(device: &Device) -> Self {
        Self {
            embed: EmbeddingConfig::new(VOCAB, EMBED).init(device),
            mlp: Mlp {
                w_in: LinearConfig::new(CONTEXT * EMBED, HIDDEN).init(device),
                w_hidden: LinearConfig::new(HIDDEN, HIDDEN).init(device),
                w_out: LinearConfig::new(HIDDEN, EMBED * 2).init(device),
            },
            norm: RmsNormConfig::new(EMBED * 2).init(device),
            output: LinearConfig::new(EMBED * 2, VOCAB).init(device),
        }
    }

    fn loss(&self, context: Tensor<2, Int>, next: Tensor<1, Int>) -> Tensor<1> {
        let [batch, _] = context.dims();
        let x = self
            .embed
            .forward(context)
            .reshape([batch, CONTEXT * EMBED]);
        let x = activation::silu(self.mlp.w_in.forward(x));
        let x = x.clone() + activation::silu(self.mlp.w_hidden.forward(x));
        let logits = self
            .output
            .forward(self.norm.forward(self.mlp.w_out.forward(x)));
        let picked = activation::log_softmax(logits, 1).gather(1, next.reshape([batch, 1]));
        picked.mean().neg()
    }
}

/// A deterministic batch of (context, next byte) windows.
fn batch(step: usize, device: &Device) -> (Tensor<2, Int>, Tensor<1, Int>) {
    let bytes = TEXT.as_bytes();
    let mut state = (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (mut context, mut next) = (Vec::new(), Vec::new());
    for _ in 0..BATCH {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let start = (state >> 33) as usize % (bytes.len() - CONTEXT - 1);
        context.extend(bytes[start..start + CONTEXT].iter().map(|&b| b as i64));
        next.push(bytes[start + CONTEXT] as i64);
    }
    (
        Tensor::from_data(TensorData::new(context, [BATCH, CONTEXT]), device),
        Tensor::from_data(TensorData::new(next, [BATCH]), device),
    )
}

fn train(name: &str, mut model: ByteModel, mut optim: ModuleOptimizer, device: &Device) {
    println!("== {name}");
    let mut total = 0.0;
    for step in 0..STEPS {
        let (context, next) = batch(step, device);
        let loss = model.loss(context, next);
        total += loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(LR, model, grads);
        if (step + 1) % 50 == 0 {
            println!("step {:>4}  mean loss {:.3}", step + 1, total / 50.0);
            total = 0.0;
        }
    }
    let report = MemoryReport::measure(&optim, &model).expect("readable optimizer record");
    println!(
        "optimizer state {} ({:.1}% of AdamW's {})\n",
        format_bytes(report.state_bytes()),
        100.0 * report.fraction_of_adamw(),
        format_bytes(report.adamw_bytes())
    );
}

fn main() -> Result<(), lowrank_optim::Error> {
    let device = Device::default().autodiff();
    let model = ByteModel::new(&device);
    let adamw = || AdamWConfig::new().with_weight_decay(0.0).build();

    train(
        "AdamW",
        model.clone(),
        ModuleOptimizer::from(adamw()),
        &device,
    );

    let galore = GaLoreConfig::new()
        .with_rank(32)
        .with_update_proj_gap(50)
        .with_scale(1.0)
        .build()?;
    let router = Router::llama().with_vocab_size(VOCAB);
    println!("GaLore projects: {:?}", router.projected_paths(&model));
    let optim = router.build(&model, galore, adamw())?;
    train("GaLore (rank 32) + AdamW", model, optim, &device);
    Ok(())
}
