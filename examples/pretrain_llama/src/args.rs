//! Command-line options: a preset and a recipe, each hyperparameter overridable.

use std::path::PathBuf;

use clap::Parser;

use crate::model::LlamaDims;

/// Pretrain a small LLaMA-style model on bundled text with memory-efficient optimizers.
///
/// Without --optimizer, trains every recipe in --recipes with the same model, data, steps and
/// seed, and writes a comparison (CSV, markdown table, PNG plot) to --out.
#[derive(Parser, Debug, Clone)]
#[command(name = "pretrain_llama", version, args_override_self = true)]
pub struct Args {
    /// Train with one recipe (a TOML file from optimizers/) instead of comparing all of them.
    #[arg(long, value_name = "RECIPE.toml")]
    pub optimizer: Option<PathBuf>,
    /// Compare every recipe in --recipes (the default when --optimizer is not given).
    #[arg(long)]
    pub compare: bool,
    /// Folder of recipes for --compare and --report-memory.
    #[arg(long, default_value = "optimizers")]
    pub recipes: PathBuf,
    /// Print the optimizer-state memory of every recipe for a preset, without training.
    #[arg(long, value_name = "PRESET")]
    pub report_memory: Option<String>,
    /// Model size: tiny, small, llama-60m, llama-130m, llama-350m or llama-1b.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Hidden size (overrides the preset).
    #[arg(long)]
    pub d_model: Option<usize>,
    /// Decoder blocks (overrides the preset).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads (overrides the preset).
    #[arg(long)]
    pub heads: Option<usize>,
    /// MLP inner size (overrides the preset).
    #[arg(long)]
    pub ffn: Option<usize>,
    /// Subspace rank of projected optimizers (default: the preset's, as paired in the papers).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Tokens per training sequence.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches accumulated into one optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate (default: the recipe's).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Fraction of the steps spent in linear warm-up (default: the recipe's, else 0.1).
    #[arg(long, allow_negative_numbers = true)]
    pub warmup: Option<f64>,
    /// Final learning rate as a fraction of the peak (default: the recipe's, else 0.1).
    #[arg(long, allow_negative_numbers = true)]
    pub min_lr_fraction: Option<f64>,
    /// Global gradient-norm clipping threshold (default: the recipe's, else 1.0; 0 disables).
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f64>,
    /// Seed of the weights and the batches.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// UTF-8 text to train on.
    #[arg(long, default_value = "data/shakespeare.txt")]
    pub data: PathBuf,
    /// Fraction of the text (its end) kept for validation.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub val_fraction: f64,
    /// Validate (and checkpoint) every N steps, and at the end.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Where results and checkpoints go.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Resume from a checkpoint folder written by an earlier run (results/<recipe>/checkpoint).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint) after this step, to continue later with --resume.
    #[arg(long, value_name = "STEP")]
    pub stop_at: Option<usize>,
    /// Smoke test: fail (exit code 1) unless every run's loss falls.
    #[arg(long)]
    pub check_loss_falls: bool,
    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
    /// Store every optimizer's moments at these precisions (f32, q8, q4; comma-separated): a
    /// comparison runs each recipe at each, named `<recipe>-q8`, ...; one run takes one value.
    /// Default: the recipes' own.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub moments: Vec<String>,
    /// Refresh every subspace every N steps (overrides the recipes' `update_proj_gap`; recipes
    /// that reselect every step, like DCT-AdamW, keep theirs).
    #[arg(long, value_name = "N")]
    pub update_proj_gap: Option<usize>,
    /// Write what each run starts from into DIR/<recipe>/ for a PyTorch twin run
    /// (`benches/peers/twin.py`): initial weights (`init.safetensors`) and the data, schedule and
    /// clipping of every step (`twin.json`).
    #[arg(long, value_name = "DIR")]
    pub export_twin: Option<PathBuf>,
    /// Overlay the twin runs found in DIR/<recipe>/history.csv on the comparison's plot and
    /// compare them in `twins.md`.
    #[arg(long, value_name = "DIR")]
    pub twins: Option<PathBuf>,
    /// Rebuild the comparison (table, CSV, plot) from the runs already in --out, training nothing.
    #[arg(long)]
    pub report_only: bool,
    /// Train every recipe of a comparison with N seeds (--seed, --seed + 1, ...; weights and
    /// batches) and report the mean and standard deviation of the validation perplexity.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seeds: usize,
    /// Before a comparison, search each recipe's learning rate on a fraction of the steps
    /// (--tune-fraction) over --lr-grid, then compare at each recipe's best.
    #[arg(long)]
    pub tune_lr: bool,
    /// The learning rates --tune-lr tries (comma-separated; default: the recipe's x 1/3, 1, 3).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub lr_grid: Vec<f64>,
    /// Fraction of --steps each --tune-lr run trains (its schedule compressed to that length).
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    pub tune_fraction: f64,
    /// How many more lrs --tune-lr may try beyond the grid's edge while the best is on it (each
    /// one grid step further: x 3 beyond the default grid).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub tune_extend: usize,
}

