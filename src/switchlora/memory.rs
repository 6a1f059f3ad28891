//! What SwitchLoRA keeps in memory, and loading its module records with checked ranks.

use std::collections::{HashMap, HashSet};

use burn::module::Module;
use burn::store::ModuleRecord;

use super::layers::find_layers;
use crate::error::{Error, Result};
use crate::groups::ParamInfo;
use crate::memory::{format_bytes, record_tensors, StateFootprint, F32_BYTES};
use crate::quant::MomentFormat;

/// The optimizer state of a rank-`rank` SwitchLoRA layer in place of a dense matrix, for
/// [`MemoryReport::estimate`](crate::MemoryReport::estimate) on the dense model: the adapters'
/// two moments `2 r (d_in + d_out)` at their precision plus a step and a freeze counter per
/// vector (`4 r`, 32-bit).
///
/// ```
/// use lowrank_optim::adam::AdamParams;
/// use lowrank_optim::switchlora::AdapterFootprint;
/// use lowrank_optim::StateFootprint;
///
/// let f32 = AdapterFootprint { rank: 8, moments: AdamParams::new().moment_format() };
/// assert_eq!(f32.state_bytes(&[64, 32], 0), 4 * (2 * 8 * 96 + 4 * 8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterFootprint {
    /// The adapter rank (clamped to the matrix's smaller side).
    pub rank: usize,
    /// How the adapters' moments are stored.
    pub moments: MomentFormat,
}

impl StateFootprint for AdapterFootprint {
    fn state_bytes(&self, shape: &[usize], _ordinal: usize) -> usize {
        let [d_in, d_out] = [shape[0], shape.get(1).copied().unwrap_or(1)];
        let rank = self.rank.min(d_in).min(d_out);
        self.moments.pair_bytes(&[d_in, rank])
            + self.moments.pair_bytes(&[rank, d_out])
            + F32_BYTES * 4 * rank
    }
}

/// Memory of a SwitchLoRA model, in bytes, from shapes alone.
///
/// Device memory holds the trainable parameters, the frozen base weights and the optimizer
/// state; the candidate pools sit in host memory unless a layer was built with
/// [`CandidatePlacement::Device`](super::CandidatePlacement::Device). The optimizer state is the
/// adapters' two moments plus two 32-bit counters per vector (step, freeze), and AdamW's two
/// moments for every other trainable parameter, which is what the optimizer record holds once
/// every parameter has been stepped.
///
/// ```
/// use burn::tensor::Device;
/// use lowrank_optim::switchlora::{SwitchLoraLinearConfig, SwitchLoraMemory};
///
/// let layer = SwitchLoraLinearConfig::new(64, 32, 8).init(&Device::default())?;
/// let memory = SwitchLoraMemory::estimate(&layer);
/// assert_eq!(memory.trainable_bytes, 4 * (64 * 8 + 8 * 32));
/// assert_eq!(memory.candidate_bytes, 4 * 32 * (64 + 32));
/// assert_eq!(memory.optimizer_bytes, 2 * memory.trainable_bytes + 2 * 4 * (8 + 8));
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchLoraMemory {
    /// Trainable parameters (adapters and every parameter outside the SwitchLoRA layers).
    pub trainable_bytes: usize,
    /// Frozen base weights of the SwitchLoRA layers.
    pub frozen_bytes: usize,
    /// Optimizer state once every trainable parameter has been stepped.
    pub optimizer_bytes: usize,
    /// Candidate pools (host memory by default).
    pub candidate_bytes: usize,
    /// AdamW's state for the same model with dense linears.
    pub adamw_bytes: usize,
}

impl SwitchLoraMemory {
    /// Counts the memory of `model` (with or without SwitchLoRA layers).
    pub fn estimate<M: Module>(model: &M) -> Self {
        let layers = find_layers(model);
        let mut frozen = HashSet::new();
        let mut adapters = HashMap::new();
        let mut memory = Self {
            trainable_bytes: 0,
            frozen_bytes: 0,
            optimizer_bytes: 0,
            candidate_bytes: 0,
            adamw_bytes: 0,
        };
        for layer in &layers {
            for part in [&layer.candidates_a, &layer.candidates_b]
                .into_iter()
                .flatten()
            {
                memory.candidate_bytes += F32_BYTES * part.value.shape().num_elements();
                frozen.insert(part.id);
            }
            if let Some(weight) = &layer.weight {
                memory.frozen_bytes += F32_BYTES * weight.value.shape().num_elements();
                frozen.insert(weight.id);
            }
            for (part, dim) in [(&layer.lora_a, 1), (&layer.lora_b, 0)] {
                if let Some(part) = part {
                    adapters.insert(part.id, part.value.dims()[dim]);
                }
            }
        }
        for p in ParamInfo::collect(model) {
            if frozen.contains(&p.id) {
                continue;
            }
            let bytes = F32_BYTES * p.numel();
            memory.trainable_bytes += bytes;
            memory.optimizer_bytes += 2 * bytes;
            if let Some(vectors) = adapters.get(&p.id) {
                memory.optimizer_bytes += 2 * F32_BYTES * vectors;
            } else {
                memory.adamw_bytes += 2 * bytes;
            }
        }
        memory.adamw_bytes += 2 * memory.frozen_bytes;
        memory
    }

    /// Optimizer state as a fraction of AdamW's on the dense model.
    pub fn fraction_of_adamw(&self) -> f64 {
        match self.adamw_bytes {
            0 => 0.0,
            adamw => self.optimizer_bytes as f64 / adamw as f64,
        }
    }
}

impl core::fmt::Display for SwitchLoraMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "trainable parameters (device)  {}",
            format_bytes(self.trainable_bytes)
        )?;
        writeln!(
            f,
            "frozen base weights (device)   {}",
            format_bytes(self.frozen_bytes)
        )?;
        writeln!(
            f,
            "candidate pools (host)         {}",
            format_bytes(self.candidate_bytes)
        )?;
        write!(
            f,
            "optimizer state (device)       {} = {:.1}% of AdamW's {} on the dense model",
            format_bytes(self.optimizer_bytes),
            100.0 * self.fraction_of_adamw(),
            format_bytes(self.adamw_bytes)
        )
    }
}

/// Loads `record` into `model` like [`Module::try_load_record`], first checking that every
/// SwitchLoRA layer has the same rank in both (a typed error naming the layer otherwise).
pub fn load_record<M: Module>(model: M, record: ModuleRecord) -> Result<M> {
    let unreadable = |e: &dyn core::fmt::Display| Error::Record(e.to_string());
    let bytes = record.into_bytes().map_err(|e| unreadable(&e))?;
    let shapes: HashMap<String, Vec<usize>> = record_tensors(bytes.clone())?
        .into_iter()
        .map(|t| (t.name, t.shape.to_vec()))
        .collect();
    for layer in find_layers(&model) {
        let (Some(a), Some(shape)) = (&layer.lora_a, shapes.get(&layer.field_path("lora_a")))
        else {
            continue;
        };
        let (model_rank, record_rank) = (a.value.dims()[1], shape.get(1).copied().unwrap_or(0));
        if model_rank != record_rank {
            return Err(Error::RankMismatch {
                path: layer.path,
                model: model_rank,
                record: record_rank,
            });
        }
    }
    let record = ModuleRecord::from_bytes(bytes).map_err(|e| unreadable(&e))?;
    model.try_load_record(record).map_err(|e| unreadable(&e))
}
