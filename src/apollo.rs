//! APOLLO: SGD-like memory, AdamW-like steps: the raw gradient scaled per channel by the ratio
//! a low-rank Adam state estimates from a random projection.

use burn::config::Config;

use crate::adam::AdamHyper;
use crate::error::check;
use crate::projected::{decay, hf_subspace_optimizer, MatrixStep, MatrixUpdate, SubspaceState};
use crate::projection::{subspace_setters, ProjectionMethod, SubspaceConfig, SubspaceManager};
use crate::scaling::{channel_axis, limit, norm_ratio, squared_norms, ScaleGranularity};

/// [`Apollo`] configuration. Defaults are the reference's (`apollo-torch` 1.0.3 `APOLLOAdamW`
/// with its README's APOLLO settings): seeded Gaussian projection refreshed every 200 steps,
/// rank 256, channel-wise scaling, scale 1, norm-growth limiter on.
///
/// See: [APOLLO: SGD-like Memory, AdamW-level Performance, Zhu et al.,
/// 2024](https://arxiv.org/abs/2412.05270).
///
/// ```
/// use lowrank_optim::ApolloConfig;
///
/// let apollo = ApolloConfig::new().with_rank(256).init().expect("a valid config");
/// let mini = ApolloConfig::mini().init().expect("a valid config"); // rank 1, tensor-wise, scale 128
/// # let _ = (apollo, mini);
/// ```
#[derive(Config, Debug)]
pub struct ApolloConfig {
    /// Subspace settings; the default projection is [`ProjectionMethod::Gaussian`] at rank 256.
    #[config(
        default = "SubspaceConfig::new().with_rank(256).with_projection(ProjectionMethod::Gaussian)"
    )]
    pub subspace: SubspaceConfig,
    /// The update is multiplied by `sqrt(scale)` (the reference's `scale`).
    #[config(default = 1.0)]
    pub scale: f32,
    /// Channel-wise (APOLLO) or tensor-wise (APOLLO-Mini) scaling of the raw gradient.
    #[config(default = "ScaleGranularity::Channel")]
    pub scaling: ScaleGranularity,
    /// Multiply by `sqrt(scale)` before the limiter instead of after (`scale_front`).
    #[config(default = false)]
    pub scale_front: bool,
    /// Apply Fira's norm-growth limiter (the reference's `disable_nl = False`).
    #[config(default = true)]
    pub limiter: bool,
    /// Largest growth factor of the scaled gradient's norm from one step to the next.
    #[config(default = 1.01)]
    pub gamma: f32,
    /// Decay of Adam's first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of Adam's second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to `sqrt(v)` in the denominator.
    #[config(default = 1e-6)]
    pub epsilon: f32,
    /// Decoupled weight decay, applied after the update (`W -= lr * wd * W`).
    #[config(default = 0.0)]
    pub weight_decay: f32,
}

subspace_setters!(ApolloConfig);

impl ApolloConfig {
    /// APOLLO-Mini: rank 1, one scaling factor per matrix, scale 128.
    pub fn mini() -> Self {
        Self::new()
            .with_rank(1)
            .with_scaling(ScaleGranularity::Tensor)
            .with_scale(128.0)
    }

    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        self.subspace.validate()?;
        check::positive("scale", self.scale as f64)?;
        check::at_least_one("gamma", self.gamma as f64)?;
        check::adam(self.beta_1, self.beta_2, self.epsilon, self.weight_decay)
    }

    /// Builds the optimizer, or names the invalid field.
    pub fn init(&self) -> crate::Result<Apollo> {
        self.validate()?;
        Ok(Apollo {
            manager: SubspaceManager::new(self.subspace.clone())?,
            hyper: AdamHyper {
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                epsilon: self.epsilon,
            },
            scale_root: self.scale.sqrt(),
            scaling: self.scaling,
            scale_front: self.scale_front,
            gamma: self.limiter.then_some(self.gamma),
            weight_decay: self.weight_decay,
        })
    }
}

/// APOLLO-AdamW, as `apollo-torch` 1.0.3's `APOLLOAdamW` computes it.
///
/// On a matrix, with `R = project(G)` (a seeded Gaussian projection by default) and
/// `N = M / (sqrt(V) + eps)` from Adam on `R`: `phi = ||N|| / (||R|| + 1e-8)` per channel along
/// the low-rank axis (or per matrix), `S = G phi`, Fira's norm-growth limiter on `S`, then
/// `W -= lr_t sqrt(scale) S` with GaLore's `lr_t` and decoupled weight decay. Nothing is projected
/// back: the low-rank state only estimates the scaling.
#[derive(Clone, Debug)]
pub struct Apollo {
    manager: SubspaceManager,
    hyper: AdamHyper,
    scale_root: f32,
    scaling: ScaleGranularity,
    scale_front: bool,
    gamma: Option<f32>,
    weight_decay: f32,
}

/// Per-parameter [`Apollo`] state.
pub type ApolloState<const D: usize> = SubspaceState<D>;

impl Apollo {
    /// The subspace manager in use.
    pub fn manager(&self) -> &SubspaceManager {
        &self.manager
    }

    /// Whether the norm-growth limiter is on.
    pub fn has_limiter(&self) -> bool {
        self.gamma.is_some()
    }

    fn step_matrix(&self, lr: f64, input: MatrixStep) -> MatrixUpdate {
        let MatrixStep {
            weights,
            grad,
            prepared,
            limiter,
        } = input;
        let low = prepared.low_grad;
        let moments = prepared.moments.update(low.clone(), &self.hyper);
        let step_size = self.hyper.hf_step_size(lr, moments.step);
        let axis = channel_axis(prepared.subspace.side, self.scaling);
        let phi = norm_ratio(
            moments.direction(&self.hyper),
            squared_norms(low, axis),
            axis,
        );
        // S = G c with a small per-channel (or scalar) c: every factor is folded into c, so the
        // full-size matrix is read for its channel norms and once more for the update.
        let (front, back) = if self.scale_front {
            (self.scale_root, 1.0)
        } else {
            (1.0, self.scale_root)
        };
        let mut coefficient = phi.mul_scalar(front);
        let limiter = self.gamma.map(|gamma| {
            // ||G c||² = sum over channels of c² ||g||².
            let norm = squared_norms(grad.clone(), axis)
                .mul(coefficient.clone().square())
                .sum()
                .sqrt();
            let (divisor, limited) = limit(norm, limiter, gamma);
            coefficient = coefficient.clone().div(divisor.reshape([1, 1]));
            limited
        });
        let update = grad.mul(coefficient.mul_scalar(back as f64 * step_size));
        MatrixUpdate {
            weights: decay(weights.sub(update), lr, self.weight_decay),
            moments,
            limiter,
        }
    }
}

hf_subspace_optimizer!(Apollo);
