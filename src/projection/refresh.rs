//! Which basis a refresh computes for a matrix: exact or randomized SVD, DCT columns, or a
//! draw from the seed (Gaussian, random orthonormal, coordinates); and whether the refresh can
//! stay on the device.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::basis::Basis;
use super::config::SubspaceConfig;
use super::dct::{select_dct_columns, DctScoring};
use super::svd::{
    exact_svd_basis, random_orthogonal_basis, randomized_svd_basis, to_device, to_host, HostMatrix,
    SingularBases,
};
use super::{ProjectionMethod, Subspace};
use crate::rng::{mix_seed, random_subset};

/// The seed of a matrix's random basis at its current refresh.
fn basis_seed(config: &SubspaceConfig, subspace: &Subspace, side: u64) -> u64 {
    let matrix = mix_seed(config.seed, subspace.ordinal as u64);
    mix_seed(mix_seed(matrix, subspace.refreshes as u64), side)
}

/// Whether a refresh of `subspace` can run wholly on the device, the gradient's finiteness
/// left there too: DCT columns scored by a device matmul, a basis to fall back on, no
/// adaptive gap (whose cosine is read on the host). DCT-AdamW refreshes every step.
pub(super) fn refreshes_on_device(
    config: &SubspaceConfig,
    subspace: &Subspace,
    device: &Device,
) -> bool {
    let device_scoring = match config.dct_scoring {
        DctScoring::Matmul => true,
        DctScoring::Fft => false,
        DctScoring::Auto => !crate::matrix::is_host_device(device),
    };
    config.projection == ProjectionMethod::Dct
        && device_scoring
        && !config.adaptive_gap
        && subspace.has_basis()
}

/// New bases for `subspace` computed from `grad`; `None` where a basis computed on the host
/// meets a NaN or an infinity (a basis computed on the device from one is meaningless, and the
/// guard discards it).
pub(super) fn new_bases(
    config: &SubspaceConfig,
    subspace: &Subspace,
    grad: &Tensor<2>,
) -> Option<(Option<Basis>, Option<Basis>)> {
    let (left, right) = (subspace.side.has_left(), subspace.side.has_right());
    let device = grad.device();
    let dense = |bases: SingularBases| {
        let (l, r) = bases;
        let to = |x: HostMatrix| Basis::Dense(to_device(x.as_ref(), &device));
        (l.map(to), r.map(to))
    };
    let randomized = |grad: &Tensor<2>| {
        // The sketch only affects accuracy, so it does not depend on the matrix's ordinal.
        let seed = mix_seed(config.seed, subspace.refreshes as u64);
        let c = config;
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
    match config.projection {
        // A rare non-convergence of the exact SVD falls back to the randomized one.
        ProjectionMethod::Svd => {
            let exact = to_host(grad.clone())
                .and_then(|host| exact_svd_basis(host.as_ref(), rank, left, right));
            exact.map(dense).or_else(|| randomized(grad))
        }
        ProjectionMethod::Randomized => randomized(grad),
        ProjectionMethod::Dct => {
            let c = config;
            Some(per_side(&|g, _| Basis::Dct {
                indices: select_dct_columns(g, rank, c.dct_norm, c.dct_scoring),
                len: g.dims()[1],
            }))
        }
        ProjectionMethod::Gaussian => Some(per_side(&|g, side| {
            Basis::gaussian(
                basis_seed(config, subspace, side),
                g.dims()[1],
                rank,
                &device,
            )
        })),
        ProjectionMethod::RandomOrthogonal => Some(per_side(&|g, side| {
            let seed = basis_seed(config, subspace, side);
            let q = random_orthogonal_basis(g.dims()[1], rank, seed);
            Basis::Dense(to_device(q.as_ref(), &device))
        })),
        ProjectionMethod::Block => unreachable!("checked in prepare"),
        ProjectionMethod::Coordinates => Some(per_side(&|g, side| {
            let len = g.dims()[1];
            let chosen = random_subset(basis_seed(config, subspace, side), len, rank);
            let indices = Tensor::<1, Int>::from_data(TensorData::new(chosen, [rank]), &device);
            Basis::Coordinates { indices, len }
        })),
    }
}
