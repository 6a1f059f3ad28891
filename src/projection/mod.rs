//! The projection-subspace manager: which subspace each matrix's optimizer state lives in, and
//! what happens to that state when the subspace is refreshed.
//!
//! An optimizer asks the [`SubspaceManager`] for the low-rank gradient `R = project(G)` and maps
//! its normalized update back with [`Subspace::project_back`]; it never branches on projection
//! kinds itself, so every projector works with every optimizer. (Block mode,
//! [`ProjectionMethod::Block`], hands whole tensors to the optimizer's full-size or state-free
//! update instead; [`SubspaceOptimizer`](crate::optim::SubspaceOptimizer) does that dispatch.)
//!
//! Conventions (for a gradient `G` of shape `m x n` and rank `r`):
//! - [`Side::Right`]: `R = G P`, `P` is `n x r`, the state is `m x r`;
//! - [`Side::Left`]: `R = Pᵀ G`, `P` is `m x r`, the state is `r x n`;
//! - [`Side::Both`]: `R = Lᵀ G P`, the state is `r x r`.
//!
//! `G` is the raw parameter tensor (Burn's `Linear` weight is `[d_in, d_out]`, the transpose of
//! PyTorch's); [`ProjType`] applies the references' rules to the layer, i.e. to `Gᵀ`, and the
//! [`Side`] it yields is stored for `G`. SVD, DCT, random orthogonal and coordinate bases have
//! orthonormal columns; Gaussian ones do not ([`Subspace::is_orthonormal`] says which), and the
//! side is stored in the state when it is first chosen, so nothing is re-derived
//! from shapes later (the reference code infers the side from the low-rank tensor's shape, which
//! breaks on square matrices and on `r >= min(m, n)`).

mod basis;
mod config;
mod dct;
mod manager;
mod ordinal;
mod refresh;
pub(crate) mod svd;
mod transport;

pub use basis::Basis;
pub use config::SubspaceConfig;
pub use dct::{DctNorm, DctScoring};
pub use manager::{BlockStep, Prepared, SubspaceManager};
// The SVDs and the DCT column choice a refresh runs, public only for the refresh bench.
#[cfg(feature = "internals")]
pub use dct::select_dct_columns;
#[cfg(feature = "internals")]
pub use svd::{exact_svd_basis, randomized_svd_basis, HostMatrix};

use burn::config::Config;
use burn::tensor::{Device, Tensor};

use crate::guard::{Finite, Select};
use crate::{RecordState, StateSink, StateSource};

/// Which dimension of each layer is projected: the reference's `proj_type`, meaning what it
/// means in `galore-torch`, `fira` and `apollo-torch` **for the same layer**.
///
/// The references name sides of PyTorch's weight, stored `[out, in]`; Burn's `Linear` stores the
/// transpose, `[d_in, d_out]`. So the rule is applied to the PyTorch-layout view `Wᵀ` of a Burn
/// weight, and the [`Side`] it yields is then stated for the raw Burn tensor (the fact a
/// subspace stores): a PyTorch right projection (`Gᵀ P`, reducing `in`) is a Burn left
/// projection (`Pᵀ G`, reducing `d_in`), and the other way round.
///
/// Every other matrix parameter gets the same rule, read as if it were a `Linear` weight: its
/// rows are taken as the input dimension. (Burn's `Embedding` stores `[n_embedding, d_model]`,
/// as PyTorch does; on such a weight `Left` and `Right` therefore name the sides opposite to
/// PyTorch's, `Std` still projects the smaller side, and only a square one is tie-broken the
/// other way.) DCT columns, Fira's and APOLLO's per-channel axis and FRUGAL's subspace all follow
/// the chosen side, so they agree with the references for the same layer too.
///
/// ```
/// use lowrank_optim::{ProjType, Side};
/// // A LLaMA attention projection, Burn layout [d_in, d_out] = [512, 512]: galore-torch
/// // projects the layer's input dimension, i.e. the rows of the Burn weight.
/// assert_eq!(ProjType::Std.side(512, 512), Side::Left);
/// // What galore-torch picks for the same layer's PyTorch tensor [out, in]:
/// assert_eq!(ProjType::Std.torch_side(512, 512), Side::Right);
/// ```
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ProjType {
    /// Project the layer's smaller dimension; on a square layer its input dimension
    /// (galore-torch's default: right projection of `[out, in]` when `out >= in`).
    Std,
    /// Project the layer's larger dimension; on a square layer its output dimension.
    ReverseStd,
    /// galore-torch's `left` (`Pᵀ G` on `[out, in]`): the layer's output dimension is projected.
    Left,
    /// galore-torch's `right` (`G P` on `[out, in]`): the layer's input dimension is projected.
    Right,
    /// Project both dimensions (state `r x r`).
    Full,
}

