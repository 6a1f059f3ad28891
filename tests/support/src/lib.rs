//! Helpers the workspace's tests share (the library's and the pretraining example's): the
//! device under test, host reads of tensors and records, and comparisons that are exact on CPU
//! backends.

use burn::tensor::{Device, Tensor};

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
