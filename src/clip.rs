//! Gradient clipping by the global norm over all parameters, as the published recipes do
//! (`torch.nn.utils.clip_grad_norm_`). Burn's own clipping works per parameter.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Scales every gradient by `min(1, max_norm / ||g||)`, where `||g||` is the L2 norm of all
/// gradients of `module` together; returns the norm before clipping.
///
/// One device synchronization (to read the norm). Non-finite norms leave the gradients as they
/// are, so the optimizers' non-finite policy sees them.
///
/// ```
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Device, Tensor};
/// use lowrank_optim::clip::clip_grad_norm;
///
/// let device = Device::default().autodiff();
/// let model: Linear = LinearConfig::new(4, 4).init(&device);
/// let loss = model.forward(Tensor::<2>::ones([2, 4], &device) * 100.0).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let (grads, norm) = clip_grad_norm(grads, &model, 1.0);
/// assert!(norm > 1.0);
/// let (_, clipped) = clip_grad_norm(grads, &model, f64::INFINITY);
/// assert!((clipped - 1.0).abs() < 1e-4);
/// ```
pub fn clip_grad_norm<M: Module>(
    grads: GradientsParams,
    module: &M,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut sum = SquaredNorm {
        grads: &grads,
        total: None,
    };
    module.visit(&mut sum);
    let norm = match sum.total {
        Some(total) => crate::readback::scalar_f64(total).sqrt(),
        None => return (grads, 0.0),
    };
    if !norm.is_finite() || norm <= max_norm {
        return (grads, norm);
    }
    let mut scale = Scale {
        grads,
        factor: max_norm / (norm + 1e-6),
    };
    module.visit(&mut scale);
    (scale.grads, norm)
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squared = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squared,
                None => squared,
            });
        }
    }
}

struct Scale {
    grads: GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}
