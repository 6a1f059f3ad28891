//! One side's projector `P` (`len x rank`) in the form each basis kind stores it.
//!
//! A subspace keeps only what its kind needs: dense orthonormal columns for SVD bases, `r`
//! indices into a shared DCT matrix, `r` coordinates for FRUGAL's column/row subsets, and a seed
//! for random Gaussian matrices (APOLLO). Optimizers reach a basis only through
//! [`Subspace::project`](super::Subspace::project) and
//! [`Subspace::project_back`](super::Subspace::project_back) (and ask whether it is
//! orthonormal), so every kind works with every optimizer.

use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use super::dct::dct_matrix;
use crate::rng::fill_gaussian_seeded;
use crate::{RecordState, StateSink, StateSource};

/// A projector `P` of shape `len x rank`, stored compactly.
#[derive(Clone, Debug)]
pub enum Basis {
    /// Orthonormal columns stored densely (exact or randomized SVD, random semi-orthogonal).
    Dense(Tensor<2>),
    /// Columns `indices` of the shared orthonormal DCT matrix of size `len` (SVD-free
    /// projection). Only the indices belong to the layer; the matrix is cached per size and
    /// device.
    Dct {
        /// Selected columns, ascending.
        indices: Tensor<1, Int>,
        /// Size `N` of the DCT matrix.
        len: usize,
    },
    /// Columns `indices` of the identity: projecting gathers those coordinates, projecting back
    /// scatters into zeros (FRUGAL's column/row subsets).
    Coordinates {
        /// Selected coordinates, ascending.
        indices: Tensor<1, Int>,
        /// Length of the projected side.
        len: usize,
    },
    /// A Gaussian `N(0, 1/r)` matrix drawn from `seed` (APOLLO), not orthonormal. The record
    /// stores the seed only and redraws the matrix on load.
    Gaussian {
        /// The seed the matrix is drawn from.
        seed: u64,
        /// The matrix, `len x rank`, kept on the device between refreshes.
        matrix: Tensor<2>,
    },
}

impl Basis {
    /// A Gaussian `N(0, 1/rank)` basis of shape `len x rank` drawn from `seed`.
    pub fn gaussian(seed: u64, len: usize, rank: usize, device: &Device) -> Self {
        let mut values = vec![0.0f32; len * rank];
        fill_gaussian_seeded(seed, &mut values);
        let scale = 1.0 / (rank as f32).sqrt();
        values.iter_mut().for_each(|v| *v *= scale);
        let matrix = Tensor::from_data(TensorData::new(values, [len, rank]), device);
        Basis::Gaussian { seed, matrix }
    }

    /// Number of columns `r`.
    pub fn rank(&self) -> usize {
        match self {
            Basis::Dense(m) | Basis::Gaussian { matrix: m, .. } => m.dims()[1],
            Basis::Dct { indices, .. } | Basis::Coordinates { indices, .. } => indices.dims()[0],
        }
    }

    /// Number of rows (`len`).
    pub fn len(&self) -> usize {
        match self {
            Basis::Dense(m) | Basis::Gaussian { matrix: m, .. } => m.dims()[0],
            Basis::Dct { len, .. } | Basis::Coordinates { len, .. } => *len,
        }
    }

    /// Whether the basis has no columns (never true for a basis built by the manager).
    pub fn is_empty(&self) -> bool {
        self.rank() == 0
    }

    /// Whether the columns are orthonormal (`Pᵀ P = I`); Gaussian bases are not.
    pub fn is_orthonormal(&self) -> bool {
        !matches!(self, Basis::Gaussian { .. })
    }

    /// Whether projecting mixes every entry of the gradient into the result, so that a NaN or an
    /// infinity anywhere shows in the projection (`inf * 0` is NaN too); false for coordinate
    /// bases, which gather.
    pub(crate) fn mixes_every_entry(&self) -> bool {
        !matches!(self, Basis::Coordinates { .. })
    }

    /// `P` as a dense `len x rank` matrix (DCT columns are gathered from the shared matrix).
    pub fn matrix(&self) -> Tensor<2> {
        match self {
            Basis::Dense(m) | Basis::Gaussian { matrix: m, .. } => m.clone(),
            Basis::Dct { indices, len } => {
                dct_matrix(*len, &indices.device()).select(1, indices.clone())
            }
            Basis::Coordinates { indices, len } => {
                let device = indices.device();
                let rank = indices.dims()[0];
                Tensor::zeros([*len, rank], &device).select_assign(
                    0,
                    indices.clone(),
                    Tensor::eye(rank, &device),
                    IndexingUpdateOp::Add,
                )
            }
        }
    }

