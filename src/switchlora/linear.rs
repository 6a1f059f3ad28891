//! The SwitchLoRA linear layer: a frozen base weight plus a low-rank pair whose vectors are
//! swapped with spare candidates during training.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use super::layers::rows;
use super::resident::Resident;
use crate::error::Error;

/// Where a layer keeps its candidate pools.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum CandidatePlacement {
    /// Host memory (Burn's CPU backend), as the reference offloads them: the accelerator holds
    /// only the adapters. Falls back to the layer's device when no CPU backend is compiled in.
    Host,
    /// The layer's own device: faster switches, more accelerator memory.
    Device,
}

impl CandidatePlacement {
    /// The device the pools of a layer on `device` live on.
    pub fn device(self, device: &Device) -> Device {
        match self {
            #[cfg(feature = "flex")]
            CandidatePlacement::Host => Device::flex(),
            _ => device.clone(),
        }
    }
}

/// Configuration of a [`SwitchLoraLinear`] with the adapter scaled by `1 / r` (Zhou et al., 2024,
/// [arXiv:2406.06564](https://arxiv.org/abs/2406.06564)).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use lowrank_optim::switchlora::SwitchLoraLinearConfig;
///
/// let device = Device::default();
/// let layer = SwitchLoraLinearConfig::new(64, 32, 8).init(&device)?;
/// assert_eq!(layer.rank(), 8);
/// let y = layer.forward(Tensor::<2>::ones([4, 64], &device));
/// assert_eq!(y.dims(), [4, 32]);
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Config, Debug)]
pub struct SwitchLoraLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Rank `r` of the adapter pair, `1 <= r <= min(d_input, d_output)`.
    pub rank: usize,
    /// Whether the layer has a (trainable) bias.
    #[config(default = false)]
    pub bias: bool,
    /// Where the candidate pools live.
    #[config(default = "CandidatePlacement::Host")]
    pub candidates: CandidatePlacement,
}

/// The adapter scaling `1 / r`: the reference's `lora_alpha = 1`, for which its initialization
/// is designed.
pub(crate) fn scaling(rank: usize) -> f64 {
    1.0 / rank as f64
}

/// The reference's initialization bounds `(bound_A, bound_B)`: entries of `A`, `B` and their
/// candidates are uniform on `±sqrt(3) sigma` with `gain = sqrt(1/3)`,
/// `sigma_A = (sqrt(out) r / in^1.5)^(1/4) sqrt(gain)` and
/// `sigma_B = (r / sqrt(out in))^(1/4) sqrt(gain)`, so `B dA` and `dB A` have the same size.
pub fn init_bounds(d_input: usize, d_output: usize, rank: usize) -> (f64, f64) {
    let (n, m, r) = (d_input as f64, d_output as f64, rank as f64);
    let gain = (1.0f64 / 3.0).sqrt();
    let sigma_a = (m.sqrt() * r / n.powf(1.5)).powf(0.25) * gain.sqrt();
    let sigma_b = (r / (m * n).sqrt()).powf(0.25) * gain.sqrt();
    (3f64.sqrt() * sigma_a, 3f64.sqrt() * sigma_b)
}

impl SwitchLoraLinearConfig {
    /// Checks the sizes and the rank against the layer's shape.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        check::positive_count("d_input", self.d_input)?;
        check::positive_count("d_output", self.d_output)?;
        check::positive_count("rank", self.rank)?;
        let smaller = self.d_input.min(self.d_output);
        if self.rank > smaller {
            return Err(Error::InvalidConfig {
                field: "rank",
                value: format!(
                    "{} (the layer is {} x {}, min = {smaller})",
                    self.rank, self.d_input, self.d_output
                ),
                expected: "at most min(d_input, d_output)",
            });
        }
        Ok(())
    }

    /// A new layer: a fresh base weight (Burn's `Linear` initialization), wrapped.
    pub fn init(&self, device: &Device) -> crate::Result<SwitchLoraLinear> {
        self.validate()?;
        let linear = LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .init(device);
        self.wrap(linear)
    }

    /// Wraps a trained or fresh `Linear`: the base weight becomes `W - s A B` (frozen) so the
    /// layer computes exactly what `linear` did; the bias stays trainable. The config's
    /// `d_input`, `d_output` and `bias` must describe `linear`.
    pub fn wrap(&self, linear: Linear) -> crate::Result<SwitchLoraLinear> {
        self.validate()?;
        let [d_input, d_output] = linear.weight.val().dims();
        if [d_input, d_output] != [self.d_input, self.d_output] {
            return Err(Error::InvalidConfig {
                field: "d_input",
                value: format!(
                    "{} x {} (the linear is {d_input} x {d_output})",
                    self.d_input, self.d_output
                ),
                expected: "the shape of the wrapped linear",
            });
        }
        let device = linear.weight.val().device();
        let pool_device = self.candidates.device(&device);
        let (bound_a, bound_b) = init_bounds(d_input, d_output, self.rank);
        let pool_size = d_input.min(d_output);
        let pool = |len: usize, bound: f64| {
            Tensor::<2>::random(
                [pool_size, len],
                Distribution::Uniform(-bound, bound),
                &pool_device,
            )
        };
        let candidates_a = pool(d_input, bound_a);
        let candidates_b = pool(d_output, bound_b);
        let slots = Slots::initial(self.rank, pool_size);
        // Always through data: a tensor on the host backend would otherwise stay outside the
        // layer's autodiff context.
        let on_device = |t: Tensor<2>| Tensor::<2>::from_data(crate::readback::data(t), &device);
        let a = on_device(rows(&candidates_a, &slots.selected_a)).transpose();
        let b = on_device(rows(&candidates_b, &slots.selected_b));
        let base = linear
            .weight
            .val()
            .detach()
            .sub(a.clone().matmul(b.clone()).mul_scalar(scaling(self.rank)));
        Ok(SwitchLoraLinear {
            weight: Param::initialized(linear.weight.id, base).set_require_grad(false),
            bias: linear.bias,
            lora_a: Param::from_tensor(a),
            lora_b: Param::from_tensor(b),
            candidates_a: Resident(Param::initialized(ParamId::new(), candidates_a)),
            candidates_b: Resident(Param::initialized(ParamId::new(), candidates_b)),
            slots: Resident(Param::initialized(
                ParamId::new(),
                slots.to_tensor(&pool_device),
            )),
        })
    }
}