impl Args {
    /// Rejects values no run can use, naming the option (clap only checks the types).
    fn check_values(&self, steps: usize) -> Result<(), String> {
        let in_range = |name: &str, value: Option<f64>, ok: fn(f64) -> bool, what: &str| match value
        {
            Some(v) if !(v.is_finite() && ok(v)) => Err(format!("{name} must be {what}, not {v}")),
            _ => Ok(()),
        };
        in_range("--lr", self.lr, |v| v > 0.0 && v <= 1.0, "in (0, 1]")?;
        in_range(
            "--warmup",
            self.warmup,
            |v| (0.0..1.0).contains(&v),
            "a fraction in [0, 1)",
        )?;
        in_range(
            "--min-lr-fraction",
            self.min_lr_fraction,
            |v| (0.0..=1.0).contains(&v),
            "a fraction in [0, 1]",
        )?;
        if self.export_twin.is_some() && self.resume.is_some() {
            return Err("--export-twin writes a run's start, which a --resume run has left".into());
        }
        if self.seeds == 0 {
            return Err("--seeds must be at least 1".into());
        }
        if !(self.tune_fraction > 0.0 && self.tune_fraction <= 1.0) {
            return Err(format!(
                "--tune-fraction must be a fraction in (0, 1], not {}",
                self.tune_fraction
            ));
        }
        if let Some(bad) = self
            .lr_grid
            .iter()
            .find(|v| !(v.is_finite() && **v > 0.0 && **v <= 1.0))
        {
            return Err(format!("--lr-grid values must be in (0, 1], not {bad}"));
        }
        if self.update_proj_gap == Some(0) {
            return Err("--update-proj-gap must be at least 1".into());
        }
        in_range(
            "--clip",
            self.clip,
            |v| v >= 0.0,
            ">= 0 (0 disables clipping)",
        )?;
        match self.stop_at {
            Some(stop) if stop == 0 || stop > steps => Err(format!(
                "--stop-at must be a step in 1..={steps} (--steps), not {stop}"
            )),
            _ => Ok(()),
        }
    }
}

/// A model size with the training settings it is run with here.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub rank: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub steps: usize,
    pub eval_every: usize,
}

/// `tiny` runs in minutes on a laptop CPU, `small` (d 256, 6 layers, 2,000 steps) in about 40
/// minutes a recipe on one shared CPU core, for the orderings a longer run shows; the others are
/// the GaLore paper's LLaMA sizes (hidden / intermediate / heads / layers, rank) with its
/// sequence length 256 and batch 512 left to the user's hardware (batch here: 64 per step,
/// scale with --grad-accum).
pub const PRESETS: [Preset; 6] = [
    Preset {
        name: "tiny",
        d_model: 128,
        layers: 4,
        heads: 4,
        ffn: 344,
        rank: 32,
        seq_len: 128,
        batch_size: 16,
        steps: 300,
        eval_every: 50,
    },
    Preset {
        name: "small",
        d_model: 256,
        layers: 6,
        heads: 4,
        ffn: 688,
        rank: 64,
        seq_len: 128,
        batch_size: 4,
        steps: 2000,
        eval_every: 200,
    },
    Preset {
        name: "llama-60m",
        d_model: 512,
        layers: 8,
        heads: 8,
        ffn: 1376,
        rank: 128,
        seq_len: 256,
        batch_size: 64,
        steps: 10_000,
        eval_every: 1000,
    },
    Preset {
        name: "llama-130m",
        d_model: 768,
        layers: 12,
        heads: 12,
        ffn: 2048,
        rank: 256,
        seq_len: 256,
        batch_size: 64,
        steps: 20_000,
        eval_every: 1000,
    },
    Preset {
        name: "llama-350m",
        d_model: 1024,
        layers: 24,
        heads: 16,
        ffn: 2736,
        rank: 256,
        seq_len: 256,
        batch_size: 64,
        steps: 60_000,
        eval_every: 1000,
    },
    Preset {
        name: "llama-1b",
        d_model: 2048,
        layers: 24,
        heads: 32,
        ffn: 5461,
        rank: 512,
        seq_len: 256,
        batch_size: 64,
        steps: 100_000,
        eval_every: 1000,
    },
];

pub fn preset(name: &str) -> Result<Preset, String> {
    PRESETS
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            format!(
                "unknown preset `{name}`; choose one of {}",
                names.join(", ")
            )
        })
}

/// Everything a run needs, after applying the overrides to the preset.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub dims: LlamaDims,
    pub rank: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub steps: usize,
    pub eval_every: usize,
}

impl Args {
    pub fn settings(&self, vocab: usize) -> Result<RunSettings, String> {
        let p = preset(&self.preset)?;
        let seq_len = self.seq_len.unwrap_or(p.seq_len);
        let dims = LlamaDims {
            vocab,
            d_model: self.d_model.unwrap_or(p.d_model),
            layers: self.layers.unwrap_or(p.layers),
            heads: self.heads.unwrap_or(p.heads),
            ffn: self.ffn.unwrap_or(p.ffn),
            max_seq: seq_len,
        };
        dims.validate()?;
        let settings = RunSettings {
            dims,
            rank: self.rank.unwrap_or(p.rank),
            seq_len,
            batch_size: self.batch_size.unwrap_or(p.batch_size),
            grad_accum: self.grad_accum,
            steps: self.steps.unwrap_or(p.steps),
            eval_every: self.eval_every.unwrap_or(p.eval_every),
        };
        self.check_values(settings.steps)?;
        for (name, value) in [
            ("--rank", settings.rank),
            ("--batch-size", settings.batch_size),
            ("--grad-accum", settings.grad_accum),
            ("--steps", settings.steps),
            ("--eval-every", settings.eval_every),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(settings)
    }
}
