//! FRUGAL: AdamW in a subspace plus a state-free update (signSGD) of everything outside it.

use burn::config::Config;
use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor};

use crate::adam::{AdamHyper, Moments};
use crate::error::check;
use crate::matrix::{all_finite, fast_sign};
use crate::projected::{decay, log_skip, subspace_step, MatrixStep, MatrixUpdate, SubspaceState};
use crate::projection::{subspace_setters, MomentPolicy, SubspaceConfig, SubspaceManager};
use crate::rng::{mix_seed, SplitMix64};

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

/// [`Frugal`] configuration. Defaults are the reference's pretraining settings: density
/// `rho = 0.25`, refresh every 200 steps with the moments reset, signSGD outside the subspace,
/// PyTorch AdamW conventions (`eps = 1e-8`, weight decay before the update).
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
///     .init()
///     .expect("a valid config");
/// // Whole tensors instead of subspaces: about a quarter of them are state-full per period.
/// let blocks = FrugalConfig::new().with_block(true).init().expect("a valid config");
/// # let _ = (frugal, blocks);
/// ```
#[derive(Config, Debug)]
pub struct FrugalConfig {
    /// Subspace settings; by default the rank of each matrix is `round(rho * len)` of its
    /// projected side and the moments are reset at every refresh.
    #[config(
        default = "SubspaceConfig::new().with_density(Some(0.25)).with_moment_policy(MomentPolicy::Reset)"
    )]
    pub subspace: SubspaceConfig,
    /// Block mode: whole tensors are state-full or state-free, about `rho` of them state-full
    /// per period of `update_proj_gap` steps, drawn from `seed`. Off: each matrix keeps a
    /// subspace of the configured projection kind.
    #[config(default = false)]
    pub block: bool,
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
    /// Decay of Adam's first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of Adam's second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// PyTorch AdamW's `eps`: `m_hat / (sqrt(v_hat) + eps)`.
    #[config(default = 1e-8)]
    pub epsilon: f32,
    /// Weight decay, applied before the update (`W *= 1 - lr * wd`).
    #[config(default = 0.0)]
    pub weight_decay: f32,
}

subspace_setters!(FrugalConfig);

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
        } else if self.block {
            return Err(crate::Error::InvalidConfig {
                field: "rho",
                value: "unset".into(),
                expected: "a density in (0, 1] in block mode",
            });
        }
        self.subspace.validate()?;
        check::positive("proj_lr_scale", self.proj_lr_scale as f64)?;
        check::non_negative("inactive_lr_scale", self.inactive_lr_scale as f64)?;
        check::adam(self.beta_1, self.beta_2, self.epsilon, self.weight_decay)
    }

    /// Builds the optimizer, or names the invalid field.
    pub fn init(&self) -> crate::Result<Frugal> {
        self.validate()?;
        Ok(Frugal {
            manager: SubspaceManager::new(self.subspace.clone())?,
            hyper: AdamHyper {
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                epsilon: self.epsilon,
            },
            block: self.block,
            residual: self.residual,
            proj_lr_scale: self.proj_lr_scale,
            inactive_lr_scale: self.inactive_lr_scale,
            weight_decay: self.weight_decay,
        })
    }
}

/// FRUGAL, as the paper's reference code computes it.
///
/// Per matrix: `W *= 1 - lr * wd`; `R = project(G)`; PyTorch-convention AdamW on `R` with
/// `lr_sf = lr * proj_lr_scale`, projected back; plus the state-free update of the residual
/// `G - back(R)` with `lr_free = lr_sf * inactive_lr_scale` (signSGD, SGD or none). Other
/// tensors get state-full AdamW. In block mode every tensor is either wholly state-full (AdamW)
/// or wholly state-free for a period; see [`FrugalConfig::block`].
#[derive(Clone, Debug)]
pub struct Frugal {
    manager: SubspaceManager,
    hyper: AdamHyper,
    block: bool,
    residual: Residual,
    proj_lr_scale: f32,
    inactive_lr_scale: f32,
    weight_decay: f32,
}

/// Per-parameter [`Frugal`] state (moments are `None` while a block is state-free).
pub type FrugalState<const D: usize> = SubspaceState<D>;

/// `frac(ordinal * golden + u) < rho`: a low-discrepancy pick, so any `N` consecutive tensors
/// hold `rho N` active ones to within about one, and a fresh `u` per period reshuffles them.
pub fn block_is_active(seed: u64, ordinal: usize, period: usize, rho: f32) -> bool {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    let u = SplitMix64::new(mix_seed(seed, period as u64)).next_open01();
    (ordinal as f64 * GOLDEN + u).fract() < rho as f64
}

impl Frugal {
    /// The subspace manager in use.
    pub fn manager(&self) -> &SubspaceManager {
        &self.manager
    }