impl ProjType {
    /// The side this rule picks for a Burn-layout `m x n` matrix (`[d_in, d_out]`), stated for
    /// that raw tensor: [`torch_side`](Self::torch_side) of the PyTorch view `n x m`,
    /// transposed.
    ///
    /// ```
    /// use lowrank_optim::{ProjType, Side};
    /// // A 1376 -> 512 MLP down-projection: its weight is [1376, 512] in Burn.
    /// assert_eq!(ProjType::Std.side(1376, 512), Side::Right);
    /// assert_eq!(ProjType::Std.side(512, 1376), Side::Left);
    /// assert_eq!(ProjType::Right.side(512, 1376), Side::Left); // the input dimension
    /// ```
    pub fn side(self, m: usize, n: usize) -> Side {
        self.torch_side(n, m).transposed()
    }

    /// The side the reference picks for a PyTorch-layout `rows x cols` tensor (`[out, in]`),
    /// stated for that tensor: galore-torch's rules verbatim.
    ///
    /// ```
    /// use lowrank_optim::{ProjType, Side};
    /// assert_eq!(ProjType::Std.torch_side(1376, 512), Side::Right);
    /// assert_eq!(ProjType::Std.torch_side(512, 512), Side::Right);
    /// assert_eq!(ProjType::ReverseStd.torch_side(512, 512), Side::Left);
    /// ```
    pub fn torch_side(self, rows: usize, cols: usize) -> Side {
        match self {
            ProjType::Std if rows >= cols => Side::Right,
            ProjType::Std => Side::Left,
            ProjType::ReverseStd if rows >= cols => Side::Left,
            ProjType::ReverseStd => Side::Right,
            ProjType::Left => Side::Left,
            ProjType::Right => Side::Right,
            ProjType::Full => Side::Both,
        }
    }
}

/// How a refresh computes the new basis.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ProjectionMethod {
    /// Exact thin SVD of the gradient on the host (faer), top-`r` singular vectors: the
    /// reference's `torch.linalg.svd`.
    Svd,
    /// Randomized SVD (Halko et al., 2011): a seeded Gaussian sketch sharpened by power
    /// iterations whose large matmuls run on the parameter's device; only the thin QR/SVD of the
    /// `(r + p)`-column sketch goes to the host. Oversampling and power iterations are set on
    /// the manager. At 2736x1024, r = 256: 6.5x faster than `Svd`, 99.8% of its top-r energy.
    Randomized,
    /// SVD-free: the `r` columns of the shared orthonormal DCT matrix best aligned with the
    /// gradient (see `select_dct_columns`); a matrix stores `r` indices.
    Dct,
    /// A seeded Gaussian `N(0, 1/r)` matrix, not orthonormalized (APOLLO); stored as its seed.
    Gaussian,
    /// A seeded random matrix with orthonormal columns (FRUGAL's random subspace).
    RandomOrthogonal,
    /// A seeded random subset of `r` columns (or rows) of the identity (FRUGAL's coordinate
    /// subspace): projecting gathers, projecting back scatters into zeros.
    Coordinates,
    /// Whole tensors instead of subspaces (FRUGAL's block mode): for each refresh period a
    /// tensor is wholly state-full (full-size moments) or wholly state-free, about `density`
    /// of them state-full, drawn from the seed and the tensor's ordinal
    /// ([`SubspaceManager::prepare_block`]). Applies to tensors of every rank.
    Block,
}

