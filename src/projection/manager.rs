//! Per-parameter subspace life cycle: creation, refresh schedule, moment policy at a refresh.

use std::collections::BTreeSet;
use std::sync::Mutex;

use burn::config::Config;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::basis::Basis;
use super::dct::{select_dct_columns, DctNorm, DctScoring};
use super::svd::{
    exact_svd_basis, random_orthogonal_basis, randomized_svd_basis, to_device, to_host,
    SingularBases,
};
use super::{MomentPolicy, ProjType, ProjectionMethod, Side, Subspace};
use crate::adam::Moments;
use crate::error::check;
use crate::matrix::assert_state_fits;
use crate::rng::{mix_seed, random_subset, SplitMix64};
use crate::skip::Verdict;

/// Configuration of the projection-subspace manager, shared by every projected optimizer.
///
/// Defaults are GaLore's (`galore-torch` 1.0): rank 128, refresh every 200 steps, project each
/// layer's smaller dimension (its input dimension when square, see [`ProjType`]), exact SVD,
/// moments kept across refreshes, fixed gap.
#[derive(Config, Debug)]
pub struct SubspaceConfig {
    /// Rank `r` of the subspace; clamped to `min(m, n)` per matrix (logged once per shape).
    #[config(default = 128)]
    pub rank: usize,
    /// When set, the rank of each matrix is `round(density * len)` (at least 1) for the length
    /// `len` of its projected side, instead of `rank` (FRUGAL's `rho`).
    pub density: Option<f32>,
    /// Steps between basis refreshes `T` (the first refresh happens at the first step).
    #[config(default = 200)]
    pub update_proj_gap: usize,
    /// Which dimension of each layer is projected, as the references mean it for the same
    /// layer (applied to the PyTorch-layout view of a Burn weight; see [`ProjType`]).
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
    /// The column norm that ranks DCT columns.
    #[config(default = "DctNorm::L1")]
    pub dct_norm: DctNorm,
    /// How DCT scores are computed (fast DCT on the host, or a device matmul).
    #[config(default = "DctScoring::Auto")]
    pub dct_scoring: DctScoring,
    /// Q-GaLore's adaptive gap: double a matrix's gap after `adaptive_gap_window` consecutive
    /// refreshes whose leading basis vector kept a cosine of at least `adaptive_gap_threshold`
    /// with the previous one.
    #[config(default = false)]
    pub adaptive_gap: bool,
    /// Cosine above which two consecutive leading vectors count as aligned.
    #[config(default = 0.4)]
    pub adaptive_gap_threshold: f32,
    /// Consecutive aligned refreshes that double the gap.
    #[config(default = 5)]
    pub adaptive_gap_window: usize,
    /// Seed of random sketches and bases; each matrix and refresh derives its own from it.
    #[config(default = 0)]
    pub seed: u64,
}

impl SubspaceConfig {
    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        check::positive_count("rank", self.rank)?;
        if let Some(density) = self.density {
            check::density("density", density as f64)?;
        }
        check::positive_count("update_proj_gap", self.update_proj_gap)?;
        check::positive_count("power_iters", self.power_iters)?;
        check::closed_unit("adaptive_gap_threshold", self.adaptive_gap_threshold as f64)?;
        check::positive_count("adaptive_gap_window", self.adaptive_gap_window)?;
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
/// assert_eq!(prepared.subspace.side, Side::Right); // 6 >= 4: project the smaller side
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
    pub fn with_fixed_ordinal(&self, ordinal: usize) -> Self {
        Self {
            fixed_ordinal: Some(ordinal),
            ..self.clone()
        }
    }

    /// The ordinal of a tensor first seen with `weights` and `grad`: the one the
    /// [`Router`](crate::Router) fixed, else the tensor's [`fingerprint`]. Either is the same
    /// on every replica and in every resumed run.
    pub fn ordinal_of<const D: usize>(&self, weights: &Tensor<D>, grad: &Tensor<D>) -> usize {
        self.fixed_ordinal
            .unwrap_or_else(|| fingerprint(weights, grad))
    }

    /// The configuration in use.
    pub fn config(&self) -> &SubspaceConfig {
        &self.config
    }

