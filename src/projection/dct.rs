//! SVD-free projection onto columns of the orthonormal DCT matrix (Modoranu et al., 2025).
//!
//! `Q[k, j] = sqrt(2/N) cos(pi k (2j + 1) / (2N))`, row 0 times `sqrt(1/2)`, is built once per
//! size and device and shared by every layer of that size. A refresh scores each column of `Q`
//! by its alignment with the gradient, `score_j = ||(G Q)[:, j]||` (L1 by default), and keeps
//! the top-`r` columns; a layer stores only those `r` indices.
//!
//! `G Q` applies an orthonormal DCT-III to every row of `G`. On CPU backends the refresh uses a
//! fast DCT (`rustdct`, FFT-based, `O(m n log n)`) instead of the `O(m n²)` matmul: at 5461x2048
//! that is the difference between seconds and tens of milliseconds.

use std::sync::Mutex;

use burn::config::Config;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use rustdct::DctPlanner;

/// The column norm that scores DCT columns at a refresh.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum DctNorm {
    /// `sum_i |S[i, j]|` (the reference's default, `ell_norm = 1`).
    L1,
    /// `sqrt(sum_i S[i, j]²)`.
    L2,
}

/// How a refresh computes the scores `||(G Q)[:, j]||`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum DctScoring {
    /// Fast DCT on the host for CPU backends (flex, ndarray), the matmul on the device for GPU
    /// backends (no host round trip).
    Auto,
    /// `O(m n log n)` fast DCT of the gradient's rows on the host (`rustdct`).
    Fft,
    /// `G Q` as one matmul on the parameter's device (the reference's `sim_type = "matmul"`).
    Matmul,
}

/// Shared DCT matrices, one per `(size, device)`.
static CACHE: Mutex<Vec<(usize, Device, Tensor<2>)>> = Mutex::new(Vec::new());

/// The orthonormal DCT matrix `Q` of size `n` on `device`, built on first use and shared
/// (checked against the formula, and for orthonormality, in this file's tests).
pub(crate) fn dct_matrix(n: usize, device: &Device) -> Tensor<2> {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, q)) = cache.iter().find(|(size, d, _)| *size == n && d == device) {
        return q.clone();
    }
    let q = Tensor::from_data(TensorData::new(dct_values(n), [n, n]), device);
    cache.push((n, device.clone(), q.clone()));
    q
}

/// Row-major values of `Q`, computed in f64.
fn dct_values(n: usize) -> Vec<f32> {
    let nf = n as f64;
    let mut values = Vec::with_capacity(n * n);
    for k in 0..n {
        let norm = if k == 0 {
            (1.0 / nf).sqrt()
        } else {
            (2.0 / nf).sqrt()
        };
        for j in 0..n {
            let angle = core::f64::consts::PI * k as f64 * (2 * j + 1) as f64 / (2.0 * nf);
            values.push((norm * angle.cos()) as f32);
        }
    }
    values
}

/// Column scores of `S = G Q` for the rows of a row-major `rows x n` host matrix, by fast DCT.
///
/// Row `g` maps to `g Q`, an orthonormal DCT-III, computed as `sqrt(2/n) · dct3(g')` where
/// `g'` is `g` with its first entry times `sqrt(2)` (`rustdct` does not normalize).
pub(crate) fn fast_dct_scores(values: &[f32], n: usize, norm: DctNorm) -> Vec<f64> {
    let plan = DctPlanner::<f32>::new().plan_dct3(n);
    let scale = (2.0 / n as f32).sqrt();
    let rows_per_chunk = (values.len() / n).div_ceil(rayon::current_num_threads().max(1));
    values
        .par_chunks(n * rows_per_chunk.max(1))
        .map(|chunk| {
            let mut scores = vec![0.0f64; n];
            let mut row = vec![0.0f32; n];
            let mut scratch = vec![0.0f32; plan.get_scratch_len()];
            for source in chunk.chunks_exact(n) {
                row.copy_from_slice(source);
                row[0] *= core::f32::consts::SQRT_2;
                plan.process_dct3_with_scratch(&mut row, &mut scratch);
                for (score, &y) in scores.iter_mut().zip(&row) {
                    let y = (y * scale) as f64;
                    *score += match norm {
                        DctNorm::L1 => y.abs(),
                        DctNorm::L2 => y * y,
                    };
                }
            }
            scores
        })
        .reduce(
            || vec![0.0f64; n],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
        .into_iter()
        .map(|s| match norm {
            DctNorm::L1 => s,
            DctNorm::L2 => s.sqrt(),
        })
        .collect()
}

/// Scores of the `n` DCT columns for `grad` (`k x n`, projected on the right), by `scoring`.
fn scores(grad: &Tensor<2>, norm: DctNorm, scoring: DctScoring) -> Tensor<1> {
    let device = grad.device();
    let [_, n] = grad.dims();
    let host = match scoring {
        DctScoring::Fft => true,
        DctScoring::Matmul => false,
        DctScoring::Auto => crate::matrix::is_host_device(&device),
    };
    if host {
        let values = crate::readback::data(grad.clone())
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 gradient");
        let scores: Vec<f32> = fast_dct_scores(&values, n, norm)
            .into_iter()
            .map(|s| s as f32)
            .collect();
        return Tensor::from_data(TensorData::new(scores, [n]), &device);
    }
    let s = grad.clone().matmul(dct_matrix(n, &device));
    let summed = match norm {
        DctNorm::L1 => s.abs().sum_dim(0),
        DctNorm::L2 => s.square().sum_dim(0).sqrt(),
    };
    summed.reshape([n])
}

/// The `rank` best-aligned DCT columns for `grad` (`k x n`, projected on the right), ascending.
///
/// For a left projection pass `Gᵀ`: `Qᵀ G = (Gᵀ Q)ᵀ`, so the same scores rank its rows.
pub fn select_dct_columns(
    grad: &Tensor<2>,
    rank: usize,
    norm: DctNorm,
    scoring: DctScoring,
) -> Tensor<1, Int> {
    let (_, indices) = scores(grad, norm, scoring).topk_with_indices(rank, 0);
    indices.sort(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::{device, Dense, TestRng};

    /// Column scores of `G Q` in f64.
    fn reference_scores(g: &Dense, norm: DctNorm) -> Vec<f64> {
        test_support::dct_column_scores(g, norm == DctNorm::L1)
    }

    #[test]
    fn dct_matrix_matches_the_formula_and_is_orthonormal() {
        for n in [1, 5, 16, 37] {
            let q = Dense::from_tensor(&dct_matrix(n, &device()));
            assert!(q.max_abs_diff(&Dense::orthonormal_dct(n)) < 1e-6, "n = {n}");
            let gram = q.t().matmul(&q);
            assert!(gram.max_abs_diff(&Dense::identity(n)) < 1e-5, "n = {n}");
        }
    }

    #[test]
    fn fast_dct_scores_equal_the_matmul_scores() {
        let mut rng = TestRng::new(3);
        for (m, n) in [(7, 16), (5, 37), (3, 1), (64, 48)] {
            let g = rng.dense(m, n);
            let values: Vec<f32> = g.data.iter().map(|&x| x as f32).collect();
            for norm in [DctNorm::L1, DctNorm::L2] {
                let fast = fast_dct_scores(&values, n, norm);
                let want = reference_scores(&g, norm);
                for (j, (a, b)) in fast.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-4 * b.max(1.0),
                        "{m}x{n} {norm:?} column {j}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
