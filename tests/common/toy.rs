//! A LLaMA-shaped toy model and task for end-to-end optimizer tests.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{activation, Device, Int, Tensor, TensorData};

pub const VOCAB: usize = 64;
pub const D_MODEL: usize = 24;
pub const FFN: usize = 56;

#[derive(Module, Debug)]
pub struct Attention {
    pub wq: Linear,
    pub wo: Linear,
}

#[derive(Module, Debug)]
pub struct FeedForward {
    pub w1: Linear,
    pub w2: Linear,
}

/// A LLaMA-shaped toy: embedding, "attention" and MLP linears, a norm and an output head.
#[derive(Module, Debug)]
pub struct Toy {
    pub tok_embeddings: Embedding,
    pub attention: Attention,
    pub feed_forward: FeedForward,
    pub norm: RmsNorm,
    pub output: Linear,
}

impl Toy {
    pub fn new(device: &Device) -> Self {
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Toy {
            tok_embeddings: EmbeddingConfig::new(VOCAB, D_MODEL).init(device),
            attention: Attention {
                wq: linear(D_MODEL, D_MODEL),
                wo: linear(D_MODEL, D_MODEL),
            },
            feed_forward: FeedForward {
                w1: LinearConfig::new(D_MODEL, FFN).init(device),
                w2: linear(FFN, D_MODEL),
            },
            norm: RmsNormConfig::new(D_MODEL).init(device),
            output: linear(D_MODEL, VOCAB),
        }
    }

    /// Next-token logits `[batch, VOCAB]` for `tokens` (`[batch]`).
    pub fn logits(&self, tokens: Tensor<1, Int>) -> Tensor<2> {
        let [batch] = tokens.dims();
        let x = self
            .tok_embeddings
            .forward(tokens.reshape([batch, 1]))
            .reshape([batch, D_MODEL]);
        let x = x.clone()
            + self
                .attention
                .wo
                .forward(activation::silu(self.attention.wq.forward(x)));
        let x = x.clone()
            + self
                .feed_forward
                .w2
                .forward(activation::silu(self.feed_forward.w1.forward(x)));
        self.output.forward(self.norm.forward(x))
    }

    /// Mean cross-entropy of predicting `targets` from `tokens` ([batch]).
    pub fn loss(&self, tokens: Tensor<1, Int>, targets: Tensor<1, Int>) -> Tensor<1> {
        cross_entropy(self.logits(tokens), targets)
    }
}

/// Mean cross-entropy of `logits` (`[batch, VOCAB]`) against `targets` (`[batch]`).
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch] = targets.dims();
    let log_probs = activation::log_softmax(logits, 1);
    let picked = log_probs.gather(1, targets.reshape([batch, 1]));
    picked.mean().neg()
}

pub fn device() -> Device {
    super::device().autodiff()
}

/// A fixed task: map token i to token (3 i + 1) mod VOCAB.
pub fn batch(device: &Device) -> (Tensor<1, Int>, Tensor<1, Int>) {
    let xs: Vec<i64> = (0..VOCAB as i64).collect();
    let ys: Vec<i64> = xs.iter().map(|x| (3 * x + 1) % VOCAB as i64).collect();
    (
        Tensor::from_data(TensorData::new(xs, [VOCAB]), device),
        Tensor::from_data(TensorData::new(ys, [VOCAB]), device),
    )
}

/// Trains `steps` steps at `lr`; returns the model and the loss before each step.
pub fn train(model: Toy, optim: &mut ModuleOptimizer, steps: usize, lr: f64) -> (Toy, Vec<f32>) {
    let (xs, ys) = batch(&model.output.weight.device());
    let mut model = model;
    let mut losses = Vec::new();
    for _ in 0..steps {
        let loss = model.loss(xs.clone(), ys.clone());
        losses.push(super::values(&loss)[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    (model, losses)
}
