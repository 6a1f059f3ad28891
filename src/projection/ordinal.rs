//! A matrix's ordinal when no router numbered it: what every replica and resumed run sees
//! identically at first sight.

use burn::tensor::{Int, Tensor, TensorData};

use crate::rng::mix_seed;

/// Identifies a tensor that no [`Router`](crate::Router) numbered, by what every replica and
/// every resumed run sees identically when an optimizer first meets it: its shape and 16
/// evenly spaced entries of its weights and of its gradient, read in one small transfer, once
/// per tensor. (Weights alone would confuse same-shaped tensors initialized alike, zeros for
/// one; gradients alone, those whose first gradient is zero.) 32 bits wide, so the golden-ratio
/// block draw of [`SubspaceManager::block_is_active`] keeps its precision.
pub(crate) fn fingerprint<const D: usize>(weights: &Tensor<D>, grad: &Tensor<D>) -> usize {
    const SAMPLES: usize = 16;
    let dims = grad.dims();
    let numel: usize = dims.iter().product();
    let positions: Vec<i64> = (0..SAMPLES).map(|i| (i * numel / SAMPLES) as i64).collect();
    let indices =
        Tensor::<1, Int>::from_data(TensorData::new(positions, [SAMPLES]), &grad.device());
    let sample = |t: &Tensor<D>| t.clone().reshape([numel]).select(0, indices.clone());
    let values: Vec<f32> =
        crate::readback::data(Tensor::cat(vec![sample(weights), sample(grad)], 0))
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("a float tensor converts to f32");
    let shape = dims.iter().fold(D as u64, |h, &d| mix_seed(h, d as u64));
    let hash = values
        .iter()
        .fold(shape, |h, v| mix_seed(h, u64::from(v.to_bits())));
    (hash >> 32) as usize
}
