//! Helpers the workspace's tests share (the library's unit and integration tests and the
//! pretraining example's): the device under test, host reads of tensors and records,
//! comparisons that are exact on CPU backends, and a small dense `f64` linear-algebra
//! reference that is independent of the code under test.

use burn::tensor::{Device, Tensor, TensorData};

/// The device under test: `BURN_DEVICE` picks the backend (flex by default, wgpu in CI's second run).
pub fn device() -> Device {
    Device::default()
}

/// Row-major values of a tensor.
pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Whether the device under test is a CPU backend, where results are bitwise reproducible.
/// GPU backends autotune their kernels at run time, so two runs may round differently.
pub fn bitwise_reproducible() -> bool {
    let name = format!("{:?}", device());
    name.contains("Flex") || name.contains("NdArray")
}

/// Asserts `a == b` exactly on CPU backends, and within `1e-4` elsewhere.
pub fn assert_reproduced(a: &[f32], b: &[f32], what: &str) {
    if bitwise_reproducible() {
        assert_eq!(a, b, "{what}");
    } else {
        let diff = max_abs_diff(a, b);
        assert!(diff <= 1e-4, "{what}: max difference {diff:e}");
    }
}

/// Every tensor of a serialized (module or optimizer) record, by name, as stored.
pub fn record_tensors(reader: &burn_pack::Reader) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = reader
        .tensor_names()
        .into_iter()
        .map(String::from)
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let bytes = reader.tensor_data(&name).unwrap();
            (name, bytes)
        })
        .collect()
}

/// The values of a stored `f32` tensor.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    let chunks = bytes.chunks_exact(4);
    chunks
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Asserts two records hold the same tensors: bitwise on CPU backends; elsewhere, tensors that
/// differ at all are `f32` within `1e-4`.
pub fn assert_same_tensors(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for ((name, x), (other, y)) in a.iter().zip(b) {
        assert_eq!(name, other, "{what}");
        if x != y {
            assert_reproduced(&floats(x), &floats(y), &format!("{what}: {name}"));
        }
    }
}

/// A dense row-major `f64` matrix: the independent reference the tests compare against.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Dense {
    pub fn from_tensor(t: &Tensor<2>) -> Self {
        let [rows, cols] = t.dims();
        Self {
            rows,
            cols,
            data: values(t).into_iter().map(f64::from).collect(),
        }
    }

    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Self { rows, cols, data }
    }

    /// The orthonormal DCT-II matrix (row `k` is frequency `k`), from its formula: an
    /// orthogonal matrix independent of the crate's DCT code.
    pub fn orthonormal_dct(n: usize) -> Self {
        Dense::from_fn(n, n, |k, j| {
            let norm = if k == 0 {
                (1.0 / n as f64).sqrt()
            } else {
                (2.0 / n as f64).sqrt()
            };
            norm * (std::f64::consts::PI * k as f64 * (2 * j + 1) as f64 / (2.0 * n as f64)).cos()
        })
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    pub fn t(&self) -> Dense {
        Dense::from_fn(self.cols, self.rows, |i, j| self.at(j, i))
    }

    pub fn matmul(&self, other: &Dense) -> Dense {
        assert_eq!(self.cols, other.rows);
        Dense::from_fn(self.rows, other.cols, |i, j| {
            (0..self.cols).map(|k| self.at(i, k) * other.at(k, j)).sum()
        })
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Dense {
        Dense {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }

    pub fn frobenius_sq(&self) -> f64 {
        self.data.iter().map(|x| x * x).sum()
    }

    pub fn max_abs_diff(&self, other: &Dense) -> f64 {
        assert_eq!((self.rows, self.cols), (other.rows, other.cols));
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }

    pub fn to_tensor(&self) -> Tensor<2> {
        self.to_tensor_on(&device())
    }

    /// The matrix as an `f32` tensor on `device` (e.g. an autodiff one).
    pub fn to_tensor_on(&self, device: &Device) -> Tensor<2> {
        let v: Vec<f32> = self.data.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(v, [self.rows, self.cols]), device)
    }

    pub fn identity(n: usize) -> Dense {
        Dense::from_fn(n, n, |i, j| if i == j { 1.0 } else { 0.0 })
    }
}

/// A deterministic pseudo-random generator for test data (xorshift64*).
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn dense(&mut self, rows: usize, cols: usize) -> Dense {
        let data = (0..rows * cols).map(|_| self.normal()).collect();
        Dense { rows, cols, data }
    }
}

/// Gram–Schmidt orthonormalization of the columns (f64, for building test matrices).
pub fn orthonormal_columns(a: &Dense) -> Dense {
    let mut q = a.clone();
    for j in 0..q.cols {
        for k in 0..j {
            let dot: f64 = (0..q.rows).map(|i| q.at(i, j) * q.at(i, k)).sum();
            for i in 0..q.rows {
                q.data[i * q.cols + j] -= dot * q.at(i, k);
            }
        }
        let norm = (0..q.rows).map(|i| q.at(i, j).powi(2)).sum::<f64>().sqrt();
        for i in 0..q.rows {
            q.data[i * q.cols + j] /= norm;
        }
    }
    q
}

/// `U diag(s) Vᵀ + noise * N(0, 1)` with random orthonormal `U` (`m x k`), `V` (`n x k`) and
/// the given singular values `s` (length `k`). Returns the matrix and `(U, V)`.
pub fn with_spectrum(
    rng: &mut TestRng,
    m: usize,
    n: usize,
    s: &[f64],
    noise: f64,
) -> (Dense, Dense, Dense) {
    let k = s.len();
    let u = orthonormal_columns(&rng.dense(m, k));
    let v = orthonormal_columns(&rng.dense(n, k));
    let us = Dense::from_fn(m, k, |i, j| u.at(i, j) * s[j]);
    let mut g = us.matmul(&v.t());
    for x in &mut g.data {
        *x += noise * rng.normal();
    }
    (g, u, v)
}

/// Fraction of `g`'s top-`r` energy (by left singular subspace `u_r`) that `basis` captures:
/// `||basisᵀ G||² / ||u_rᵀ G||²`, both bases with orthonormal columns.
pub fn captured_fraction(g: &Dense, basis: &Dense, top: &Dense) -> f64 {
    basis.t().matmul(g).frobenius_sq() / top.t().matmul(g).frobenius_sq()
}

/// The DCT column scores of `g` in `f64`: the L1 (`l1`) or L2 norm of each column of `G Q`,
/// `Q` the orthonormal DCT-II matrix.
pub fn dct_column_scores(g: &Dense, l1: bool) -> Vec<f64> {
    let s = g.matmul(&Dense::orthonormal_dct(g.cols));
    (0..s.cols)
        .map(|j| {
            let column = (0..s.rows).map(|i| s.at(i, j));
            if l1 {
                column.map(f64::abs).sum()
            } else {
                column.map(|x| x * x).sum::<f64>().sqrt()
            }
        })
        .collect()
}
