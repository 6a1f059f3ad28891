//! The subspace optimizers, each a [`SubspaceRule`] run by the one [`SubspaceOptimizer`].
//!
//! One file per optimizer: its documented `Config` (defaults, paper link, `build()` for the
//! bare optimizer and `init()` for a `ModuleOptimizer`), its rule, and its recipe table.
//!
//! - [`galore`]: Adam on the projected gradient, projected back.
//! - [`fira`]: GaLore plus the scaled, growth-limited residual.
//! - [`frugal`]: PyTorch AdamW in the subspace plus a state-free update outside it; with no
//!   residual update it is DCT-AdamW.
//! - [`apollo`]: the raw gradient scaled per channel by the ratio the projected state estimates.

pub mod apollo;
pub mod fira;
pub mod frugal;
pub mod galore;
mod scaling;
mod subspace;

pub use apollo::{Apollo, ApolloConfig, ApolloRule, ApolloState};
pub use fira::{Fira, FiraConfig, FiraRule, FiraState};
pub use frugal::{Frugal, FrugalConfig, FrugalRule, FrugalState, Residual};
pub use galore::{GaLore, GaLoreConfig, GaLoreRule, GaLoreState};
pub use scaling::ScaleGranularity;
pub use subspace::{
    MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule, SubspaceState, WeightDecay,
};
