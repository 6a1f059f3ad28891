//! FRUGAL: AdamW in a subspace plus a state-free update (signSGD) of everything outside it.

use burn::config::Config;
use burn::tensor::Tensor;

use super::subspace::{
    DenseUpdate, MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule, WeightDecay,
};
use crate::adam::{AdamParams, Moments};
use crate::error::{check, Error};
use crate::matrix::fast_sign;
use crate::projection::{MomentPolicy, ProjectionMethod, SubspaceConfig};
use crate::setters::subspace_config;

/// The update FRUGAL gives the part of the gradient outside the state-full subspace.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Residual {
    /// `-lr_free * sign(residual)` (the reference's default for pretraining).
    SignSgd,
    /// `-lr_free * residual`.
    Sgd,
    /// No update outside the subspace: plain AdamW in a subspace (DCT-AdamW).
    None,
}

/// [`Frugal`] configuration. Defaults are the reference's: density `rho = 0.25`, refresh every
/// 200 steps with the moments reset, signSGD outside the subspace, PyTorch AdamW conventions
/// (`eps = 1e-8`, weight decay before the update), and an SVD subspace per matrix. The
/// reference's pretraining runs (and `optimizers/frugal.toml`) use block mode instead:
/// `.with_projection(ProjectionMethod::Block)`.
///
/// See: [FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable
/// Training, Zmushko et al., 2024](https://arxiv.org/abs/2411.07837).
///
/// ```
/// use lowrank_optim::{FrugalConfig, ProjectionMethod, Residual};
///
/// let frugal = FrugalConfig::new()
///     .with_rho(0.25)
///     .with_projection(ProjectionMethod::Coordinates)
///     .with_residual(Residual::SignSgd)
///     .build()
///     .expect("a valid config");
/// // Whole tensors instead of subspaces: about a quarter of them are state-full per period.
/// let blocks = FrugalConfig::new()
///     .with_projection(ProjectionMethod::Block)
///     .build()
///     .expect("a valid config");
/// # let _ = (frugal, blocks);
/// ```
#[derive(Config, Debug)]
pub struct FrugalConfig {
    /// Subspace settings; by default the rank of each matrix is `round(rho * len)` of its
    /// projected side and the moments are reset at every refresh. With
    /// [`ProjectionMethod::Block`], whole tensors are state-full or state-free instead, about
    /// `rho` of them state-full per period of `update_proj_gap` steps, drawn from `seed`.
    #[config(
        default = "SubspaceConfig::new().with_density(Some(0.25)).with_moment_policy(MomentPolicy::Reset)"
    )]
    pub subspace: SubspaceConfig,
    /// The state-free update outside the subspace.
    #[config(default = "Residual::SignSgd")]
    pub residual: Residual,
    /// Learning-rate multiplier of the state-full part (`lr_sf = lr * proj_lr_scale`).
    #[config(default = 1.0)]
    pub proj_lr_scale: f32,
    /// Learning-rate multiplier of the state-free part (`lr_free = lr_sf * inactive_lr_scale`;
    /// 1.0 for pretraining, 0.1 for fine-tuning).
    #[config(default = 1.0)]
    pub inactive_lr_scale: f32,
    /// Adam, PyTorch's conventions: `m_hat / (sqrt(v_hat) + eps)` with `eps = 1e-8`, weight
    /// decay applied before the update (`W *= 1 - lr * wd`).
    #[config(default = "AdamParams::new().with_epsilon(1e-8)")]
    pub adam: AdamParams,
}

subspace_config!(FrugalConfig);

