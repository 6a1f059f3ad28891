//! Per-parameter subspace life cycle: creation, refresh schedule, moment policy at a refresh.

use std::collections::BTreeSet;
use std::sync::Mutex;

use burn::config::Config;
use burn::tensor::Tensor;

use super::svd::{exact_svd_basis, randomized_svd_basis, to_device, to_host, SingularBases};
use super::{MomentPolicy, ProjType, ProjectionMethod, Subspace};
use crate::adam::Moments;
use crate::error::check;
use crate::matrix::assert_state_fits;
use crate::rng::mix_seed;

/// Configuration of the projection-subspace manager, shared by every projected optimizer.
///
/// Defaults are GaLore's (`galore-torch` 1.0): rank 128, refresh every 200 steps, project the
/// smaller side, exact SVD, moments kept across refreshes.
#[derive(Config, Debug)]
pub struct SubspaceConfig {
    /// Rank `r` of the subspace; clamped to `min(m, n)` per matrix (logged once per shape).
    #[config(default = 128)]
    pub rank: usize,
    /// Steps between basis refreshes `T` (the first refresh happens at the first step).
    #[config(default = 200)]
    pub update_proj_gap: usize,
    /// Which side of each matrix is projected.
    #[config(default = "ProjType::Std")]
    pub proj_type: ProjType,
    /// How a refresh computes the basis.
    #[config(default = "ProjectionMethod::Svd")]
    pub projection: ProjectionMethod,
    /// What happens to the moments at a refresh.
    #[config(default = "MomentPolicy::Keep")]
    pub moment_policy: MomentPolicy,
    /// Extra sketch columns `p` of the randomized SVD.
    #[config(default = 8)]
    pub oversample: usize,
    /// Rounds `q >= 1` of `Z <- orth(Gᵀ G Z)` in the randomized SVD (each costs two matmuls).
    #[config(default = 1)]
    pub power_iters: usize,
    /// Seed of random sketches; each refresh derives its own from it and the refresh count.
    #[config(default = 0)]
    pub seed: u64,
}

impl SubspaceConfig {
    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        check::positive_count("rank", self.rank)?;
        check::positive_count("update_proj_gap", self.update_proj_gap)?;
        check::positive_count("power_iters", self.power_iters)?;
        Ok(())
    }
}

/// What [`SubspaceManager::prepare`] hands an optimizer for one step of one matrix.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The (possibly refreshed) subspace.
    pub subspace: Subspace,
    /// The moments, transported into the current subspace according to the policy.
    pub moments: Moments<2>,
    /// The low-rank gradient `R = project(G)`.
    pub low_grad: Tensor<2>,
}

/// Runs the subspace life cycle for every projected matrix of an optimizer.
///
/// ```
/// use burn::tensor::{Device, Tensor, TensorData};
/// use lowrank_optim::projection::SubspaceManager;
/// use lowrank_optim::{Side, SubspaceConfig};
///
/// let manager = SubspaceManager::new(SubspaceConfig::new().with_rank(2))?;
/// let values: Vec<f32> = (0..24).map(|i| ((i * 7) % 5) as f32).collect();
/// let grad = Tensor::<2>::from_data(TensorData::new(values, [6, 4]), &Device::default());
/// let prepared = manager.prepare(None, None, grad, 0).expect("finite gradient");
/// assert_eq!(prepared.subspace.side, Side::Right); // 6 >= 4: project the smaller side
/// assert_eq!(prepared.low_grad.dims(), [6, 2]);
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SubspaceManager {
    config: SubspaceConfig,
}

/// Shapes whose rank clamp was already logged, so the message appears once per shape.
static CLAMP_LOGGED: Mutex<BTreeSet<(usize, usize, usize)>> = Mutex::new(BTreeSet::new());

impl SubspaceManager {
    /// A manager for a validated config.
    pub fn new(config: SubspaceConfig) -> crate::Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SubspaceConfig {
        &self.config
    }

    /// The rank actually used for an `m x n` matrix: the configured rank, at most `min(m, n)`.
    pub fn effective_rank(&self, [m, n]: [usize; 2]) -> usize {
        self.config.rank.min(m.min(n))
    }

