//! Skipping a non-finite gradient's update without asking the host.
//!
//! On a CPU backend a step reads whether the gradient is finite and returns early. On a GPU
//! that read would stall the queue once per parameter per step, so between refreshes the step
//! is computed whatever the gradient holds and every new value (weights, moments, limiter)
//! is chosen on the device by a one-element flag: the old value where the gradient was not
//! finite. The host keeps counting the step; the state's `skipped` counter (a one-element
//! device tensor) says how many of the counted steps were skipped, bias correction subtracts
//! it on the device ([`Moments::at_step`]), and the next read the host makes anyway (at a
//! refresh) folds it back into the host counts and logs the warning.

use burn::tensor::{Bool, Int, Tensor};

use crate::adam::Moments;
use crate::adam::StoredMoments;

/// Whether the gradient of this step was finite.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a tensor handle, moved, never boxed
pub(crate) enum Verdict {
    /// Read on the host: the gradient is finite (a non-finite one returned early).
    Finite,
    /// A one-element flag on the device, `true` where the gradient is finite.
    OnDevice(Tensor<1, Bool>),
}

impl Verdict {
    /// Checks `grad`: on the device when `defer` (no read), else on the host (one read);
    /// `None` when the host found it not finite.
    pub(crate) fn check<const D: usize>(grad: &Tensor<D>, defer: bool) -> Option<Self> {
        if defer {
            Some(Verdict::OnDevice(grad.clone().is_finite().all()))
        } else {
            crate::matrix::all_finite(grad).then_some(Verdict::Finite)
        }
    }

    /// `new` where the gradient was finite, else `old`.
    pub(crate) fn keep<const D: usize>(&self, new: Tensor<D>, old: Tensor<D>) -> Tensor<D> {
        match self {
            Verdict::Finite => new,
            Verdict::OnDevice(finite) => new.mask_where(not_finite(finite, old.dims()), old),
        }
    }

    /// [`keep`](Self::keep) for optional values: a value that did not exist stays new.
    pub(crate) fn keep_option<const D: usize>(
        &self,
        new: Option<Tensor<D>>,
        old: Option<Tensor<D>>,
    ) -> Option<Tensor<D>> {
        match (new, old) {
            (Some(new), Some(old)) => Some(self.keep(new, old)),
            (new, _) => new,
        }
    }

    /// [`keep`](Self::keep) for stored moments (codes and scales alike); their step count is
    /// the new one, which [`skipped`](Self::skipped) corrects.
    pub(crate) fn keep_moments<const D: usize>(
        &self,
        new: StoredMoments<D>,
        old: Option<StoredMoments<D>>,
    ) -> StoredMoments<D> {
        let (Verdict::OnDevice(finite), Some(old)) = (self, old) else {
            return new;
        };
        match (new, old) {
            (StoredMoments::F32(new), StoredMoments::F32(old)) => StoredMoments::F32(Moments {
                first: self.keep(new.first, old.first),
                second: self.keep(new.second, old.second),
                ..new
            }),
            (StoredMoments::Quantized(mut new), StoredMoments::Quantized(old)) => {
                for (new, old) in [(&mut new.first, old.first), (&mut new.second, old.second)] {
                    let words = not_finite(finite, new.words.dims());
                    new.words = new.words.clone().mask_where(words, old.words);
                    new.scales = self.keep(new.scales.clone(), old.scales);
                }
                StoredMoments::Quantized(new)
            }
            (new, _) => new,
        }
    }

    /// [`keep`](Self::keep) for integer values (a DCT basis' column indices).
    pub(crate) fn keep_int<const D: usize>(
        &self,
        new: Tensor<D, Int>,
        old: Tensor<D, Int>,
    ) -> Tensor<D, Int> {
        match self {
            Verdict::Finite => new,
            Verdict::OnDevice(finite) => new.mask_where(not_finite(finite, old.dims()), old),
        }
    }

    /// The skip counter after this step: `skipped + 1` where the gradient was not finite.
    pub(crate) fn skipped(&self, skipped: Option<Tensor<1>>) -> Option<Tensor<1>> {
        let Verdict::OnDevice(finite) = self else {
            return skipped;
        };
        let missed = finite.clone().bool_not().float();
        Some(match skipped {
            Some(skipped) => skipped.add(missed),
            None => missed,
        })
    }
}

/// The flag negated, as a rank-`D` tensor that broadcasts against `dims` (`mask_where`
/// broadcasts, and fuses with the update's elementwise chain where an expanded mask would be
/// materialized).
fn not_finite<const D: usize>(finite: &Tensor<1, Bool>, _dims: [usize; D]) -> Tensor<D, Bool> {
    finite.clone().bool_not().reshape([1; D])
}

/// Reads a state's skip counter back (one read), logging the skipped updates; the count, or 0
/// when there is none.
pub(crate) fn read_back(skipped: Option<Tensor<1>>, dims: &[usize]) -> usize {
    let Some(skipped) = skipped else {
        return 0;
    };
    let count = crate::readback::scalar_f64(skipped).round() as usize;
    if count > 0 {
        log::warn!(
            "lowrank-optim: skipped {count} update(s) of a {dims:?} parameter on the device: \
             its gradient held NaN or infinity"
        );
    }
    count
}

/// Whether this step may leave the finiteness check to the device: a non-CPU backend, and a
/// state to fall back on.
pub(crate) fn on_device(device: &burn::tensor::Device, has_state: bool) -> bool {
    has_state && !crate::matrix::is_host_device(device)
}
