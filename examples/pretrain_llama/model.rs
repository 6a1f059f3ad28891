//! A LLaMA-style decoder: token embedding, pre-norm blocks (RmsNorm, rotary causal multi-head
//! attention without biases, SwiGLU MLP), final RmsNorm and an untied output head.
//!
//! Parameter names follow Burn's `llama-burn` (`layers.0.attention.wq.weight`,
//! `layers.0.feed_forward.w1.weight`, `tok_embeddings.weight`, `output.weight`), which
//! `lowrank_optim::Router::llama()` routes: attention/MLP matrices projected, the rest dense.

use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig, RotaryEncoding,
    RotaryEncodingConfig,
};
use burn::tensor::{activation, Bool, Device, Int, Tensor};

/// Model dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaDims {
    pub vocab: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub max_seq: usize,
}

impl LlamaDims {
    /// Checks the dimensions fit together, naming the first that does not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("vocab size", self.vocab),
            ("--d-model", self.d_model),
            ("--layers", self.layers),
            ("--heads", self.heads),
            ("--ffn", self.ffn),
            ("--seq-len", self.max_seq),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(format!(
                "--d-model {} is not divisible by --heads {}",
                self.d_model, self.heads
            ));
        }
        if !(self.d_model / self.heads).is_multiple_of(2) {
            return Err(format!(
                "the head size --d-model / --heads = {} must be even for rotary encoding",
                self.d_model / self.heads
            ));
        }
        Ok(())
    }

    /// Builds the model with fresh weights.
    pub fn init(&self, device: &Device) -> Llama {
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let norm = || {
            RmsNormConfig::new(self.d_model)
                .with_epsilon(1e-6)
                .init(device)
        };
        Llama {
            tok_embeddings: EmbeddingConfig::new(self.vocab, self.d_model).init(device),
            layers: (0..self.layers)
                .map(|_| Block {
                    attention_norm: norm(),
                    attention: Attention {
                        wq: linear(self.d_model, self.d_model),
                        wk: linear(self.d_model, self.d_model),
                        wv: linear(self.d_model, self.d_model),
                        wo: linear(self.d_model, self.d_model),
                        heads: self.heads,
                    },
                    ffn_norm: norm(),
                    feed_forward: FeedForward {
                        w1: linear(self.d_model, self.ffn),
                        w2: linear(self.ffn, self.d_model),
                        w3: linear(self.d_model, self.ffn),
                    },
                })
                .collect(),
            norm: norm(),
            output: linear(self.d_model, self.vocab),
            rope: RotaryEncodingConfig::new(self.max_seq, self.d_model / self.heads).init(device),
        }
    }
}

/// Causal self-attention with rotary position encoding and no biases.
#[derive(Module, Debug)]
pub struct Attention {
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub heads: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>, rope: &RotaryEncoding, mask: &Tensor<4, Bool>) -> Tensor<3> {
        let [batch, seq, d_model] = x.dims();
        let head_dim = d_model / self.heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, seq, self.heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = rope.forward(split(self.wq.forward(x.clone())));
        let k = rope.forward(split(self.wk.forward(x.clone())));
        let v = split(self.wv.forward(x));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .div_scalar((head_dim as f32).sqrt());
        let scores = scores.mask_fill(mask.clone(), f32::NEG_INFINITY);
        let context = activation::softmax(scores, 3).matmul(v);
        self.wo
            .forward(context.swap_dims(1, 2).reshape([batch, seq, d_model]))
    }
}

/// SwiGLU MLP: `w2(silu(w1 x) * w3 x)`.
#[derive(Module, Debug)]
pub struct FeedForward {
    pub w1: Linear,
    pub w2: Linear,
    pub w3: Linear,
}

impl FeedForward {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.w2
            .forward(activation::silu(self.w1.forward(x.clone())) * self.w3.forward(x))
    }
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct Block {
    pub attention_norm: RmsNorm,
    pub attention: Attention,
    pub ffn_norm: RmsNorm,
    pub feed_forward: FeedForward,
}

/// The decoder.
#[derive(Module, Debug)]
pub struct Llama {
    pub tok_embeddings: Embedding,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    pub output: Linear,
    pub rope: RotaryEncoding,
}

impl Llama {
    /// Logits `[batch, seq, vocab]` for tokens `[batch, seq]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        // Burn's `tril_mask` is true outside the lower triangle: position i may not see j > i.
        let mask = Tensor::<2, Bool>::tril_mask([seq, seq], 0, &device)
            .reshape([1, 1, seq, seq])
            .expand([batch, 1, seq, seq]);
        let mut x = self.tok_embeddings.forward(tokens);
        for block in &self.layers {
            let h =
                block
                    .attention
                    .forward(block.attention_norm.forward(x.clone()), &self.rope, &mask);
            x = x + h;
            let h = block
                .feed_forward
                .forward(block.ffn_norm.forward(x.clone()));
            x = x + h;
        }
        self.output.forward(self.norm.forward(x))
    }

    /// Mean next-token cross-entropy of `tokens` `[batch, seq + 1]`.
    pub fn loss(&self, tokens: Tensor<2, Int>) -> Tensor<1> {
        let [batch, len] = tokens.dims();
        let inputs = tokens.clone().slice([0..batch, 0..len - 1]);
        let targets = tokens.slice([0..batch, 1..len]);
        let logits = self.forward(inputs);
        let [_, seq, vocab] = logits.dims();
        let log_probs = activation::log_softmax(logits.reshape([batch * seq, vocab]), 1);
        log_probs
            .gather(1, targets.reshape([batch * seq, 1]))
            .mean()
            .neg()
    }
}
