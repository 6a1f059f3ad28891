//! The pretraining example's parts: model causality and shapes, data splitting and batching,
//! exact resume, and the errors a user sees for bad input.

use pretrain_llama::{args, compare, data, model, report, train};
use test_support as common;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use clap::Parser;
use lowrank_optim::recipe::Recipe;
use lowrank_optim::switchlora::{Adapter, CandidatePlacement};
use lowrank_optim::ParamInfo;

use args::Args;
use data::{Batches, Corpus};
use model::LlamaDims;

/// Burn draws initial weights from the device's global RNG (lazily, at first use), so tests that
/// seed it and build models must not interleave.
static SEEDED_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

const DIMS: LlamaDims = LlamaDims {
    vocab: 256,
    d_model: 32,
    layers: 2,
    heads: 4,
    ffn: 48,
    max_seq: 16,
};

fn tokens(values: &[i64], batch: usize) -> Tensor<2, Int> {
    let len = values.len() / batch;
    Tensor::from_data(
        TensorData::new(values.to_vec(), [batch, len]),
        &common::device(),
    )
}

#[test]
fn logits_have_the_right_shape_and_never_see_later_tokens() {
    let _rng = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device();
    device.seed(3);
    let model = DIMS.init(&device, None).unwrap();
    let seq: Vec<i64> = (0..12).map(|i| (i * 37 + 5) % 256).collect();
    let logits = model.forward(tokens(&seq, 1));
    assert_eq!(logits.dims(), [1, 12, 256]);
    let base = common::values(&logits);
    for changed in [0, 5, 11] {
        let mut other = seq.clone();
        other[changed] = (other[changed] + 101) % 256;
        let out = common::values(&model.forward(tokens(&other, 1)));
        for position in 0..12 {
            let row = position * 256..(position + 1) * 256;
            let diff = common::max_abs_diff(&base[row.clone()], &out[row]);
            if position < changed {
                assert_eq!(
                    diff, 0.0,
                    "changing token {changed} moved the logits at {position}"
                );
            } else if position == changed {
                assert!(
                    diff > 0.0,
                    "changing token {changed} did not move its own logits"
                );
            }
        }
    }
}

#[test]
fn presets_have_the_published_sizes() {
    // Parameter counts with the paper's 32k vocabulary: 60M, 130M, 350M, 1B (within 15%).
    for (name, millions) in [
        ("llama-60m", 58.0),
        ("llama-130m", 134.0),
        ("llama-350m", 368.0),
        ("llama-1b", 1339.0),
    ] {
        let args = Args::parse_from(["pretrain_llama", "--preset", name]);
        let dims = args.settings(32_000).unwrap().dims;
        // Lazily initialized: this allocates no weights.
        let model = dims.init(&common::device(), None).unwrap();
        let params: usize = ParamInfo::collect(&model).iter().map(|p| p.numel()).sum();
        let got = params as f64 / 1e6;
        assert!(
            (got / millions - 1.0).abs() < 0.15,
            "{name}: {got:.1}M parameters"
        );
    }
    let paths: Vec<String> = ParamInfo::collect(&DIMS.init(&common::device(), None).unwrap())
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert!(paths.contains(&"layers.1.attention.wq.Dense.weight".to_string()));
    assert!(paths.contains(&"layers.0.feed_forward.w3.Dense.weight".to_string()));
    assert!(paths.contains(&"output.weight".to_string()));
}

