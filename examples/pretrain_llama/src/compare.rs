//! The comparison: every recipe trained in its own process (so each reports its own peak
//! memory), optionally with a learning-rate search first and several seeds, then one table,
//! CSV and plot, with PyTorch twin runs overlaid when given.

use std::path::{Path, PathBuf};
use std::process::Command;

use lowrank_optim::recipe::Recipe;
use serde::{Deserialize, Serialize};

use crate::args::Args;
use crate::data::{Corpus, BYTE_VOCAB};
use crate::report::{self, RecipeResult, Twin};
use crate::train::{self, Summary};

/// The recipe files of `dir`, sorted by name, AdamW first (the baseline of every ratio).
pub fn recipe_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read recipe folder {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort_by_key(|p| (p.file_stem().is_none_or(|s| s != "adamw"), p.clone()));
    if files.is_empty() {
        return Err(format!("no recipe (*.toml) in {}", dir.display()));
    }
    Ok(files)
}

/// One recipe of the comparison: its file, the precision of its moments, the recipe as read.
struct Entry {
    file: PathBuf,
    precision: Option<String>,
    recipe: Recipe,
}

/// What the learning-rate search found for one recipe; `<out>/tuning.json` holds them all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tuning {
    pub name: String,
    /// `(lr, final validation loss)` of each candidate; `None`: the run diverged.
    pub tried: Vec<(f64, Option<f64>)>,
    pub best: f64,
    /// The best lr is still the smallest or largest tried (after `--tune-extend` steps beyond the
    /// grid): the true best may lie further out.
    #[serde(default)]
    pub on_edge: bool,
}

