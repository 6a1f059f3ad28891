//! AdamW with its moments stored at a chosen precision: the optimizer of the parameters a
//! [`Router`](crate::Router) keeps dense (embeddings, norms, the output head) when the
//! moments are quantized, and the 8-bit / 4-bit AdamW baseline.

use burn::config::Config;
use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor};

use crate::adam::StoredMoments;
use crate::adam::{decay, one_minus_power, AdamParams, Moments};
use crate::matrix::{assert_state_fits, log_skip};
use crate::memory::StateFootprint;
use crate::setters::adam_setters;
use crate::skip::Verdict;
use crate::{RecordState, StateSink, StateSource};

/// [`DenseAdamW`] configuration: Burn's `AdamWConfig` defaults (`eps = 1e-5`, weight decay
/// `1e-4`) and the moments' precision.
///
/// ```
/// use burn::optim::Optimizer;
/// use burn::tensor::{Device, Tensor};
/// use lowrank_optim::optim::DenseAdamWConfig;
/// use lowrank_optim::MomentPrecision;
///
/// let adamw = DenseAdamWConfig::new().with_moments(MomentPrecision::Q8).build()?;
/// let device = Device::default();
/// let (w, g) = (Tensor::<2>::ones([128, 64], &device), Tensor::<2>::ones([128, 64], &device));
/// let (w, state) = adamw.step(1e-3, w, g, None);
/// assert_eq!(state.unwrap().step(), 1);
/// let first: f32 = w.slice([0..1, 0..1]).into_scalar();
/// assert!((first - (1.0 - 1e-3 * 1e-4 - 1e-3)).abs() < 1e-6);
/// let optim = DenseAdamWConfig::new().init()?; // a ModuleOptimizer
/// # let _ = optim;
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Config, Debug)]
pub struct DenseAdamWConfig {
    /// Adam: PyTorch's conventions (`eps` added to the bias-corrected `sqrt(v)`, weight decay
    /// before the update) and the moments' precision (also settable through `with_beta_1`,
    /// `with_epsilon`, `with_weight_decay`, `with_moments`, ...).
    #[config(default = "AdamParams::new().with_epsilon(1e-5).with_weight_decay(1e-4)")]
    pub adam: AdamParams,
}

adam_setters!(DenseAdamWConfig);

impl DenseAdamWConfig {
    /// The bare optimizer, or the invalid field named.
    pub fn build(&self) -> crate::Result<DenseAdamW> {
        self.adam.validate()?;
        Ok(DenseAdamW { adam: self.adam })
    }

    /// A `ModuleOptimizer` with this AdamW on every parameter.
    pub fn init(&self) -> crate::Result<burn::optim::ModuleOptimizer> {
        self.build().map(burn::optim::ModuleOptimizer::from)
    }
}

/// Burn's AdamW, `W (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)`, with moments stored at
/// [`AdamParams::moments`]: at `Q8` it is bitsandbytes' `AdamW8bit` (blockwise, 256), at `Q4`
/// torchao's `AdamW4bit` layout with rank-1 normalization of the second moment.
#[derive(Clone, Debug)]
pub struct DenseAdamW {
    adam: AdamParams,
}

/// Per-parameter state of [`DenseAdamW`]: the stored moments and the device's skip counter.
///
/// A checkpoint holds the moments' own layout ([`StoredMoments`]) with the applied updates
/// only (a skip counter still on the device is read back and taken out of the step count).
#[derive(Clone, Debug)]
pub struct DenseAdamState<const D: usize> {
    /// The moments at their precision.
    pub moments: StoredMoments<D>,
    /// Of the moments' step count, the updates skipped on the device (non-CPU backends; see
    /// [`Moments::skipped`]); `None`: none.
    pub skipped: Option<Tensor<1>>,
}

impl<const D: usize> DenseAdamState<D> {
    /// Updates counted into the moments (skipped ones included).
    pub fn step(&self) -> usize {
        self.moments.step()
    }
}

