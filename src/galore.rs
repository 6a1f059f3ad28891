//! GaLore: Adam in a low-rank gradient subspace.

use burn::config::Config;
use burn::tensor::Tensor;

use crate::adam::{AdamHyper, Moments};
use crate::error::check;
use crate::projected::{decay, hf_subspace_optimizer, MatrixStep, MatrixUpdate, SubspaceState};
use crate::projection::{subspace_setters, SubspaceConfig, SubspaceManager};

/// [`GaLore`] configuration. Defaults are the reference's (`galore-torch` 1.0 `GaLoreAdamW`).
///
/// See: [GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection, Zhao et al.,
/// 2024](https://arxiv.org/abs/2403.03507).
///
/// ```
/// use lowrank_optim::{GaLoreConfig, ProjectionMethod};
///
/// let galore = GaLoreConfig::new()
///     .with_rank(256)
///     .with_update_proj_gap(200)
///     .with_scale(0.25)
///     .with_projection(ProjectionMethod::Randomized)
///     .init()
///     .expect("a valid config");
/// # let _ = galore;
/// ```
#[derive(Config, Debug)]
pub struct GaLoreConfig {
    /// Subspace settings: rank, refresh gap, side, basis method, moment policy (also settable
    /// through `with_rank`, `with_update_proj_gap`, `with_proj_type`, `with_projection`, ...).
    #[config(default = "SubspaceConfig::new()")]
    pub subspace: SubspaceConfig,
    /// Scale `alpha` applied to the projected-back update.
    #[config(default = 0.25)]
    pub scale: f32,
    /// Decay of Adam's first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of Adam's second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to `sqrt(v)` in the denominator.
    #[config(default = 1e-6)]
    pub epsilon: f32,
    /// Decoupled weight decay, applied after the update on the new weights (`W -= lr * wd * W`).
    #[config(default = 0.0)]
    pub weight_decay: f32,
}

subspace_setters!(GaLoreConfig);

impl GaLoreConfig {
    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        self.subspace.validate()?;
        check::positive("scale", self.scale as f64)?;
        check::adam(self.beta_1, self.beta_2, self.epsilon, self.weight_decay)
    }

    /// Builds the optimizer, or names the invalid field.
    ///
    /// The result is a [`burn::optim::Optimizer`]: route it to the matrices of a model with
    /// [`Router`](crate::Router), or wrap it whole with `ModuleOptimizer::from`.
    pub fn init(&self) -> crate::Result<GaLore> {
        self.validate()?;
        Ok(GaLore {
            manager: SubspaceManager::new(self.subspace.clone())?,
            hyper: AdamHyper {
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                epsilon: self.epsilon,
            },
            scale: self.scale,
            weight_decay: self.weight_decay,
        })
    }
}

/// GaLore-AdamW, step for step as `galore-torch`'s `GaLoreAdamW`.
///
/// On a matrix: refresh the basis when due, `R = project(G)`, Adam moments on `R`,
/// `W -= lr_t * scale * back(M / (sqrt(V) + eps))` with `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`,
/// then `W -= lr * wd * W`. Tensors of any other rank get the same Adam math unprojected and
/// unscaled. A gradient holding a NaN or an infinity skips that parameter's update and leaves
/// its state untouched (logged as a warning).
#[derive(Clone, Debug)]
pub struct GaLore {
    manager: SubspaceManager,
    hyper: AdamHyper,
    scale: f32,
    weight_decay: f32,
}

/// Per-parameter [`GaLore`] state.
pub type GaLoreState<const D: usize> = SubspaceState<D>;

impl GaLore {
    /// The subspace manager in use.
    pub fn manager(&self) -> &SubspaceManager {
        &self.manager
    }

    fn step_matrix(&self, lr: f64, input: MatrixStep) -> MatrixUpdate {
        let moments = input
            .prepared
            .moments
            .update(input.prepared.low_grad, &self.hyper);
        let step_size = self.hyper.hf_step_size(lr, moments.step) * self.scale as f64;
        let low_update = moments.direction(&self.hyper).mul_scalar(step_size);
        let update = input.prepared.subspace.project_back(low_update);
        MatrixUpdate {
            weights: decay(input.weights.sub(update), lr, self.weight_decay),
            moments,
            limiter: None,
        }
    }
}

/// Adam with the HF/GaLore conventions on a full-size tensor, then decoupled weight decay.
pub(crate) fn hf_adam_dense<const D: usize>(
    hyper: &AdamHyper,
    weight_decay: f32,
    lr: f64,
    tensor: Tensor<D>,
    grad: Tensor<D>,
    moments: Moments<D>,
) -> (Tensor<D>, Moments<D>) {
    let moments = moments.update(grad, hyper);
    let step_size = hyper.hf_step_size(lr, moments.step);
    let weights = tensor.sub(moments.direction(hyper).mul_scalar(step_size));
    (decay(weights, lr, weight_decay), moments)
}

hf_subspace_optimizer!(GaLore);