/// The candidate with the lowest final validation loss (diverged runs lose to any finite one);
/// `None` when every candidate diverged.
pub fn best_lr(tried: &[(f64, Option<f64>)]) -> Option<f64> {
    tried
        .iter()
        .filter_map(|&(lr, loss)| loss.filter(|l| l.is_finite()).map(|l| (lr, l)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(lr, _)| lr)
}

/// When the best of `tried` is the smallest or largest lr tried (a best on the edge of the grid
/// is not known to be best): that lr and its neighbour in the grid. `None` when the best is
/// inside the grid, nothing converged, or fewer than two lrs were tried.
fn best_on_edge(tried: &[(f64, Option<f64>)]) -> Option<(f64, f64)> {
    let best = best_lr(tried)?;
    let mut lrs: Vec<f64> = tried.iter().map(|&(lr, _)| lr).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    match lrs.as_slice() {
        [low, next, ..] if best == *low => Some((*low, *next)),
        [.., before, high] if best == *high => Some((*high, *before)),
        _ => None,
    }
}

/// The lr to try next when the best of `tried` is on the edge of what was tried: one more step
/// beyond it, by the ratio between it and its neighbour in the grid. `None` when the best is not
/// on the edge (see `best_on_edge`) or the next would exceed 1 (the largest lr a run takes).
pub fn beyond_edge(tried: &[(f64, Option<f64>)]) -> Option<f64> {
    let (edge, neighbour) = best_on_edge(tried)?;
    Some(three_digits(edge * edge / neighbour)).filter(|&lr| lr <= 1.0)
}

/// The learning rates to try for a recipe whose own is `lr`: `--lr-grid`, else `lr x {1/3, 1, 3}`.
pub fn lr_candidates(args: &Args, lr: f64) -> Vec<f64> {
    if args.lr_grid.is_empty() {
        vec![three_digits(lr / 3.0), lr, three_digits(lr * 3.0)]
    } else {
        args.lr_grid.clone()
    }
}

/// `x` to three significant digits: the lrs a search generates read as `0.00333`, not
/// `0.0033333333333333335` or `0.026999999999999996`, in file names and tables.
fn three_digits(x: f64) -> f64 {
    let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// The seeds of the comparison: `--seed`, `--seed + 1`, ... (`--seeds` of them).
pub fn seeds(args: &Args) -> Vec<u64> {
    (0..args.seeds as u64).map(|k| args.seed + k).collect()
}

/// Where one seed's runs go: `--out` itself for a single seed, else `<out>/seed-<seed>`.
pub fn seed_out(args: &Args, seed: u64) -> PathBuf {
    if args.seeds <= 1 {
        args.out.clone()
    } else {
        args.out.join(format!("seed-{seed}"))
    }
}

/// Runs the comparison (or only rebuilds its report with `--report-only`).
pub fn compare(args: &Args) -> Result<bool, String> {
    if args.resume.is_some() {
        return Err("--resume needs --optimizer: a checkpoint belongs to one recipe".into());
    }
    let precisions: Vec<Option<String>> = match args.moments.len() {
        0 => vec![None],
        _ => args.moments.iter().cloned().map(Some).collect(),
    };
    // Validate everything before the first (long) run starts.
    let mut entries = Vec::new();
    for file in recipe_files(&args.recipes)? {
        let recipe = Recipe::load(&file).map_err(|e| e.to_string())?;
        for precision in &precisions {
            let recipe = train::at_precision(recipe.clone(), precision.as_deref())?;
            entries.push(Entry {
                file: file.clone(),
                precision: precision.clone(),
                recipe,
            });
        }
    }
    let settings = args.settings(BYTE_VOCAB)?;
    Corpus::load(&args.data, args.val_fraction, settings.seq_len + 1)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;

    let tuning_path = args.out.join("tuning.json");
    let tunings: Vec<Tuning> = if args.report_only {
        read_json(&tuning_path).unwrap_or_default()
    } else if args.tune_lr {
        let tune_steps = ((settings.steps as f64 * args.tune_fraction).round() as usize).max(1);
        let tunings = entries
            .iter()
            .map(|entry| tune(args, entry, tune_steps))
            .collect::<Result<Vec<_>, String>>()?;
        train::write_json(&tuning_path, &tunings)?;
        tunings
    } else {
        let _ = std::fs::remove_file(&tuning_path);
        vec![]
    };

    let mut results = Vec::new();
    for entry in &entries {
        let tuned = tunings.iter().find(|t| t.name == entry.recipe.name);
        let mut runs = Vec::new();
        for seed in seeds(args) {
            let out = seed_out(args, seed);
            if !args.report_only {
                let mut extra = vec!["--seed".to_string(), seed.to_string()];
                if let Some(t) = tuned {
                    extra.extend(["--lr".to_string(), t.best.to_string()]);
                }
                if let (Some(dir), true) = (&args.export_twin, seed == args.seed) {
                    extra.extend(["--export-twin".into(), dir.display().to_string()]);
                }
                if !run_child(entry, &out, &extra)? {
                    return Err(format!(
                        "the {} run failed (seed {seed})",
                        entry.recipe.name
                    ));
                }
            }
            runs.push(read_summary(&out, &entry.recipe.name)?);
        }
        let twin = match &args.twins {
            Some(dir) => Twin::read(&dir.join(&entry.recipe.name))?,
            None => None,
        };
        results.push(RecipeResult {
            runs,
            tuned: tuned.is_some(),
            twin,
        });
    }

    let table = report::markdown_table(&results);
    write_file(&args.out.join("results.md"), &table)?;
    let all: Vec<Summary> = results.iter().flat_map(|r| r.runs.clone()).collect();
    write_file(&args.out.join("loss.csv"), &report::combined_csv(&all))?;
    let mut title = format!(
        "{} preset, {} steps x {} tokens, byte-level {}",
        args.preset,
        settings.steps,
        settings.batch_size * settings.seq_len * settings.grad_accum,
        args.data.display()
    );
    if args.seeds > 1 {
        title.push_str(&format!(", {} seeds", args.seeds));
    }
    report::plot(&results, &args.out.join("validation.png"), &title)?;
    println!("\n{table}");
    if args.twins.is_some() {
        let twins = report::twin_table(&results);
        write_file(&args.out.join("twins.md"), &twins)?;
        println!("{twins}");
    }
    if !tunings.is_empty() {
        let tuning = report::tuning_table(&tunings);
        write_file(&args.out.join("tuning.md"), &tuning)?;
        println!("{tuning}");
    }
    println!(
        "results written to {0}/: results.md, loss.csv, validation.png, and {0}/<recipe>/ per run",
        args.out.display()
    );
    Ok(!args.check_loss_falls || train::losses_fell(&all))
}

/// Tries each candidate learning rate on the first seed for `steps` steps, then up to
/// `--tune-extend` more beyond the grid's edge while the best sits on it; the runs go to
/// `<out>/tune/lr-<lr>/`.
fn tune(args: &Args, entry: &Entry, steps: usize) -> Result<Tuning, String> {
    let lr = args.lr.unwrap_or(entry.recipe.lr);
    let mut tried = Vec::new();
    for candidate in lr_candidates(args, lr) {
        tried.push((candidate, try_lr(args, entry, steps, candidate)?));
    }
    for _ in 0..args.tune_extend {
        let Some(candidate) = beyond_edge(&tried) else {
            break;
        };
        tried.push((candidate, try_lr(args, entry, steps, candidate)?));
    }
    tried.sort_by(|a, b| a.0.total_cmp(&b.0));
    let best = best_lr(&tried)
        .ok_or_else(|| format!("{}: every learning rate tried diverged", entry.recipe.name))?;
    let on_edge = best_on_edge(&tried).is_some();
    let tried_lrs: Vec<f64> = tried.iter().map(|t| t.0).collect();
    let edge = if on_edge {
        ", the edge of what was tried"
    } else {
        ""
    };
    eprintln!(
        "{}: tuned lr {best} (of {tried_lrs:?}){edge}",
        entry.recipe.name
    );
    Ok(Tuning {
        name: entry.recipe.name.clone(),
        tried,
        best,
        on_edge,
    })
}

/// One `--tune-lr` run of `entry` at `lr` for `steps` steps on the first seed, in
/// `<out>/tune/lr-<lr>/`: its final validation loss, `None` when it diverged.
fn try_lr(args: &Args, entry: &Entry, steps: usize, lr: f64) -> Result<Option<f64>, String> {
    let out = args.out.join("tune").join(format!("lr-{lr:e}"));
    let extra = [
        "--seed".to_string(),
        args.seed.to_string(),
        "--lr".into(),
        lr.to_string(),
        "--steps".into(),
        steps.to_string(),
        "--eval-every".into(),
        steps.to_string(),
    ];
    if run_child(entry, &out, &extra)? {
        let summary = read_summary(&out, &entry.recipe.name)?;
        Ok(summary.validation.last().map(|v| v.1))
    } else {
        eprintln!("note: {} at lr {lr}: the run diverged", entry.recipe.name);
        Ok(None)
    }
}

/// Runs one recipe in a child process writing to `out`, with this program's options and
/// `extra` after them (later options win). `Ok(false)`: the run stopped with an error it printed
/// (a non-finite loss, for a learning rate too large).
fn run_child(entry: &Entry, out: &Path, extra: &[String]) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(passthrough_args())
        .arg("--optimizer")
        .arg(&entry.file)
        .arg("--out")
        .arg(out)
        .args(extra);
    if let Some(precision) = &entry.precision {
        command.arg("--moments").arg(precision);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot start the {} run: {e}", entry.recipe.name))?;
    match status.code() {
        Some(0) | Some(1) => Ok(true),
        Some(2) => Ok(false),
        _ => Err(format!("the {} run failed ({status})", entry.recipe.name)),
    }
}

/// This program's options for a child run, without those that belong to the comparison.
fn passthrough_args() -> Vec<String> {
    const WITH_VALUE: [&str; 8] = [
        "--moments",
        "--seeds",
        "--lr-grid",
        "--tune-fraction",
        "--tune-extend",
        "--twins",
        "--export-twin",
        "--out",
    ];
    const BARE: [&str; 3] = ["--compare", "--tune-lr", "--report-only"];
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let flag = arg.split('=').next().unwrap_or_default();
        if BARE.contains(&arg.as_str()) || (WITH_VALUE.contains(&flag) && arg.contains('=')) {
            continue;
        }
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
            continue;
        }
        out.push(arg);
    }
    out
}

fn read_summary(out: &Path, name: &str) -> Result<Summary, String> {
    read_json(&train::summary_path(out, name))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
