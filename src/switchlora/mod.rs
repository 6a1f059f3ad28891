//! SwitchLoRA (Zhou et al., 2024, [arXiv:2406.06564](https://arxiv.org/abs/2406.06564)):
//! low-rank adapters whose vectors are frequently swapped with spare candidates, so training
//! through a rank-`r` adapter still reaches full-rank updates of the weight.
//!
//! - [`SwitchLoraLinear`]: a frozen base weight plus `lora_a`/`lora_b` and their candidate pools
//!   (host memory by default); [`SwitchableLinear`] lets a model pick dense or SwitchLoRA per run
//!   and merge back to dense linears.
//! - [`Switcher`]: the reference schedule (`0.3^((t+1)/D)`, interval 40) and the switch itself,
//!   which leaves the model's output unchanged.
//! - [`SwitchLoraConfig::build`]: an ordinary `ModuleOptimizer` (AdamW with per-vector step
//!   counters on the adapters, any optimizer on the rest) wired to the switcher, which resets and
//!   freezes the counterparts of switched vectors.
//! - [`SwitchLoraMemory`]: trainable, optimizer-state and candidate bytes.
//!
//! - [`SwitchClock`]: the step count as a field of the model, for loops that do not count
//!   steps (burn-train's `Learner`: switch in `TrainStep::optimize`).
//!
//! One training step: forward, backward, clip, `switcher.switch(model, step)`, `optim.step(..)`.
//! Save the module record and the optimizer record after `optim.step`: together they restore a
//! run exactly (the switch draws are a function of the step). The switcher hands resets to the
//! optimizer through a shared [`Switchboard`], so one process steps one optimizer: burn-train's
//! single-device and `MultiDevice` strategies, not DDP (whose replicas would race on it).

mod clock;
mod layers;
mod linear;
mod memory;
mod optim;
mod resident;
mod schedule;
mod switcher;

pub use clock::SwitchClock;
pub use linear::{
    init_bounds, Adapter, CandidatePlacement, Slots, SwitchLoraLinear, SwitchLoraLinearConfig,
    SwitchableLinear,
};
pub use memory::{load_record, AdapterFootprint, SwitchLoraMemory};
pub use optim::{AdapterAdam, AdapterAdamState, SwitchLoraConfig, Vectors};
pub use resident::Resident;
pub use schedule::SwitchScheduleConfig;
pub use switcher::{SwitchCount, Switchboard, Switcher};