#[test]
fn a_switchlora_model_merges_back_to_dense_linears_computing_the_same() {
    let _rng = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device();
    device.seed(5);
    let adapter = |rank| {
        Some(Adapter {
            rank,
            candidates: CandidatePlacement::Host,
        })
    };
    let adapted = DIMS.init(&device, adapter(8)).unwrap();
    let paths: Vec<String> = ParamInfo::collect(&adapted)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert!(paths.contains(&"layers.1.attention.wq.SwitchLora.lora_a".to_string()));
    assert!(paths.contains(&"output.weight".to_string()));
    let seq: Vec<i64> = (0..12).map(|i| (i * 31 + 7) % 256).collect();
    let expected = common::values(&adapted.forward(tokens(&seq, 1)));
    let merged = adapted.merge_adapters().unwrap();
    let back = common::values(&merged.forward(tokens(&seq, 1)));
    assert!(common::max_abs_diff(&expected, &back) < 1e-4);
    assert!(
        merged.merge_adapters().is_err(),
        "merging twice is an error"
    );
    let err = DIMS.init(&device, adapter(40)).unwrap_err();
    assert!(err.contains("rank"), "{err}");
}

#[test]
fn the_validation_split_is_the_end_of_the_text() {
    let text: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let corpus = Corpus::from_text(&text, 0.1, 17).unwrap();
    assert_eq!(corpus.train.len(), 900);
    assert_eq!(corpus.validation.len(), 100);
    assert_eq!(corpus.validation[0], text.as_bytes()[900] as u32);
    assert!(Corpus::from_text(&text, 0.25, 17).unwrap().validation.len() == 250);
}

#[test]
fn validation_predicts_every_token_after_the_first_exactly_once() {
    let device = common::device();
    let tokens: Vec<u32> = (0..45).collect();
    let batches = data::validation_batches(&tokens, 8, 2, &device);
    let shapes: Vec<[usize; 2]> = batches.iter().map(|b| b.dims()).collect();
    assert_eq!(shapes, vec![[2, 9], [2, 9], [1, 9], [1, 5]]);
    let mut targets = Vec::new();
    for batch in &batches {
        let [rows, len] = batch.dims();
        let values = common::values(&batch.clone().float());
        for r in 0..rows {
            targets.extend(values[r * len + 1..(r + 1) * len].iter().map(|&v| v as u32));
        }
    }
    assert_eq!(targets, (1..45).collect::<Vec<u32>>());
}

