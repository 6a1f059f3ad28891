//! Subspace refresh at the 350M and 1B MLP shapes (2736x1024, r = 256; 5461x2048, r = 512):
//! exact SVD (host, faer) against randomized SVD (sketch matmuls on the device, small QR/SVD on
//! the host) and the SVD-free DCT selection (fast DCT of every row on the host, L1 column
//! scores, top-r), on a gradient-like matrix with singular values ~ 1/i. Prints the fraction of
//! the exact top-r energy `||G P||²` each variant captures. Run: `cargo bench --features internals --bench refresh`;
//! `REFRESH_BENCH_QUICK=1` swaps in one small shape (344x128, r = 32) for an end-to-end check on a
//! slow device (`benches/gpu.sh --quick`), since the set-up computes every shape's bases.

mod common;

use burn::tensor::{Device, Tensor};
use common::gradient_like;
use criterion::{criterion_group, criterion_main, Criterion};
use lowrank_optim::projection::{
    exact_svd_basis, randomized_svd_basis, select_dct_columns, Basis, DctNorm, DctScoring,
    HostMatrix,
};

fn host(t: &Tensor<2>) -> HostMatrix {
    let [m, n] = t.dims();
    let v: Vec<f32> = t.clone().into_data().try_into_vec::<f32>().unwrap();
    HostMatrix::from_fn(m, n, |i, j| v[i * n + j])
}

/// `||G P||²` for a right basis `P` (`n x r`).
fn energy(g: &HostMatrix, p: &HostMatrix) -> f64 {
    let gp = g * p;
    let mut sum = 0.0f64;
    for j in 0..gp.ncols() {
        for i in 0..gp.nrows() {
            sum += (gp[(i, j)] as f64).powi(2);
        }
    }
    sum
}

fn bench_refresh(c: &mut Criterion) {
    let device = Device::default();
    let shapes: &[(usize, usize, usize)] = if std::env::var_os("REFRESH_BENCH_QUICK").is_some() {
        &[(344, 128, 32)]
    } else {
        &[(2736, 1024, 256), (5461, 2048, 512)]
    };
    for &(m, n, r) in shapes {
        let g = gradient_like(m, n, &device);
        let g_host = host(&g);
        let exact = exact_svd_basis(g_host.as_ref(), r, false, true)
            .unwrap()
            .1
            .unwrap();
        let exact_energy = energy(&g_host, &exact);
        let randomized = randomized_svd_basis(&g, r, 8, 1, 7, false, true)
            .unwrap()
            .1
            .unwrap();
        let dct = Basis::Dct {
            indices: select_dct_columns(&g, r, DctNorm::L1, DctScoring::Fft),
            len: n,
        };
        eprintln!(
            "{m}x{n} r{r}: randomized (p = 8, q = 1) captures {:.2}%, DCT {:.2}% of the exact top-r energy",
            100.0 * energy(&g_host, &randomized) / exact_energy,
            100.0 * energy(&g_host, &host(&dct.matrix())) / exact_energy,
        );

        let mut group = c.benchmark_group(format!("refresh_{m}x{n}_r{r}"));
        group.sample_size(10);
        group.bench_function("exact_svd", |b| {
            b.iter(|| exact_svd_basis(host(&g).as_ref(), r, false, true).unwrap())
        });
        group.bench_function("randomized_q1", |b| {
            b.iter(|| randomized_svd_basis(&g, r, 8, 1, 7, false, true).unwrap())
        });
        group.bench_function("dct_fft", |b| {
            b.iter(|| select_dct_columns(&g, r, DctNorm::L1, DctScoring::Fft).into_data())
        });
        group.bench_function("dct_matmul", |b| {
            b.iter(|| select_dct_columns(&g, r, DctNorm::L1, DctScoring::Matmul).into_data())
        });
        group.finish();
    }
}

criterion_group!(benches, bench_refresh);
criterion_main!(benches);