    /// Whether whole tensors (blocks) are switched between state-full and state-free.
    pub fn is_block(&self) -> bool {
        self.block
    }

    fn lr_state_full(&self, lr: f64) -> f64 {
        lr * self.proj_lr_scale as f64
    }

    fn lr_state_free(&self, lr: f64) -> f64 {
        self.lr_state_full(lr) * self.inactive_lr_scale as f64
    }

    /// The state-free update of `residual`, already multiplied by `lr_free`.
    fn state_free<const D: usize>(&self, lr: f64, residual: Tensor<D>) -> Option<Tensor<D>> {
        let lr_free = self.lr_state_free(lr);
        match self.residual {
            Residual::SignSgd => Some(fast_sign(residual).mul_scalar(lr_free)),
            Residual::Sgd => Some(residual.mul_scalar(lr_free)),
            Residual::None => None,
        }
    }

    fn step_matrix(&self, lr: f64, input: MatrixStep) -> MatrixUpdate {
        let weights = decay(input.weights, lr, self.weight_decay);
        let subspace = input.prepared.subspace;
        let low = input.prepared.low_grad;
        let moments = input.prepared.moments.update(low.clone(), &self.hyper);
        let low_update = self.hyper.torch_update(&moments, self.lr_state_full(lr));
        let lr_free = self.lr_state_free(lr);
        let update = match self.residual {
            Residual::None => subspace.project_back(low_update),
            // back(u) + lr_free (G - back(R)) = lr_free G + back(u - lr_free R): one matmul.
            Residual::Sgd => input
                .grad
                .mul_scalar(lr_free)
                .add(subspace.project_back(low_update.sub(low.mul_scalar(lr_free)))),
            Residual::SignSgd => {
                let residual = input.grad.sub(subspace.project_back(low));
                let free = self
                    .state_free(lr, residual)
                    .expect("signSGD has a state-free part");
                subspace.project_back(low_update).add(free)
            }
        };
        MatrixUpdate {
            weights: weights.sub(update),
            moments,
            limiter: None,
        }
    }

    fn step_dense<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        moments: Moments<D>,
    ) -> (Tensor<D>, Moments<D>) {
        let weights = decay(tensor, lr, self.weight_decay);
        let moments = moments.update(grad, &self.hyper);
        let update = self.hyper.torch_update(&moments, self.lr_state_full(lr));
        (weights.sub(update), moments)
    }

    /// Block mode: the tensor is state-full (AdamW) or state-free for the whole period.
    fn step_block<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<FrugalState<D>>,
    ) -> (Tensor<D>, Option<FrugalState<D>>) {
        if grad.dims().contains(&0) {
            return (tensor, state);
        }
        if !all_finite(&grad) {
            log_skip(&tensor.dims());
            return (tensor, state);
        }
        let dims = grad.dims();
        let numel = dims.iter().product::<usize>();
        let (moments, subspace, step) = match state {
            Some(s) => (s.moments, s.subspace, s.step),
            None => (None, None, 0),
        };
        if let Some(m) = &moments {
            crate::matrix::assert_state_fits("optimizer moments", &m.dims(), &dims);
        }
        // The subspace carries the block's ordinal and period bookkeeping; it has no basis.
        if let Some(s) = &subspace {
            crate::matrix::assert_state_fits("block state", &[s.rows, s.cols], &[numel, 1]);
        }
        let subspace = subspace.unwrap_or_else(|| self.manager.create([numel, 1]));
        let config = self.manager.config();
        let gap = config.update_proj_gap;
        let rho = config.density.unwrap_or(1.0);
        let period = step / gap;
        let active = block_is_active(config.seed, subspace.ordinal, period, rho);
        let period_starts = step % gap == 0;
        let (weights, moments) = if active {
            let carried =
                moments.filter(|_| !period_starts || config.moment_policy != MomentPolicy::Reset);
            let moments = carried.unwrap_or_else(|| Moments::zeros(dims, &grad.device()));
            let (w, m) = self.step_dense(lr, tensor, grad, moments);
            (w, Some(m))
        } else {
            let weights = decay(tensor, lr, self.weight_decay);
            let weights = match self.state_free(lr, grad) {
                Some(free) => weights.sub(free),
                None => weights,
            };
            (weights, None)
        };
        let state = SubspaceState {
            moments,
            subspace: Some(subspace),
            limiter: None,
            step: step + 1,
        };
        (weights, Some(state))
    }
}

impl Optimizer for Frugal {
    type State<const D: usize> = FrugalState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if self.block {
            return self.step_block(lr, tensor, grad, state);
        }
        subspace_step(
            &self.manager,
            tensor,
            grad,
            state,
            |input| self.step_matrix(lr, input),
            |w, g, m| self.step_dense(lr, w, g, m),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}