impl FrugalConfig {
    /// Sets the density `rho` in `(0, 1]`: the fraction of each matrix's projected side (or of
    /// the tensors, in block mode) that is state-full.
    pub fn with_rho(mut self, rho: f32) -> Self {
        self.subspace.density = Some(rho);
        self
    }

    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        if let Some(rho) = self.subspace.density {
            check::density("rho", rho as f64)?;
        } else if self.subspace.projection == ProjectionMethod::Block {
            return Err(Error::InvalidConfig {
                field: "rho",
                value: "unset".into(),
                expected: "a density in (0, 1] in block mode",
            });
        }
        self.subspace.validate()?;
        check::positive("proj_lr_scale", self.proj_lr_scale as f64)?;
        check::non_negative("inactive_lr_scale", self.inactive_lr_scale as f64)?;
        self.adam.validate()
    }

    /// The bare optimizer, or the invalid field named: route it to a model's matrices with
    /// [`Router`](crate::Router).
    pub fn build(&self) -> crate::Result<Frugal> {
        self.validate()?;
        let rule = FrugalRule {
            adam: self.adam,
            residual: self.residual,
            proj_lr_scale: self.proj_lr_scale as f64,
            inactive_lr_scale: self.inactive_lr_scale as f64,
        };
        SubspaceOptimizer::new(self.subspace.clone(), rule)
    }
}

/// FRUGAL, as the paper's reference code computes it.
///
/// Per matrix: `W *= 1 - lr * wd`; `R = project(G)`; PyTorch-convention AdamW on `R` with
/// `lr_sf = lr * proj_lr_scale`, projected back; plus the state-free update of the residual
/// `G - back(R)` with `lr_free = lr_sf * inactive_lr_scale` (signSGD, SGD or none). Other
/// tensors get state-full AdamW. In block mode every tensor is either wholly state-full (AdamW)
/// or wholly state-free for a period; see [`ProjectionMethod::Block`].
pub type Frugal = SubspaceOptimizer<FrugalRule>;

/// FRUGAL's update rule (see [`Frugal`]).
#[derive(Clone, Debug)]
pub struct FrugalRule {
    adam: AdamParams,
    residual: Residual,
    proj_lr_scale: f64,
    inactive_lr_scale: f64,
}

impl FrugalRule {
    /// `lr_sf = lr * proj_lr_scale`.
    fn lr_state_full(&self, lr: f64) -> f64 {
        lr * self.proj_lr_scale
    }

    /// `lr_free = lr_sf * inactive_lr_scale`.
    fn lr_state_free(&self, lr: f64) -> f64 {
        self.lr_state_full(lr) * self.inactive_lr_scale
    }
}

impl SubspaceRule for FrugalRule {
    const UPDATES_STATE_FREE: bool = true;

    const WEIGHT_DECAY: WeightDecay = WeightDecay::BeforeUpdate;

    fn adam(&self) -> &AdamParams {
        &self.adam
    }

    fn matrix(&self, lr: f64, step: MatrixStep) -> MatrixUpdate {
        let hyper = self.adam.hyper();
        let subspace = step.prepared.subspace;
        let low = step.prepared.low_grad;
        let moments = step.prepared.moments.update(low.clone(), &hyper);
        let low_update = hyper.torch_update(&moments, self.lr_state_full(lr));
        let lr_free = self.lr_state_free(lr);
        let update = match self.residual {
            Residual::None => subspace.project_back(low_update),
            // back(u) + lr_free (G - back(R)) = lr_free G + back(u - lr_free R): one matmul.
            Residual::Sgd => step
                .grad
                .mul_scalar(lr_free)
                .add(subspace.project_back(low_update.sub(low.mul_scalar(lr_free)))),
            Residual::SignSgd => {
                let residual = step.grad.sub(subspace.project_back(low));
                let free = fast_sign(residual).mul_scalar(lr_free);
                subspace.project_back(low_update).add(free)
            }
        };
        MatrixUpdate {
            update,
            moments,
            limiter: None,
        }
    }

    fn dense<const D: usize>(&self, lr: f64, grad: Tensor<D>, m: Moments<D>) -> DenseUpdate<D> {
        let hyper = self.adam.hyper();
        let moments = m.update(grad, &hyper);
        let update = hyper.torch_update(&moments, self.lr_state_full(lr));
        (update, moments)
    }

    fn state_free<const D: usize>(&self, lr: f64, grad: Tensor<D>) -> Option<Tensor<D>> {
        let lr_free = self.lr_state_free(lr);
        match self.residual {
            Residual::SignSgd => Some(fast_sign(grad).mul_scalar(lr_free)),
            Residual::Sgd => Some(grad.mul_scalar(lr_free)),
            Residual::None => None,
        }
    }
}
