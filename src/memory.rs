//! Optimizer-state memory: exact bytes per parameter and in total, against AdamW.
//!
//! Two sources that must agree, and are tested to: [`MemoryReport::measure`] reads the real state
//! out of a `ModuleOptimizer`'s serialized record (what a checkpoint stores, byte for byte), and
//! [`MemoryReport::estimate`] computes it from shapes through [`StateFootprint`] without
//! allocating anything (for model sizes that do not fit the machine).
//!
//! Convention: state tensors are counted at their stored width (4 bytes per `f32` float, the
//! dtype Burn's optimizers keep state in, and per `i32` index of DCT and coordinate bases);
//! scalars (step counters, seeds) are not counted; the AdamW baseline is two `f32` moments per
//! weight.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{AdamW, ModuleOptimizer};

use crate::error::{Error, Result};
use crate::groups::{ParamInfo, ParamRole, Router};

/// Bytes of one `f32` state entry.
pub const F32_BYTES: usize = 4;

/// Bytes of optimizer state an optimizer checkpoints for a parameter of a given shape; each
/// optimizer implements it beside its own type.
pub trait StateFootprint {
    /// Bytes of state tensors for a parameter of `shape` (0 for a stateless optimizer);
    /// `ordinal` is the parameter's position among those routed to this optimizer (block mode
    /// draws which tensors are state-full by it).
    fn state_bytes(&self, shape: &[usize], ordinal: usize) -> usize;
}

impl StateFootprint for AdamW {
    fn state_bytes(&self, shape: &[usize], _ordinal: usize) -> usize {
        2 * F32_BYTES * shape.iter().product::<usize>()
    }
}

/// One parameter's line of a [`MemoryReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamMemory {
    /// Dotted module path.
    pub path: String,
    /// Parameter shape.
    pub shape: Vec<usize>,
    /// Bytes of optimizer state held for it.
    pub state_bytes: usize,
    /// Bytes AdamW would hold for it (two `f32` moments).
    pub adamw_bytes: usize,
}

/// Optimizer-state memory of a whole model.
///
/// ```
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::AdamWConfig;
/// use burn::tensor::Device;
/// use lowrank_optim::{GaLoreConfig, MemoryReport, Router};
///
/// let model: Linear = LinearConfig::new(512, 1376).init(&Device::default());
/// let galore = GaLoreConfig::new().with_rank(128).build()?;
/// let report = MemoryReport::estimate(&model, &Router::llama(), &galore, &AdamWConfig::new().build());
/// // Weight: 2 * 128 * 1376 + 128 * 512 floats; bias: two full moments.
/// assert_eq!(report.state_bytes(), 4 * (2 * 128 * 1376 + 128 * 512 + 2 * 1376));
/// println!("{report}");
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryReport {
    /// One line per parameter, in module order.
    pub params: Vec<ParamMemory>,
    /// Size of the serialized optimizer record (only for measured reports).
    pub record_bytes: Option<usize>,
}

impl MemoryReport {
    /// Measures the state `optim` really holds for `module`'s parameters, from its record.
    ///
    /// Parameters that have not been stepped yet hold no state and count 0.
    pub fn measure<M: Module>(optim: &ModuleOptimizer, module: &M) -> Result<Self> {
        let bytes = optim
            .to_record()
            .into_bytes()
            .map_err(|e| Error::Record(e.to_string()))?;
        let record_bytes = bytes.len();
        let mut per_param: BTreeMap<u64, usize> = BTreeMap::new();
        for tensor in record_tensors(bytes)? {
            let (_, _, _, param_id, data) = tensor
                .into_parts()
                .map_err(|e| Error::Record(e.to_string()))?;
            if let Some(id) = param_id {
                *per_param.entry(id).or_default() += data.len();
            }
        }
        let params = model_params(module)
            .into_iter()
            .map(|p| ParamMemory {
                state_bytes: per_param.get(&p.id.val()).copied().unwrap_or(0),
                adamw_bytes: adamw_bytes(&p),
                path: p.path,
                shape: p.shape,
            })
            .collect();
        Ok(Self {
            params,
            record_bytes: Some(record_bytes),
        })
    }

    /// Computes the state that `router.build(module, projected, dense)` holds once every
    /// parameter has been stepped (in the first refresh period), from shapes alone (nothing is
    /// allocated).
    pub fn estimate<M: Module>(
        module: &M,
        router: &Router,
        projected: &(impl StateFootprint + ?Sized),
        dense: &(impl StateFootprint + ?Sized),
    ) -> Self {
        let (mut projected_count, mut dense_count) = (0, 0);
        let params = model_params(module)
            .into_iter()
            .map(|p| {
                let state_bytes = if router.is_projected(&p) {
                    projected_count += 1;
                    projected.state_bytes(&p.shape, projected_count - 1)
                } else {
                    dense_count += 1;
                    dense.state_bytes(&p.shape, dense_count - 1)
                };
                ParamMemory {
                    state_bytes,
                    adamw_bytes: adamw_bytes(&p),
                    path: p.path,
                    shape: p.shape,
                }
            })
            .collect();
        Self {
            params,
            record_bytes: None,
        }
    }

    /// Total optimizer-state bytes.
    pub fn state_bytes(&self) -> usize {
        self.params.iter().map(|p| p.state_bytes).sum()
    }

    /// Total bytes AdamW would hold for the same parameters.
    pub fn adamw_bytes(&self) -> usize {
        self.params.iter().map(|p| p.adamw_bytes).sum()
    }

    /// State bytes as a fraction of AdamW's (0 when the model has no parameters).
    pub fn fraction_of_adamw(&self) -> f64 {
        match self.adamw_bytes() {
            0 => 0.0,
            adamw => self.state_bytes() as f64 / adamw as f64,
        }
    }
}

/// The parameters of `module` that the model trains or holds (all but SwitchLoRA candidate
/// pools).
fn model_params<M: Module>(module: &M) -> Vec<ParamInfo> {
    ParamInfo::collect(module)
        .into_iter()
        .filter(|p| p.role != ParamRole::CandidatePool)
        .collect()
}

/// The tensors of a serialized (module or optimizer) record.
pub(crate) fn record_tensors(bytes: burn::tensor::Bytes) -> Result<Vec<burn_pack::Tensor>> {
    let unreadable = |e: burn_pack::Error| Error::Record(e.to_string());
    burn_pack::Reader::from_bytes(bytes)
        .map_err(unreadable)?
        .into_tensors()
        .map_err(unreadable)
}

/// What AdamW would hold for `param` in the dense model: two moments, nothing for SwitchLoRA
/// adapters (the dense model has the base weight in their place, counted on its own line).
fn adamw_bytes(param: &ParamInfo) -> usize {
    match param.role {
        ParamRole::Adapter => 0,
        _ => 2 * F32_BYTES * param.numel(),
    }
}

/// A human-readable size: `1.50 MiB`.
pub fn format_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

impl core::fmt::Display for MemoryReport {
    /// A table: one row per parameter, then the totals.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "{:<40} {:>16} {:>12} {:>12}",
            "parameter", "shape", "state", "AdamW"
        )?;
        for p in &self.params {
            writeln!(
                f,
                "{:<40} {:>16} {:>12} {:>12}",
                p.path,
                format!("{:?}", p.shape),
                format_bytes(p.state_bytes),
                format_bytes(p.adamw_bytes)
            )?;
        }
        write!(
            f,
            "total optimizer state {} = {:.1}% of AdamW's {}",
            format_bytes(self.state_bytes()),
            100.0 * self.fraction_of_adamw(),
            format_bytes(self.adamw_bytes())
        )
    }
}
