//! The step scaffolding every subspace optimizer shares: per-parameter state, empty and
//! non-finite gradients, the matrix / non-matrix split and the hand-off to the
//! [`SubspaceManager`].
//!
//! An optimizer supplies only its two update rules: one for matrices (given the
//! [`Prepared`] low-rank gradient) and one for tensors of any other rank.

use burn::tensor::{Device, Tensor};

use crate::adam::Moments;
use crate::matrix::{all_finite, as_matrix, assert_state_fits, cast_moments, cast_rank};
use crate::projection::{Prepared, Subspace, SubspaceManager};
use crate::RecordState;

/// Per-parameter state of the subspace optimizers ([`GaLore`](crate::GaLore),
/// [`Fira`](crate::Fira), [`Apollo`](crate::Apollo), [`Frugal`](crate::Frugal)).
#[derive(RecordState, Clone, Debug)]
pub struct SubspaceState<const D: usize> {
    /// Adam moments: of the projected gradient for matrices, full-size otherwise; `None` while
    /// a parameter has no state-full part (FRUGAL's inactive blocks).
    pub moments: Option<Moments<D>>,
    /// The matrix's subspace; `None` for parameters that are not matrices.
    pub subspace: Option<Subspace>,
    /// Norm of the previous scaled residual for the norm-growth limiter (Fira, APOLLO).
    pub limiter: Option<Tensor<1>>,
    /// Updates applied to this parameter; drives the refresh schedule.
    pub step: usize,
}

impl<const D: usize> SubspaceState<D> {
    /// Moves every tensor to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        SubspaceState {
            moments: self.moments.map(|m| m.to_device(device)),
            subspace: self.subspace.map(|s| s.to_device(device)),
            limiter: self.limiter.map(|t| t.to_device(device)),
            step: self.step,
        }
    }
}

/// What a matrix rule returns: the new weights, moments and limiter norm.
pub(crate) struct MatrixUpdate {
    pub weights: Tensor<2>,
    pub moments: Moments<2>,
    pub limiter: Option<Tensor<1>>,
}

/// The inputs of a matrix rule.
pub(crate) struct MatrixStep {
    pub weights: Tensor<2>,
    pub grad: Tensor<2>,
    pub prepared: Prepared,
    pub limiter: Option<Tensor<1>>,
}

/// One optimizer step for any tensor rank: empty tensors are left alone, non-finite gradients
/// skip the update (logged) and keep the state, matrices go through the manager and `matrix`,
/// everything else through `dense` (given full-size moments).
pub(crate) fn subspace_step<const D: usize>(
    manager: &SubspaceManager,
    tensor: Tensor<D>,
    grad: Tensor<D>,
    state: Option<SubspaceState<D>>,
    matrix: impl FnOnce(MatrixStep) -> MatrixUpdate,
    dense: impl FnOnce(Tensor<D>, Tensor<D>, Moments<D>) -> (Tensor<D>, Moments<D>),
) -> (Tensor<D>, Option<SubspaceState<D>>) {
    // Nothing to update; some backends cannot even run elementwise ops on empty tensors.
    if grad.dims().contains(&0) {
        return (tensor, state);
    }
    let (moments, subspace, limiter, step) = match state {
        Some(s) => (s.moments, s.subspace, s.limiter, s.step),
        None => (None, None, None, 0),
    };
    let Some(grad_matrix) = as_matrix(&grad) else {
        if !all_finite(&grad) {
            log_skip(&tensor.dims());
            let state = SubspaceState {
                moments,
                subspace,
                limiter,
                step,
            };
            return (tensor, Some(state).filter(|_| step > 0));
        }
        let moments = moments.unwrap_or_else(|| Moments::zeros(grad.dims(), &grad.device()));
        assert_state_fits("optimizer moments", &moments.dims(), &grad.dims());
        let (weights, moments) = dense(tensor, grad, moments);
        let state = SubspaceState {
            moments: Some(moments),
            subspace: None,
            limiter,
            step: step + 1,
        };
        return (weights, Some(state));
    };
    let moments = moments.map(cast_moments);
    let prepared = match manager.prepare(subspace, moments, grad_matrix.clone(), step) {
        Ok(prepared) => prepared,
        Err((subspace, moments)) => {
            log_skip(&tensor.dims());
            let state = SubspaceState {
                moments: moments.map(cast_moments),
                subspace,
                limiter,
                step,
            };
            return (tensor, Some(state).filter(|_| step > 0));
        }
    };
    let update = matrix(MatrixStep {
        weights: cast_rank(tensor),
        grad: grad_matrix,
        prepared: prepared.clone(),
        limiter,
    });
    let state = SubspaceState {
        moments: Some(cast_moments(update.moments)),
        subspace: Some(prepared.subspace),
        limiter: update.limiter,
        step: step + 1,
    };
    (cast_rank(update.weights), Some(state))
}

/// `tensor * (1 - lr * wd)`, skipped when `wd` is zero.
pub(crate) fn decay<const D: usize>(tensor: Tensor<D>, lr: f64, weight_decay: f32) -> Tensor<D> {
    if weight_decay == 0.0 {
        return tensor;
    }
    tensor.mul_scalar(1.0 - lr * weight_decay as f64)
}

pub(crate) fn log_skip(dims: &[usize]) {
    log::warn!(
        "lowrank-optim: skipped the update of a {dims:?} parameter: its gradient holds NaN or infinity"
    );
}

/// Implements `burn::optim::Optimizer` for a subspace optimizer whose matrices go through its
/// `step_matrix(lr, MatrixStep) -> MatrixUpdate` and whose other tensors get Adam with the
/// HF/GaLore conventions (fields `manager`, `hyper`, `weight_decay`).
macro_rules! hf_subspace_optimizer {
    ($optimizer:ty) => {
        impl burn::optim::Optimizer for $optimizer {
            type State<const D: usize> = $crate::projected::SubspaceState<D>;

            fn step<const D: usize>(
                &self,
                lr: f64,
                tensor: burn::tensor::Tensor<D>,
                grad: burn::tensor::Tensor<D>,
                state: Option<Self::State<D>>,
            ) -> (burn::tensor::Tensor<D>, Option<Self::State<D>>) {
                $crate::projected::subspace_step(
                    &self.manager,
                    tensor,
                    grad,
                    state,
                    |input| self.step_matrix(lr, input),
                    |w, g, m| {
                        $crate::galore::hf_adam_dense(&self.hyper, self.weight_decay, lr, w, g, m)
                    },
                )
            }

            fn to_device<const D: usize>(
                state: Self::State<D>,
                device: &burn::tensor::Device,
            ) -> Self::State<D> {
                state.to_device(device)
            }
        }
    };
}
pub(crate) use hf_subspace_optimizer;
