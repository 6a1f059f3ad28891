//! One training run: a recipe, the model, the data; validation, checkpoints and a summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::lr_scheduler::{
    cosine::CosineAnnealingLrSchedulerConfig, linear::LinearLrSchedulerConfig,
    sequential::SequentialLrSchedulerConfig, LrSchedulerConfig,
};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use lowrank_optim::clip::clip_grad_norm;
use lowrank_optim::recipe::{Recipe, RecipeOptimizer};
use lowrank_optim::{MemoryReport, MomentPrecision, Router};
use serde::{Deserialize, Serialize};

use crate::args::{Args, RunSettings};
use crate::data::{validation_batches, Batches, Corpus};
use crate::model::{Llama, LlamaDims};

/// What a finished run reports; written to `<out>/<recipe>/summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub steps: usize,
    pub tokens_per_step: usize,
    /// Mean training loss of each step.
    pub train_loss: Vec<f32>,
    /// `(step, validation loss)`; perplexity is `exp(loss)`.
    pub validation: Vec<(usize, f64)>,
    /// Peak learning rate of the run.
    #[serde(default)]
    pub lr: f64,
    /// Mean wall time of an optimizer step (forward, backward, clipping, optimizer), in ms.
    pub mean_step_ms: f64,
    /// Optimizer-state bytes measured from the optimizer's record at the end of the run.
    pub state_bytes: usize,
    /// What AdamW would hold for the same parameters.
    pub adamw_bytes: usize,
    /// Peak resident memory of the process (Linux `VmHWM`), if known.
    pub peak_rss_bytes: Option<usize>,
}

impl Summary {
    pub fn final_perplexity(&self) -> f64 {
        self.validation
            .last()
            .map_or(f64::NAN, |(_, loss)| loss.exp())
    }

    /// Whether the mean loss of the last tenth of the steps is below that of the first tenth.
    pub fn loss_fell(&self) -> bool {
        let n = (self.train_loss.len() / 10).max(1);
        let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
        self.train_loss.len() >= 2
            && mean(&self.train_loss[self.train_loss.len() - n..]) < mean(&self.train_loss[..n])
    }
}

/// Whether every run's loss fell ([`Summary::loss_fell`]), naming on stderr each that did not.
pub fn losses_fell(summaries: &[Summary]) -> bool {
    let mut ok = true;
    for s in summaries.iter().filter(|s| !s.loss_fell()) {
        eprintln!("check failed: the training loss of {} did not fall", s.name);
        ok = false;
    }
    ok
}

/// Everything that must match for a checkpoint to be resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunIdentity {
    recipe: String,
    dims: [usize; 6],
    rank: usize,
    seq_len: usize,
    batch_size: usize,
    grad_accum: usize,
    steps: usize,
    seed: u64,
    lr: f64,
    train_tokens: usize,
}

/// `<checkpoint>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    identity: RunIdentity,
    step: usize,
    train_loss: Vec<f32>,
    validation: Vec<(usize, f64)>,
    step_ms_total: f64,
}

fn dims_array(d: &LlamaDims) -> [usize; 6] {
    [d.vocab, d.d_model, d.layers, d.heads, d.ffn, d.max_seq]
}

/// The recipe as this run uses it: the run's rank (the preset's, or `--rank`) replaces the
/// recipe's own for every optimizer with a fixed rank, since published ranks are for 60M+
/// models; rank-1 recipes (APOLLO-Mini) and FRUGAL's density keep their own. Returns the
/// recipe and, when its rank was replaced, the rank it had.
pub fn recipe_for_run(recipe: &Recipe, rank: usize) -> (Recipe, Option<i64>) {
    let mut recipe = recipe.clone();
    if recipe.optimizer == RecipeOptimizer::AdamW {
        return (recipe, None);
    }
    let own = recipe.table.get("rank").and_then(|v| v.as_integer());
    let by_density =
        recipe.optimizer == RecipeOptimizer::Frugal && (own.is_none() || recipe.table.has("rho"));
    if own == Some(1) || by_density {
        return (recipe, None);
    }
    recipe.table.set("rank", rank as i64);
    (recipe, own.filter(|&r| r != rank as i64))
}

