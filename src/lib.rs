#![warn(missing_docs)]
//! Memory-efficient low-rank and subspace optimizers for [Burn](https://burn.dev).
//!
//! Adam keeps two full-size moments per weight. The optimizers here keep them in a low-rank
//! subspace of each weight matrix instead, and drop into Burn as ordinary
//! [`burn::optim::Optimizer`]s, so `ModuleOptimizer`, gradient clipping, schedulers and
//! checkpoints keep working.
//!
//! - [`GaLore`]: Adam on the projection of the gradient onto its top singular vectors.
//! - [`Fira`]: GaLore plus a norm-scaled, growth-limited full-rank update from the residual.
//! - [`Frugal`]: AdamW in a subspace (SVD, DCT, random, coordinates, or whole blocks) plus
//!   signSGD outside it; with no residual update it is DCT-AdamW.
//! - [`Apollo`]: the raw gradient scaled per channel by a ratio estimated in a random
//!   projection (APOLLO, and APOLLO-Mini at rank 1).
//! - [`switchlora`]: SwitchLoRA, low-rank adapters whose vectors are switched with candidates,
//!   as a Burn module plus an optimizer with per-vector step counters.
//! - [`optim`]: GaLore, Fira, FRUGAL and APOLLO, each a small update rule run by one shared
//!   [`SubspaceOptimizer`](optim::SubspaceOptimizer); and `DenseAdamW`, AdamW with quantizable
//!   moments for the parameters kept dense.
//! - [`guard`]: the one wrapper that skips a gradient holding a NaN or an infinity, around
//!   every optimizer here (on the device, without a host read, on GPU backends).
//! - [`projection`]: the subspace manager every projected optimizer shares (side, basis by exact
//!   or randomized SVD, DCT columns, random matrices or coordinates, refresh schedule and
//!   adaptive gap, what happens to the moments at a refresh).
//! - [`Router`]: GaLore on attention/MLP matrices, AdamW on everything else, as one
//!   `ModuleOptimizer`.
//! - [`memory`]: exact optimizer-state bytes, per parameter and in total, against AdamW.
//! - [`recipe`]: published setups as TOML files (`optimizers/*.toml`) turned into optimizers.
//! - [`clip`]: gradient clipping by the global norm, as the published recipes do.
//!
//! # Drop-in
//!
//! ```
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::{AdamWConfig, GradientsParams};
//! use burn::tensor::{Device, Tensor};
//! use lowrank_optim::{GaLoreConfig, Router};
//!
//! let device = Device::default().autodiff();
//! let mut model: Linear = LinearConfig::new(64, 32).init(&device);
//!
//! // GaLore (rank 8) on every 2-D weight, AdamW on the bias.
//! let galore = GaLoreConfig::new().with_rank(8).build()?;
//! let adamw = AdamWConfig::new().with_weight_decay(0.0).build();
//! let mut optim = Router::llama().build(&model, galore, adamw)?;
//!
//! let x = Tensor::<2>::ones([4, 64], &device);
//! for _ in 0..3 {
//!     let loss = model.forward(x.clone()).square().mean();
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optim.step(1e-3, model, grads);
//! }
//! # Ok::<(), lowrank_optim::Error>(())
//! ```

extern crate alloc;

// Needed at the crate root by `#[derive(RecordState)]`.
#[allow(unused_imports)]
use burn::optim::{join_index, join_path, RecordState, StateSink, StateSource};

pub mod adam;
pub mod clip;
mod error;
pub mod groups;
pub mod guard;
mod matrix;
pub mod memory;
pub mod optim;
pub mod projection;
pub mod quant;
pub mod readback;
pub mod recipe;
mod rng;
mod setters;
pub mod switchlora;

pub use error::{Error, Result};
pub use groups::{MatrixOptimizer, ParamInfo, ParamRole, Router};
pub use matrix::is_host_device;
pub use memory::{MemoryReport, StateFootprint};
pub use optim::{
    Apollo, ApolloConfig, ApolloState, Fira, FiraConfig, FiraState, Frugal, FrugalConfig,
    FrugalState, GaLore, GaLoreConfig, GaLoreState, Residual, ScaleGranularity, SubspaceState,
};
pub use projection::{
    DctNorm, DctScoring, MomentPolicy, ProjType, ProjectionMethod, Side, SubspaceConfig,
};
pub use quant::MomentPrecision;
