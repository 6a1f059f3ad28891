//! Bases from singular vectors: exact thin SVD on the host and randomized SVD whose large matmuls
//! stay on the parameter's device, plus sign canonicalization.
//!
//! Numerics: everything is `f32`, like the reference (`torch.linalg.svd(G.float())`). faer runs
//! single-threaded (`Par::Seq`): on 2 cores its threaded SVD was slower than sequential.

use burn::tensor::{Device, Tensor, TensorData};
use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::svd::{self as faer_svd, ComputeSvdVectors};
use faer::{Mat, MatRef, Par};

use crate::rng::SplitMix64;

/// A dense column-major matrix on the host.
pub type HostMatrix = Mat<f32>;

/// Left and/or right singular vectors (`m x rank`, `n x rank`), orthonormal columns.
pub(crate) type SingularBases = (Option<HostMatrix>, Option<HostMatrix>);

/// Copies a device tensor to a host matrix; `None` if it holds a NaN or an infinity.
pub(crate) fn to_host(tensor: Tensor<2>) -> Option<HostMatrix> {
    let [m, n] = tensor.dims();
    let values: Vec<f32> = crate::readback::data(tensor)
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32");
    if values.iter().any(|x| !x.is_finite()) {
        return None;
    }
    Some(Mat::from_fn(m, n, |i, j| values[i * n + j]))
}

/// Uploads a host matrix to `device`.
pub(crate) fn to_device(matrix: MatRef<'_, f32>, device: &Device) -> Tensor<2> {
    let (m, n) = matrix.shape();
    let mut values = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            values.push(matrix[(i, j)]);
        }
    }
    Tensor::from_data(TensorData::new(values, [m, n]), device)
}

/// Makes every column's largest-magnitude entry positive (the first one on ties).
///
/// LAPACK-style SVDs return each singular vector up to an arbitrary sign; with moments carried
/// across refreshes (`MomentPolicy::Keep`) a flipped vector would flip the sign of its moment.
pub(crate) fn canonicalize_signs(matrix: &mut HostMatrix) {
    for j in 0..matrix.ncols() {
        let mut pivot = 0.0f32;
        for i in 0..matrix.nrows() {
            let x = matrix[(i, j)];
            if x.abs() > pivot.abs() {
                pivot = x;
            }
        }
        if pivot < 0.0 {
            for i in 0..matrix.nrows() {
                matrix[(i, j)] = -matrix[(i, j)];
            }
        }
    }
}

