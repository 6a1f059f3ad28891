//! The model's training and validation steps for burn-train's `Learner`, and the batcher that
//! stacks token sequences (used by the `learner` binary and `benches/learner.rs`).

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_train::{InferenceStep, SequenceOutput, TrainOutput, TrainStep};

use crate::model::Llama;

/// Stacks equally long token sequences into a `[batch, len]` tensor.
#[derive(Clone)]
pub struct TokenBatcher;

impl Batcher<Vec<i64>, Tensor<2, Int>> for TokenBatcher {
    fn batch(&self, items: Vec<Vec<i64>>, device: &Device) -> Tensor<2, Int> {
        let (rows, len) = (items.len(), items.first().map_or(0, Vec::len));
        let values: Vec<i64> = items.into_iter().flatten().collect();
        Tensor::from_data(TensorData::new(values, [rows, len]), device)
    }
}

impl TrainStep for Llama {
    type Input = Tensor<2, Int>;
    type Output = SequenceOutput;

    fn step(&self, tokens: Tensor<2, Int>) -> TrainOutput<SequenceOutput> {
        let (loss, logits, targets) = self.predict(tokens);
        let grads = loss.backward();
        TrainOutput::new(
            self,
            grads,
            SequenceOutput::new(loss, logits, None, targets),
        )
    }
}

impl InferenceStep for Llama {
    type Input = Tensor<2, Int>;
    type Output = SequenceOutput;

    fn step(&self, tokens: Tensor<2, Int>) -> SequenceOutput {
        let (loss, logits, targets) = self.predict(tokens);
        SequenceOutput::new(loss, logits, None, targets)
    }
}
