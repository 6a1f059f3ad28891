//! GaLore through burn-train: the pretraining example's small LLaMA trained on the bundled text
//! by Burn's own `Learner`, with loss, perplexity and learning-rate metrics, a checkpoint after
//! every epoch, and resume. The optimizer is what `Router::build` returns: a plain
//! `ModuleOptimizer`, so nothing else changes.
//!
//! Run: `cargo run --release --bin learner`; continue an earlier run from the checkpoint of
//! its epoch 2 with `cargo run --release --bin learner -- --resume 2`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::AdamWConfig;
use burn::tensor::Device;
use burn_train::metric::{LearningRateMetric, LossMetric, PerplexityMetric};
use burn_train::{Learner, SupervisedTraining};
use clap::Parser;
use lowrank_optim::{GaLoreConfig, Router};

use pretrain_llama::data::{shuffled_windows, Corpus, BYTE_VOCAB};
use pretrain_llama::learner_steps::TokenBatcher;
use pretrain_llama::model::LlamaDims;

/// Train a small LLaMA with GaLore through burn-train's Learner.
#[derive(Parser, Debug)]
struct Args {
    /// Epochs over the training split.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Continue from the checkpoint written after this epoch (in --out).
    #[arg(long, value_name = "EPOCH")]
    resume: Option<usize>,
    /// Where metrics and checkpoints go.
    #[arg(long, default_value = "results/learner")]
    out: PathBuf,
    /// UTF-8 text to train on.
    #[arg(long, default_value = "data/shakespeare.txt")]
    data: PathBuf,
    /// Train on the first N sequences of the (shuffled) training split only (a quick look).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

const SEQ_LEN: usize = 128;
const BATCH: usize = 16;
const LR: f64 = 0.01;

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.epochs == 0 || args.resume.is_some_and(|e| e >= args.epochs) {
        return Err(format!(
            "--epochs must be at least 1 and above --resume (got {} and {:?})",
            args.epochs, args.resume
        )
        .into());
    }
    let corpus = Corpus::load(&args.data, 0.1, SEQ_LEN + 1)?;
    // A fixed order, so a resumed run sees the batches the uninterrupted one would.
    let mut train = shuffled_windows(&corpus.train, SEQ_LEN + 1, 42);
    let mut valid = shuffled_windows(&corpus.validation, SEQ_LEN + 1, 43);
    if let Some(n) = args.limit {
        train.truncate(n.max(1));
        valid.truncate(n.max(1));
    }
    let steps_per_epoch = train.len().div_ceil(BATCH);

    let device = Device::default().autodiff();
    device.seed(42);
    let dims = LlamaDims {
        vocab: BYTE_VOCAB,
        d_model: 128,
        layers: 4,
        heads: 4,
        ffn: 344,
        max_seq: SEQ_LEN,
    };
    let model = dims.init(&device, None)?;

    // GaLore on the attention and MLP matrices, AdamW on the rest: an ordinary ModuleOptimizer.
    let galore = GaLoreConfig::new()
        .with_rank(32)
        .with_update_proj_gap(50)
        .build()?;
    let adamw = AdamWConfig::new().with_weight_decay(0.0).build();
    let optim = Router::llama()
        .with_vocab_size(BYTE_VOCAB)
        .build(&model, galore, adamw)?;
    let schedule = CosineAnnealingLrSchedulerConfig::new(LR, args.epochs * steps_per_epoch)
        .with_min_lr(LR * 0.1)
        .init()?;
    let learner = Learner::new(model, optim, schedule);

    let loader = |items: Vec<Vec<i64>>| {
        DataLoaderBuilder::new(TokenBatcher)
            .batch_size(BATCH)
            .build(InMemDataset::new(items))
    };
    let mut training = SupervisedTraining::new(&args.out, loader(train), loader(valid))
        .metrics((LossMetric::new(), PerplexityMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .num_epochs(args.epochs)
        .summary();
    if let Some(epoch) = args.resume {
        let saved = args
            .out
            .join("checkpoint")
            .join(format!("optim-{epoch}.bpk"));
        if !saved.exists() {
            return Err(format!("cannot resume: no checkpoint {}", saved.display()).into());
        }
        training = training.checkpoint(epoch);
    }
    let started = Instant::now();
    let result = training.launch(learner);
    if let Some(error) = result.error {
        return Err(format!("training failed: {error}").into());
    }
    let epochs = args.epochs - args.resume.unwrap_or(0);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{epochs} epoch{} of {steps_per_epoch} steps in {seconds:.1} s ({:.0} ms per step, \
         validation included); checkpoints in {}",
        if epochs == 1 { "" } else { "s" },
        1e3 * seconds / (epochs * steps_per_epoch).max(1) as f64,
        args.out.join("checkpoint").display()
    );
    Ok(())
}
