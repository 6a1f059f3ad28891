//! AdamW for SwitchLoRA adapters: one step counter per adapter vector, and the reset and freeze
//! of the counterparts of switched vectors.

use burn::config::Config;
use burn::module::{Module, ParamGroup};
use burn::optim::{ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor, TensorData};

use super::layers::find_layers;
use super::schedule::SwitchScheduleConfig;
use super::switcher::{Switchboard, Switcher};
use crate::adam::StoredMoments;
use crate::adam::{decay, one_minus_power, AdamHyper, AdamParams, Moments};
use crate::error::Error;
use crate::guard::{
    at_each_step, Finite, Guarded, Needs, Select, Skips, Stepped, Unguarded, Withdraw,
};
use crate::matrix::{assert_state_fits, cast_rank};
use crate::quant::MomentFormat;
use crate::setters::adam_setters;
use crate::{join_path, RecordState, StateSink, StateSource};

/// Configuration of SwitchLoRA training: AdamW for the adapters (PyTorch conventions, as the
/// reference) and the switching schedule.
///
/// [`build`](Self::build) returns the `ModuleOptimizer` (these adapters' optimizer on every
/// `lora_a`/`lora_b`, `dense` on every other trainable parameter) and the [`Switcher`] that
/// feeds it.
///
/// ```
/// use burn::optim::{AdamWConfig, GradientsParams};
/// use burn::tensor::{Device, Tensor};
/// use lowrank_optim::switchlora::{SwitchLoraConfig, SwitchLoraLinearConfig, SwitchScheduleConfig};
///
/// let device = Device::default().autodiff();
/// let mut layer = SwitchLoraLinearConfig::new(32, 32, 4).init(&device)?;
/// let config = SwitchLoraConfig::new(SwitchScheduleConfig::new(100));
/// let dense = AdamWConfig::new().with_weight_decay(0.0).build();
/// let (mut optim, switcher) = config.build(&layer, dense)?;
///
/// let x = Tensor::<2>::ones([8, 32], &device);
/// for step in 0..3 {
///     let loss = layer.forward(x.clone()).square().mean();
///     let grads = GradientsParams::from_grads(loss.backward(), &layer);
///     let (switched, _) = switcher.switch(layer, step)?; // after clipping, before the step
///     layer = optim.step(1e-3, switched, grads);
/// }
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Config, Debug)]
pub struct SwitchLoraConfig {
    /// The switching schedule.
    pub schedule: SwitchScheduleConfig,
    /// The adapters' AdamW, PyTorch's conventions: `eps = 1e-8` added to the bias-corrected
    /// `sqrt(v)`, decoupled weight decay (also settable through `with_beta_1`, ...).
    #[config(default = "AdamParams::new().with_epsilon(1e-8)")]
    pub adam: AdamParams,
}

adam_setters!(SwitchLoraConfig);

impl SwitchLoraConfig {
    /// Checks every field.
    pub fn validate(&self) -> crate::Result<()> {
        self.adam.validate()?;
        self.schedule.validate()
    }

    /// The optimizer for `model` and its switcher. `model` must contain at least one
    /// [`SwitchLoraLinear`](super::SwitchLoraLinear); parameters are matched by path, so the
    /// optimizer keeps working after the model's record is loaded.
    pub fn build<M: Module, O: Optimizer>(
        &self,
        model: &M,
        dense: O,
    ) -> crate::Result<(ModuleOptimizer, Switcher)> {
        self.validate()?;
        let layers = find_layers(model);
        if layers.is_empty() {
            return Err(Error::InvalidConfig {
                field: "model",
                value: "a model without SwitchLoraLinear layers".into(),
                expected: "at least one SwitchLoraLinear (see SwitchableLinear)",
            });
        }
        let board = Switchboard::default();
        let mut optim = ModuleOptimizer::from(dense);
        for layer in &layers {
            for (field, vectors) in [("lora_a", Vectors::Columns), ("lora_b", Vectors::Rows)] {
                let path = layer.field_path(field);
                board.wire(&path);
                let adam = self.adapter_optimizer(vectors, path.clone(), board.clone());
                optim = optim.with_group(ParamGroup::from_path(path), adam, None);
            }
        }
        Ok((optim, Switcher::new(self.schedule.clone(), board)?))
    }

