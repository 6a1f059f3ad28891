//! The projection's configuration, shared by every projected optimizer.

use burn::config::Config;

use super::dct::{DctNorm, DctScoring};
use super::{MomentPolicy, ProjType, ProjectionMethod};
use crate::error::check;

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