impl<const D: usize> RecordState for DenseAdamState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        let skipped = crate::skip::read_back(self.skipped.clone(), &self.moments.dims());
        (self.moments.clone().withdraw(skipped)).state_flatten(prefix, out);
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let moments = StoredMoments::state_unflatten(prefix, src, device)?;
        Some(Self {
            moments,
            skipped: None,
        })
    }
}

impl Optimizer for DenseAdamW {
    type State<const D: usize> = DenseAdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let dims = grad.dims();
        if dims.contains(&0) {
            return (tensor, state);
        }
        if let Some(stored) = &state {
            assert_state_fits("AdamW moments", &stored.moments.dims(), &dims);
        }
        let defer = crate::skip::on_device(&grad.device(), state.is_some());
        let Some(verdict) = Verdict::check(&grad, defer) else {
            log_skip(&dims);
            return (tensor, state);
        };
        let (old, skipped) = match state {
            Some(DenseAdamState { moments, skipped }) => (Some(moments), skipped),
            None => (None, None),
        };
        let hyper = self.adam.hyper();
        let loaded = match &old {
            Some(stored) => Moments {
                skipped: skipped.clone(),
                ..stored.clone().load()
            },
            None => Moments::zeros(dims, &grad.device()),
        };
        let moments = loaded.update(grad, &hyper);
        let (b1, b2) = (hyper.beta_1, hyper.beta_2);
        let bias = |beta: f32| {
            moments.at_step(
                |t| (1.0 - beta.powi(t)) as f64,
                |t| one_minus_power(beta, t),
            )
        };
        let m_hat = bias(b1).divides(moments.first.clone());
        let v_hat = bias(b2).divides(moments.second.clone());
        let update = m_hat.div(v_hat.sqrt().add_scalar(hyper.epsilon));
        let updated = decay(tensor.clone(), lr, self.adam.weight_decay).sub(update.mul_scalar(lr));
        let stored = StoredMoments::store(moments, self.adam.moment_format());
        let state = DenseAdamState {
            moments: verdict.keep_moments(stored, old),
            skipped: verdict.skipped(skipped),
        };
        (verdict.keep(updated, tensor), Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        DenseAdamState {
            moments: state.moments.to_device(device),
            skipped: state.skipped.map(|s| s.to_device(device)),
        }
    }
}

impl StateFootprint for DenseAdamW {
    fn state_bytes(&self, shape: &[usize], _ordinal: usize) -> usize {
        self.adam.moment_format().pair_bytes(shape)
    }
}

/// The optimizer of the parameters a recipe keeps dense: Burn's own `AdamW` at `f32` (what a
/// plain Burn setup runs, bit for bit), [`DenseAdamW`] when the moments are quantized.
#[derive(Clone)]
pub enum DenseOptimizer {
    /// Burn's `AdamW`.
    Burn(burn::optim::AdamW),
    /// AdamW with quantized moments.
    Quantized(DenseAdamW),
}

impl core::fmt::Debug for DenseOptimizer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DenseOptimizer::Burn(_) => f.write_str("DenseOptimizer::Burn(AdamW)"),
            DenseOptimizer::Quantized(adamw) => write!(f, "DenseOptimizer::Quantized({adamw:?})"),
        }
    }
}

impl DenseOptimizer {
    /// A `ModuleOptimizer` with this optimizer on every parameter.
    pub fn into_module_optimizer(self) -> burn::optim::ModuleOptimizer {
        match self {
            DenseOptimizer::Burn(adamw) => adamw.into(),
            DenseOptimizer::Quantized(adamw) => adamw.into(),
        }
    }
}

impl StateFootprint for DenseOptimizer {
    fn state_bytes(&self, shape: &[usize], ordinal: usize) -> usize {
        match self {
            DenseOptimizer::Burn(adamw) => adamw.state_bytes(shape, ordinal),
            DenseOptimizer::Quantized(adamw) => adamw.state_bytes(shape, ordinal),
        }
    }
}