/// A linear layer `y = x W + (1 / r) (x A) B + b` whose base weight `W` is frozen and whose
/// adapter vectors are switched with candidates by a [`Switcher`](super::Switcher).
///
/// Layout follows Burn's `Linear` (`x W` with `W: [d_in, d_out]`): `lora_a` is `[d_in, r]` and
/// `lora_b` is `[r, d_out]`, the transposes of the reference's `A` (`r x in`) and `B`
/// (`out x r`). Rank index `i` pairs column `i` of `lora_a` with row `i` of `lora_b`.
#[derive(Module, Debug)]
pub struct SwitchLoraLinear {
    /// The frozen base weight `[d_in, d_out]`; no gradient, no optimizer state.
    pub weight: Param<Tensor<2>>,
    /// Optional trainable bias `[d_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Trainable `[d_in, r]`: column `i` is the reference's row `i` of `A`.
    pub lora_a: Param<Tensor<2>>,
    /// Trainable `[r, d_out]`: row `i` is the reference's column `i` of `B`.
    pub lora_b: Param<Tensor<2>>,
    /// `[min(d_in, d_out), d_in]` spare vectors for `lora_a`'s columns (not trained).
    pub candidates_a: Resident<Param<Tensor<2>>>,
    /// `[min(d_in, d_out), d_out]` spare vectors for `lora_b`'s rows (not trained).
    pub candidates_b: Resident<Param<Tensor<2>>>,
    /// Switch bookkeeping, see [`Slots`].
    pub slots: Resident<Param<Tensor<1, Int>>>,
}

impl SwitchLoraLinear {
    /// Applies the layer to `[..., d_in]` inputs.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        use burn::tensor::module::linear;
        let bias = self.bias.as_ref().map(|b| b.val());
        let base = linear(input.clone(), self.weight.val(), bias);
        let low = linear(
            linear(input, self.lora_a.val(), None),
            self.lora_b.val(),
            None,
        );
        base.add(low.mul_scalar(self.scaling()))
    }

    /// The adapter rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.val().dims()[1]
    }

    /// The adapter scaling `1 / r` (the reference's `lora_alpha = 1`, for which its
    /// initialization is designed).
    pub fn scaling(&self) -> f64 {
        scaling(self.rank())
    }

    /// Number of vectors in each candidate pool, `min(d_in, d_out)`.
    pub fn pool_size(&self) -> usize {
        self.candidates_a.0.val().dims()[0]
    }

    /// The effective weight `W + s A B` (`[d_in, d_out]`), detached.
    pub fn effective_weight(&self) -> Tensor<2> {
        let low = self
            .lora_a
            .val()
            .detach()
            .matmul(self.lora_b.val().detach())
            .mul_scalar(self.scaling());
        // A leaf, so the merged weight can require gradients.
        self.weight.val().detach().add(low).detach()
    }

    /// The plain `Linear` this layer computes: weight `W + s A B` (trainable again), same bias.
    pub fn merge(self) -> Linear {
        let weight = self.effective_weight();
        Linear {
            weight: Param::initialized(self.weight.id, weight).set_require_grad(true),
            bias: self.bias,
        }
    }
}

/// The adapter a [`SwitchableLinear`] gets: its rank and where its candidate pools live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapter {
    /// Rank `r` of the adapter pair.
    pub rank: usize,
    /// Where the candidate pools live.
    pub candidates: CandidatePlacement,
}