    fn adapter_optimizer(&self, vectors: Vectors, path: String, board: Switchboard) -> AdapterAdam {
        Guarded::wrap(AdapterAdamStep {
            hyper: self.adam.hyper(),
            format: self.adam.moment_format(),
            weight_decay: self.adam.weight_decay,
            freeze_steps: self.schedule.freeze_steps,
            vectors,
            path,
            board,
        })
    }
}

/// Which way an adapter's vectors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vectors {
    /// `lora_a` (`[d_in, r]`): one vector per column.
    Columns,
    /// `lora_b` (`[r, d_out]`): one vector per row.
    Rows,
}

impl Vectors {
    /// The dimension indexing the vectors.
    fn dim(self) -> usize {
        match self {
            Vectors::Columns => 1,
            Vectors::Rows => 0,
        }
    }

    /// A per-vector `[r]` tensor shaped to broadcast against the matrix.
    fn spread(self, per_vector: Tensor<1>) -> Tensor<2> {
        match self {
            Vectors::Columns => per_vector.unsqueeze_dim(0),
            Vectors::Rows => per_vector.unsqueeze_dim(1),
        }
    }
}

/// AdamW on one adapter matrix with a step counter per vector: the reference's `StepAdamW`.
///
/// At each step it first applies the resets the [`Switcher`] queued for its parameter: those
/// vectors' moments and counters go to zero and they are frozen for `freeze_steps` steps. A
/// frozen vector takes no update (nor weight decay); its counter still advances, as in the
/// reference, where a frozen vector's gradient is zeroed.
/// A gradient holding a NaN or an infinity skips the update ([`guard`](crate::guard)); a
/// skipped step still counts toward a vector's freeze.
pub type AdapterAdam = Guarded<AdapterAdamStep>;

/// [`AdapterAdam`] without its guard.
#[derive(Clone, Debug)]
pub struct AdapterAdamStep {
    hyper: AdamHyper,
    format: MomentFormat,
    weight_decay: f32,
    freeze_steps: usize,
    vectors: Vectors,
    path: String,
    board: Switchboard,
}

/// State of an [`AdapterAdam`] parameter: the moments on the device, the per-vector counters
/// on the host (bias corrections are computed there in f64, exactly, and uploaded as `r`
/// factors: `1 - beta_2^t` computed in f32 on a GPU loses most of its digits for small `t`).
#[derive(Clone, Debug)]
pub struct AdapterAdamState<const D: usize> {
    /// The moments (their `step` counts this parameter's optimizer steps), at the configured
    /// precision.
    pub moments: StoredMoments<D>,
    /// Per vector: steps since its last reset (its bias-correction `t`).
    pub vector_steps: Vec<u32>,
    /// Per vector: steps it stays frozen.
    pub frozen: Vec<u32>,
}

impl<const D: usize> RecordState for AdapterAdamState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        self.moments
            .state_flatten(&join_path(prefix, "moments"), out);
        for (leaf, values) in [
            ("vector_steps", &self.vector_steps),
            ("frozen", &self.frozen),
        ] {
            let values: Vec<i32> = values.iter().map(|&v| v as i32).collect();
            let len = values.len();
            out.push_tensor(prefix, leaf, TensorData::new(values, [len]));
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let moments = StoredMoments::state_unflatten(&join_path(prefix, "moments"), src, device)?;
        let mut counters = |leaf: &str| -> Option<Vec<u32>> {
            let data = src.take_tensor(prefix, leaf)?.convert::<i32>();
            let values = data.try_to_vec::<i32>().ok()?;
            Some(values.into_iter().map(|v| v.max(0) as u32).collect())
        };
        let vector_steps = counters("vector_steps")?;
        let frozen = counters("frozen")?;
        Some(Self {
            moments,
            vector_steps,
            frozen,
        })
    }
}

/// The counters stay new: a skipped step counts toward a freeze, and the guard withdraws it
/// from `vector_steps`.
impl<const D: usize> Select for AdapterAdamState<D> {
    fn choose(self, old: Self, finite: &Finite) -> Self {
        AdapterAdamState {
            moments: self.moments.choose(old.moments, finite),
            ..self
        }
    }
}

/// The guard's counter has one entry per vector and a last one for the moments' own count
/// once a vector restarted; one entry for all before.
impl<const D: usize> Withdraw for AdapterAdamState<D> {
    fn withdraw(mut self, skipped: &[usize]) -> Self {
        let last = skipped.len() - 1;
        for (i, steps) in self.vector_steps.iter_mut().enumerate() {
            *steps -= skipped[i.min(last)] as u32;
        }
        self.moments = self.moments.uncounted(skipped[last]);
        self
    }
}

