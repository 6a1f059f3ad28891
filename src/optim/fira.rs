//! Fira: GaLore plus a full-rank update from the residual the projection discards.

use burn::config::Config;

use super::scaling::{channel_axis, limit, norm_ratio, squared_norms, ScaleGranularity};
use super::subspace::{MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule};
use crate::adam::AdamParams;
use crate::error::check;
use crate::projection::SubspaceConfig;
use crate::setters::subspace_config;

/// [`Fira`] configuration. Defaults are the reference's (`fira` 1.0.2 `FiraAdamW`).
///
/// See: [Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?, Chen et
/// al., 2024](https://arxiv.org/abs/2410.01623).
///
/// ```
/// use lowrank_optim::{FiraConfig, ScaleGranularity};
///
/// let fira = FiraConfig::new()
///     .with_rank(128)
///     .with_scale(0.25)
///     .with_gamma(1.01)
///     .with_scaling(ScaleGranularity::Channel)
///     .build()
///     .expect("a valid config");
/// # let _ = fira;
/// ```
#[derive(Config, Debug)]
pub struct FiraConfig {
    /// Subspace settings (also settable through `with_rank`, `with_update_proj_gap`, ...).
    #[config(default = "SubspaceConfig::new()")]
    pub subspace: SubspaceConfig,
    /// Scale `alpha` of the low-rank part (the reference's `alpha`).
    #[config(default = 0.25)]
    pub scale: f32,
    /// Largest growth factor of the scaled residual's norm from one step to the next.
    #[config(default = 1.01)]
    pub gamma: f32,
    /// Per-channel (default) or per-matrix norm-ratio scaling of the residual.
    #[config(default = "ScaleGranularity::Channel")]
    pub scaling: ScaleGranularity,
    /// Adam: `eps` added to `sqrt(v)`, weight decay applied after the update, as GaLore.
    #[config(default = "AdamParams::new()")]
    pub adam: AdamParams,
}

subspace_config!(FiraConfig);

impl FiraConfig {
    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        self.subspace.validate()?;
        check::positive("scale", self.scale as f64)?;
        check::at_least_one("gamma", self.gamma as f64)?;
        self.adam.validate()
    }

    /// The bare optimizer, or the invalid field named: route it to a model's matrices with
    /// [`Router`](crate::Router).
    pub fn build(&self) -> crate::Result<Fira> {
        self.validate()?;
        let rule = FiraRule {
            adam: self.adam,
            scale: self.scale,
            gamma: self.gamma,
            scaling: self.scaling,
        };
        SubspaceOptimizer::new(self.subspace.clone(), rule)
    }
}

/// Fira-AdamW, step for step as `fira` 1.0.2's `FiraAdamW`.
///
/// On a matrix, with `R = project(G)` and `N = M / (sqrt(V) + eps)` from Adam on `R`:
/// `phi = ||N|| / (||R|| + 1e-8)` along the low-rank axis, the scaled residual
/// `S = (G - alpha back(R)) phi`, limited so that `||S||` grows by at most `gamma` per step,
/// then `W -= lr_t (alpha back(N) + S)` and decoupled weight decay, as GaLore.
///
/// For orthonormal bases with `alpha <= 1/2`, `||S||` comes from the identity
/// `||g - alpha P Pᵀ g||² = ||g||² - (2 alpha - alpha²) ||Pᵀ g||²` and the whole update takes one
/// back-projection instead of two; larger `alpha` (where that difference cancels badly in f32)
/// and Gaussian bases form `S` explicitly.
pub type Fira = SubspaceOptimizer<FiraRule>;

/// Fira's update rule (see [`Fira`]).
#[derive(Clone, Debug)]
pub struct FiraRule {
    adam: AdamParams,
    scale: f32,
    gamma: f32,
    scaling: ScaleGranularity,
}

impl SubspaceRule for FiraRule {
    fn adam(&self) -> &AdamParams {
        &self.adam
    }

    fn limiter_floats(&self) -> usize {
        1
    }

    fn matrix(&self, lr: f64, step: MatrixStep) -> MatrixUpdate {
        let hyper = self.adam.hyper();
        let MatrixStep {
            grad,
            prepared,
            limiter,
        } = step;
        let subspace = prepared.subspace;
        let low = prepared.low_grad;
        let moments = prepared.moments.update(low.clone(), &hyper);
        let normalized = moments.direction(&hyper);
        let step_size = hyper.hf_step_size(lr, &moments);
        let alpha = self.scale;
        let axis = channel_axis(subspace.side(), self.scaling);
        let low_sq = squared_norms(low.clone(), axis);
        let phi = norm_ratio(normalized.clone(), low_sq.clone(), axis);

        let update = if subspace.is_orthonormal() && alpha <= 0.5 {
            let kept = 2.0 * alpha - alpha * alpha;
            let residual_sq = squared_norms(grad.clone(), axis)
                .sub(low_sq.mul_scalar(kept))
                .clamp_min(0.0);
            let norm = phi.clone().square().mul(residual_sq).sum().sqrt();
            let (divisor, limited) = limit(norm, limiter, self.gamma);
            let factor = phi.div(divisor.reshape([1, 1]));
            // W - lr_t ((G - alpha back(R)) factor + alpha back(N))
            //   = W - G (lr_t factor) - back(lr_t alpha (N - R factor)): one back-projection,
            // every scalar folded into small tensors.
            let coefficient = step_size.times(factor.clone());
            let low_update =
                (step_size.clone().scaled(alpha as f64)).times(normalized.sub(low.mul(factor)));
            let update = grad.mul(coefficient).add(subspace.project_back(low_update));
            (update, limited)
        } else {
            let back = subspace.project_back(low).mul_scalar(alpha);
            let residual = grad.sub(back).mul(phi);
            let norm = residual.clone().square().sum().sqrt();
            let (divisor, limited) = limit(norm, limiter, self.gamma);
            let scale = step_size.times(divisor.recip()).reshape([1, 1]);
            let low_update = step_size.scaled(alpha as f64).times(normalized);
            (
                subspace.project_back(low_update).add(residual.mul(scale)),
                limited,
            )
        };
        let (update, limited) = update;
        MatrixUpdate {
            update,
            moments,
            limiter: Some(limited),
        }
    }
}