    /// A fresh subspace for an `m x n` matrix: side chosen and rank clamped, no basis yet.
    pub fn create(&self, [m, n]: [usize; 2]) -> Subspace {
        let rank = self.effective_rank([m, n]);
        if rank < self.config.rank {
            let mut logged = CLAMP_LOGGED.lock().unwrap_or_else(|e| e.into_inner());
            if logged.insert((m, n, self.config.rank)) {
                log::warn!(
                    "lowrank-optim: rank {} >= min({m}, {n}) for a {m}x{n} matrix; using rank {rank}",
                    self.config.rank
                );
            }
        }
        Subspace {
            side: self.config.proj_type.side(m, n),
            rank,
            rows: m,
            cols: n,
            left: None,
            right: None,
            gap: self.config.update_proj_gap,
            next_refresh: 0,
            refreshes: 0,
        }
    }

    /// Floats held by the bases of an `m x n` matrix's subspace.
    pub fn basis_numel(&self, [m, n]: [usize; 2]) -> usize {
        let side = self.config.proj_type.side(m, n);
        let rank = self.effective_rank([m, n]);
        usize::from(side.has_left()) * m * rank + usize::from(side.has_right()) * n * rank
    }

    /// New bases for `subspace` computed from `grad`; `None` if `grad` is not finite.
    fn compute_bases(&self, subspace: &Subspace, grad: &Tensor<2>) -> Option<SingularBases> {
        let (left, right) = (subspace.side.has_left(), subspace.side.has_right());
        let exact = |grad: &Tensor<2>| {
            let host = to_host(grad.clone())?;
            exact_svd_basis(host.as_ref(), subspace.rank, left, right)
        };
        let randomized = |grad: &Tensor<2>| {
            let seed = mix_seed(self.config.seed, subspace.refreshes as u64);
            let c = &self.config;
            randomized_svd_basis(
                grad,
                subspace.rank,
                c.oversample,
                c.power_iters,
                seed,
                left,
                right,
            )
        };
        match self.config.projection {
            // A rare non-convergence of the exact SVD falls back to the randomized one.
            ProjectionMethod::Svd => exact(grad).or_else(|| randomized(grad)),
            ProjectionMethod::Randomized => randomized(grad),
        }
    }

    /// The front half of a projected step: create the subspace on first sight, refresh it when
    /// due (transporting the moments per the policy), and project the gradient.
    ///
    /// `step` counts the updates already applied to this parameter. Returns `Err` with the
    /// untouched state when the gradient (or its projection) holds a NaN or an infinity, so the
    /// caller can skip the update instead of corrupting the moments.
    ///
    /// # Panics
    /// If `subspace` was built for a matrix of another shape (an optimizer record from another
    /// model): continuing would silently mix unrelated state.
    #[allow(clippy::result_large_err)]
    pub fn prepare(
        &self,
        subspace: Option<Subspace>,
        moments: Option<Moments<2>>,
        grad: Tensor<2>,
        step: usize,
    ) -> core::result::Result<Prepared, (Option<Subspace>, Option<Moments<2>>)> {
        let dims = grad.dims();
        if let Some(s) = &subspace {
            assert_state_fits("projection state", &[s.rows, s.cols], &dims);
        }
        let current = subspace.clone().unwrap_or_else(|| self.create(dims));
        let needs_basis = current.left.is_none() && current.right.is_none();
        // Handles are cheap to clone; the originals are handed back if the step is skipped.
        let (current, transported) = if needs_basis || step >= current.next_refresh {
            let Some((left, right)) = self.compute_bases(&current, &grad) else {
                return Err((subspace, moments));
            };
            let device = grad.device();
            let fresh = Subspace {
                left: left.map(|x| to_device(x.as_ref(), &device)),
                right: right.map(|x| to_device(x.as_ref(), &device)),
                next_refresh: step + current.gap,
                refreshes: current.refreshes + 1,
                ..current.clone()
            };
            let transported = moments.clone().map(|m| self.transport(&current, &fresh, m));
            (fresh, transported)
        } else {
            (current, moments.clone())
        };
        let low_grad = current.project(grad);
        let finite = low_grad.clone().is_finite().all().into_scalar::<bool>();
        if !finite {
            return Err((subspace, moments));
        }
        let moments = transported
            .unwrap_or_else(|| Moments::zeros(current.projected_shape(), &low_grad.device()));
        assert_state_fits(
            "projected moments",
            &moments.dims(),
            &current.projected_shape(),
        );
        Ok(Prepared {
            subspace: current,
            moments,
            low_grad,
        })
    }