/// What happens to the Adam moments when the basis is refreshed.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MomentPolicy {
    /// Carry the moments over unchanged (GaLore, Fira, APOLLO).
    Keep,
    /// Zero the moments and restart bias correction (FRUGAL).
    Reset,
    /// Transport the moments into the new basis with `C = P_newᵀ P_old`: the first moment
    /// exactly (`M C` style on the projected side), the second as `V (C ∘ C)ᵀ`, which is the
    /// variance of the rotated coordinates when they are uncorrelated and stays non-negative.
    Rotate,
}

/// The projected side of one matrix, stored explicitly in its state, as a fact about the raw
/// tensor the optimizer steps (Burn's `[d_in, d_out]` for a `Linear`); [`ProjType`] says which
/// side a rule picks for a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `R = Pᵀ G` with `P` of shape `m x r`.
    Left,
    /// `R = G P` with `P` of shape `n x r`.
    Right,
    /// `R = Lᵀ G P` with `L` of shape `m x r` and `P` of shape `n x r`.
    Both,
}

impl Side {
    fn code(self) -> u8 {
        match self {
            Side::Left => 0,
            Side::Right => 1,
            Side::Both => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Side::Left),
            1 => Some(Side::Right),
            2 => Some(Side::Both),
            _ => None,
        }
    }

    /// The same projection stated for the transposed matrix: `Pᵀ G = (Gᵀ P)ᵀ`, so left and
    /// right swap and two-sided stays two-sided.
    ///
    /// ```
    /// use lowrank_optim::Side;
    /// assert_eq!(Side::Left.transposed(), Side::Right);
    /// assert_eq!(Side::Both.transposed(), Side::Both);
    /// ```
    pub fn transposed(self) -> Self {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
            Side::Both => Side::Both,
        }
    }

    /// Whether this side keeps a left basis (`m x r`).
    pub fn has_left(self) -> bool {
        matches!(self, Side::Left | Side::Both)
    }

    /// Whether this side keeps a right basis (`n x r`).
    pub fn has_right(self) -> bool {
        matches!(self, Side::Right | Side::Both)
    }

    /// Shape of the projected gradient (and of the moments) for an `m x n` matrix at rank `r`.
    pub fn projected_shape(self, [m, n]: [usize; 2], rank: usize) -> [usize; 2] {
        match self {
            Side::Left => [rank, n],
            Side::Right => [m, rank],
            Side::Both => [rank, rank],
        }
    }
}

/// Stored as one integer scalar, so a record names the side instead of implying it by shapes.
impl RecordState for Side {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_scalar(prefix, "code", burn_pack::Scalar::from(self.code()));
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let code = u8::try_from(src.take_scalar(prefix, "code")?).ok()?;
        Side::from_code(code)
    }
}

/// The per-matrix subspace: side, rank, bases and refresh schedule.
///
/// Plain tensors and scalars, so a saved `ModuleOptimizer` restores it exactly.
#[derive(RecordState, Clone, Debug)]
pub struct Subspace {
    /// Which side of the gradient is projected.
    side: Side,
    /// The rank in use (the configured rank clamped to `min(m, n)`).
    rank: usize,
    /// Rows `m` of the matrix this subspace was built for (checked on every step).
    rows: usize,
    /// Columns `n` of the matrix this subspace was built for (checked on every step).
    cols: usize,
    /// Left basis `m x r` (sides `Left` and `Both`).
    left: Option<Basis>,
    /// Right basis `n x r` (sides `Right` and `Both`).
    right: Option<Basis>,
    /// The current refresh gap (it may grow when the adaptive gap is on).
    gap: usize,
    /// The step at which the next refresh happens.
    next_refresh: usize,
    /// Number of refreshes so far; with the seed and `ordinal` it determines random bases.
    refreshes: usize,
    /// Which matrix this is, for its random draws: its position among the routed matrices, or
    /// its [`fingerprint`] at first sight (see [`SubspaceManager::ordinal_of`]).
    ordinal: usize,
    /// Consecutive refreshes whose leading vector stayed aligned (adaptive gap).
    aligned_refreshes: usize,
}

