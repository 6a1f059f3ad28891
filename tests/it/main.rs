//! The library's integration tests, one binary: parity with the reference implementations,
//! every optimizer through `ModuleOptimizer`, quantized moments, recipes, replicas, bad input
//! and the crate's layering. (Tests that seed Burn's global RNG run in binaries of their own,
//! `learner`, `device_path` and `pretrain_example`, so no test here draws between a seed and
//! the model it is for.)

#[path = "../common/mod.rs"]
mod common;

mod all_optimizers;
mod bad_input;
mod drop_in;
mod galore_parity;
mod layer_layout;
mod layers;
mod peer_parity;
mod projection;
mod quantized;
mod recipe;
mod reference_math;
mod replicas;
mod subspace_kinds;
mod switchlora;
