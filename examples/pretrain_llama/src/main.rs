//! Pretrain a small LLaMA-style model on bundled text with any optimizer recipe, and compare them.
//!
//! `cargo run --release --bin pretrain_llama` trains every recipe in `optimizers/` on the
//! `tiny` preset (minutes on 2 CPU cores) and writes `results/`: `loss.csv`, `results.md`,
//! `validation.png` and one folder per recipe with its checkpoint. `--seeds N` repeats each run
//! with N seeds, `--tune-lr` searches each recipe's learning rate first, `--export-twin` and
//! `--twins` pair runs with their PyTorch twins (`benches/peers/twin.py`). `--help` lists every
//! option.

use std::process::ExitCode;

use burn::tensor::Device;
use clap::Parser;
use lowrank_optim::memory::format_bytes;
use lowrank_optim::recipe::Recipe;
use lowrank_optim::{MemoryReport, MomentPrecision, Router};

use pretrain_llama::args::Args;
use pretrain_llama::data::{Corpus, BYTE_VOCAB};
use pretrain_llama::{compare, train};

fn main() -> ExitCode {
    let args = Args::parse();
    match dispatch(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs what the options ask for; `Ok(false)` when `--check-loss-falls` fails.
fn dispatch(args: &Args) -> Result<bool, String> {
    if let Some(name) = &args.report_memory {
        return report_memory(args, name).map(|_| true);
    }
    let device = Device::default().autodiff();
    match &args.optimizer {
        Some(path) if !args.compare => {
            let precision = match &args.moments[..] {
                [] => None,
                [one] => Some(one.as_str()),
                _ => return Err("a single run (--optimizer) takes one --moments value".into()),
            };
            let recipe = Recipe::load(path).map_err(|e| e.to_string())?;
            let recipe = train::at_precision(recipe, precision)?;
            let settings = args.settings(BYTE_VOCAB)?;
            let corpus = Corpus::load(&args.data, args.val_fraction, settings.seq_len + 1)?;
            let summary = train::run(args, &settings, &recipe, &corpus, &device)?;
            println!(
                "{}: validation perplexity {:.2}, optimizer state {}; results in {}",
                summary.name,
                summary.final_perplexity(),
                format_bytes(summary.state_bytes),
                args.out.join(&summary.name).display()
            );
            Ok(!args.check_loss_falls || train::losses_fell(&[summary]))
        }
        _ => compare::compare(args),
    }
}

/// GaLore paper's estimates of weights + optimizer states in BF16, in GB (Table 2 / ALGORITHMS.md).
const PAPER_ESTIMATES: [(&str, f64, f64); 4] = [
    ("llama-60m", 0.36, 0.24),
    ("llama-130m", 0.76, 0.52),
    ("llama-350m", 2.06, 1.22),
    ("llama-1b", 7.80, 4.38),
];

/// Values in the SwitchLoRA adapters and in the candidate pools of a model whose routed
/// matrices become rank-`rank` SwitchLoRA layers.
fn adapter_sizes<M: burn::module::Module>(
    model: &M,
    router: &Router,
    rank: usize,
) -> (usize, usize) {
    let routed = lowrank_optim::ParamInfo::collect(model)
        .into_iter()
        .filter(|p| router.is_projected(p) && p.shape.len() == 2);
    routed.fold((0, 0), |(adapters, pools), p| {
        let (d_in, d_out) = (p.shape[0], p.shape[1]);
        let smaller = d_in.min(d_out);
        (
            adapters + rank.min(smaller) * (d_in + d_out),
            pools + smaller * (d_in + d_out),
        )
    })
}

/// Prints every recipe's optimizer-state memory for a preset, from shapes only.
fn report_memory(args: &Args, name: &str) -> Result<(), String> {
    let vocab = 32_000;
    let mut args = args.clone();
    args.preset = name.to_string();
    let settings = args.settings(vocab)?;
    // Burn initializes parameters lazily: building the model allocates no weights.
    let model = settings.dims.init(&Device::default(), None)?;
    let router = Router::llama();
    println!(
        "optimizer-state memory for {name} (vocab {vocab}, rank {}); state counted exactly from shapes\n\
         with f32, 8-bit and 4-bit moments (% of f32 AdamW's), and weights + state in BF16 (2 bytes\n\
         per value) as the GaLore paper's estimates count them",
        settings.rank
    );
    println!(
        "{:<12} {:>12} {:>7} {:>12} {:>7} {:>12} {:>7} {:>22}",
        "recipe", "state (f32)", "%", "state (q8)", "%", "state (q4)", "%", "weights+state (BF16)"
    );
    let weights: usize = lowrank_optim::ParamInfo::collect(&model)
        .iter()
        .map(|p| p.numel())
        .sum();
    for file in compare::recipe_files(&args.recipes)? {
        let (recipe, _) = train::recipe_for_run(
            &Recipe::load(&file).map_err(|e| e.to_string())?,
            settings.rank,
        );
        let report = recipe
            .estimate_memory(&model, &router)
            .map_err(|e| e.to_string())?;
        let at = |precision| {
            let mut quantized = recipe.clone();
            quantized.set_moments(precision);
            quantized
                .estimate_memory(&model, &router)
                .map_err(|e| e.to_string())
        };
        let (q8, q4) = (at(MomentPrecision::Q8)?, at(MomentPrecision::Q4)?);
        // SwitchLoRA adds its adapters to the device weights; its candidate pools stay on the host.
        let (adapters, pools) = recipe
            .adapter()
            .map_err(|e| e.to_string())?
            .map_or((0, 0), |a| adapter_sizes(&model, &router, a.rank));
        let bf16 = 2 * (weights + adapters) + report.state_bytes() / 2;
        let column = |r: &MemoryReport| {
            format!(
                "{:>12} {:>6.1}%",
                format_bytes(r.state_bytes()),
                100.0 * r.fraction_of_adamw()
            )
        };
        println!(
            "{:<12} {} {} {} {:>19.2} GB",
            recipe.name,
            column(&report),
            column(&q8),
            column(&q4),
            bf16 as f64 / 1e9
        );
        if pools > 0 {
            println!(
                "{:<12} + {} of candidate pools in host memory (f32)",
                "",
                format_bytes(4 * pools)
            );
        }
    }
    if let Some((_, full, galore)) = PAPER_ESTIMATES.iter().find(|(p, _, _)| *p == name) {
        println!("GaLore paper (BF16 weights + states): AdamW {full:.2} GB, GaLore {galore:.2} GB");
        println!(
            "GaLore paper: 8-bit GaLore cuts optimizer memory by up to 82.5% against BF16 AdamW \
             (f32 AdamW's half)"
        );
    }
    Ok(())
}