impl Subspace {
    /// Which side of the gradient is projected.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The rank in use (the configured rank clamped to `min(m, n)`).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The left basis `m x r` (sides `Left` and `Both`).
    pub fn left(&self) -> Option<&Basis> {
        self.left.as_ref()
    }

    /// The right basis `n x r` (sides `Right` and `Both`).
    pub fn right(&self) -> Option<&Basis> {
        self.right.as_ref()
    }

    /// The current refresh gap (it may grow when the adaptive gap is on).
    pub fn gap(&self) -> usize {
        self.gap
    }

    /// Number of refreshes so far.
    pub fn refreshes(&self) -> usize {
        self.refreshes
    }

    /// `R = project(G)` for the stored side.
    pub fn project(&self, grad: Tensor<2>) -> Tensor<2> {
        let mut low = grad;
        if let Some(right) = &self.right {
            low = right.mul(low);
        }
        if let Some(left) = &self.left {
            low = left.mul_t_left(low);
        }
        low
    }

    /// `back(N)`: maps a low-rank tensor back to the full `m x n` space (no scaling).
    pub fn project_back(&self, low: Tensor<2>) -> Tensor<2> {
        let mut full = low;
        if let Some(left) = &self.left {
            full = left.mul_left(full);
        }
        if let Some(right) = &self.right {
            full = right.mul_t(full);
        }
        full
    }

    /// Whether a basis has been computed yet.
    pub(crate) fn has_basis(&self) -> bool {
        self.left.is_some() || self.right.is_some()
    }

    /// Whether every stored basis has orthonormal columns (false for Gaussian ones).
    pub fn is_orthonormal(&self) -> bool {
        [&self.left, &self.right]
            .into_iter()
            .flatten()
            .all(Basis::is_orthonormal)
    }

    /// Whether the projection shows a non-finite entry anywhere in the gradient (every stored
    /// basis mixes all entries; not true of coordinate bases).
    pub(crate) fn projection_sees_every_entry(&self) -> bool {
        [&self.left, &self.right]
            .into_iter()
            .flatten()
            .all(Basis::mixes_every_entry)
    }

    /// Shape of the projected gradient and moments.
    pub fn projected_shape(&self) -> [usize; 2] {
        self.side.projected_shape([self.rows, self.cols], self.rank)
    }

    /// Moves the bases to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        Self {
            left: self.left.map(|b| b.to_device(device)),
            right: self.right.map(|b| b.to_device(device)),
            ..self
        }
    }
}

/// A subspace refreshed on the device (DCT columns) keeps `old`'s columns where the step's
/// gradient was not finite. The schedule fields stay new (a skipped refresh still counts as
/// one); other bases are only refreshed on the host, after the guard's check.
impl Select for Subspace {
    fn choose(self, old: Self, finite: &Finite) -> Self {
        if self.refreshes == old.refreshes {
            return self; // the same columns
        }
        let pick = |new: Option<Basis>, old: Option<Basis>| match (new, old) {
            (Some(Basis::Dct { indices, len }), Some(Basis::Dct { indices: old, .. })) => {
                Some(Basis::Dct {
                    indices: indices.choose(old, finite),
                    len,
                })
            }
            (new, _) => new,
        };
        Subspace {
            left: pick(self.left, old.left),
            right: pick(self.right, old.right),
            ..self
        }
    }
}