    /// `x P` for `x` of shape `k x len`: a `k x rank` result.
    pub fn mul(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Basis::Coordinates { indices, .. } => x.select(1, indices.clone()),
            _ => x.matmul(self.matrix()),
        }
    }

    /// `Pᵀ x` for `x` of shape `len x k`: a `rank x k` result.
    pub(crate) fn mul_t_left(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Basis::Coordinates { indices, .. } => x.select(0, indices.clone()),
            _ => self.matrix().transpose().matmul(x),
        }
    }

    /// `y Pᵀ` for `y` of shape `k x rank`: a `k x len` result.
    pub(crate) fn mul_t(&self, y: Tensor<2>) -> Tensor<2> {
        match self {
            Basis::Coordinates { indices, len } => {
                let rows = y.dims()[0];
                Tensor::zeros([rows, *len], &y.device()).select_assign(
                    1,
                    indices.clone(),
                    y,
                    IndexingUpdateOp::Add,
                )
            }
            _ => y.matmul(self.matrix().transpose()),
        }
    }

    /// `P y` for `y` of shape `rank x k`: a `len x k` result.
    pub(crate) fn mul_left(&self, y: Tensor<2>) -> Tensor<2> {
        match self {
            Basis::Coordinates { indices, len } => {
                let cols = y.dims()[1];
                Tensor::zeros([*len, cols], &y.device()).select_assign(
                    0,
                    indices.clone(),
                    y,
                    IndexingUpdateOp::Add,
                )
            }
            _ => self.matrix().matmul(y),
        }
    }

    /// The first column of `P` (the leading direction for SVD bases).
    pub(crate) fn leading_column(&self) -> Tensor<1> {
        let len = self.len();
        self.matrix().slice([0..len, 0..1]).reshape([len])
    }

    /// The indices of a DCT or coordinate basis, ascending.
    pub fn indices(&self) -> Option<Vec<i64>> {
        match self {
            Basis::Dct { indices, .. } | Basis::Coordinates { indices, .. } => Some(
                crate::readback::data(indices.clone())
                    .convert::<i64>()
                    .try_to_vec::<i64>()
                    .expect("integer indices"),
            ),
            _ => None,
        }
    }

    /// Moves the stored tensors to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        match self {
            Basis::Dense(m) => Basis::Dense(m.to_device(device)),
            Basis::Gaussian { seed, matrix } => Basis::Gaussian {
                seed,
                matrix: matrix.to_device(device),
            },
            Basis::Dct { indices, len } => Basis::Dct {
                indices: indices.to_device(device),
                len,
            },
            Basis::Coordinates { indices, len } => Basis::Coordinates {
                indices: indices.to_device(device),
                len,
            },
        }
    }

    fn code(&self) -> u8 {
        match self {
            Basis::Dense(_) => 0,
            Basis::Dct { .. } => 1,
            Basis::Coordinates { .. } => 2,
            Basis::Gaussian { .. } => 3,
        }
    }
}

fn indices_from(data: TensorData, device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(data.convert::<i64>(), device)
}

fn usize_scalar(src: &mut StateSource, prefix: &str, leaf: &str) -> Option<usize> {
    usize::try_from(src.take_scalar(prefix, leaf)?).ok()
}

/// The kind is one integer scalar; then only what that kind stores (never a dense matrix for
/// DCT, coordinate or Gaussian bases). Indices are stored as `i32` on every backend.
impl RecordState for Basis {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_scalar(prefix, "kind", burn_pack::Scalar::from(self.code()));
        match self {
            Basis::Dense(m) => out.push_tensor(prefix, "matrix", crate::readback::data(m.clone())),
            Basis::Dct { indices, len } | Basis::Coordinates { indices, len } => {
                out.push_tensor(
                    prefix,
                    "indices",
                    crate::readback::data(indices.clone()).convert::<i32>(),
                );
                out.push_scalar(prefix, "len", burn_pack::Scalar::from(*len));
            }
            Basis::Gaussian { seed, matrix } => {
                let [len, rank] = matrix.dims();
                out.push_scalar(prefix, "seed", burn_pack::Scalar::from(*seed));
                out.push_scalar(prefix, "len", burn_pack::Scalar::from(len));
                out.push_scalar(prefix, "rank", burn_pack::Scalar::from(rank));
            }
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let code = u8::try_from(src.take_scalar(prefix, "kind")?).ok()?;
        match code {
            0 => {
                let data = src.take_tensor(prefix, "matrix")?;
                Some(Basis::Dense(Tensor::from_data(data, device)))
            }
            1 | 2 => {
                let indices = indices_from(src.take_tensor(prefix, "indices")?, device);
                let len = usize_scalar(src, prefix, "len")?;
                Some(if code == 1 {
                    Basis::Dct { indices, len }
                } else {
                    Basis::Coordinates { indices, len }
                })
            }
            3 => {
                let seed = u64::try_from(src.take_scalar(prefix, "seed")?).ok()?;
                let len = usize_scalar(src, prefix, "len")?;
                let rank = usize_scalar(src, prefix, "rank")?;
                Some(Basis::gaussian(seed, len, rank, device))
            }
            _ => None,
        }
    }
}
