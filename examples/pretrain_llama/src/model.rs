//! A LLaMA-style decoder: token embedding, pre-norm blocks (RmsNorm, rotary causal multi-head
//! attention without biases, SwiGLU MLP), final RmsNorm and an untied output head.
//!
//! Parameter names follow Burn's `llama-burn` (`layers.0.attention.wq`, `layers.0.feed_forward.w1`,
//! `tok_embeddings.weight`, `output.weight`), which `lowrank_optim::Router::llama()` routes:
//! attention/MLP matrices projected, the rest dense. The attention/MLP linears are
//! `SwitchableLinear`s, so a SwitchLoRA recipe builds them as SwitchLoRA layers
//! (`layers.0.attention.wq.SwitchLora.lora_a`) and every other recipe as dense ones
//! (`layers.0.attention.wq.Dense.weight`).

use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig, RotaryEncoding,
    RotaryEncodingConfig,
};
use burn::tensor::{activation, Bool, Device, Int, Tensor};
use lowrank_optim::switchlora::{Adapter, SwitchableLinear};

/// Rotary encoding's base (Burn's default) and RmsNorm's epsilon.
pub const ROPE_THETA: f64 = 10_000.0;
pub const NORM_EPSILON: f64 = 1e-6;

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

    /// Builds the model with fresh weights; with an `adapter`, the attention/MLP linears are
    /// SwitchLoRA layers (an error names a rank too large for a layer).
    pub fn init(&self, device: &Device, adapter: Option<Adapter>) -> Result<Llama, String> {
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let adapted = |i, o| {
            let config = LinearConfig::new(i, o).with_bias(false);
            SwitchableLinear::new(&config, adapter, device).map_err(|e| e.to_string())
        };
        let norm = || {
            RmsNormConfig::new(self.d_model)
                .with_epsilon(NORM_EPSILON)
                .init(device)
        };
        let d = self.d_model;
        let layers = (0..self.layers)
            .map(|_| {
                Ok(Block {
                    attention_norm: norm(),
                    attention: Attention {
                        wq: adapted(d, d)?,
                        wk: adapted(d, d)?,
                        wv: adapted(d, d)?,
                        wo: adapted(d, d)?,
                        heads: self.heads,
                    },
                    ffn_norm: norm(),
                    feed_forward: FeedForward {
                        w1: adapted(d, self.ffn)?,
                        w2: adapted(self.ffn, d)?,
                        w3: adapted(d, self.ffn)?,
                    },
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Llama {
            tok_embeddings: EmbeddingConfig::new(self.vocab, d).init(device),
            layers,
            norm: norm(),
            output: linear(d, self.vocab),
            rope: RotaryEncodingConfig::new(self.max_seq, d / self.heads)
                .with_theta(ROPE_THETA as f32)
                .init(device),
        })
    }
}

/// Causal self-attention with rotary position encoding and no biases.
#[derive(Module, Debug)]
pub struct Attention {
    pub wq: SwitchableLinear,
    pub wk: SwitchableLinear,
    pub wv: SwitchableLinear,
    pub wo: SwitchableLinear,
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
    pub w1: SwitchableLinear,
    pub w2: SwitchableLinear,
    pub w3: SwitchableLinear,
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
    /// Folds every SwitchLoRA adapter into its base weight: the same function with dense linears.
    pub fn merge_adapters(mut self) -> Result<Llama, String> {
        let merge = |l: SwitchableLinear| l.merge().map_err(|e| e.to_string());
        for block in &mut self.layers {
            let a = block.attention.clone();
            block.attention = Attention {
                wq: merge(a.wq)?,
                wk: merge(a.wk)?,
                wv: merge(a.wv)?,
                wo: merge(a.wo)?,
                heads: a.heads,
            };
            let f = block.feed_forward.clone();
            block.feed_forward = FeedForward {
                w1: merge(f.w1)?,
                w2: merge(f.w2)?,
                w3: merge(f.w3)?,
            };
        }
        Ok(self)
    }

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
        self.predict(tokens).0
    }

    /// The mean next-token cross-entropy of `tokens` `[batch, seq + 1]`, the logits
    /// `[batch, seq, vocab]` it comes from and the targets `[batch, seq]`.
    pub fn predict(&self, tokens: Tensor<2, Int>) -> (Tensor<1>, Tensor<3>, Tensor<2, Int>) {
        let [batch, len] = tokens.dims();
        let inputs = tokens.clone().slice([0..batch, 0..len - 1]);
        let targets = tokens.slice([0..batch, 1..len]);
        let logits = self.forward(inputs);
        let [_, seq, vocab] = logits.dims();
        let log_probs = activation::log_softmax(logits.clone().reshape([batch * seq, vocab]), 1);
        let loss = log_probs
            .gather(1, targets.clone().reshape([batch * seq, 1]))
            .mean()
            .neg();
        (loss, logits, targets)
    }
}
