//! Helpers shared by the integration tests: device choice, host conversions and a small dense
//! `f64` linear-algebra reference that is independent of the code under test.
#![allow(dead_code)]

use burn::tensor::{Tensor, TensorData};

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use test_support::{
    assert_reproduced, assert_same_tensors, bitwise_reproducible, captured_fraction,
    dct_column_scores, device, floats, max_abs_diff, orthonormal_columns, record_tensors, values,
    with_spectrum, Dense, TestRng,
};

pub mod parity;
pub mod toy;

/// The updates a subspace optimizer's state counts as applied: its step count less the ones a
/// GPU backend skipped on the device (one read of the counter).
pub fn applied_steps<const D: usize>(state: &lowrank_optim::GaLoreState<D>) -> usize {
    state.clone().applied().step
}

/// A rank-`D` tensor from row-major values.
pub fn tensor<const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &device())
}

/// A projector as a dense matrix (DCT and coordinate bases are expanded).
pub trait FromBasis {
    fn from_basis(b: &lowrank_optim::projection::Basis) -> Self;
}

impl FromBasis for Dense {
    fn from_basis(b: &lowrank_optim::projection::Basis) -> Self {
        Self::from_tensor(&b.matrix())
    }
}

/// What [`SubspaceManager::prepare`](lowrank_optim::projection::SubspaceManager::prepare)
/// returns.
pub type Prepare = Result<
    lowrank_optim::projection::Prepared,
    (
        lowrank_optim::projection::Subspace,
        Option<lowrank_optim::adam::Moments<2>>,
    ),
>;

/// `prepare` of a matrix seen for the first time (ordinal 0, step 0, no moments).
pub trait PrepareFirst {
    #[allow(clippy::result_large_err)]
    fn prepare_first(&self, grad: Tensor<2>) -> Prepare;
}

impl PrepareFirst for lowrank_optim::projection::SubspaceManager {
    fn prepare_first(&self, grad: Tensor<2>) -> Prepare {
        self.prepare(self.create(grad.dims(), 0), None, grad, 0)
    }
}

/// Every projection kind a matrix can have.
pub const PROJECTION_KINDS: [lowrank_optim::ProjectionMethod; 6] = [
    lowrank_optim::ProjectionMethod::Svd,
    lowrank_optim::ProjectionMethod::Randomized,
    lowrank_optim::ProjectionMethod::Dct,
    lowrank_optim::ProjectionMethod::Gaussian,
    lowrank_optim::ProjectionMethod::RandomOrthogonal,
    lowrank_optim::ProjectionMethod::Coordinates,
];
