//! Viewing a rank-generic parameter as the matrix the projection works on.
//!
//! `Optimizer::step` is generic over the tensor rank `D`; projected optimizers specialize
//! `D == 2` at run time and need to move between `Tensor<D>` and `Tensor<2>` without copies.

use burn::tensor::Tensor;

/// `tensor` as a matrix, when it is a non-empty rank-2 tensor.
pub(crate) fn as_matrix<const D: usize>(tensor: &Tensor<D>) -> Option<Tensor<2>> {
    let dims = tensor.dims();
    is_matrix_shape(&dims).then(|| tensor.clone().reshape([dims[0], dims[1]]))
}

/// Converts a tensor between two equal ranks (a metadata-only reshape).
///
/// # Panics
/// If `A != B`; callers only use it inside a `D == 2` branch.
pub(crate) fn cast_rank<const A: usize, const B: usize>(tensor: Tensor<A>) -> Tensor<B> {
    assert_eq!(A, B, "cast_rank between different ranks");
    let dims = tensor.dims();
    let mut shape = [0usize; B];
    shape.copy_from_slice(&dims);
    tensor.reshape(shape)
}

/// Whether every entry of `tensor` is finite (one device synchronization).
pub(crate) fn all_finite<const D: usize>(tensor: &Tensor<D>) -> bool {
    crate::readback::flag(tensor.clone().is_finite().all())
}

/// Panics with a clear message when restored state (`what`) does not have the shape the
/// parameter needs, instead of failing later inside a tensor op.
pub(crate) fn assert_state_fits(what: &str, state_dims: &[usize], expected_dims: &[usize]) {
    assert!(
        state_dims == expected_dims,
        "lowrank-optim: {what} of shape {state_dims:?} where this parameter needs \
         {expected_dims:?}; the optimizer state was loaded from another model or configuration"
    );
}

/// Whether a parameter of `shape` is treated as a matrix (rank 2, no empty dimension).
pub(crate) fn is_matrix_shape(shape: &[usize]) -> bool {
    shape.len() == 2 && shape.iter().all(|&d| d > 0)
}

/// Whether `device` belongs to a CPU backend (flex, ndarray), where host-side algorithms beat
/// device kernels and some tensor ops have slow scalar fallbacks. The crate's optimizers check
/// gradients for finiteness on the host there (bitwise the reference's steps), and on the device
/// elsewhere, reading nothing back between refreshes.
///
/// ```
/// use burn::tensor::Device;
///
/// let device = Device::default();
/// let where_checked = if lowrank_optim::is_host_device(&device) { "host" } else { "device" };
/// println!("finiteness checked on the {where_checked}");
/// ```
pub fn is_host_device(device: &burn::tensor::Device) -> bool {
    use burn::backend::DispatchDevice;
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        _ => false,
    }
}

/// `sign(x)` (0 at 0 and NaN). On CPU backends as `[x > 0] - [-x > 0]`: flex's `sign` is a
/// scalar closure, 3.4x slower than these vectorized comparisons at 1376x512.
pub(crate) fn fast_sign<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_host_device(&x.device()) {
        return x.sign();
    }
    let positive = x.clone().greater_elem(0.0).float();
    let negative = x.neg().greater_elem(0.0).float();
    positive.sub(negative)
}