    /// The rank actually used for an `m x n` matrix: the configured rank (or density times the
    /// projected side's length), at least 1 and at most `min(m, n)`.
    pub fn effective_rank(&self, [m, n]: [usize; 2]) -> usize {
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
    /// `ordinal` (see [`ordinal_of`](Self::ordinal_of)) seeds its random draws.
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
    pub fn basis_bytes(&self, [m, n]: [usize; 2]) -> usize {
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

    /// The seed of a matrix's random basis at its current refresh.
    fn basis_seed(&self, subspace: &Subspace, side: u64) -> u64 {
        let matrix = mix_seed(self.config.seed, subspace.ordinal as u64);
        mix_seed(mix_seed(matrix, subspace.refreshes as u64), side)
    }

    /// Whether a refresh of `subspace` can run wholly on the device, its gradient's verdict
    /// left there too: DCT columns scored by a device matmul, a basis to fall back on, no
    /// adaptive gap (whose cosine is read on the host). DCT-AdamW refreshes every step.
    pub(crate) fn refreshes_on_device(&self, subspace: &Subspace, device: &Device) -> bool {
        let c = &self.config;
        let device_scoring = match c.dct_scoring {
            DctScoring::Matmul => true,
            DctScoring::Fft => false,
            DctScoring::Auto => !crate::matrix::is_host_device(device),
        };
        c.projection == ProjectionMethod::Dct
            && device_scoring
            && !c.adaptive_gap
            && subspace.has_basis()
    }

    /// New bases for `subspace` computed from `grad`; `None` if `grad` is not finite (checked
    /// on the host unless `on_device`, where a non-finite gradient makes meaningless bases that
    /// the caller's verdict discards).
    fn compute_bases(
        &self,
        subspace: &Subspace,
        grad: &Tensor<2>,
        on_device: bool,
    ) -> Option<(Option<Basis>, Option<Basis>)> {
        let (left, right) = (subspace.side.has_left(), subspace.side.has_right());
        let device = grad.device();
        let dense = |bases: SingularBases| {
            let (l, r) = bases;
            let to = |x: super::HostMatrix| Basis::Dense(to_device(x.as_ref(), &device));
            (l.map(to), r.map(to))
        };
        let randomized = |grad: &Tensor<2>| {
            // The sketch only affects accuracy, so it does not depend on the matrix's ordinal.
            let seed = mix_seed(self.config.seed, subspace.refreshes as u64);
            let c = &self.config;
            let bases = randomized_svd_basis(
                grad,
                subspace.rank,
                c.oversample,
                c.power_iters,
                seed,
                left,
                right,
            )?;
            Some(dense(bases))
        };
        // Per side: `grad` for the right side, `gradᵀ` for the left (`Pᵀ G = (Gᵀ P)ᵀ`).
        let per_side = |make: &dyn Fn(&Tensor<2>, u64) -> Basis| {
            let l = left.then(|| make(&grad.clone().transpose(), 1));
            let r = right.then(|| make(grad, 2));
            (l, r)
        };
        let rank = subspace.rank;
        match self.config.projection {
            // A rare non-convergence of the exact SVD falls back to the randomized one.
            ProjectionMethod::Svd => {
                let exact = to_host(grad.clone())
                    .and_then(|host| exact_svd_basis(host.as_ref(), rank, left, right));
                exact.map(dense).or_else(|| randomized(grad))
            }
            ProjectionMethod::Randomized => randomized(grad),
            ProjectionMethod::Dct => {
                if !on_device && !crate::matrix::all_finite(grad) {
                    return None;
                }
                let c = &self.config;
                Some(per_side(&|g, _| Basis::Dct {
                    indices: select_dct_columns(g, rank, c.dct_norm, c.dct_scoring),
                    len: g.dims()[1],
                }))
            }
            ProjectionMethod::Gaussian => Some(per_side(&|g, side| {
                Basis::gaussian(self.basis_seed(subspace, side), g.dims()[1], rank, &device)
            })),
            ProjectionMethod::RandomOrthogonal => Some(per_side(&|g, side| {
                let seed = self.basis_seed(subspace, side);
                let q = random_orthogonal_basis(g.dims()[1], rank, seed);
                Basis::Dense(to_device(q.as_ref(), &device))
            })),
            ProjectionMethod::Block => unreachable!("checked in prepare"),
            ProjectionMethod::Coordinates => Some(per_side(&|g, side| {
                let len = g.dims()[1];
                let chosen = random_subset(self.basis_seed(subspace, side), len, rank);
                let indices = Tensor::<1, Int>::from_data(TensorData::new(chosen, [rank]), &device);
                Basis::Coordinates { indices, len }
            })),
        }
    }

    /// The front half of a projected step: create the subspace on first sight, refresh it when
    /// due (transporting the moments per the policy), and project the gradient.
    ///
    /// `step` counts the updates already applied to this parameter. Returns `Err` with the
    /// untouched state when the gradient (or its projection) holds a NaN or an infinity, so the
    /// caller can skip the update instead of corrupting the moments.
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
        self.prepare_step(current, moments, grad, step, false)
            .map(|(prepared, _)| prepared)
    }

    /// Whether `subspace`'s basis (or block draw) is due for a refresh at `step`.
    pub fn refresh_due(&self, subspace: &Subspace, step: usize) -> bool {
        let first = match self.config.projection {
            ProjectionMethod::Block => subspace.refreshes == 0,
            _ => !subspace.has_basis(),
        };
        first || step >= subspace.next_refresh
    }

    /// [`prepare`](Self::prepare), leaving the finiteness check to the device when `defer` and
    /// the step does not refresh: the verdict says which (see [`crate::skip`]).
    #[allow(clippy::result_large_err)]
    pub(crate) fn prepare_step(
        &self,
        current: Subspace,
        moments: Option<Moments<2>>,
        grad: Tensor<2>,
        step: usize,
        defer: bool,
    ) -> core::result::Result<(Prepared, Verdict), (Subspace, Option<Moments<2>>)> {
        assert!(
            self.config.projection != ProjectionMethod::Block,
            "lowrank-optim: block mode is prepared by SubspaceManager::prepare_block"
        );
        let dims = grad.dims();
        assert_state_fits("projection state", &[current.rows, current.cols], &dims);
        let refresh = self.refresh_due(&current, step);
        let on_device = defer && (!refresh || self.refreshes_on_device(&current, &grad.device()));
        // Handles are cheap to clone; the originals are handed back if the step is skipped.
        let original = current.clone();
        let (current, transported) = if refresh {
            let Some((left, right)) = self.compute_bases(&current, &grad, on_device) else {
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
            let transported = moments.clone().map(|m| self.transport(&current, &fresh, m));
            (fresh, transported)
        } else {
            (current, moments.clone())
        };
        let low_grad = current.project(grad.clone());
        // A non-finite entry anywhere in the gradient shows in a projection that mixes every
        // entry; a coordinate basis gathers a few, so the whole gradient is checked with it
        // (the rules, Fira's, APOLLO's and FRUGAL's residual, use all of it). One read, or
        // none when the device keeps the verdict.
        let mut finite = low_grad.clone().is_finite().all();
        if !current.projection_sees_every_entry() {
            finite = finite.bool_and(grad.is_finite().all());
        }
        let verdict = if on_device {
            Verdict::OnDevice(finite)
        } else if crate::readback::flag(finite) {
            Verdict::Finite
        } else {
            return Err((original, moments));
        };
        let moments = transported
            .unwrap_or_else(|| Moments::zeros(current.projected_shape(), &low_grad.device()));
        assert_state_fits(
            "projected moments",
            &moments.dims(),
            &current.projected_shape(),
        );
        let prepared = Prepared {
            subspace: current,
            moments,
            low_grad,
            refreshed: refresh,
        };
        Ok((prepared, verdict))
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
    pub fn block_is_active(&self, ordinal: usize, period: usize) -> bool {
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
        // Before the first basis there is nothing to transport.
        if !old.has_basis() {
            return moments;
        }
        match self.config.moment_policy {
            MomentPolicy::Keep => moments,
            MomentPolicy::Reset => Moments::zeros(moments.dims(), &moments.first.device()),
            MomentPolicy::Rotate => rotate(old, new, moments),
        }
    }
}

/// Identifies a tensor that no [`Router`](crate::Router) numbered, by what every replica and
/// every resumed run sees identically when an optimizer first meets it: its shape and 16
/// evenly spaced entries of its weights and of its gradient, read in one small transfer, once
/// per tensor. (Weights alone would confuse same-shaped tensors initialized alike, zeros for
/// one; gradients alone, those whose first gradient is zero.) 32 bits wide, so the golden-ratio
/// block draw of [`SubspaceManager::block_is_active`] keeps its precision.
pub fn fingerprint<const D: usize>(weights: &Tensor<D>, grad: &Tensor<D>) -> usize {
    const SAMPLES: usize = 16;
    let dims = grad.dims();
    let numel: usize = dims.iter().product();
    let positions: Vec<i64> = (0..SAMPLES).map(|i| (i * numel / SAMPLES) as i64).collect();
    let indices =
        Tensor::<1, Int>::from_data(TensorData::new(positions, [SAMPLES]), &grad.device());
    let sample = |t: &Tensor<D>| t.clone().reshape([numel]).select(0, indices.clone());
    let values: Vec<f32> =
        crate::readback::data(Tensor::cat(vec![sample(weights), sample(grad)], 0))
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("a float tensor converts to f32");
    let shape = dims.iter().fold(D as u64, |h, &d| mix_seed(h, d as u64));
    let hash = values
        .iter()
        .fold(shape, |h, v| mix_seed(h, u64::from(v.to_bits())));
    (hash >> 32) as usize
}

/// `|cos|` between the leading vectors of two subspaces' bases (right side if projected,
/// else left).
pub fn leading_cosine(old: &Subspace, new: &Subspace) -> f64 {
    let pick = |s: &Subspace| {
        s.right
            .as_ref()
            .or(s.left.as_ref())
            .map(Basis::leading_column)
    };
    let (Some(a), Some(b)) = (pick(old), pick(new)) else {
        return 0.0;
    };
    let sums = Tensor::cat(
        vec![
            a.clone().mul(b.clone()).sum(),
            a.square().sum(),
            b.square().sum(),
        ],
        0,
    );
    let sums = crate::readback::data(sums).convert::<f64>();
    let [dot, na2, nb2]: [f64; 3] = sums.as_slice::<f64>().expect("f64 sums")[..3]
        .try_into()
        .expect("three sums");
    let (na, nb) = (na2.sqrt(), nb2.sqrt());
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na * nb)).abs()
}

/// `C = P_newᵀ P_old` for one side, or `None` when that side is not projected.
fn change_of_basis(old: &Option<Basis>, new: &Option<Basis>) -> Option<Tensor<2>> {
    match (old, new) {
        (Some(old), Some(new)) => Some(new.mul_t_left(old.matrix())),
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
        skipped: moments.skipped,
    }
}
