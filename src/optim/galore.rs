//! GaLore: Adam in a low-rank gradient subspace.

use burn::config::Config;

use super::subspace::{MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule};
use crate::adam::AdamParams;
use crate::error::check;
use crate::projection::SubspaceConfig;
use crate::setters::subspace_config;

/// [`GaLore`] configuration. Defaults are the reference's (`galore-torch` 1.0 `GaLoreAdamW`).
///
/// See: [GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection, Zhao et al.,
/// 2024](https://arxiv.org/abs/2403.03507).
///
/// ```
/// use lowrank_optim::{GaLoreConfig, ProjectionMethod};
///
/// let config = GaLoreConfig::new()
///     .with_rank(256)
///     .with_update_proj_gap(200)
///     .with_scale(0.25)
///     .with_projection(ProjectionMethod::Randomized);
/// let galore = config.build()?; // the bare optimizer, for a Router
/// let optim = config.init()?; // a ModuleOptimizer projecting every matrix
/// # let _ = (galore, optim);
/// # Ok::<(), lowrank_optim::Error>(())
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
    /// Adam: `eps` added to `sqrt(v)`, weight decay applied after the update on the new
    /// weights (also settable through `with_beta_1`, `with_epsilon`, `with_weight_decay`, ...).
    #[config(default = "AdamParams::new()")]
    pub adam: AdamParams,
}

subspace_config!(GaLoreConfig);

impl GaLoreConfig {
    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        self.subspace.validate()?;
        check::positive("scale", self.scale as f64)?;
        self.adam.validate()
    }

    /// The bare optimizer, or the invalid field named: route it to a model's matrices with
    /// [`Router`](crate::Router).
    pub fn build(&self) -> crate::Result<GaLore> {
        self.validate()?;
        let rule = GaLoreRule {
            adam: self.adam,
            scale: self.scale,
        };
        SubspaceOptimizer::new(self.subspace.clone(), rule)
    }
}

/// GaLore-AdamW, step for step as `galore-torch`'s `GaLoreAdamW`.
///
/// On a matrix: refresh the basis when due, `R = project(G)`, Adam moments on `R`,
/// `W -= lr_t * scale * back(M / (sqrt(V) + eps))` with `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`,
/// then `W -= lr * wd * W`. Tensors of any other rank get the same Adam math unprojected and
/// unscaled.
pub type GaLore = SubspaceOptimizer<GaLoreRule>;

/// GaLore's update rule (see [`GaLore`]).
#[derive(Clone, Debug)]
pub struct GaLoreRule {
    adam: AdamParams,
    scale: f32,
}

impl SubspaceRule for GaLoreRule {
    fn adam(&self) -> &AdamParams {
        &self.adam
    }

    fn matrix(&self, lr: f64, step: MatrixStep) -> MatrixUpdate {
        let (hyper, prepared) = (self.adam.hyper(), step.prepared);
        let moments = prepared.moments.update(prepared.low_grad, &hyper);
        let step_size = hyper.hf_step_size(lr, &moments).scaled(self.scale as f64);
        let low_update = step_size.times(moments.direction(&hyper));
        MatrixUpdate {
            update: prepared.subspace.project_back(low_update),
            moments,
            limiter: None,
        }
    }
}
