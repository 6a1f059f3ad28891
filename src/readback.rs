//! Every device→host read of the crate, counted.
//!
//! A read drains the device's queue and stalls the host until the value arrives, so on a GPU a
//! read per parameter per step costs more than the step's arithmetic. The optimizers read only
//! at a refresh (the exact SVD runs on the host), on first sight of a parameter, for
//! global-norm clipping and for checkpoints; between refreshes a step on a non-CPU backend
//! reads nothing. All of them go through this module, so [`reads`] can count them.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use lowrank_optim::readback;
//!
//! let before = readback::reads();
//! let data = readback::data(Tensor::<1>::ones([4], &Device::default()));
//! assert_eq!((data.to_vec::<f32>().unwrap(), readback::reads() - before), (vec![1.0; 4], 1));
//! ```

use std::cell::Cell;

use burn::tensor::{Bool, Tensor, TensorData};

thread_local! {
    static READS: Cell<usize> = const { Cell::new(0) };
}

/// Device→host reads this crate has made on the calling thread (an optimizer step reads on the
/// thread that calls it, so a test can take the difference around a step).
pub fn reads() -> usize {
    READS.with(Cell::get)
}

fn count() {
    READS.with(|reads| reads.set(reads.get() + 1));
}

/// Reads a whole tensor (one transfer).
pub fn data<const D: usize, K: burn::tensor::kind::Basic>(tensor: Tensor<D, K>) -> TensorData {
    count();
    tensor.into_data()
}

/// Reads the one value of a single-element float or int tensor as `f64`.
pub(crate) fn scalar_f64<const D: usize>(tensor: Tensor<D>) -> f64 {
    count();
    tensor.into_scalar::<f64>()
}

/// Reads a single-element boolean tensor.
pub fn flag<const D: usize>(tensor: Tensor<D, Bool>) -> bool {
    count();
    tensor.into_scalar::<bool>()
}
