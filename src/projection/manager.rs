//! Per-matrix subspace life cycle: creation, ordinal, refresh schedule and adaptive gap, the
//! projection, FRUGAL's block draw. Which basis a refresh computes is
//! `refresh.rs`'s; what happens to the moments, `transport.rs`'s.

use std::collections::BTreeSet;
use std::sync::Mutex;

use burn::tensor::{Device, Tensor};

use super::config::SubspaceConfig;
use super::ordinal::fingerprint;
use super::refresh::{new_bases, refreshes_on_device};
use super::transport::{leading_cosine, transport};
use super::{MomentPolicy, ProjectionMethod, Side, Subspace};
use crate::adam::Moments;
use crate::matrix::assert_state_fits;
use crate::rng::{mix_seed, SplitMix64};

/// What [`SubspaceManager::prepare`] hands an optimizer for one step of one matrix.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The (possibly refreshed) subspace.
    pub subspace: Subspace,
    /// The moments, transported into the current subspace according to the policy.
    pub moments: Moments<2>,
    /// The low-rank gradient `R = project(G)`.
    pub low_grad: Tensor<2>,
    /// Whether the basis was (re)computed on this step.
    pub refreshed: bool,
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
/// let subspace = manager.create([6, 4], 0);
/// let prepared = manager.prepare(subspace, None, grad, 0).expect("finite gradient");
/// assert_eq!(prepared.subspace.side(), Side::Right); // 6 >= 4: project the smaller side
/// assert_eq!(prepared.low_grad.dims(), [6, 2]);
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
///
/// A manager holds no mutable state: clones of an optimizer (one per data-parallel replica)
/// and resumed runs draw the same bases for the same matrix, whatever order they meet it in.
#[derive(Debug, Clone)]
pub struct SubspaceManager {
    config: SubspaceConfig,
    /// The ordinal of the one matrix this manager serves, when the [`Router`](crate::Router)
    /// gave each matrix its own (its position among the routed matrices of the model);
    /// otherwise each matrix is identified by [`fingerprint`].
    fixed_ordinal: Option<usize>,
}

/// What [`SubspaceManager::prepare_block`] hands an optimizer for one step of one block.
#[derive(Debug, Clone)]
pub struct BlockStep<const D: usize> {
    /// The block's subspace: the tensor as one `[numel, 1]` column, rank 1 while state-full,
    /// rank 0 while state-free.
    pub subspace: Subspace,
    /// The full-size moments while state-full (carried or reset per the policy); `None`
    /// while state-free.
    pub moments: Option<Moments<D>>,
}

/// Shapes whose rank clamp was already logged, so the message appears once per shape.
static CLAMP_LOGGED: Mutex<BTreeSet<(usize, usize, usize)>> = Mutex::new(BTreeSet::new());

