//! The subspace optimizers, each a [`SubspaceRule`] run by the one [`SubspaceOptimizer`].
//!
//! One file per optimizer: its documented `Config` (defaults, paper link, `build()` for the
//! bare optimizer and `init()` for a `ModuleOptimizer`) and its rule. How a recipe reads each
//! config is [`recipe`](crate::recipe)'s.
//!
//! - [`galore`]: Adam on the projected gradient, projected back.
//! - [`fira`]: GaLore plus the scaled, growth-limited residual.
//! - [`frugal`]: PyTorch AdamW in the subspace plus a state-free update outside it; with no
//!   residual update it is DCT-AdamW.
//! - [`apollo`]: the raw gradient scaled per channel by the ratio the projected state estimates.
//! - [`adamw`]: Burn's AdamW with quantizable moments, for the parameters kept dense.

pub mod adamw;
pub mod apollo;
pub mod fira;
pub mod frugal;
pub mod galore;
mod scaling;
mod subspace;

pub use adamw::{DenseAdamW, DenseAdamWConfig, DenseOptimizer};
pub use apollo::{Apollo, ApolloConfig, ApolloRule};
pub use fira::{Fira, FiraConfig, FiraRule};
pub use frugal::{Frugal, FrugalConfig, FrugalRule, Residual};
pub use galore::{GaLore, GaLoreConfig, GaLoreRule};
pub use scaling::ScaleGranularity;
pub use subspace::{
    DenseUpdate, MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule, SubspaceState,
    SubspaceStep, WeightDecay,
};

use crate::guard::GuardedState;

/// Per-parameter [`GaLore`] state: the guard's around a [`SubspaceState`].
pub type GaLoreState<const D: usize> = GuardedState<SubspaceState<D>>;
/// Per-parameter [`Fira`] state: GaLore's plus the limiter's previous norm.
pub type FiraState<const D: usize> = GuardedState<SubspaceState<D>>;
/// Per-parameter [`Frugal`] state (moments are `None` while a block is state-free).
pub type FrugalState<const D: usize> = GuardedState<SubspaceState<D>>;
/// Per-parameter [`Apollo`] state: projected moments plus the limiter's previous norm.
pub type ApolloState<const D: usize> = GuardedState<SubspaceState<D>>;