#[test]
fn bad_data_is_a_one_line_error() {
    let short = Corpus::from_text("tiny text", 0.1, 17).err().unwrap();
    assert!(short.contains("fewer than one sequence"), "{short}");
    assert!(Corpus::from_text("", 0.1, 17).is_err());
    assert!(Corpus::from_text(&"x".repeat(1000), 1.5, 17)
        .err()
        .unwrap()
        .contains("--val-fraction"));
    let missing = Corpus::load(std::path::Path::new("data/no-such-file.txt"), 0.1, 17)
        .err()
        .unwrap();
    assert!(
        missing.contains("no-such-file.txt") && !missing.contains('\n'),
        "{missing}"
    );
    let dir = tempdir("binary");
    let binary = dir.join("bytes.bin");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    assert!(Corpus::load(&binary, 0.1, 2)
        .err()
        .unwrap()
        .contains("not UTF-8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let settings = |extra: &[&str]| {
        let mut argv = vec!["pretrain_llama"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv).settings(256)
    };
    assert!(settings(&["--preset", "llama-7b"])
        .unwrap_err()
        .contains("unknown preset"));
    assert!(settings(&["--heads", "5"]).unwrap_err().contains("--heads"));
    assert!(settings(&["--steps", "0"]).unwrap_err().contains("--steps"));
    assert!(settings(&["--layers", "0"])
        .unwrap_err()
        .contains("--layers"));
    assert!(settings(&[]).is_ok());
    // Values clap parses but no run can use; negative ones reach the check too.
    for (option, value) in [
        ("--lr", "NaN"),
        ("--lr", "-1"),
        ("--lr", "0"),
        ("--lr", "2"),
        ("--warmup", "2"),
        ("--warmup", "-0.1"),
        ("--min-lr-fraction", "1.5"),
        ("--clip", "-1"),
        ("--clip", "inf"),
        ("--stop-at", "301"),
        ("--stop-at", "0"),
        ("--seeds", "0"),
        ("--tune-fraction", "0"),
        ("--tune-fraction", "1.5"),
        ("--lr-grid", "-0.1"),
        ("--lr-grid", "0.01,2"),
        ("--update-proj-gap", "0"),
    ] {
        let err = settings(&[option, value]).unwrap_err();
        assert!(err.contains(option), "{option} {value}: {err}");
    }
    assert!(settings(&["--stop-at", "300", "--warmup", "0", "--clip", "0"]).is_ok());
    // A twin starts from a run's first step; a resumed run has left it.
    let err = settings(&["--export-twin", "start", "--resume", "ckpt"]).unwrap_err();
    assert!(err.contains("--export-twin"), "{err}");
}

/// A run whose loss turns non-finite stops with an error naming the step, and keeps the last
/// checkpoint written before.
#[test]
fn a_diverging_run_stops_and_keeps_the_last_checkpoint() {
    let _rng = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device().autodiff();
    // GaLore's first step moves the projected weights by ~lr * scale: 1e28 overflows the next
    // loss.
    let text = "optimizer = 'galore'\nlr = 0.01\n[galore]\nscale = 1e30";
    let recipe = Recipe::from_toml_str("diverging", text).unwrap();
    let corpus = text_corpus();
    let dir = tempdir("diverge");
    let mut args = small_run(&dir, &[]);
    args.eval_every = Some(1);
    let settings = args.settings(256).unwrap();
    let err = train::run(&args, &settings, &recipe, &corpus, &device).unwrap_err();
    assert!(
        err.contains("training loss") && err.contains("at step 2"),
        "{err}"
    );
    assert!(err.contains("checkpoint (step 1)"), "{err}");
    let state = std::fs::read_to_string(dir.join("diverging/checkpoint/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["step"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batches_are_seeded_and_skipping_reproduces_the_stream() {
    let device = common::device();
    let text: Vec<u32> = (0..500).map(|i| (i * 7 % 256) as u32).collect();
    let mut a = Batches::new(9, 3, 8);
    let first: Vec<Vec<f32>> = (0..4)
        .map(|_| common::values(&a.next(&text, &device).float()))
        .collect();
    let mut b = Batches::new(9, 3, 8);
    b.skip(2);
    assert_eq!(common::values(&b.next(&text, &device).float()), first[2]);
    let mut c = Batches::new(10, 3, 8);
    assert_ne!(common::values(&c.next(&text, &device).float()), first[0]);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lowrank-optim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_run(out: &std::path::Path, extra: &[&str]) -> Args {
    let mut argv = vec![
        "pretrain_llama",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--heads",
        "4",
        "--ffn",
        "48",
        "--rank",
        "4",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    Args::parse_from(argv)
}

/// The tensors of the GaLore run's last checkpoint under `out`, by name.
fn checkpoint_weights(out: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let file = out.join("galore/checkpoint/model.bpk");
    common::record_tensors(&burn_pack::Reader::from_file(file).unwrap())
}

/// GaLore refreshing every 2 steps.
fn galore_every_2_steps() -> Recipe {
    let toml = "optimizer = 'galore'\nlr = 0.01\n[galore]\nupdate_proj_gap = 2";
    Recipe::from_toml_str("galore", toml).unwrap()
}

fn text_corpus() -> Corpus {
    let text = std::fs::read_to_string(pretrain_llama::repo_path("data/shakespeare.txt")).unwrap();
    Corpus::from_text(&text[..20_000], 0.1, 17).unwrap()
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let _rng = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device().autodiff();
    let recipe = galore_every_2_steps();
    let corpus = text_corpus();
    let dir = tempdir("resume");

    let straight_args = small_run(&dir.join("straight"), &[]);
    let settings = straight_args.settings(256).unwrap();
    let straight = train::run(&straight_args, &settings, &recipe, &corpus, &device).unwrap();

    let first_args = small_run(&dir.join("split"), &["--stop-at", "4"]);
    let first = train::run(&first_args, &settings, &recipe, &corpus, &device).unwrap();
    assert_eq!(first.train_loss.len(), 4);
    let checkpoint = dir.join("split/galore/checkpoint");
    let resume_args = small_run(
        &dir.join("split"),
        &["--resume", checkpoint.to_str().unwrap()],
    );
    let resumed = train::run(&resume_args, &settings, &recipe, &corpus, &device).unwrap();

    common::assert_reproduced(
        &resumed.train_loss,
        &straight.train_loss,
        "losses after resume",
    );
    let val = |s: &train::Summary| s.validation.iter().map(|v| v.1 as f32).collect::<Vec<_>>();
    common::assert_reproduced(&val(&resumed), &val(&straight), "validation after resume");
    common::assert_same_tensors(
        &checkpoint_weights(&dir.join("straight")),
        &checkpoint_weights(&dir.join("split")),
        "weights after resume",
    );
    assert!(straight.loss_fell(), "{:?}", straight.train_loss);

    // A checkpoint from another run is refused by name, and leaves the checkpoint intact.
    let before = std::fs::read(checkpoint.join("state.json")).unwrap();
    let other = small_run(
        &dir.join("split"),
        &["--resume", checkpoint.to_str().unwrap(), "--seed", "7"],
    );
    let err = train::run(&other, &settings, &recipe, &corpus, &device)
        .err()
        .unwrap();
    assert!(err.contains("seed") && err.contains("another run"), "{err}");
    assert_eq!(
        std::fs::read(checkpoint.join("state.json")).unwrap(),
        before
    );
    let missing = small_run(&dir.join("split"), &["--resume", "/no/such/checkpoint"]);
    assert!(train::run(&missing, &settings, &recipe, &corpus, &device)
        .err()
        .unwrap()
        .contains("cannot resume"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--grad-accum k` steps on the mean of `k` micro-batches: the same step as one batch of all
/// of them (the batch stream draws the same sequences), to f32 rounding, across refreshes.
#[test]
fn grad_accum_steps_like_one_batch_of_all_the_micro_batches() {
    let _rng = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device().autodiff();
    let recipe = galore_every_2_steps();
    let corpus = text_corpus();
    let dir = tempdir("accumulation");
    // Six steps, refreshes at 0, 2 and 4: four micro-batches of 2 against batches of 8.
    let accumulated = small_run(&dir.join("accumulated"), &["--grad-accum", "4"]);
    let settings = accumulated.settings(256).unwrap();
    let micro = train::run(&accumulated, &settings, &recipe, &corpus, &device).unwrap();
    let mut whole = small_run(&dir.join("whole"), &[]);
    whole.batch_size = Some(8);
    let settings = whole.settings(256).unwrap();
    let batch = train::run(&whole, &settings, &recipe, &corpus, &device).unwrap();

    let diff = common::max_abs_diff(&micro.train_loss, &batch.train_loss);
    assert!(diff < 1e-5, "losses differ by {diff:e}");
    let (a, b) = (
        checkpoint_weights(&dir.join("accumulated")),
        checkpoint_weights(&dir.join("whole")),
    );
    assert_eq!(a.len(), b.len());
    for ((name, a), (_, b)) in a.iter().zip(&b) {
        let diff = common::max_abs_diff(&common::floats(a), &common::floats(b));
        assert!(
            diff < 1e-5,
            "{name}: accumulated vs whole batch differ by {diff:e}"
        );
    }
    assert_eq!(micro.tokens_per_step, batch.tokens_per_step);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The run's rank replaces a recipe's fixed rank (and says which it replaced); rank-1 recipes
/// and FRUGAL's density keep theirs.
#[test]
fn the_runs_rank_replaces_a_recipes_fixed_rank() {
    let load = |name: &str| {
        Recipe::load(pretrain_llama::repo_path(&format!(
            "optimizers/{name}.toml"
        )))
        .unwrap()
    };
    let (galore, replaced) = train::recipe_for_run(&load("galore"), 32);
    assert_eq!(replaced, Some(128));
    assert_eq!(
        galore.table.get("rank").and_then(|v| v.as_integer()),
        Some(32)
    );
    let (mini, replaced) = train::recipe_for_run(&load("apollo-mini"), 32);
    assert_eq!(
        (
            mini.table.get("rank").and_then(|v| v.as_integer()),
            replaced
        ),
        (Some(1), None)
    );
    let (frugal, replaced) = train::recipe_for_run(&load("frugal"), 32);
    assert_eq!((frugal.table.has("rank"), replaced), (false, None));
}

/// `--update-proj-gap` replaces a recipe's refresh interval, except where the recipe reselects
/// every step (DCT-AdamW) or has no subspace.
#[test]
fn the_proj_gap_option_replaces_a_recipes_interval() {
    let load = |name: &str| {
        Recipe::load(pretrain_llama::repo_path(&format!(
            "optimizers/{name}.toml"
        )))
        .unwrap()
    };
    let gap = |r: &Recipe| r.table.get("update_proj_gap").and_then(|v| v.as_integer());
    let (galore, replaced) = train::with_proj_gap(load("galore"), Some(50));
    assert_eq!((gap(&galore), replaced), (Some(50), Some(200)));
    let (dct, replaced) = train::with_proj_gap(load("dct-adamw"), Some(50));
    assert_eq!((gap(&dct), replaced), (Some(1), None));
    let (adamw, replaced) = train::with_proj_gap(load("adamw"), Some(50));
    assert_eq!((gap(&adamw), replaced), (None, None));
    let (apollo, _) = train::with_proj_gap(load("apollo"), None);
    assert_eq!(gap(&apollo), Some(200));
}

/// `--export-twin` writes what the run starts from: the initial weights under their names in
/// Burn's layouts (read back here and compared with the model the run built), every step's
/// windows (the stream the run draws), learning rate and clipping, and the recipe's text.
#[test]
fn a_twin_export_holds_the_start_weights_batches_and_schedule() {
    let _rng = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::device().autodiff();
    let dir = tempdir("twin");
    let export = dir.join("start");
    let recipe_path = pretrain_llama::repo_path("optimizers/galore.toml");
    let args = small_run(
        &dir,
        &[
            "--optimizer",
            recipe_path.to_str().unwrap(),
            "--export-twin",
            export.to_str().unwrap(),
            "--update-proj-gap",
            "2",
        ],
    );
    let settings = args.settings(256).unwrap();
    let corpus = text_corpus();
    let recipe = Recipe::load(pretrain_llama::repo_path("optimizers/galore.toml")).unwrap();
    train::run(&args, &settings, &recipe, &corpus, &device).unwrap();

    // The weights the run started from: the same seed builds the same model.
    device.seed(args.seed);
    let model = settings.dims.init(&device, None).unwrap();
    let bytes = std::fs::read(export.join("galore/init.safetensors")).unwrap();
    let saved = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let params = ParamInfo::collect(&model);
    assert_eq!(saved.len(), params.len());
    // Burn's own record of the model holds the same f32 bytes under the same paths.
    let record = dir.join("model.bpk");
    model.clone().save_file(&record).unwrap();
    let recorded: std::collections::HashMap<String, Vec<u8>> =
        common::record_tensors(&burn_pack::Reader::from_file(&record).unwrap())
            .into_iter()
            .collect();
    for p in &params {
        let name = p.path.replace(".Dense.", ".");
        let view = saved
            .tensor(&name)
            .unwrap_or_else(|_| panic!("{name} missing"));
        assert_eq!(view.shape(), &p.shape[..], "{name}");
        assert_eq!(view.data(), &recorded[&p.path][..], "{name}");
    }
    assert!(saved.tensor("layers.0.attention.wq.weight").is_ok());
    assert_eq!(
        saved
            .tensor("layers.0.feed_forward.w1.weight")
            .unwrap()
            .shape(),
        &[32, 48]
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("galore/twin.json")).unwrap())
            .unwrap();
    let starts: Vec<Vec<usize>> = serde_json::from_value(json["starts"].clone()).unwrap();
    let mut batches = Batches::new(args.seed, 2, 16);
    let expected: Vec<Vec<usize>> = (0..6)
        .map(|_| batches.next_starts(corpus.train.len()))
        .collect();
    assert_eq!(starts, expected);
    let lr: Vec<f64> = serde_json::from_value(json["lr"].clone()).unwrap();
    assert_eq!(lr.len(), 6);
    // Warm-up to the recipe's 0.01, then cosine decay towards 10% of it.
    assert!(
        lr.iter().all(|&v| v > 0.001 && v <= 0.01 * (1.0 + 1e-12)),
        "{lr:?}"
    );
    assert!(lr[1..].windows(2).all(|w| w[1] < w[0]), "{lr:?}");
    assert_eq!(json["clip"], 1.0);
    assert_eq!(json["train_tokens"], corpus.train.len());
    assert_eq!(json["subspace_keys"]["rank"], 4);
    assert_eq!(json["subspace_keys"]["update_proj_gap"], 2);
    assert!(json["recipe_toml"]
        .as_str()
        .unwrap()
        .contains("optimizer = \"galore\""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The comparison's statistics and learning-rate choice.
#[test]
fn seeds_average_and_the_best_finite_lr_wins() {
    let (mean, std) = report::mean_std(&[1.0, 2.0, 3.0]);
    assert!((mean - 2.0).abs() < 1e-12 && (std - 1.0).abs() < 1e-12);
    assert_eq!(report::mean_std(&[4.0]), (4.0, 0.0));
    let tried = [
        (0.001, Some(2.0)),
        (0.003, Some(1.5)),
        (0.01, None),
        (0.03, Some(f64::NAN)),
    ];
    assert_eq!(compare::best_lr(&tried), Some(0.003));
    assert_eq!(compare::best_lr(&[(0.01, None)]), None);
    let args = small_run(
        std::path::Path::new("/tmp"),
        &["--seed", "5", "--seeds", "3"],
    );
    assert_eq!(compare::seeds(&args), vec![5, 6, 7]);
    assert_eq!(compare::lr_candidates(&args, 0.03), vec![0.01, 0.03, 0.09]);
    assert_eq!(
        compare::lr_candidates(&args, 0.001),
        vec![0.000333, 0.001, 0.003]
    );
    let grid = small_run(std::path::Path::new("/tmp"), &["--lr-grid", "0.001,0.002"]);
    assert_eq!(compare::lr_candidates(&grid, 0.03), vec![0.001, 0.002]);
    // A best on the edge of what was tried asks for one grid step beyond it; inside, nothing.
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12 * b);
    let high = [(0.01, Some(2.0)), (0.03, Some(1.5)), (0.09, Some(1.2))];
    assert!(close(compare::beyond_edge(&high), 0.27));
    let low = [(0.03, Some(1.5)), (0.01, Some(1.0))];
    assert!(close(compare::beyond_edge(&low), 0.00333));
    let inside = [(0.01, Some(2.0)), (0.03, Some(1.5)), (0.09, Some(1.7))];
    assert_eq!(compare::beyond_edge(&inside), None);
    let diverged_above = [(0.01, Some(2.0)), (0.03, Some(1.5)), (0.09, None)];
    assert_eq!(compare::beyond_edge(&diverged_above), None);
    assert_eq!(compare::beyond_edge(&[(0.01, Some(1.0))]), None);
    assert_eq!(
        compare::beyond_edge(&[(0.3, Some(2.0)), (0.9, Some(1.0))]),
        None
    );
    // The twin comparison counts the leading steps that agree.
    let (within, early) = report::agreement(&[2.0, 1.5, 1.2], &[2.0, 1.50001, 1.3], 1e-4, 10);
    assert_eq!(within, 2);
    assert!((early - 0.1 / 1.3).abs() < 1e-6);
}