    /// Applies the moment policy when `old` is replaced by `new`.
    pub fn transport(&self, old: &Subspace, new: &Subspace, moments: Moments<2>) -> Moments<2> {
        // Before the first basis there is nothing to transport.
        if old.left.is_none() && old.right.is_none() {
            return moments;
        }
        match self.config.moment_policy {
            MomentPolicy::Keep => moments,
            MomentPolicy::Reset => Moments::zeros(moments.dims(), &moments.first.device()),
            MomentPolicy::Rotate => rotate(old, new, moments),
        }
    }
}

/// `C = P_newᵀ P_old` for one side, or `None` when that side is not projected.
fn change_of_basis(old: &Option<Tensor<2>>, new: &Option<Tensor<2>>) -> Option<Tensor<2>> {
    match (old, new) {
        (Some(old), Some(new)) => Some(new.clone().transpose().matmul(old.clone())),
        _ => None,
    }
}

/// Transports moments into the new basis: `M <- C_L M C_Rᵀ`, `V <- (C_L∘C_L) V (C_R∘C_R)ᵀ`.
fn rotate(old: &Subspace, new: &Subspace, moments: Moments<2>) -> Moments<2> {
    let c_left = change_of_basis(&old.left, &new.left);
    let c_right = change_of_basis(&old.right, &new.right);
    let apply = |x: Tensor<2>, squared: bool| {
        let square = |c: &Tensor<2>| {
            if squared {
                c.clone().square()
            } else {
                c.clone()
            }
        };
        let x = match &c_left {
            Some(c) => square(c).matmul(x),
            None => x,
        };
        match &c_right {
            Some(c) => x.matmul(square(c).transpose()),
            None => x,
        }
    };
    Moments {
        first: apply(moments.first, false),
        second: apply(moments.second, true),
        step: moments.step,
    }
}

/// Adds `with_rank`, `with_update_proj_gap`, `with_proj_type`, `with_projection`,
/// `with_moment_policy`, `with_oversample`, `with_power_iters` and `with_seed` to an optimizer
/// config that holds a `subspace: SubspaceConfig` field, so users set the common projection
/// options directly on `GaLoreConfig` and friends, as in the reference code.
macro_rules! subspace_setters {
    ($config:ty) => {
        impl $config {
            /// Sets the subspace rank `r` (clamped per matrix to `min(m, n)`).
            pub fn with_rank(mut self, rank: usize) -> Self {
                self.subspace.rank = rank;
                self
            }
            /// Sets the refresh gap `T` in steps.
            pub fn with_update_proj_gap(mut self, gap: usize) -> Self {
                self.subspace.update_proj_gap = gap;
                self
            }
            /// Sets which side of each matrix is projected.
            pub fn with_proj_type(mut self, proj_type: $crate::projection::ProjType) -> Self {
                self.subspace.proj_type = proj_type;
                self
            }
            /// Sets how refreshes compute the basis (exact or randomized SVD).
            pub fn with_projection(mut self, method: $crate::projection::ProjectionMethod) -> Self {
                self.subspace.projection = method;
                self
            }
            /// Sets what happens to the moments at a refresh.
            pub fn with_moment_policy(mut self, policy: $crate::projection::MomentPolicy) -> Self {
                self.subspace.moment_policy = policy;
                self
            }
            /// Sets the randomized SVD's oversampling `p`.
            pub fn with_oversample(mut self, oversample: usize) -> Self {
                self.subspace.oversample = oversample;
                self
            }
            /// Sets the randomized SVD's power iterations `q`.
            pub fn with_power_iters(mut self, power_iters: usize) -> Self {
                self.subspace.power_iters = power_iters;
                self
            }
            /// Sets the seed of random sketches.
            pub fn with_seed(mut self, seed: u64) -> Self {
                self.subspace.seed = seed;
                self
            }
        }
    };
}
pub(crate) use subspace_setters;