/// `recipe` refreshing every `gap` steps, unless it has no subspace or reselects every step.
/// Returns the recipe and, when its gap was replaced, the gap it had.
pub fn with_proj_gap(mut recipe: Recipe, gap: Option<usize>) -> (Recipe, Option<i64>) {
    let own = recipe
        .table
        .get("update_proj_gap")
        .and_then(|v| v.as_integer());
    let subspace = !matches!(
        recipe.optimizer,
        RecipeOptimizer::AdamW | RecipeOptimizer::SwitchLora
    );
    match gap {
        Some(gap) if subspace && own != Some(1) => {
            recipe.table.set("update_proj_gap", gap as i64);
            (recipe, own.filter(|&g| g != gap as i64))
        }
        _ => (recipe, None),
    }
}

/// `recipe` with every moment at `precision` (`f32`, `q8`, `q4`; `None` keeps the recipe's),
/// named `<recipe>-q8` / `-q4` for a quantized precision.
pub fn at_precision(mut recipe: Recipe, precision: Option<&str>) -> Result<Recipe, String> {
    let Some(name) = precision else {
        return Ok(recipe);
    };
    let precision = match name {
        "f32" => MomentPrecision::F32,
        "q8" => MomentPrecision::Q8,
        "q4" => MomentPrecision::Q4,
        other => return Err(format!("--moments takes f32, q8 or q4, not {other:?}")),
    };
    recipe.set_moments(precision);
    if precision != MomentPrecision::F32 {
        recipe.name = format!("{}-{name}", recipe.name);
    }
    Ok(recipe)
}

/// The peak learning rate, warm-up fraction, final fraction and clipping this run uses.
fn schedule_values(args: &Args, recipe: &Recipe) -> (f64, f64, f64, f64) {
    (
        args.lr.unwrap_or(recipe.lr),
        args.warmup.or(recipe.warmup_fraction).unwrap_or(0.1),
        args.min_lr_fraction
            .or(recipe.min_lr_fraction)
            .unwrap_or(0.1),
        args.clip.or(recipe.grad_clip).unwrap_or(1.0),
    )
}

/// Linear warm-up to `lr`, then cosine decay to `min_fraction * lr` at the last step.
fn scheduler(
    lr: f64,
    warmup_fraction: f64,
    min_fraction: f64,
    steps: usize,
) -> Result<burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler, String> {
    let warmup = ((steps as f64) * warmup_fraction).round() as usize;
    let cosine = LrSchedulerConfig::Cosine(
        CosineAnnealingLrSchedulerConfig::new(lr, (steps - warmup).max(1))
            .with_min_lr(lr * min_fraction),
    );
    let config = if warmup == 0 {
        SequentialLrSchedulerConfig::new(vec![cosine], vec![])
    } else {
        let ramp =
            LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(lr / warmup as f64, lr, warmup));
        SequentialLrSchedulerConfig::new(vec![ramp, cosine], vec![warmup])
    };
    config
        .init()
        .map_err(|e| format!("invalid learning-rate schedule: {e}"))
}

/// Mean next-token cross-entropy over the whole validation split.
pub fn validation_loss(
    model: &Llama,
    corpus: &Corpus,
    seq_len: usize,
    batch: usize,
    device: &Device,
) -> f64 {
    let model = model.valid();
    let (mut total, mut count) = (0.0f64, 0usize);
    for tokens in validation_batches(&corpus.validation, seq_len, batch, device) {
        let [rows, len] = tokens.dims();
        let predicted = rows * (len - 1);
        let loss: f64 = model.loss(tokens).into_scalar::<f64>();
        total += loss * predicted as f64;
        count += predicted;
    }
    total / count as f64
}

fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes a checkpoint into `dir` through a temporary folder, so an interrupted write never
/// leaves a half-written checkpoint in place of a good one.
fn save_checkpoint(
    dir: &Path,
    model: &Llama,
    optim: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<(), String> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| format!("cannot save the model: {e}"))?;
    optim
        .save(tmp.join("optimizer.bpk"))
        .map_err(|e| format!("cannot save the optimizer: {e}"))?;
    write_json(&tmp.join("state.json"), state)?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)
        .map_err(|e| format!("cannot move the checkpoint into {}: {e}", dir.display()))
}

