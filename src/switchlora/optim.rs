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
use crate::matrix::{assert_state_fits, cast_rank, log_skip};
use crate::quant::MomentFormat;
use crate::setters::adam_setters;
use crate::skip::Verdict;
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
        AdapterAdam {
            hyper: self.adam.hyper(),
            format: self.adam.moment_format(),
            weight_decay: self.adam.weight_decay,
            freeze_steps: self.schedule.freeze_steps,
            vectors,
            path,
            board,
        }
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
#[derive(Clone, Debug)]
pub struct AdapterAdam {
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
    /// Of `vector_steps` (entries `0..r`) and of the moments' step count (entry `r`), the
    /// steps skipped on the device for a non-finite gradient (non-CPU backends; bias
    /// correction subtracts them there, a checkpoint takes them out); `None`: none. A skipped
    /// step still counts toward a vector's freeze.
    pub skipped: Option<Tensor<1>>,
}

impl<const D: usize> RecordState for AdapterAdamState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        // Only applied steps are recorded: a skip counter still on the device is taken out.
        let (mut moments, mut vector_steps) = (self.moments.clone(), self.vector_steps.clone());
        if let Some(skipped) = &self.skipped {
            let data = crate::readback::data(skipped.clone()).convert::<f32>();
            let counts = data.as_slice::<f32>().expect("f32 counts");
            for (steps, skipped) in vector_steps.iter_mut().zip(counts) {
                *steps -= *skipped as u32;
            }
            let total = counts.last().copied().unwrap_or(0.0) as usize;
            if total > 0 {
                log_skip(&moments.dims());
            }
            moments = moments.withdraw(total);
        }
        moments.state_flatten(&join_path(prefix, "moments"), out);
        for (leaf, values) in [("vector_steps", &vector_steps), ("frozen", &self.frozen)] {
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
            skipped: None,
        })
    }
}

impl<const D: usize> AdapterAdamState<D> {
    fn cast<const E: usize>(self) -> AdapterAdamState<E> {
        AdapterAdamState {
            moments: self.moments.cast(),
            vector_steps: self.vector_steps,
            frozen: self.frozen,
            skipped: self.skipped,
        }
    }
}

/// `[r]` host values as a device tensor.
fn upload(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

impl AdapterAdam {
    /// Applies queued resets: moments and counters of those vectors to 0, frozen for
    /// `freeze_steps` steps. Whether there were any.
    fn reset(&self, state: &mut AdapterAdamState<2>) -> bool {
        let resets = self.board.take(&self.path);
        if resets.is_empty() {
            return false;
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
        if let Some(skipped) = state.skipped.take() {
            // The parameter's own count (the last entry) is never reset.
            let keep_counts = keep.iter().copied().chain([1.0]).collect();
            state.skipped = Some(skipped.mul(upload(keep_counts, &device)));
        }
        let keep = self.vectors.spread(upload(keep, &device));
        moments.first = moments.first.clone().mul(keep.clone());
        moments.second = moments.second.clone().mul(keep);
        state.moments = StoredMoments::store(moments, self.format);
        true
    }

    fn step_matrix(
        &self,
        lr: f64,
        weights: Tensor<2>,
        grad: Tensor<2>,
        state: Option<AdapterAdamState<2>>,
    ) -> (Tensor<2>, AdapterAdamState<2>) {
        let dims = grad.dims();
        let count = dims[self.vectors.dim()];
        let device = grad.device();
        let verdict = Verdict::check(&grad, crate::skip::on_device(&device, state.is_some()));
        let mut state = state.unwrap_or_else(|| AdapterAdamState {
            moments: StoredMoments::F32(Moments::zeros(dims, &device)),
            vector_steps: vec![0; count],
            frozen: vec![0; count],
            skipped: None,
        });
        assert_state_fits("SwitchLoRA adapter moments", &state.moments.dims(), &dims);
        assert_state_fits(
            "SwitchLoRA step counters",
            &[state.vector_steps.len()],
            &[count],
        );
        self.reset(&mut state);
        // A skipped step keeps the stored moments as they are (after any reset).
        let Some(verdict) = verdict else {
            log_skip(&dims);
            return (weights, state);
        };
        let AdapterAdamState {
            moments: old,
            mut vector_steps,
            mut frozen,
            skipped,
        } = state;
        let moments = old.clone().load();
        let AdamHyper { beta_1, beta_2, .. } = self.hyper;
        let any_frozen = frozen.iter().any(|&f| f > 0);
        let (mut active, mut step_size, mut inv_root) = (vec![], vec![], vec![]);
        for i in 0..count {
            vector_steps[i] += 1;
            let t = vector_steps[i] as i32;
            let on = frozen[i] == 0;
            active.push(if on { 1.0f32 } else { 0.0 });
            let bias_1 = 1.0 - (beta_1 as f64).powi(t);
            let bias_2 = 1.0 - (beta_2 as f64).powi(t);
            step_size.push(if on { (lr / bias_1) as f32 } else { 0.0 });
            inv_root.push((1.0 / bias_2.sqrt()) as f32);
            frozen[i] = frozen[i].saturating_sub(1);
        }
        let spread = |values: Tensor<1>| self.vectors.spread(values);
        let (step_size, inv_root) = match &skipped {
            None => (upload(step_size, &device), upload(inv_root, &device)),
            Some(skipped) => {
                // Where a vector's steps were skipped, its `t` is only known on the device.
                let skipped = skipped.clone().narrow(0, 0, count);
                let t = upload(vector_steps.iter().map(|&t| t as f32).collect(), &device)
                    .sub(skipped.clone());
                let any = skipped.greater_elem(0.0);
                let on = upload(active.clone(), &device);
                let step = one_minus_power(beta_1, t.clone())
                    .recip()
                    .mul_scalar(lr)
                    .mul(on);
                let root = one_minus_power(beta_2, t).sqrt().recip();
                (
                    upload(step_size, &device).mask_where(any.clone(), step),
                    upload(inv_root, &device).mask_where(any, root),
                )
            }
        };
        let active = any_frozen.then(|| spread(upload(active, &device)));
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
        let skipped = verdict.skipped(skipped).map(|s| s.expand([count + 1]));
        let state = AdapterAdamState {
            moments: verdict.keep_moments(StoredMoments::store(moments, self.format), Some(old)),
            vector_steps,
            frozen,
            skipped,
        };
        (verdict.keep(decayed.sub(update), weights), state)
    }
}

impl Optimizer for AdapterAdam {
    type State<const D: usize> = AdapterAdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        assert_eq!(
            D, 2,
            "lowrank-optim: the SwitchLoRA adapter optimizer got a rank-{D} parameter at `{}`; \
             it only takes lora_a / lora_b matrices",
            self.path
        );
        let (weights, state) = self.step_matrix(
            lr,
            cast_rank(tensor),
            cast_rank(grad),
            state.map(AdapterAdamState::cast),
        );
        (cast_rank(weights), Some(state.cast()))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdapterAdamState {
            moments: state.moments.to_device(device),
            skipped: state.skipped.map(|s| s.to_device(device)),
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
}