impl<const D: usize> AdapterAdamState<D> {
    fn cast<const E: usize>(self) -> AdapterAdamState<E> {
        AdapterAdamState {
            moments: self.moments.cast(),
            vector_steps: self.vector_steps,
            frozen: self.frozen,
        }
    }
}

/// `[r]` host values as a device tensor.
fn upload(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

impl AdapterAdamStep {
    /// Applies queued resets: moments and counters of those vectors to 0 (the guard's skip
    /// counts of those vectors too), frozen for `freeze_steps` steps.
    fn reset(&self, state: &mut AdapterAdamState<2>, skips: &mut Skips) {
        let resets = self.board.take(&self.path);
        if resets.is_empty() {
            return;
        }
        let mut moments = state.moments.clone().load();
        let (vector_steps, frozen) = (&mut state.vector_steps, &mut state.frozen);
        let count = frozen.len();
        let mut keep = vec![1.0f32; count];
        for &i in &resets {
            keep[i] = 0.0;
            vector_steps[i] = 0;
            frozen[i] = self.freeze_steps as u32;
        }
        let device = moments.first.device();
        // The parameter's own count (the last entry) is never reset.
        let counts: Vec<f32> = keep.iter().copied().chain([1.0]).collect();
        skips.restart(&counts, &device);
        let keep = self.vectors.spread(upload(keep, &device));
        moments.first = moments.first.clone().mul(keep.clone());
        moments.second = moments.second.clone().mul(keep);
        state.moments = StoredMoments::store(moments, self.format);
    }

    fn step_matrix(
        &self,
        lr: f64,
        weights: Tensor<2>,
        grad: Tensor<2>,
        state: AdapterAdamState<2>,
        skips: &Skips,
    ) -> (Tensor<2>, AdapterAdamState<2>) {
        let count = grad.dims()[self.vectors.dim()];
        let device = grad.device();
        let AdapterAdamState {
            moments,
            mut vector_steps,
            mut frozen,
        } = state;
        let moments = moments.load();
        let AdamHyper { beta_1, beta_2, .. } = self.hyper;
        let any_frozen = frozen.iter().any(|&f| f > 0);
        let active: Vec<f32> = frozen
            .iter()
            .map(|&f| f32::from(u8::from(f == 0)))
            .collect();
        for i in 0..count {
            vector_steps[i] += 1;
            frozen[i] = frozen[i].saturating_sub(1);
        }
        let spread = |values: Tensor<1>| self.vectors.spread(values);
        let per_vector = |host: &dyn Fn(i32) -> f64, on: &dyn Fn(Tensor<1>) -> Tensor<1>| {
            at_each_step(&vector_steps, skips, host, on, &device)
        };
        let mut step_size = per_vector(&|t| lr / (1.0 - (beta_1 as f64).powi(t)), &|t| {
            one_minus_power(beta_1, t).recip().mul_scalar(lr)
        });
        let inv_root = per_vector(&|t| 1.0 / (1.0 - (beta_2 as f64).powi(t)).sqrt(), &|t| {
            one_minus_power(beta_2, t).sqrt().recip()
        });
        let active = any_frozen.then(|| upload(active, &device));
        if let Some(active) = &active {
            step_size = step_size.mul(active.clone());
        }
        let active = active.map(spread);
        let grad = match &active {
            Some(mask) => grad.mul(mask.clone()),
            None => grad,
        };
        let moments = moments.update(grad, &self.hyper);
        let denominator = moments
            .second
            .clone()
            .sqrt()
            .mul(spread(inv_root))
            .add_scalar(self.hyper.epsilon);
        let update = moments
            .first
            .clone()
            .div(denominator)
            .mul(spread(step_size));
        // Frozen vectors are not decayed either.
        let decayed = match active {
            Some(mask) if self.weight_decay != 0.0 => {
                let rate = -lr * self.weight_decay as f64;
                weights
                    .clone()
                    .add(weights.clone().mul(mask).mul_scalar(rate))
            }
            _ => decay(weights.clone(), lr, self.weight_decay),
        };
        let state = AdapterAdamState {
            moments: StoredMoments::store(moments, self.format),
            vector_steps,
            frozen,
        };
        (decayed.sub(update), state)
    }

    /// `tensor` as the adapter matrix it must be.
    fn matrix<const D: usize>(&self, tensor: Tensor<D>) -> Tensor<2> {
        assert_eq!(
            D, 2,
            "lowrank-optim: the SwitchLoRA adapter optimizer got a rank-{D} parameter at `{}`; \
             it only takes lora_a / lora_b matrices",
            self.path
        );
        cast_rank(tensor)
    }

    /// The state of an adapter first seen with `grad`: zero moments and counters.
    fn fresh(&self, grad: &Tensor<2>) -> AdapterAdamState<2> {
        let dims = grad.dims();
        let count = dims[self.vectors.dim()];
        AdapterAdamState {
            moments: StoredMoments::F32(Moments::zeros(dims, &grad.device())),
            vector_steps: vec![0; count],
            frozen: vec![0; count],
        }
    }
}

impl Unguarded for AdapterAdamStep {
    type State<const D: usize> = AdapterAdamState<D>;

    fn needs<const D: usize>(&self, _: &AdapterAdamState<D>, _: &Tensor<D>) -> Needs {
        Needs::Nothing
    }

    /// Creates the state on first sight and applies the queued resets (a skipped step keeps
    /// the stored moments as they are after them).
    fn prepare<const D: usize>(
        &self,
        _weights: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<AdapterAdamState<D>>,
        skips: &mut Skips,
    ) -> Option<AdapterAdamState<D>> {
        let grad = self.matrix(grad.clone());
        let mut state = match state {
            Some(state) => state.cast(),
            None => self.fresh(&grad),
        };
        let dims = grad.dims();
        let what = "SwitchLoRA adapter moments";
        assert_state_fits(what, &state.moments.dims(), &dims);
        let (counters, count) = (&[state.vector_steps.len()], &[dims[self.vectors.dim()]]);
        assert_state_fits("SwitchLoRA step counters", counters, count);
        self.reset(&mut state, skips);
        Some(state.cast())
    }

    fn update<const D: usize>(
        &self,
        lr: f64,
        weights: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdapterAdamState<D>>,
        skips: &Skips,
    ) -> Stepped<AdapterAdamState<D>, D> {
        let grad = self.matrix(grad);
        let state = match state {
            Some(state) => state.cast(),
            None => self.fresh(&grad),
        };
        let (weights, state) = self.step_matrix(lr, cast_rank(weights), grad, state, skips);
        Stepped {
            weights: cast_rank(weights),
            state: state.cast(),
            witness: None,
        }
    }

    fn to_device<const D: usize>(
        state: AdapterAdamState<D>,
        device: &Device,
    ) -> AdapterAdamState<D> {
        AdapterAdamState {
            moments: state.moments.to_device(device),
            ..state
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch AdamW with one step counter per column, in f64: the reference's `StepAdamW`
    /// with its gradient zeroed for frozen columns, plus the reset at a switch.
    struct Reference {
        w: Vec<f64>,
        m: Vec<f64>,
        v: Vec<f64>,
        t: Vec<f64>,
        frozen: Vec<usize>,
    }

    #[test]
    fn per_column_counters_restart_and_frozen_columns_hold_still() {
        let (rows, cols, lr, wd) = (3usize, 4usize, 0.1, 0.05);
        let device = Device::default();
        let board = Switchboard::default();
        board.wire("a");
        let config =
            SwitchLoraConfig::new(SwitchScheduleConfig::new(100)).with_weight_decay(wd as f32);
        let adam = config.adapter_optimizer(Vectors::Columns, "a".into(), board.clone());
        let grad_at = |step: usize| -> Vec<f64> {
            (0..rows * cols)
                .map(|k| ((k * 7 + step * 3) % 11) as f64 / 5.0 - 1.0)
                .collect()
        };
        let mut r = Reference {
            w: (0..rows * cols).map(|k| k as f64 / 10.0).collect(),
            m: vec![0.0; rows * cols],
            v: vec![0.0; rows * cols],
            t: vec![0.0; cols],
            frozen: vec![0; cols],
        };
        let data = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::<2>::from_data(TensorData::new(v, [rows, cols]), &device)
        };
        let mut weights = data(&r.w);
        let mut state = None;
        for step in 0..12 {
            if step == 3 {
                board.post(vec![("a".into(), vec![1, 2])]).unwrap();
                for j in [1, 2] {
                    r.t[j] = 0.0;
                    r.frozen[j] = 5;
                    for i in 0..rows {
                        r.m[i * cols + j] = 0.0;
                        r.v[i * cols + j] = 0.0;
                    }
                }
            }
            let g = grad_at(step);
            let (w, s) = adam.step(lr, weights, data(&g), state);
            (weights, state) = (w, s);
            for j in 0..cols {
                let active = r.frozen[j] == 0;
                r.t[j] += 1.0;
                let (bc1, bc2) = (1.0 - 0.9f64.powf(r.t[j]), 1.0 - 0.999f64.powf(r.t[j]));
                for i in 0..rows {
                    let k = i * cols + j;
                    let g = if active { g[k] } else { 0.0 };
                    r.m[k] = 0.9 * r.m[k] + 0.1 * g;
                    r.v[k] = 0.999 * r.v[k] + 0.001 * g * g;
                    if active {
                        r.w[k] *= 1.0 - lr * wd;
                        r.w[k] -= lr / bc1 * r.m[k] / (r.v[k].sqrt() / bc2.sqrt() + 1e-8);
                    }
                }
                r.frozen[j] = r.frozen[j].saturating_sub(1);
            }
            let ours: Vec<f32> = weights.to_data().try_to_vec::<f32>().unwrap();
            for (k, (&a, &b)) in ours.iter().zip(&r.w).enumerate() {
                assert!(
                    (a as f64 - b).abs() < 1e-5,
                    "step {step}, entry {k}: {a} vs {b}"
                );
            }
        }
        // Frozen columns 1 and 2 held still in steps 3..8 and trained again afterwards.
        assert_eq!(r.t, vec![12.0, 9.0, 9.0, 12.0]);
    }

    /// A non-finite gradient between two steps, with a reset of two columns after it, leaves
    /// the adapter as if that gradient never came: the same weights (bit for bit on a CPU
    /// backend; on a GPU backend the bias correction after a skip comes from the device's
    /// count), and the same per-column counters once the guard's count is read back (the
    /// reset restarts the skipped count of its columns only).
    #[test]
    fn a_skipped_step_before_a_reset_leaves_the_counters_exact() {
        let (rows, cols) = (3usize, 4usize);
        let device = Device::default();
        let schedule = SwitchScheduleConfig::new(100).with_freeze_steps(0);
        let data = |step: usize, poison: bool| {
            let mut v: Vec<f32> = (0..rows * cols)
                .map(|k| ((k * 5 + step * 3) % 7) as f32 / 3.0 - 1.0)
                .collect();
            if poison {
                v[5] = f32::NAN;
            }
            Tensor::<2>::from_data(TensorData::new(v, [rows, cols]), &device)
        };
        let run = |with_skip: bool| {
            let board = Switchboard::default();
            board.wire("a");
            let config = SwitchLoraConfig::new(schedule.clone());
            let adam = config.adapter_optimizer(Vectors::Columns, "a".into(), board.clone());
            let mut weights = Tensor::<2>::ones([rows, cols], &device);
            let mut state = None;
            let mut grads = vec![data(0, false)];
            if with_skip {
                grads.push(data(9, true));
            }
            grads.extend((1..5).map(|step| data(step, false)));
            for (i, grad) in grads.into_iter().enumerate() {
                if i == grads_before_reset(with_skip) {
                    board.post(vec![("a".into(), vec![1, 2])]).unwrap();
                }
                (weights, state) = adam.step(0.01, weights, grad, state);
            }
            let state = state.unwrap().applied();
            let values = weights.into_data().try_to_vec::<f32>().unwrap();
            (values, state.vector_steps, state.moments.step())
        };
        fn grads_before_reset(with_skip: bool) -> usize {
            1 + usize::from(with_skip)
        }
        let (clean, skipped) = (run(false), run(true));
        assert_eq!(clean.1, vec![5, 4, 4, 5]);
        assert_eq!((&skipped.1, skipped.2), (&clean.1, clean.2));
        let cpu = crate::is_host_device(&device);
        let tolerance = if cpu { 0.0 } else { 1e-6 };
        let apart = (clean.0.iter().zip(&skipped.0))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            apart <= tolerance,
            "{apart}: {:?} vs {:?}",
            clean.0,
            skipped.0
        );
    }
}