/// Reads a checkpoint for a run with `identity`; every mismatch is an error naming the field.
fn load_checkpoint(
    dir: &Path,
    identity: &RunIdentity,
    model: Llama,
    optim: ModuleOptimizer,
) -> Result<(Llama, ModuleOptimizer, CheckpointState), String> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| format!("cannot resume from {}: {e}", state_path.display()))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        format!(
            "cannot resume: {} is not a checkpoint state: {e}",
            state_path.display()
        )
    })?;
    if &state.identity != identity {
        let saved = serde_json::to_value(&state.identity).unwrap_or_default();
        let now = serde_json::to_value(identity).unwrap_or_default();
        let fields: Vec<String> = saved
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| now.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k} (checkpoint {v}, this run {})", now[k.as_str()]))
            .collect();
        return Err(format!(
            "cannot resume from {}: the checkpoint belongs to another run: {}",
            dir.display(),
            fields.join(", ")
        ));
    }
    let record = ModuleRecord::load(dir.join("model.bpk"))
        .map_err(|e| format!("cannot resume: model record: {e}"))?;
    let model = lowrank_optim::switchlora::load_record(model, record)
        .map_err(|e| format!("cannot resume: model record does not fit the model: {e}"))?;
    let optim = optim
        .load(dir.join("optimizer.bpk"))
        .map_err(|e| format!("cannot resume: optimizer record: {e}"))?;
    Ok((model, optim, state))
}

