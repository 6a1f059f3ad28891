//! GaLore: Adam in a low-rank gradient subspace.

use burn::config::Config;
use burn::optim::ModuleOptimizer;
use burn::tensor::Tensor;
use serde::Deserialize;

use super::subspace::{MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule, WeightDecay};
use crate::adam::{AdamHyper, Moments};
use crate::error::check;
use crate::projection::{subspace_setters, SubspaceConfig};
use crate::recipe::{RecipeTable, Routed, Table};

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

    /// The bare optimizer, or the invalid field named: route it to a model's matrices with
    /// [`Router`](crate::Router).
    pub fn build(&self) -> crate::Result<GaLore> {
        self.validate()?;
        let rule = GaLoreRule {
            hyper: AdamHyper::new(self.beta_1, self.beta_2, self.epsilon),
            scale: self.scale,
            weight_decay: self.weight_decay,
        };
        SubspaceOptimizer::new(self.subspace.clone(), rule)
    }

    /// A `ModuleOptimizer` with GaLore on every parameter: every matrix projected, every other
    /// tensor on the same Adam unprojected.
    pub fn init(&self) -> crate::Result<ModuleOptimizer> {
        Ok(ModuleOptimizer::from(self.build()?))
    }
}

/// GaLore-AdamW, step for step as `galore-torch`'s `GaLoreAdamW`.
///
/// On a matrix: refresh the basis when due, `R = project(G)`, Adam moments on `R`,
/// `W -= lr_t * scale * back(M / (sqrt(V) + eps))` with `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`,
/// then `W -= lr * wd * W`. Tensors of any other rank get the same Adam math unprojected and
/// unscaled.
pub type GaLore = SubspaceOptimizer<GaLoreRule>;

/// Per-parameter [`GaLore`] state.
pub type GaLoreState<const D: usize> = super::SubspaceState<D>;

/// GaLore's update rule (see [`GaLore`]).
#[derive(Clone, Debug)]
pub struct GaLoreRule {
    hyper: AdamHyper,
    scale: f32,
    weight_decay: f32,
}

impl SubspaceRule for GaLoreRule {
    fn weight_decay(&self) -> WeightDecay {
        WeightDecay::AfterUpdate(self.weight_decay)
    }

    fn matrix(&self, lr: f64, step: MatrixStep) -> MatrixUpdate {
        let prepared = step.prepared;
        let moments = prepared.moments.update(prepared.low_grad, &self.hyper);
        let step_size = self.hyper.hf_step_size(lr, moments.step) * self.scale as f64;
        let low_update = moments.direction(&self.hyper).mul_scalar(step_size);
        MatrixUpdate {
            update: prepared.subspace.project_back(low_update),
            moments,
            limiter: None,
        }
    }

    fn dense<const D: usize>(
        &self,
        lr: f64,
        grad: Tensor<D>,
        moments: Moments<D>,
    ) -> (Tensor<D>, Moments<D>) {
        self.hyper.hf_update(lr, grad, moments)
    }
}

/// The `[galore]` keys besides the subspace and Adam ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaLoreKeys {
    scale: Option<f32>,
}

impl RecipeTable for GaLoreConfig {
    const NAME: &'static str = "galore";

    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = GaLoreConfig::new();
        table.apply_subspace(&mut c.subspace)?;
        table.apply_adam([&mut c.beta_1, &mut c.beta_2, &mut c.epsilon, &mut c.weight_decay])?;
        let own: GaLoreKeys = table.own()?;
        c.scale = own.scale.unwrap_or(c.scale);
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}