impl SubspaceManager {
    /// A manager for a validated config.
    pub fn new(config: SubspaceConfig) -> crate::Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            fixed_ordinal: None,
        })
    }

    /// This manager serving one matrix whose ordinal is `ordinal`, whatever the order in which
    /// matrices are first seen (what the [`Router`](crate::Router) builds: resume- and
    /// replica-safe).
    pub(crate) fn with_fixed_ordinal(&self, ordinal: usize) -> Self {
        Self {
            fixed_ordinal: Some(ordinal),
            ..self.clone()
        }
    }

    /// The ordinal of a tensor first seen with `weights` and `grad`: the one the
    /// [`Router`](crate::Router) fixed, else the tensor's [`fingerprint`]. Either is the same
    /// on every replica and in every resumed run.
    pub(crate) fn ordinal_of<const D: usize>(
        &self,
        weights: &Tensor<D>,
        grad: &Tensor<D>,
    ) -> usize {
        self.fixed_ordinal
            .unwrap_or_else(|| fingerprint(weights, grad))
    }

    /// The configuration in use.
    pub fn config(&self) -> &SubspaceConfig {
        &self.config
    }

    /// The rank actually used for an `m x n` matrix: the configured rank (or density times the
    /// projected side's length), at least 1 and at most `min(m, n)`.
    pub(crate) fn effective_rank(&self, [m, n]: [usize; 2]) -> usize {
        if self.config.projection == ProjectionMethod::Block {
            return 1;
        }
        let side = self.config.proj_type.side(m, n);
        let wanted = match self.config.density {
            Some(density) => {
                let len = match side {
                    Side::Left => m,
                    Side::Right => n,
                    Side::Both => m.min(n),
                };
                ((density as f64 * len as f64).round() as usize).max(1)
            }
            None => self.config.rank,
        };
        wanted.min(m.min(n))
    }

    /// A fresh subspace for an `m x n` matrix: side chosen and rank clamped, no basis yet;
    /// `ordinal` (the matrix's position among the routed ones, or its fingerprint) seeds its
    /// random draws.
    pub fn create(&self, [m, n]: [usize; 2], ordinal: usize) -> Subspace {
        let rank = self.effective_rank([m, n]);
        if self.config.density.is_none() && rank < self.config.rank {
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
            ordinal,
            aligned_refreshes: 0,
        }
    }

    /// Bytes of projection state a checkpoint stores for an `m x n` matrix: `f32` bases for
    /// SVD kinds, `i32` indices for DCT and coordinates, nothing but scalars for Gaussian ones.
    pub(crate) fn basis_bytes(&self, [m, n]: [usize; 2]) -> usize {
        let side = self.config.proj_type.side(m, n);
        let rank = self.effective_rank([m, n]);
        let per_side = |len: usize| match self.config.projection {
            ProjectionMethod::Svd
            | ProjectionMethod::Randomized
            | ProjectionMethod::RandomOrthogonal => 4 * len * rank,
            ProjectionMethod::Dct | ProjectionMethod::Coordinates => 4 * rank,
            ProjectionMethod::Gaussian | ProjectionMethod::Block => 0,
        };
        usize::from(side.has_left()) * per_side(m) + usize::from(side.has_right()) * per_side(n)
    }

    /// Bytes a Gaussian basis keeps on the device between refreshes (it is checkpointed as a
    /// seed); zero for every other kind.
    pub fn transient_basis_bytes(&self, [m, n]: [usize; 2]) -> usize {
        if self.config.projection != ProjectionMethod::Gaussian {
            return 0;
        }
        let side = self.config.proj_type.side(m, n);
        let rank = self.effective_rank([m, n]);
        4 * rank * (usize::from(side.has_left()) * m + usize::from(side.has_right()) * n)
    }

    /// The front half of a projected step: refresh the subspace when due (transporting the
    /// moments per the policy), and project the gradient.
    ///
    /// `step` counts the updates already applied to this parameter. Returns `Err` with the
    /// untouched state when a basis the host computes cannot be (the gradient holds a NaN or
    /// an infinity), so the caller can leave the parameter as it was. The guard
    /// ([`crate::guard`]) checks the gradient before a refresh on the host; between refreshes,
    /// and at a refresh on the device, a non-finite gradient makes meaningless values that the
    /// guard discards.
    ///
    /// On first sight `subspace` is a fresh one from [`create`](Self::create) (no basis yet).
    ///
    /// # Panics
    /// If `subspace` was built for a matrix of another shape (an optimizer record from another
    /// model): continuing would silently mix unrelated state; or for
    /// [`ProjectionMethod::Block`], which [`prepare_block`](Self::prepare_block) serves.
    #[allow(clippy::result_large_err)]
    pub fn prepare(
        &self,
        current: Subspace,
        moments: Option<Moments<2>>,
        grad: Tensor<2>,
        step: usize,
    ) -> core::result::Result<Prepared, (Subspace, Option<Moments<2>>)> {
        assert!(
            self.config.projection != ProjectionMethod::Block,
            "lowrank-optim: block mode is prepared by SubspaceManager::prepare_block"
        );
        let dims = grad.dims();
        assert_state_fits("projection state", &[current.rows, current.cols], &dims);
        let refresh = self.refresh_due(&current, step);
        let (current, moments) = if refresh {
            let Some((left, right)) = new_bases(&self.config, &current, &grad) else {
                return Err((current, moments));
            };
            let mut fresh = Subspace {
                left,
                right,
                refreshes: current.refreshes + 1,
                ..current.clone()
            };
            if self.config.adaptive_gap && current.has_basis() {
                let aligned =
                    leading_cosine(&current, &fresh) >= self.config.adaptive_gap_threshold as f64;
                self.adapt_gap(&current, &mut fresh, aligned);
            }
            fresh.next_refresh = step + fresh.gap;
            let transported = moments.map(|m| self.transport(&current, &fresh, m));
            (fresh, transported)
        } else {
            (current, moments)
        };
        let low_grad = current.project(grad);
        let moments = moments
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
            refreshed: refresh,
        })
    }

    /// Whether `subspace`'s basis (or block draw) is due for a refresh at `step`.
    pub(crate) fn refresh_due(&self, subspace: &Subspace, step: usize) -> bool {
        let first = match self.config.projection {
            ProjectionMethod::Block => subspace.refreshes == 0,
            _ => !subspace.has_basis(),
        };
        first || step >= subspace.next_refresh
    }

    /// Counts consecutive refreshes whose leading vector stayed aligned, doubling the gap after
    /// a full window of them.
    fn adapt_gap(&self, old: &Subspace, fresh: &mut Subspace, aligned: bool) {
        if aligned {
            fresh.aligned_refreshes = old.aligned_refreshes + 1;
        } else {
            fresh.aligned_refreshes = 0;
        }
        if fresh.aligned_refreshes >= self.config.adaptive_gap_window {
            fresh.gap = old.gap.saturating_mul(2);
            fresh.aligned_refreshes = 0;
        }
    }

    /// Whether block `ordinal` is state-full in `period`: `frac(ordinal * golden + u) < rho`, a
    /// low-discrepancy pick, so any `N` consecutive blocks hold `rho N` state-full ones to
    /// within about one, and a fresh `u` per period (from the seed) reshuffles them.
    pub(crate) fn block_is_active(&self, ordinal: usize, period: usize) -> bool {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        let rho = self.config.density.unwrap_or(1.0) as f64;
        let u = SplitMix64::new(mix_seed(self.config.seed, period as u64)).next_open01();
        (ordinal as f64 * GOLDEN + u).fract() < rho
    }

    /// The front half of a block-mode step ([`ProjectionMethod::Block`]): at each refresh the
    /// block is drawn state-full or state-free for the coming period; a state-full block gets
    /// its full-size moments (carried from the previous period unless the policy is `Reset`),
    /// a state-free one none.
    ///
    /// # Panics
    /// If the restored state does not fit the tensor (a record from another model).
    pub fn prepare_block<const D: usize>(
        &self,
        subspace: Subspace,
        moments: Option<Moments<D>>,
        grad: &Tensor<D>,
        step: usize,
    ) -> BlockStep<D> {
        let dims = grad.dims();
        let zeros = || Moments::zeros(dims, &grad.device());
        let numel = dims.iter().product::<usize>();
        assert_state_fits("block state", &[subspace.rows, subspace.cols], &[numel, 1]);
        if let Some(m) = &moments {
            assert_state_fits("optimizer moments", &m.dims(), &dims);
        }
        if !self.refresh_due(&subspace, step) {
            let moments = (subspace.rank == 1).then(|| moments.unwrap_or_else(zeros));
            return BlockStep { subspace, moments };
        }
        let active = self.block_is_active(subspace.ordinal, subspace.refreshes);
        let mut fresh = Subspace {
            rank: usize::from(active),
            refreshes: subspace.refreshes + 1,
            ..subspace.clone()
        };
        if self.config.adaptive_gap && subspace.refreshes > 0 {
            let aligned = fresh.rank == subspace.rank;
            self.adapt_gap(&subspace, &mut fresh, aligned);
        }
        fresh.next_refresh = step + fresh.gap;
        let carried = moments.filter(|_| self.config.moment_policy != MomentPolicy::Reset);
        let moments = active.then(|| carried.unwrap_or_else(zeros));
        BlockStep {
            subspace: fresh,
            moments,
        }
    }

    /// Applies the moment policy when `old` is replaced by `new`.
    pub fn transport(&self, old: &Subspace, new: &Subspace, moments: Moments<2>) -> Moments<2> {
        transport(self.config.moment_policy, old, new, moments)
    }

    /// Whether a refresh of `subspace` can run wholly on the device, the gradient's
    /// finiteness left there too.
    pub(crate) fn refreshes_on_device(&self, subspace: &Subspace, device: &Device) -> bool {
        refreshes_on_device(&self.config, subspace, device)
    }
}
