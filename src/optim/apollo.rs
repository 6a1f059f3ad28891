//! APOLLO: SGD-like memory, AdamW-like steps: the raw gradient scaled per channel by the ratio
//! a low-rank Adam state estimates from a random projection.

use burn::config::Config;

use super::scaling::{channel_axis, limit, norm_ratio, squared_norms, ScaleGranularity};
use super::subspace::{MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule};
use crate::adam::AdamParams;
use crate::error::check;
use crate::projection::{ProjectionMethod, SubspaceConfig};
use crate::setters::subspace_config;

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
/// let apollo = ApolloConfig::new().with_rank(256).build().expect("a valid config");
/// let mini = ApolloConfig::mini().build().expect("a valid config"); // rank 1, tensor-wise, scale 128
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
    /// Adam: `eps` added to `sqrt(v)`, weight decay applied after the update, as GaLore.
    #[config(default = "AdamParams::new()")]
    pub adam: AdamParams,
}

subspace_config!(ApolloConfig);

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
        self.adam.validate()
    }

    /// The bare optimizer, or the invalid field named: route it to a model's matrices with
    /// [`Router`](crate::Router).
    pub fn build(&self) -> crate::Result<Apollo> {
        self.validate()?;
        let rule = ApolloRule {
            adam: self.adam,
            scale_root: self.scale.sqrt(),
            scaling: self.scaling,
            scale_front: self.scale_front,
            gamma: self.limiter.then_some(self.gamma),
        };
        SubspaceOptimizer::new(self.subspace.clone(), rule)
    }
}

/// APOLLO-AdamW, as `apollo-torch` 1.0.3's `APOLLOAdamW` computes it.
///
/// On a matrix, with `R = project(G)` (a seeded Gaussian projection by default) and
/// `N = M / (sqrt(V) + eps)` from Adam on `R`: `phi = ||N|| / (||R|| + 1e-8)` per channel along
/// the low-rank axis (or per matrix), `S = G phi`, Fira's norm-growth limiter on `S`, then
/// `W -= lr_t sqrt(scale) S` with GaLore's `lr_t` and decoupled weight decay. Nothing is projected
/// back: the low-rank state only estimates the scaling.
pub type Apollo = SubspaceOptimizer<ApolloRule>;

/// APOLLO's update rule (see [`Apollo`]).
#[derive(Clone, Debug)]
pub struct ApolloRule {
    adam: AdamParams,
    scale_root: f32,
    scaling: ScaleGranularity,
    scale_front: bool,
    gamma: Option<f32>,
}

impl ApolloRule {
    /// Whether the norm-growth limiter is on.
    pub fn has_limiter(&self) -> bool {
        self.gamma.is_some()
    }
}

impl SubspaceRule for ApolloRule {
    fn adam(&self) -> &AdamParams {
        &self.adam
    }

    fn limiter_floats(&self) -> usize {
        usize::from(self.has_limiter())
    }

    fn matrix(&self, lr: f64, step: MatrixStep) -> MatrixUpdate {
        let hyper = self.adam.hyper();
        let MatrixStep {
            grad,
            prepared,
            limiter,
        } = step;
        let low = prepared.low_grad;
        let moments = prepared.moments.update(low.clone(), &hyper);
        let step_size = hyper.hf_step_size(lr, &moments);
        let axis = channel_axis(prepared.subspace.side(), self.scaling);
        let phi = norm_ratio(moments.direction(&hyper), squared_norms(low, axis), axis);
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
        let update = grad.mul(step_size.scaled(back as f64).times(coefficient));
        MatrixUpdate {
            update,
            moments,
            limiter,
        }
    }
}