/// The top-`rank` left and/or right singular vectors of `g` by an exact thin SVD.
///
/// Only the requested side is computed. Returns `None` if `rank > min(m, n)` or the SVD does
/// not converge.
///
pub fn exact_svd_basis(
    g: MatRef<'_, f32>,
    rank: usize,
    want_left: bool,
    want_right: bool,
) -> Option<SingularBases> {
    let (m, n) = g.shape();
    let size = m.min(n);
    if rank > size {
        return None;
    }
    let mode = |want: bool| {
        if want {
            ComputeSvdVectors::Thin
        } else {
            ComputeSvdVectors::No
        }
    };
    let mut s = Diag::<f32>::zeros(size);
    let mut u = want_left.then(|| Mat::<f32>::zeros(m, size));
    let mut v = want_right.then(|| Mat::<f32>::zeros(n, size));
    let scratch = faer_svd::svd_scratch::<f32>(
        m,
        n,
        mode(want_left),
        mode(want_right),
        Par::Seq,
        Default::default(),
    );
    faer_svd::svd(
        g,
        s.as_mut(),
        u.as_mut().map(|u| u.as_mut()),
        v.as_mut().map(|v| v.as_mut()),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .ok()?;
    let top = |x: Mat<f32>| {
        let mut x = x.subcols(0, rank).to_owned();
        canonicalize_signs(&mut x);
        x
    };
    Some((u.map(top), v.map(top)))
}

/// Orthonormal basis of the column space of `y` (thin QR on the host).
fn orthonormalize(y: &HostMatrix) -> HostMatrix {
    y.qr().compute_thin_Q()
}

/// A seeded random `len x rank` matrix with orthonormal columns (QR of a Gaussian one).
pub(crate) fn random_orthogonal_basis(len: usize, rank: usize, seed: u64) -> HostMatrix {
    orthonormalize(&gaussian(len, rank, seed))
}

/// A seeded `rows x cols` Gaussian matrix on the host.
fn gaussian(rows: usize, cols: usize, seed: u64) -> HostMatrix {
    let mut values = vec![0.0f32; rows * cols];
    SplitMix64::new(seed).fill_gaussian(&mut values);
    Mat::from_fn(rows, cols, |i, j| values[i * cols + j])
}

/// The top-`rank` singular vectors of `g` by randomized subspace iteration (Halko, Martinsson &
/// Tropp, 2011, Alg. 4.4), run on the side whose basis is wanted.
///
/// For a right basis: a seeded Gaussian start `Z` of `rank + oversample` columns, then
/// `power_iters` (at least 1) rounds of `Z <- orth(Gᵀ G Z)`, each sharpening the spectrum by
/// `σ²`; finally the top eigenvectors of the small Gram matrix `(G Z)ᵀ (G Z)` rotate `Z` onto the
/// singular directions. The products with `G` run on `g`'s device; only the thin QRs of
/// `n x (rank + p)` matrices and the `(rank + p)²` eigenproblem (in `f64`) run on the host. A left
/// basis is the right basis of `Gᵀ`; with both sides, the left one is `orth(G V)`. Returns
/// `None` if `g` holds a NaN or an infinity.
pub fn randomized_svd_basis(
    g: &Tensor<2>,
    rank: usize,
    oversample: usize,
    power_iters: usize,
    seed: u64,
    want_left: bool,
    want_right: bool,
) -> Option<SingularBases> {
    if want_left && !want_right {
        let transposed = g.clone().transpose();
        let (_, left) = randomized_svd_basis(
            &transposed,
            rank,
            oversample,
            power_iters,
            seed,
            false,
            true,
        )?;
        return Some((left, None));
    }
    let [m, n] = g.dims();
    let device = g.device();
    let width = (rank + oversample).min(m.min(n));
    let gt = g.clone().transpose();
    let mut z = gaussian(n, width, seed);
    for round in 0..power_iters.max(1) {
        if round > 0 {
            z = orthonormalize(&z);
        }
        z = to_host(
            gt.clone()
                .matmul(g.clone().matmul(to_device(z.as_ref(), &device))),
        )?;
    }
    // `z = (GᵀG)^q Ω`: its leading left singular vectors approximate the right singular vectors
    // of `G` (the sketch's columns are dominated by them).
    let (right, _) = exact_svd_basis(z.as_ref(), rank, true, false)?;
    let right = right?;
    let left = match want_left {
        true => {
            let gv = g.clone().matmul(to_device(right.as_ref(), &device));
            let mut left = orthonormalize(&to_host(gv)?);
            canonicalize_signs(&mut left);
            Some(left)
        }
        false => None,
    };
    Some((left, Some(right)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_entry_of_each_column_turns_positive() {
        let mut basis = HostMatrix::from_fn(2, 2, |i, j| match (i, j) {
            (0, 0) => 0.6,
            (1, 0) => -0.8,
            (0, 1) => 0.5,
            _ => -0.5,
        });
        canonicalize_signs(&mut basis);
        assert_eq!((basis[(0, 0)], basis[(1, 0)]), (-0.6, 0.8));
        // A tie keeps the first one's sign: already positive, unchanged.
        assert_eq!((basis[(0, 1)], basis[(1, 1)]), (0.5, -0.5));
    }

    #[test]
    fn the_exact_svd_computes_only_the_side_asked_for() {
        // diag(3, 2, 1): the top-2 right singular vectors are e1 and e2.
        let g = HostMatrix::from_fn(3, 3, |i, j| if i == j { 3.0 - i as f32 } else { 0.0 });
        let (left, right) = exact_svd_basis(g.as_ref(), 2, false, true).unwrap();
        let right = right.unwrap();
        assert!(left.is_none());
        assert_eq!(
            (right[(0, 0)], right[(1, 1)], right[(2, 0)]),
            (1.0, 1.0, 0.0)
        );
        assert!(exact_svd_basis(g.as_ref(), 4, false, true).is_none()); // rank above min(m, n)
    }
}
