//! The projection-subspace manager: which subspace each matrix's optimizer state lives in, and
//! what happens to that state when the subspace is refreshed.
//!
//! An optimizer asks the [`SubspaceManager`] for the low-rank gradient `R = project(G)` and maps
//! its normalized update back with [`Subspace::project_back`]; it never branches on projection
//! kinds itself, so every projector works with every optimizer.
//!
//! Conventions (for a gradient `G` of shape `m x n` and rank `r`):
//! - [`Side::Right`]: `R = G P`, `P` is `n x r`, the state is `m x r`;
//! - [`Side::Left`]: `R = Pᵀ G`, `P` is `m x r`, the state is `r x n`;
//! - [`Side::Both`]: `R = Lᵀ G P`, the state is `r x r`.
//!
//! Every basis has orthonormal columns, and the side is stored in the state when it is first
//! chosen, so nothing is re-derived from shapes later (the reference code infers the side from
//! the low-rank tensor's shape, which breaks on square matrices and on `r >= min(m, n)`).

mod basis;
mod dct;
mod manager;
pub(crate) mod svd;

pub use basis::Basis;
pub use dct::{dct_matrix, fast_dct_scores, select_dct_columns, DctNorm, DctScoring};
pub(crate) use manager::subspace_setters;
pub use manager::{leading_cosine, Prepared, SubspaceConfig, SubspaceManager};
pub use svd::{canonicalize_signs, exact_svd_basis, randomized_svd_basis, HostMatrix};

use burn::config::Config;
use burn::tensor::{Device, Tensor};

use crate::{RecordState, StateSink, StateSource};

/// Which side of the gradient is projected: the reference's `proj_type`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ProjType {
    /// Project the smaller side: right when `m >= n`, else left (GaLore's default).
    Std,
    /// Project the larger side: left when `m >= n`, else right.
    ReverseStd,
    /// Always project on the left (`R = Pᵀ G`).
    Left,
    /// Always project on the right (`R = G P`).
    Right,
    /// Project both sides (`R = Lᵀ G P`, state `r x r`).
    Full,
}

impl ProjType {
    /// The side this rule picks for an `m x n` matrix.
    ///
    /// ```
    /// use lowrank_optim::{ProjType, Side};
    /// assert_eq!(ProjType::Std.side(1376, 512), Side::Right);
    /// assert_eq!(ProjType::Std.side(512, 1376), Side::Left);
    /// ```
    pub fn side(self, m: usize, n: usize) -> Side {
        match self {
            ProjType::Std if m >= n => Side::Right,
            ProjType::Std => Side::Left,
            ProjType::ReverseStd if m >= n => Side::Left,
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
    /// gradient (see [`select_dct_columns`]); a matrix stores `r` indices.
    Dct,
    /// A seeded Gaussian `N(0, 1/r)` matrix, not orthonormalized (APOLLO); stored as its seed.
    Gaussian,
    /// A seeded random matrix with orthonormal columns (FRUGAL's random subspace).
    RandomOrthogonal,
    /// A seeded random subset of `r` columns (or rows) of the identity (FRUGAL's coordinate
    /// subspace): projecting gathers, projecting back scatters into zeros.
    Coordinates,
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

/// The projected side of one matrix, stored explicitly in its state.
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
    pub side: Side,
    /// The rank in use (the configured rank clamped to `min(m, n)`).
    pub rank: usize,
    /// Rows `m` of the matrix this subspace was built for (checked on every step).
    pub rows: usize,
    /// Columns `n` of the matrix this subspace was built for (checked on every step).
    pub cols: usize,
    /// Left basis `m x r` (sides `Left` and `Both`).
    pub left: Option<Basis>,
    /// Right basis `n x r` (sides `Right` and `Both`).
    pub right: Option<Basis>,
    /// The current refresh gap (it may grow when the adaptive gap is on).
    pub gap: usize,
    /// The step at which the next refresh happens.
    pub next_refresh: usize,
    /// Number of refreshes so far; with the seed and `ordinal` it determines random bases.
    pub refreshes: usize,
    /// The order in which the optimizer first saw this matrix: random bases differ per matrix.
    pub ordinal: usize,
    /// Consecutive refreshes whose leading vector stayed aligned (adaptive gap).
    pub aligned_refreshes: usize,
}

impl Subspace {
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
    pub fn has_basis(&self) -> bool {
        self.left.is_some() || self.right.is_some()
    }

    /// Whether every stored basis has orthonormal columns (false for Gaussian ones).
    pub fn is_orthonormal(&self) -> bool {
        [&self.left, &self.right]
            .into_iter()
            .flatten()
            .all(Basis::is_orthonormal)
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