/// Trains `recipe` and writes `<out>/<recipe>/{summary.json, history.csv, checkpoint/}`.
pub fn run(
    args: &Args,
    settings: &RunSettings,
    recipe: &Recipe,
    corpus: &Corpus,
    device: &Device,
) -> Result<Summary, String> {
    let (recipe, replaced) = recipe_for_run(recipe, settings.rank);
    if let Some(own) = replaced {
        eprintln!(
            "note: {}: the recipe's rank {own} is replaced by this run's rank {} (the preset's; \
             --rank sets it)",
            recipe.name, settings.rank
        );
    }
    let (recipe, gap_replaced) = with_proj_gap(recipe, args.update_proj_gap);
    if let Some(own) = gap_replaced {
        eprintln!(
            "note: {}: the recipe's update_proj_gap {own} is replaced by --update-proj-gap",
            recipe.name
        );
    }
    let (lr, warmup, min_fraction, clip) = schedule_values(args, &recipe);
    let out = args.out.join(&recipe.name);
    let checkpoint_dir = out.join("checkpoint");
    let identity = RunIdentity {
        recipe: recipe.name.clone(),
        dims: dims_array(&settings.dims),
        rank: settings.rank,
        seq_len: settings.seq_len,
        batch_size: settings.batch_size,
        grad_accum: settings.grad_accum,
        steps: settings.steps,
        seed: args.seed,
        lr,
        train_tokens: corpus.train.len(),
    };

    device.seed(args.seed);
    let adapter = recipe.adapter().map_err(|e| e.to_string())?;
    let model = settings.dims.init(device, adapter)?;
    let router = Router::llama();
    let (optim, switcher) = recipe
        .build_with_switcher(&model, &router, settings.steps)
        .map_err(|e| e.to_string())?;
    let (mut model, mut optim, mut state) = match &args.resume {
        Some(dir) => load_checkpoint(dir, &identity, model, optim)?,
        None => {
            let state = CheckpointState {
                identity: identity.clone(),
                step: 0,
                train_loss: vec![],
                validation: vec![],
                step_ms_total: 0.0,
            };
            (model, optim, state)
        }
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    if let Some(dir) = &args.export_twin {
        if adapter.is_some() {
            eprintln!(
                "note: {}: no twin export (SwitchLoRA has no PyTorch twin here)",
                recipe.name
            );
        } else {
            let mut schedule = scheduler(lr, warmup, min_fraction, settings.steps)?;
            let lrs = (0..settings.steps)
                .map(|_| schedule.step().base())
                .collect();
            let start = crate::twin::TwinStart::new(args, settings, &recipe, corpus, lrs, clip)?;
            crate::twin::export(&dir.join(&recipe.name), &model, &start)?;
        }
    }

    let mut schedule = scheduler(lr, warmup, min_fraction, settings.steps)?;
    for _ in 0..state.step {
        schedule.step();
    }
    let mut batches = Batches::new(args.seed, settings.batch_size, settings.seq_len);
    batches.skip(state.step * settings.grad_accum);
    let tokens_per_step = settings.batch_size * settings.seq_len * settings.grad_accum;

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(settings.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(recipe.name.clone());
    bar.set_position(state.step as u64);
    if state.validation.is_empty() {
        state.validation.push((
            0,
            validation_loss(
                &model,
                corpus,
                settings.seq_len,
                settings.batch_size,
                device,
            ),
        ));
    }

    while state.step < settings.steps {
        let started = Instant::now();
        let lr_now = schedule.step();
        let mut accumulator = GradientsAccumulator::<Llama>::new();
        let mut loss_sum = 0.0f32;
        for _ in 0..settings.grad_accum {
            let loss = model.loss(batches.next(&corpus.train, device));
            loss_sum += loss.clone().into_scalar::<f32>();
            let grads = (loss / settings.grad_accum as f32).backward();
            accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
        }
        if !loss_sum.is_finite() {
            let last = match state.validation.last() {
                Some((step, _)) if *step > 0 && checkpoint_dir.exists() => format!(
                    "the last checkpoint (step {step}) is in {}",
                    checkpoint_dir.display()
                ),
                _ => "no checkpoint was written yet".to_string(),
            };
            return Err(format!(
                "{}: the training loss is {loss_sum} at step {}; stopped ({last})",
                recipe.name,
                state.step + 1
            ));
        }
        let mut grads = accumulator.grads();
        if clip > 0.0 {
            grads = clip_grad_norm(grads, &model, clip).0;
        }
        if let Some(switcher) = &switcher {
            model = switcher
                .switch(model, state.step)
                .map_err(|e| e.to_string())?
                .0;
        }
        model = optim.step(lr_now, model, grads);
        let elapsed = started.elapsed().as_secs_f64();
        state.step_ms_total += 1e3 * elapsed;
        state.step += 1;
        let loss = loss_sum / settings.grad_accum as f32;
        state.train_loss.push(loss);
        bar.set_position(state.step as u64);
        bar.set_message(format!(
            "loss {loss:.3} | {:.0} tok/s",
            tokens_per_step as f64 / elapsed
        ));

        let evaluating = state.step % settings.eval_every == 0 || state.step == settings.steps;
        if evaluating {
            let val = validation_loss(
                &model,
                corpus,
                settings.seq_len,
                settings.batch_size,
                device,
            );
            state.validation.push((state.step, val));
            bar.println(format!(
                "{:>10} step {:>6}: validation perplexity {:.2}",
                recipe.name,
                state.step,
                val.exp()
            ));
        }
        let stopping = args.stop_at == Some(state.step);
        if evaluating || stopping {
            save_checkpoint(&checkpoint_dir, &model, &optim, &state)?;
        }
        if stopping {
            break;
        }
    }
    bar.finish_and_clear();

    let memory = MemoryReport::measure(&optim, &model).map_err(|e| e.to_string())?;
    if switcher.is_some() && state.step == settings.steps {
        merge_and_save(
            model,
            state.validation.last(),
            &out,
            corpus,
            settings,
            device,
        )?;
    }
    let summary = Summary {
        name: recipe.name.clone(),
        steps: settings.steps,
        tokens_per_step,
        train_loss: state.train_loss.clone(),
        validation: state.validation.clone(),
        lr,
        mean_step_ms: state.step_ms_total / state.step.max(1) as f64,
        state_bytes: memory.state_bytes(),
        adamw_bytes: memory.adamw_bytes(),
        peak_rss_bytes: peak_rss_bytes(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    let csv = crate::report::combined_csv(std::slice::from_ref(&summary));
    std::fs::write(out.join("history.csv"), csv)
        .map_err(|e| format!("cannot write history: {e}"))?;
    Ok(summary)
}

/// Folds the SwitchLoRA adapters into plain linears, checks the merged model validates the same
/// as the trained one (`validated`: the run's last validation, reused when it is of the final
/// step), and saves it as `<out>/merged.bpk` (a dense model any recipe's code can load).
fn merge_and_save(
    model: Llama,
    validated: Option<&(usize, f64)>,
    out: &Path,
    corpus: &Corpus,
    settings: &RunSettings,
    device: &Device,
) -> Result<(), String> {
    let (seq, batch) = (settings.seq_len, settings.batch_size);
    let before = match validated {
        Some(&(step, loss)) if step == settings.steps => loss,
        _ => validation_loss(&model, corpus, seq, batch, device),
    };
    let merged = model.merge_adapters()?;
    let after = validation_loss(&merged, corpus, seq, batch, device);
    if (before - after).abs() > 1e-3 * before.abs().max(1.0) {
        return Err(format!(
            "merging the adapters changed the validation loss from {before} to {after}"
        ));
    }
    merged
        .save_file(out.join("merged.bpk"))
        .map_err(|e| format!("cannot save the merged model: {e}"))
}

/// Where a run's summary lands.
pub fn summary_path(out: &Path, name: &str) -> PathBuf {
    out.join(name).join("summary.json")
}
