//! Adam moment updates and the bias-correction conventions of the reference implementations.
//!
//! Every optimizer in this crate keeps its Adam moments in a [`Moments`] value, whatever space
//! they live in (full-size, or a projected subspace), so checkpoints, memory accounting and the
//! refresh policies treat them uniformly.

use burn::config::Config;
use burn::tensor::{Device, Tensor};

mod stored;

pub use stored::{QuantizedMoments, StoredMoments};

use crate::error::check;
use crate::guard::Coefficient;
use crate::quant::{MomentFormat, MomentPrecision, MIN_QUANTIZED_LEN};
use crate::RecordState;

/// Adam's settings in an optimizer's config (`GaLoreConfig::adam`, ...), also set through the
/// config's `with_beta_1`, `with_beta_2`, `with_epsilon` and `with_weight_decay`. Where `epsilon`
/// and the weight decay enter the update is the optimizer's convention (Hugging Face's for
/// GaLore, Fira, APOLLO; PyTorch's for FRUGAL and SwitchLoRA).
///
/// ```
/// use lowrank_optim::GaLoreConfig;
/// let config = GaLoreConfig::new().with_beta_2(0.99).with_weight_decay(0.1);
/// assert_eq!((config.adam.beta_2, config.adam.weight_decay), (0.99, 0.1));
/// ```
#[derive(Config, Debug, Copy)]
pub struct AdamParams {
    /// Decay of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to the denominator for numerical stability.
    #[config(default = 1e-6)]
    pub epsilon: f32,
    /// Decoupled weight decay `W -= lr * wd * W`.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// How both moments are stored between steps: `f32`, or 8 or 4 bits (see
    /// [`quant`](crate::quant)); the update itself is always computed in `f32`.
    #[config(default = "MomentPrecision::F32")]
    pub moments: MomentPrecision,
    /// Tensors with fewer entries keep `f32` moments whatever `moments` says (bitsandbytes'
    /// `min_8bit_size`).
    #[config(default = "MIN_QUANTIZED_LEN")]
    pub min_quantized_len: usize,
}

impl AdamParams {
    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> crate::Result<()> {
        check::adam(self.beta_1, self.beta_2, self.epsilon, self.weight_decay)
    }

    /// How the moments are stored.
    pub fn moment_format(&self) -> MomentFormat {
        MomentFormat {
            precision: self.moments,
            min_quantized_len: self.min_quantized_len,
        }
    }

    /// The moments' hyperparameters.
    pub fn hyper(&self) -> AdamHyper {
        AdamHyper {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
        }
    }
}

/// Adam's hyperparameters, shared by every optimizer in the crate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the denominator for numerical stability.
    pub epsilon: f32,
}

impl AdamHyper {
    /// One Adam step of the HF/GaLore convention on `grad`: the new moments and the update
    /// `hf_step_size * m / (sqrt(v) + eps)` (to subtract from the weights).
    pub fn hf_update<const D: usize>(
        &self,
        lr: f64,
        grad: Tensor<D>,
        moments: Moments<D>,
    ) -> (Tensor<D>, Moments<D>) {
        let moments = moments.update(grad, self);
        let step_size = self.hf_step_size(lr, &moments);
        (step_size.times(moments.direction(self)), moments)
    }

    /// The Hugging Face / GaLore step size `lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)` for the
    /// moments' `t` (`step - skipped`, [`Moments::at_step`]).
    ///
    /// Used with [`Moments::direction`], whose denominator is `sqrt(v) + eps` *without* bias
    /// correction: this is the convention of `transformers.AdamW` that `galore-torch` copied, and
    /// it differs from PyTorch's AdamW in where `eps` sits.
    pub fn hf_step_size<const D: usize>(&self, lr: f64, moments: &Moments<D>) -> Coefficient {
        let (b1, b2) = (self.beta_1, self.beta_2);
        moments.at_step(
            |t| {
                let bias_1 = 1.0 - (b1 as f64).powi(t);
                let bias_2 = 1.0 - (b2 as f64).powi(t);
                lr * bias_2.sqrt() / bias_1
            },
            |t| {
                let bias_2 = one_minus_power(b2, t.clone()).sqrt();
                bias_2.div(one_minus_power(b1, t)).mul_scalar(lr)
            },
        )
    }

    /// PyTorch AdamW's update `lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`, as
    /// FRUGAL and DCT-AdamW compute it: `lr_t * m / (sqrt(v) + eps * sqrt(1 - b2^t))` with the
    /// step size `lr_t` of [`hf_step_size`](Self::hf_step_size).
    pub fn torch_update<const D: usize>(&self, moments: &Moments<D>, lr: f64) -> Tensor<D> {
        let (b2, eps) = (self.beta_2, self.epsilon as f64);
        let eps_t = moments.at_step(
            |t| eps * (1.0 - (b2 as f64).powi(t)).sqrt(),
            |t| one_minus_power(b2, t).sqrt().mul_scalar(eps),
        );
        let denominator = eps_t.plus(moments.second.clone().sqrt());
        self.hf_step_size(lr, moments)
            .times(moments.first.clone().div(denominator))
    }
}

