//! Shared bench inputs: LLaMA-shaped gradients with a decaying spectrum.
#![allow(dead_code)]

use burn::tensor::{Device, Tensor, TensorData};
use faer::Mat;

/// LLaMA MLP matrices (PyTorch `[out, in]`) with the published GaLore ranks: 60M and 350M.
pub const SHAPES: [(usize, usize, usize); 2] = [(1376, 512, 128), (2736, 1024, 256)];

/// Deterministic standard normal draws (xorshift64* + Box–Muller).
pub fn normals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            ((-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos()) as f32
        })
        .collect()
}

pub fn random(m: usize, n: usize, scale: f32, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = normals(m * n, (m * 31 + n) as u64)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    Tensor::from_data(TensorData::new(v, [m, n]), device)
}

/// `U diag(1/i) Vᵀ + 1e-6 N(0,1)`, with random orthonormal `U`, `V`: a gradient-like matrix
/// (a Gaussian matrix has a flat spectrum that no sketch captures cheaply).
pub fn gradient_like(m: usize, n: usize, device: &Device) -> Tensor<2> {
    let k = m.min(n);
    let orth = |rows: usize, seed: u64| {
        let a = Mat::from_fn(rows, k, |i, j| normals(1, seed + (i * k + j) as u64)[0]);
        a.qr().compute_thin_Q()
    };
    let (u, v) = (orth(m, 1), orth(n, 2));
    let mut us = u.clone();
    for j in 0..k {
        for i in 0..m {
            us[(i, j)] *= 1.0 / (j + 1) as f32;
        }
    }
    let g = &us * v.transpose();
    let noise = normals(m * n, 3);
    let values: Vec<f32> = (0..m * n)
        .map(|x| g[(x / n, x % n)] + 1e-6 * noise[x])
        .collect();
    Tensor::from_data(TensorData::new(values, [m, n]), device)
}
