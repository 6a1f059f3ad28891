//! AdamW with its moments stored at a chosen precision: the optimizer of the parameters a
//! [`Router`](crate::Router) keeps dense (embeddings, norms, the output head) when the
//! moments are quantized, and the 8-bit / 4-bit AdamW baseline.

use burn::config::Config;
use burn::tensor::{Device, Tensor};

use crate::adam::StoredMoments;
use crate::adam::{decay, one_minus_power, AdamParams, Moments};
use crate::guard::{Guarded, GuardedState, Needs, Skips, Stepped, Unguarded};
use crate::matrix::assert_state_fits;
use crate::memory::StateFootprint;
use crate::setters::adam_setters;

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
        Ok(Guarded::wrap(DenseAdamWStep { adam: self.adam }))
    }

    /// A `ModuleOptimizer` with this AdamW on every parameter.
    pub fn init(&self) -> crate::Result<burn::optim::ModuleOptimizer> {
        self.build().map(burn::optim::ModuleOptimizer::from)
    }
}

/// Burn's AdamW, `W (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)`, with moments stored at
/// [`AdamParams::moments`]: at `Q8` it is bitsandbytes' `AdamW8bit` (blockwise, 256), at `Q4`
/// torchao's `AdamW4bit` layout with rank-1 normalization of the second moment. A gradient
/// holding a NaN or an infinity skips the update ([`guard`](crate::guard)).
pub type DenseAdamW = Guarded<DenseAdamWStep>;

/// [`DenseAdamW`] without its guard.
#[derive(Clone, Debug)]
pub struct DenseAdamWStep {
    adam: AdamParams,
}

/// Per-parameter state of [`DenseAdamW`]: the moments at their precision (a checkpoint holds
/// [`StoredMoments`]' own layout).
pub type DenseAdamState<const D: usize> = GuardedState<StoredMoments<D>>;

impl Unguarded for DenseAdamWStep {
    type State<const D: usize> = StoredMoments<D>;

    fn needs<const D: usize>(&self, _: &StoredMoments<D>, _: &Tensor<D>) -> Needs {
        Needs::Nothing
    }

    fn prepare<const D: usize>(
        &self,
        _weights: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<StoredMoments<D>>,
        _skips: &mut Skips,
    ) -> Option<StoredMoments<D>> {
        if let Some(stored) = &state {
            assert_state_fits("AdamW moments", &stored.dims(), &grad.dims());
        }
        state
    }

    fn update<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<StoredMoments<D>>,
        skips: &Skips,
    ) -> Stepped<StoredMoments<D>, D> {
        let hyper = self.adam.hyper();
        let loaded = match state {
            Some(stored) => Moments {
                skipped: skips.counter(),
                ..stored.load()
            },
            None => Moments::zeros(grad.dims(), &grad.device()),
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
        let updated = decay(tensor, lr, self.adam.weight_decay).sub(update.mul_scalar(lr));
        Stepped {
            weights: updated,
            state: StoredMoments::store(moments, self.adam.moment_format()),
            witness: None,
        }
    }

    fn to_device<const D: usize>(state: StoredMoments<D>, device: &Device) -> StoredMoments<D> {
        state.to_device(device)
    }
}

impl StateFootprint for DenseAdamW {
    fn state_bytes(&self, shape: &[usize], _ordinal: usize) -> usize {
        self.inner().adam.moment_format().pair_bytes(shape)
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
