//! Training-step time and device memory of a few recipes on one model, on the device
//! `BURN_DEVICE` picks: the GPU comparison of `benches/gpu.sh`.
//!
//! Each recipe builds the same LLaMA-shaped model, takes `--warmup` untimed steps (the first
//! one computes every subspace), then `--steps` timed training steps (forward, backward,
//! global-norm clipping, optimizer, and a device sync) between refreshes. Reported per recipe:
//! the mean training step and the mean optimizer step alone, the host reads of one optimizer
//! step, the optimizer state counted from its record, and, on cubecl backends (wgpu, vulkan,
//! cuda), the device allocator's bytes in use after a step, taken as the difference to AdamW's
//! (the model and the gradients' buffers are the same for every recipe).
//!
//! ```text
//! BURN_DEVICE=wgpu cargo run --release --features vulkan --bin device_step -- \
//!     --preset llama-60m --recipes adamw,galore,fira,apollo-mini
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::Device;
use clap::Parser;
use lowrank_optim::clip::clip_grad_norm;
use lowrank_optim::memory::format_bytes;
use lowrank_optim::recipe::Recipe;
use lowrank_optim::{readback, MemoryReport, Router};
use pretrain_llama::{args, data, model};

/// Training-step time and device memory per recipe.
#[derive(Parser, Debug)]
struct Args {
    /// Model size, as the pretraining example's presets: tiny, llama-60m, llama-130m, ...
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Recipes from optimizers/, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "adamw,galore,fira,apollo-mini"
    )]
    recipes: Vec<String>,
    /// Untimed steps before the timed ones (the first computes the subspaces).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Sequences per batch (default: the preset's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per sequence (default: the preset's).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What one recipe measured.
struct Measured {
    name: String,
    step_ms: f64,
    optim_ms: f64,
    reads_per_step: f64,
    state_bytes: usize,
    device_bytes: Option<u64>,
}

fn measure(args: &Args, p: &args::Preset, name: &str, device: &Device) -> Result<Measured, String> {
    let mut recipe =
        Recipe::load(format!("optimizers/{name}.toml")).map_err(|e| format!("{name}: {e}"))?;
    // The preset's rank, as the pretraining example uses it (rank-1 recipes keep theirs).
    let rank = recipe.table.get("rank").and_then(|v| v.as_integer());
    if rank.is_some_and(|r| r > 1) {
        recipe.table.set("rank", p.rank as i64);
    }
    let seq_len = args.seq_len.unwrap_or(p.seq_len);
    let dims = model::LlamaDims {
        vocab: data::BYTE_VOCAB,
        d_model: p.d_model,
        layers: p.layers,
        heads: p.heads,
        ffn: p.ffn,
        max_seq: seq_len,
    };
    let text = std::fs::read_to_string("data/shakespeare.txt")
        .map_err(|e| format!("data/shakespeare.txt: {e}"))?;
    let corpus = data::Corpus::from_text(&text, 0.1, seq_len + 1)?;
    device.seed(1);
    let adapter = recipe.adapter().map_err(|e| e.to_string())?;
    let mut model = dims.init(device, adapter)?;
    let (mut optim, switcher) = recipe
        .build_with_switcher(&model, &Router::llama(), 1 << 30)
        .map_err(|e| e.to_string())?;
    let mut batches = data::Batches::new(1, args.batch_size.unwrap_or(p.batch_size), seq_len);
    let sync = |device: &Device| device.sync().map_err(|e| format!("device sync: {e:?}"));
    let (mut step_s, mut optim_s, mut reads) = (0.0, 0.0, 0usize);
    let mut device_bytes = None;
    for step in 0..args.warmup + args.steps {
        let started = Instant::now();
        let loss = model.loss(batches.next(&corpus.train, device));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (grads, _) = clip_grad_norm(grads, &model, 1.0);
        if let Some(switcher) = &switcher {
            model = switcher.switch(model, step).map_err(|e| e.to_string())?.0;
        }
        sync(device)?;
        let (optim_started, reads_before) = (Instant::now(), readback::reads());
        model = optim.step(1e-3, model, grads);
        let step_reads = readback::reads() - reads_before;
        sync(device)?;
        if step >= args.warmup {
            optim_s += optim_started.elapsed().as_secs_f64();
            step_s += started.elapsed().as_secs_f64();
            reads += step_reads;
            device_bytes = device.memory_pool_usage().map(|u| u.bytes_in_use);
        }
    }
    let timed = args.steps.max(1) as f64;
    let memory = MemoryReport::measure(&optim, &model).map_err(|e| e.to_string())?;
    Ok(Measured {
        name: name.to_string(),
        step_ms: 1e3 * step_s / timed,
        optim_ms: 1e3 * optim_s / timed,
        reads_per_step: reads as f64 / timed,
        state_bytes: memory.state_bytes(),
        device_bytes,
    })
}

fn table(args: &Args, rows: &[Measured], device: &Device) -> String {
    let adamw = rows.iter().find(|r| r.name == "adamw");
    let mut out = format!(
        "Preset `{}` on `{device:?}`, {} timed steps after {} warm-up steps.\n\n\
         | recipe | step | vs AdamW | optimizer step | host reads / step | optimizer state | \
         device memory in use | vs AdamW (device) | vs AdamW (counted) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        args.preset, args.steps, args.warmup
    );
    for r in rows {
        let ratio = adamw.map_or("-".into(), |a| format!("{:.2}x", r.step_ms / a.step_ms));
        let (in_use, device_diff) = match (r.device_bytes, adamw.and_then(|a| a.device_bytes)) {
            (Some(b), Some(a)) => (format_bytes(b as usize), signed(b as i64 - a as i64)),
            (Some(b), None) => (format_bytes(b as usize), "-".into()),
            _ => ("-".into(), "-".into()),
        };
        let counted = adamw.map_or("-".into(), |a| {
            signed(r.state_bytes as i64 - a.state_bytes as i64)
        });
        out += &format!(
            "| {} | {:.1} ms | {ratio} | {:.1} ms | {:.1} | {} | {in_use} | {device_diff} | {counted} |\n",
            r.name,
            r.step_ms,
            r.optim_ms,
            r.reads_per_step,
            format_bytes(r.state_bytes),
        );
    }
    out
}

fn signed(bytes: i64) -> String {
    let sign = if bytes < 0 { "-" } else { "+" };
    format!("{sign}{}", format_bytes(bytes.unsigned_abs() as usize))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> Result<String, String> {
        let p = args::preset(&args.preset)?;
        let device = Device::default().autodiff();
        let mut rows = vec![];
        for name in &args.recipes {
            let row = measure(&args, &p, name, &device)?;
            eprintln!("{}: {:.1} ms per step", row.name, row.step_ms);
            rows.push(row);
        }
        let text = table(&args, &rows, &device);
        if let Some(path) = &args.out {
            std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(text)
    };
    match run() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