/// A linear that is either dense or SwitchLoRA, so a model can pick per run (e.g. from a
/// recipe) and be merged back to dense linears after training.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::Device;
/// use lowrank_optim::switchlora::{SwitchLoraLinearConfig, SwitchableLinear};
///
/// let device = Device::default();
/// let dense = LinearConfig::new(16, 16).with_bias(false).init(&device);
/// let layer = SwitchableLinear::SwitchLora(SwitchLoraLinearConfig::new(16, 16, 4).wrap(dense)?);
/// let merged = layer.merge()?;
/// assert!(matches!(merged, SwitchableLinear::Dense(_)));
/// assert!(merged.merge().is_err()); // nothing left to merge
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum SwitchableLinear {
    /// A plain, fully trained linear.
    Dense(Linear),
    /// A frozen base weight with a switched low-rank adapter.
    SwitchLora(SwitchLoraLinear),
}

impl SwitchableLinear {
    /// A dense linear of `config`'s shape, or a SwitchLoRA one wrapping it when `adapter` is
    /// given.
    pub fn new(
        config: &LinearConfig,
        adapter: Option<Adapter>,
        device: &Device,
    ) -> crate::Result<Self> {
        let dense = config.init(device);
        match adapter {
            None => Ok(Self::Dense(dense)),
            Some(adapter) => {
                SwitchLoraLinearConfig::new(config.d_input, config.d_output, adapter.rank)
                    .with_bias(config.bias)
                    .with_candidates(adapter.candidates)
                    .wrap(dense)
                    .map(Self::SwitchLora)
            }
        }
    }

    /// Applies the layer.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Dense(linear) => linear.forward(input),
            Self::SwitchLora(layer) => layer.forward(input),
        }
    }

    /// Folds the adapter into the weight, leaving a dense linear that computes the same
    /// function. A dense layer (merged already, or never wrapped) is an error.
    pub fn merge(self) -> crate::Result<Self> {
        match self {
            Self::Dense(_) => Err(Error::AlreadyMerged),
            Self::SwitchLora(layer) => Ok(Self::Dense(layer.merge())),
        }
    }
}

/// Which pool vector each adapter slot holds and where the next switches start, stored in a
/// layer's record as one integer tensor
/// `[cursor_a, cursor_b, selected_a (r), selected_b (r), switched_a (r), switched_b (r)]`.
///
/// `switched_a[i]` is the step at which `lora_a`'s column `i` was last switched (`-1`: never);
/// the counterpart row `i` of `lora_b` is frozen for the following steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// First slot of `lora_a` the next switch replaces.
    pub cursor_a: usize,
    /// First slot of `lora_b` the next switch replaces.
    pub cursor_b: usize,
    /// Pool index of the vector in each slot of `lora_a`.
    pub selected_a: Vec<usize>,
    /// Pool index of the vector in each slot of `lora_b`.
    pub selected_b: Vec<usize>,
    /// Step of the last switch of each `lora_a` slot, `-1` for never.
    pub switched_a: Vec<i64>,
    /// Step of the last switch of each `lora_b` slot, `-1` for never.
    pub switched_b: Vec<i64>,
}

impl Slots {
    /// The reference's starting point: `lora_a` holds the last `r` pool vectors in order and
    /// switches from slot 0; `lora_b` holds the same vectors rotated by `r / 2` and switches
    /// from slot `r / 2`, so the two never switch the same slot in one step.
    pub fn initial(rank: usize, pool_size: usize) -> Self {
        let first = pool_size - rank;
        let half = rank / 2;
        Self {
            cursor_a: 0,
            cursor_b: half,
            selected_a: (0..rank).map(|i| first + i).collect(),
            selected_b: (0..rank)
                .map(|i| first + (i + rank - half) % rank)
                .collect(),
            switched_a: vec![-1; rank],
            switched_b: vec![-1; rank],
        }
    }

    /// Packs into the record layout.
    pub fn to_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let mut packed = vec![self.cursor_a as i64, self.cursor_b as i64];
        packed.extend(self.selected_a.iter().map(|&i| i as i64));
        packed.extend(self.selected_b.iter().map(|&i| i as i64));
        packed.extend(&self.switched_a);
        packed.extend(&self.switched_b);
        let len = packed.len();
        Tensor::from_data(TensorData::new(packed, [len]), device)
    }

    /// Unpacks the record layout of a rank-`rank` layer.
    pub fn from_tensor(tensor: &Tensor<1, Int>, rank: usize) -> crate::Result<Self> {
        let values: Vec<i64> = crate::readback::data(tensor.clone())
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| Error::Record(format!("SwitchLoRA slots: {e:?}")))?;
        if values.len() != 2 + 4 * rank {
            return Err(Error::Record(format!(
                "SwitchLoRA slots hold {} values, a rank-{rank} layer needs {}",
                values.len(),
                2 + 4 * rank
            )));
        }
        let part = |k: usize| &values[2 + k * rank..2 + (k + 1) * rank];
        let indices = |k: usize| part(k).iter().map(|&v| v as usize).collect();
        Ok(Self {
            cursor_a: values[0] as usize,
            cursor_b: values[1] as usize,
            selected_a: indices(0),
            selected_b: indices(1),
            switched_a: part(2).to_vec(),
            switched_b: part(3).to_vec(),
        })
    }
}