/// `1 - beta^t` elementwise on the device.
pub(crate) fn one_minus_power(beta: f32, t: Tensor<1>) -> Tensor<1> {
    t.mul_scalar((beta as f64).ln()).exp().neg().add_scalar(1.0)
}

/// First and second Adam moments with their own bias-correction step count.
///
/// `step` counts the updates folded into these moments; a refresh with
/// [`MomentPolicy::Reset`](crate::projection::MomentPolicy::Reset) restarts it at 0. On a
/// non-CPU backend the [`guard`](crate::guard) skips a non-finite gradient's update on the
/// device, without the host learning of it until it reads anyway: `step` then counts it too
/// and `skipped` (the guard's counter) holds how many of `step` were skipped, so bias
/// correction uses `step - skipped`.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use lowrank_optim::adam::{AdamHyper, Moments};
///
/// let device = Device::default();
/// let hyper = AdamHyper { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-6 };
/// let moments = Moments::<1>::zeros([3], &device).update(Tensor::ones([3], &device), &hyper);
/// assert_eq!(moments.step, 1);
/// // After one step m = 0.1 g and v = 0.001 g², so the direction is ~ 3.16 g.
/// let d: f32 = moments.direction(&hyper).slice([0..1]).into_scalar();
/// assert!((d - 0.1 / 0.001f32.sqrt()).abs() < 1e-4);
/// ```
#[derive(RecordState, Clone, Debug)]
pub struct Moments<const D: usize> {
    /// Exponential moving average of the gradient.
    pub first: Tensor<D>,
    /// Exponential moving average of the squared gradient.
    pub second: Tensor<D>,
    /// Updates counted into the averages; bias correction's `t` is `step - skipped`.
    pub step: usize,
    /// Of `step`, the updates the guard skipped on the device and has not read back
    /// ([`Skips::counter`](crate::guard::Skips::counter)); `None`: none. Set for a step, never
    /// stored with the moments.
    pub skipped: Option<Tensor<1>>,
}

impl<const D: usize> Moments<D> {
    /// Zero moments of the given shape.
    pub fn zeros(shape: [usize; D], device: &Device) -> Self {
        Self {
            first: Tensor::zeros(shape, device),
            second: Tensor::zeros(shape, device),
            step: 0,
            skipped: None,
        }
    }

    /// `host(t)` for the bias-correction count `t = step - skipped`: on the host when nothing
    /// was deferred; otherwise a one-element device tensor, `host(step)` while nothing was
    /// skipped (bit for bit the host value), `device(step - skipped)` after a skip (see
    /// [`guard`](crate::guard)).
    pub fn at_step(
        &self,
        host: impl Fn(i32) -> f64,
        device: impl Fn(Tensor<1>) -> Tensor<1>,
    ) -> Coefficient {
        crate::guard::at_step(self.step, self.skipped.as_ref(), host, device)
    }

    /// Folds one gradient into the averages: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g²`.
    pub fn update(self, grad: Tensor<D>, hyper: &AdamHyper) -> Self {
        let first = self
            .first
            .mul_scalar(hyper.beta_1)
            .add(grad.clone().mul_scalar(1.0 - hyper.beta_1));
        let second = self
            .second
            .mul_scalar(hyper.beta_2)
            .add(grad.square().mul_scalar(1.0 - hyper.beta_2));
        Self {
            first,
            second,
            step: self.step + 1,
            skipped: self.skipped,
        }
    }

    /// The normalized direction `m / (sqrt(v) + eps)` of the HF/GaLore convention.
    pub fn direction(&self, hyper: &AdamHyper) -> Tensor<D> {
        self.first
            .clone()
            .div(self.second.clone().sqrt().add_scalar(hyper.epsilon))
    }

    /// Moves both averages to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        Self {
            first: self.first.to_device(device),
            second: self.second.to_device(device),
            step: self.step,
            skipped: self.skipped.map(|s| s.to_device(device)),
        }
    }

    /// The shape of the averages.
    pub fn dims(&self) -> [usize; D] {
        self.first.dims()
    }

    /// The same moments viewed at rank `E` (a metadata-only reshape inside a `D == E` branch).
    pub(crate) fn cast_rank<const E: usize>(self) -> Moments<E> {
        Moments {
            first: crate::matrix::cast_rank(self.first),
            second: crate::matrix::cast_rank(self.second),
            step: self.step,
            skipped: self.skipped,
        }
    }
}

/// Decoupled weight decay `tensor * (1 - lr * wd)`, skipped when `wd` is zero.
pub(crate) fn decay<const D: usize>(tensor: Tensor<D>, lr: f64, weight_decay: f32) -> Tensor<D> {
    if weight_decay == 0.0 {
        return tensor;
    }
    tensor.mul_scalar(1.0 - lr * weight_decay as f64)
}
