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
pub type SingularBases = (Option<HostMatrix>, Option<HostMatrix>);

/// Copies a device tensor to a host matrix; `None` if it holds a NaN or an infinity.
pub(crate) fn to_host(tensor: Tensor<2>) -> Option<HostMatrix> {
    let [m, n] = tensor.dims();
    let values: Vec<f32> = tensor
        .into_data()
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
/// ```
/// use lowrank_optim::projection::{canonicalize_signs, HostMatrix};
/// let mut basis = HostMatrix::from_fn(2, 1, |i, _| if i == 0 { 0.6 } else { -0.8 });
/// canonicalize_signs(&mut basis);
/// assert_eq!((basis[(0, 0)], basis[(1, 0)]), (-0.6, 0.8));
/// ```
///
/// LAPACK-style SVDs return each singular vector up to an arbitrary sign; with moments carried
/// across refreshes (`MomentPolicy::Keep`) a flipped vector would flip the sign of its moment.
pub fn canonicalize_signs(matrix: &mut HostMatrix) {
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
/// Only the requested side is computed. `rank` must be `<= min(m, n)`. Returns `None` if the
/// SVD does not converge.
///
/// ```
/// use lowrank_optim::projection::{exact_svd_basis, HostMatrix};
/// // diag(3, 2, 1): the top-2 right singular vectors are e1 and e2.
/// let g = HostMatrix::from_fn(3, 3, |i, j| if i == j { 3.0 - i as f32 } else { 0.0 });
/// let (left, right) = exact_svd_basis(g.as_ref(), 2, false, true).unwrap();
/// let right = right.unwrap();
/// assert!(left.is_none());
/// assert_eq!((right[(0, 0)], right[(1, 1)], right[(2, 0)]), (1.0, 1.0, 0.0));
/// ```
pub fn exact_svd_basis(
    g: MatRef<'_, f32>,
    rank: usize,
    want_left: bool,
    want_right: bool,
) -> Option<SingularBases> {
    let (m, n) = g.shape();
    let size = m.min(n);
    assert!(rank <= size, "rank {rank} exceeds min({m}, {n})");
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

/// A seeded `rows x cols` Gaussian matrix on `device`.
fn gaussian(rows: usize, cols: usize, seed: u64, device: &Device) -> Tensor<2> {
    let mut rng = SplitMix64::new(seed);
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| rng.next_gaussian() as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// The top-`rank` singular vectors of `g` by randomized SVD (Halko, Martinsson & Tropp, 2011).
///
/// Sketch `Y = G Ω` with a seeded Gaussian `Ω` of `rank + oversample` columns, then
/// `power_iters` rounds of `Y <- G orth(Gᵀ orth(Y))`; the products with `G` run on `g`'s device,
/// only the thin QRs of `Y` and the SVD of the small `(rank + p) x n` matrix `B = Qᵀ G` run on
/// the host. Returns `None` if `g` holds a NaN or an infinity (seen in the sketch).
///
/// ```
/// use burn::tensor::{Device, Tensor, TensorData};
/// use lowrank_optim::projection::randomized_svd_basis;
///
/// let values: Vec<f32> = (0..60).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
/// let g = Tensor::<2>::from_data(TensorData::new(values, [12, 5]), &Device::default());
/// let (left, right) = randomized_svd_basis(&g, 2, 2, 1, 42, true, true).unwrap();
/// assert_eq!(left.unwrap().shape(), (12, 2));
/// assert_eq!(right.unwrap().shape(), (5, 2));
/// ```
pub fn randomized_svd_basis(
    g: &Tensor<2>,
    rank: usize,
    oversample: usize,
    power_iters: usize,
    seed: u64,
    want_left: bool,
    want_right: bool,
) -> Option<SingularBases> {
    let [m, n] = g.dims();
    let device = g.device();
    let width = (rank + oversample).min(m.min(n));
    let mut y = g.clone().matmul(gaussian(n, width, seed, &device));
    for _ in 0..power_iters {
        let q = orthonormalize(&to_host(y)?);
        let z = g.clone().transpose().matmul(to_device(q.as_ref(), &device));
        let qz = orthonormalize(&to_host(z)?);
        y = g.clone().matmul(to_device(qz.as_ref(), &device));
    }
    let q = orthonormalize(&to_host(y)?);
    let b = to_device(q.as_ref(), &device).transpose().matmul(g.clone());
    let (ub, vb) = exact_svd_basis(to_host(b)?.as_ref(), rank, want_left, want_right)?;
    let left = ub.map(|ub| {
        let mut left = &q * &ub;
        canonicalize_signs(&mut left);
        left
    });
    Some((left, vb))
}
