//! Subspace refresh at 2736x1024, r = 256: exact SVD (host, faer) against randomized SVD
//! (sketch matmuls on the device, small QR/SVD on the host), on a gradient-like matrix with
//! singular values ~ 1/i. Prints the fraction of the exact top-r energy `||G P||²` each
//! randomized variant captures. Run: `cargo bench --bench refresh`.

mod common;

use burn::tensor::{Device, Tensor};
use common::gradient_like;
use criterion::{criterion_group, criterion_main, Criterion};
use lowrank_optim::projection::{exact_svd_basis, randomized_svd_basis, HostMatrix};

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
    let (m, n, r) = (2736, 1024, 256);
    let g = gradient_like(m, n, &device);
    let g_host = host(&g);

    let exact = exact_svd_basis(g_host.as_ref(), r, false, true)
        .unwrap()
        .1
        .unwrap();
    let exact_energy = energy(&g_host, &exact);
    for q in [1, 2] {
        let p = randomized_svd_basis(&g, r, 8, q, 7, false, true)
            .unwrap()
            .1
            .unwrap();
        eprintln!(
            "randomized (p = 8, q = {q}) captures {:.4}% of the exact top-{r} energy",
            100.0 * energy(&g_host, &p) / exact_energy
        );
    }

    let mut group = c.benchmark_group("refresh_2736x1024_r256");
    group.sample_size(10);
    group.bench_function("exact_svd", |b| {
        b.iter(|| exact_svd_basis(host(&g).as_ref(), r, false, true).unwrap())
    });
    for q in [1, 2] {
        group.bench_function(format!("randomized_q{q}"), |b| {
            b.iter(|| randomized_svd_basis(&g, r, 8, q, 7, false, true).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_refresh);
criterion_main!(benches);
