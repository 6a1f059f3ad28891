//! The pretraining example's parts as a library: the LLaMA model, the bundled text and its
//! batches, the training loop with checkpoints and resume, the comparison of recipes, its
//! report, the export a PyTorch twin run starts from, and burn-train's batcher. The binaries
//! (`pretrain_llama`, `learner`, `device_step`), the tests and the benches of this crate use
//! them.

pub mod args;
pub mod compare;
pub mod data;
pub mod learner_steps;
pub mod model;
pub mod report;
pub mod train;
pub mod twin;

use std::path::PathBuf;

/// `relative` (a path from the repository root: `data/shakespeare.txt`, `optimizers/`) for the
/// tests and benches, which run in this crate's folder; the binaries take paths from the
/// working directory, as a user types them.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(relative)
}
