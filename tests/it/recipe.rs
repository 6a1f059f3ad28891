//! Recipes: every bundled recipe loads and builds; unknown keys and bad values name the problem.

use crate::common;

use burn::nn::{Linear, LinearConfig};
use lowrank_optim::recipe::{Recipe, RecipeOptimizer};
use lowrank_optim::switchlora::{CandidatePlacement, SwitchLoraLinearConfig};
use lowrank_optim::{
    ApolloConfig, Error, FiraConfig, FrugalConfig, GaLoreConfig, MomentPolicy, MomentPrecision,
    ProjType, ProjectionMethod, Residual, Router, ScaleGranularity,
};

fn reason(result: Result<Recipe, Error>) -> String {
    match result {
        Err(Error::Recipe { reason, .. }) => reason,
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(recipe) => panic!("accepted a bad recipe: {recipe:?}"),
    }
}

#[test]
fn bundled_recipes_load_with_the_published_hyperparameters() {
    let galore = Recipe::load("optimizers/galore.toml").unwrap();
    assert_eq!(galore.name, "galore");
    assert_eq!(galore.optimizer, RecipeOptimizer::GaLore);
    assert_eq!(galore.lr, 0.01);
    let config = galore.config::<GaLoreConfig>().unwrap();
    assert_eq!(config.subspace.rank, 128);
    assert_eq!(config.subspace.update_proj_gap, 200);
    assert_eq!(config.scale, 0.25);
    assert_eq!(config.subspace.projection, ProjectionMethod::Svd);
    assert_eq!(config.subspace.moment_policy, MomentPolicy::Keep);
    let adamw = Recipe::load("optimizers/adamw.toml").unwrap();
    assert_eq!(adamw.optimizer, RecipeOptimizer::AdamW);
    assert_eq!(adamw.lr, 0.001);

    let fira = Recipe::load("optimizers/fira.toml")
        .unwrap()
        .config::<FiraConfig>()
        .unwrap();
    assert_eq!(
        (fira.subspace.rank, fira.scale, fira.gamma),
        (128, 0.25, 1.01)
    );
    assert_eq!(fira.scaling, ScaleGranularity::Channel);

    let frugal = Recipe::load("optimizers/frugal.toml")
        .unwrap()
        .config::<FrugalConfig>()
        .unwrap();
    assert_eq!(frugal.subspace.density, Some(0.25));
    assert_eq!(frugal.subspace.projection, ProjectionMethod::Block);
    assert_eq!(frugal.residual, Residual::SignSgd);
    assert_eq!(frugal.subspace.moment_policy, MomentPolicy::Reset);
    assert_eq!(frugal.adam.epsilon, 1e-8);

    let dct = Recipe::load("optimizers/dct-adamw.toml")
        .unwrap()
        .config::<FrugalConfig>()
        .unwrap();
    assert_eq!((dct.subspace.density, dct.subspace.rank), (None, 128));
    assert_eq!(dct.subspace.projection, ProjectionMethod::Dct);
    assert_eq!(
        (dct.residual, dct.subspace.update_proj_gap),
        (Residual::None, 1)
    );
    assert_eq!(dct.subspace.moment_policy, MomentPolicy::Keep);

    let galore_dct = Recipe::load("optimizers/galore-dct.toml").unwrap();
    let galore_dct = galore_dct.config::<GaLoreConfig>().unwrap();
    assert_eq!(galore_dct.subspace.projection, ProjectionMethod::Dct);
    assert_eq!(galore_dct.scale, 0.25);

    let apollo = Recipe::load("optimizers/apollo.toml")
        .unwrap()
        .config::<ApolloConfig>()
        .unwrap();
    assert_eq!((apollo.subspace.rank, apollo.scale), (256, 1.0));
    assert_eq!(apollo.subspace.projection, ProjectionMethod::Gaussian);
    let mini = Recipe::load("optimizers/apollo-mini.toml")
        .unwrap()
        .config::<ApolloConfig>()
        .unwrap();
    assert_eq!((mini.subspace.rank, mini.scale), (1, 128.0));
    assert_eq!(mini.scaling, ScaleGranularity::Tensor);
}

#[test]
fn a_rank_above_a_routed_matrix_is_a_typed_error_at_build_time() {
    let model: Linear = LinearConfig::new(32, 48).init(&common::device());
    let recipe = Recipe::load("optimizers/galore.toml").unwrap();
    match recipe.build(&model, &Router::llama()) {
        Err(Error::InvalidConfig { field, value, .. }) => {
            assert_eq!(field, "rank");
            assert!(value.contains("min(m, n) = 32"), "{value}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // FRUGAL's density never exceeds a matrix.
    let frugal = Recipe::load("optimizers/frugal.toml").unwrap();
    assert!(frugal.build(&model, &Router::llama()).is_ok());
}

#[test]
fn every_bundled_recipe_builds_an_optimizer_and_a_memory_estimate() {
    // Large enough for every published rank (APOLLO's 256).
    let model: Linear = LinearConfig::new(256, 300).init(&common::device());
    let mut count = 0;
    for entry in std::fs::read_dir("optimizers").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let recipe = Recipe::load(&path).unwrap();
            let router = Router::llama();
            match recipe.adapter().unwrap() {
                // SwitchLoRA builds from a model with SwitchLoRA layers.
                Some(adapter) => {
                    let adapted = SwitchLoraLinearConfig::new(256, 300, adapter.rank)
                        .init(&common::device())
                        .unwrap();
                    let (_, switcher) = recipe.build_with_switcher(&adapted, &router, 100).unwrap();
                    assert!(switcher.is_some());
                    assert!(recipe.build(&model, &router).is_err());
                }
                None => {
                    recipe.build(&model, &router).unwrap();
                }
            }
            let report = recipe.estimate_memory(&model, &router).unwrap();
            assert!(report.state_bytes() > 0, "{}", recipe.name);
            count += 1;
        }
    }
    assert!(count >= 2);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let why = reason(Recipe::from_toml_str(
        "r",
        "optimizer = 'galore'\nlr = 0.01\n[galore]\nrnak = 4",
    ));
    assert!(why.contains("rnak"), "{why}");
    let why = reason(Recipe::from_toml_str(
        "r",
        "optimizer = 'galore'\nlr = 0.01\nwarmup = 0.1",
    ));
    assert!(why.contains("warmup"), "{why}");
}

/// A table's keys are its config's fields and those of the configs it nests, read through
/// the configs' serde: an unknown key is named with every valid one, a bad enum value with the
/// variants in snake case, and a field the run sets (SwitchLoRA's `total_steps`) is no key.
#[test]
fn table_keys_are_the_config_fields() {
    let galore = reason(Recipe::from_toml_str(
        "r",
        "optimizer = 'galore'\nlr = 0.01\n[galore]\nrnak = 4",
    ));
    for key in [
        "rank",
        "proj_type",
        "beta_1",
        "moments",
        "scale",
        "adaptive_gap_window",
    ] {
        assert!(
            galore.contains(&format!(" {key},")) || galore.ends_with(key),
            "{key}: {galore}"
        );
    }
    assert!(!galore.contains("gamma"), "{galore}");
    let fira = reason(Recipe::from_toml_str(
        "r",
        "optimizer = 'fira'\nlr = 0.01\n[fira]\nrnak = 4",
    ));
    assert!(fira.contains("gamma") && fira.contains("scaling"), "{fira}");

    let bad_enum = reason(Recipe::from_toml_str(
        "r",
        "optimizer = 'galore'\nlr = 0.01\n[galore]\nprojection = 'qr'",
    ));
    assert!(bad_enum.contains("projection = \"qr\""), "{bad_enum}");
    assert!(bad_enum.contains("`random_orthogonal`"), "{bad_enum}");
    let bad_type = reason(Recipe::from_toml_str(
        "r",
        "optimizer = 'fira'\nlr = 0.01\n[fira]\ngamma = 'x'",
    ));
    assert!(
        bad_type.starts_with("in [fira]: gamma = \"x\""),
        "{bad_type}"
    );

    let steps = reason(Recipe::from_toml_str(
        "r",
        "optimizer = 'switchlora'\nlr = 0.01\n[switchlora]\ntotal_steps = 5",
    ));
    assert!(steps.contains("unknown key `total_steps`"), "{steps}");
    assert!(
        steps.contains("interval") && steps.contains("candidates"),
        "{steps}"
    );

    // A value that is not a string is named as written, not as an empty one.
    for (text, written) in [
        (
            "optimizer = 'fira'\nlr = 0.01\n[fira]\nscaling = 3",
            "\"3\"",
        ),
        (
            "optimizer = 'switchlora'\nlr = 0.01\n[switchlora]\ncandidates = true",
            "\"true\"",
        ),
    ] {
        let why = reason(Recipe::from_toml_str("r", text));
        assert!(why.contains(written), "{text:?}: {why}");
    }

    // Values reach the nested configs.
    let text = "optimizer = 'galore'\nlr = 0.01\n[galore]\nrank = 7\nbeta_2 = 0.9\n\
                proj_type = 'reverse_std'\nmoments = 'q4'\nscale = 0.5";
    let c = Recipe::from_toml_str("r", text)
        .unwrap()
        .config::<GaLoreConfig>()
        .unwrap();
    assert_eq!((c.subspace.rank, c.adam.beta_2, c.scale), (7, 0.9, 0.5));
    assert_eq!(c.subspace.proj_type, ProjType::ReverseStd);
    assert_eq!(c.adam.moments, MomentPrecision::Q4);
}

#[test]
fn an_unknown_optimizer_is_named_with_every_valid_one() {
    let why = reason(Recipe::from_toml_str("r", "optimizer = 'sgd'\nlr = 0.01"));
    assert!(why.contains("unknown optimizer \"sgd\""), "{why}");
    for optimizer in RecipeOptimizer::ALL {
        assert!(why.contains(optimizer.name()), "{why} lacks {optimizer}");
        assert_eq!(
            RecipeOptimizer::from_name(optimizer.name()),
            Some(optimizer)
        );
    }
}

#[test]
fn bad_values_are_rejected_by_name() {
    let cases = [
        ("optimizer = 'sgd'\nlr = 0.01", "sgd"),
        ("optimizer = 'galore'\nlr = -1.0", "lr"),
        (
            "optimizer = 'galore'\nlr = 0.01\n[galore]\nrank = 0",
            "rank",
        ),
        (
            "optimizer = 'galore'\nlr = 0.01\n[galore]\nprojection = 'qr'",
            "qr",
        ),
        (
            "optimizer = 'galore'\nlr = 0.01\n[galore]\nbeta_2 = 1.5",
            "beta_2",
        ),
        (
            "optimizer = 'adamw'\nlr = 0.01\n[dense]\nweight_decay = -0.1",
            "dense.weight_decay",
        ),
        (
            "optimizer = 'adamw'\nlr = 0.01\n[galore]\nrank = 4",
            "galore",
        ),
        (
            "optimizer = 'galore'\nlr = 0.01\nwarmup_fraction = 1.5",
            "warmup_fraction",
        ),
        ("lr = 0.01", "optimizer"),
        (
            "optimizer = 'frugal'\nlr = 0.01\n[frugal]\nrho = 1.5",
            "rho",
        ),
        (
            "optimizer = 'frugal'\nlr = 0.01\n[frugal]\nrho = 0.0",
            "rho",
        ),
        (
            "optimizer = 'fira'\nlr = 0.01\n[fira]\ngamma = 0.9",
            "gamma",
        ),
        (
            "optimizer = 'fira'\nlr = 0.01\n[fira]\nprojection = 'qr'",
            "projection",
        ),
        (
            "optimizer = 'fira'\nlr = 0.01\n[fira]\nscaling = 'row'",
            "scaling",
        ),
        (
            "optimizer = 'galore'\nlr = 0.01\n[galore]\ngamma = 1.01",
            "gamma",
        ),
        (
            "optimizer = 'galore'\nlr = 0.01\n[galore]\nprojection = 'block'",
            "block",
        ),
        (
            "optimizer = 'apollo'\nlr = 0.01\n[apollo]\nrho = 0.5",
            "rho",
        ),
        (
            "optimizer = 'fira'\nlr = 0.01\n[galore]\nrank = 4",
            "galore",
        ),
        (
            "optimizer = 'frugal'\nlr = 0.01\n[frugal]\nresidual = 'adam'",
            "residual",
        ),
        (
            "optimizer = 'galore'\nlr = 0.01\n[galore]\ndct_norm = 'l3'",
            "dct_norm",
        ),
    ];
    for (text, needle) in cases {
        let why = reason(Recipe::from_toml_str("r", text));
        assert!(why.contains(needle), "{text:?}: {why}");
    }
}

#[test]
fn a_missing_file_is_a_recipe_error_naming_the_path() {
    match Recipe::load("optimizers/no-such-recipe.toml") {
        Err(e @ Error::Recipe { .. }) => assert!(e.to_string().contains("no-such-recipe.toml")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_switchlora_recipe_has_the_published_settings_and_its_own_keys() {
    let recipe = Recipe::load("optimizers/switchlora.toml").unwrap();
    assert_eq!(recipe.optimizer, RecipeOptimizer::SwitchLora);
    assert_eq!(recipe.lr, 0.02);
    let adapter = recipe.adapter().unwrap().unwrap();
    assert_eq!(adapter.rank, 128);
    assert_eq!(adapter.candidates, CandidatePlacement::Host);
    let config = recipe.switchlora_config(40_000).unwrap();
    assert_eq!(config.schedule.interval, 40);
    assert_eq!(config.schedule.descent_fraction, 0.1);
    assert_eq!(config.schedule.freeze_steps, 5);
    assert_eq!(config.schedule.total_steps, 40_000);
    assert_eq!(config.adam.weight_decay, 0.0);

    let with = |table: &str| {
        Recipe::from_toml_str(
            "s",
            &format!("optimizer = 'switchlora'\nlr = 0.02\n{table}"),
        )
    };
    let on_device = with("[switchlora]\ncandidates = 'device'").unwrap();
    let adapter = on_device.adapter().unwrap().unwrap();
    assert_eq!(adapter.candidates, CandidatePlacement::Device);
    // Subspace keys mean nothing to SwitchLoRA; its keys mean nothing to the others.
    assert!(reason(with("[switchlora]\nupdate_proj_gap = 200")).contains("update_proj_gap"));
    let why = reason(Recipe::from_toml_str(
        "g",
        "optimizer = 'galore'\nlr = 0.01\n[galore]\ninterval = 40",
    ));
    assert!(why.contains("interval"), "{why}");
    assert!(reason(with("[switchlora]\ncandidates = 'disk'")).contains("candidates"));
    assert!(reason(with("[switchlora]\ninterval = 6")).contains("interval"));
    assert!(reason(with("[switchlora]\nrank = 0")).contains("rank"));
}

/// `moments = "q8"` at the top level quantizes the optimizer's moments and the dense AdamW's;
/// the optimizer table and `[dense]` override it; a bad value is named.
#[test]
fn the_moments_key_selects_the_precision_of_every_moment() {
    use lowrank_optim::optim::DenseOptimizer;
    use lowrank_optim::MomentPrecision;
    let text = "optimizer = 'galore'\nlr = 0.01\nmoments = 'q8'\n[galore]\nrank = 4";
    let recipe = Recipe::from_toml_str("g8", text).unwrap();
    assert_eq!(recipe.moments().unwrap(), MomentPrecision::Q8);
    let config = recipe.config::<GaLoreConfig>().unwrap();
    assert_eq!(config.adam.moments, MomentPrecision::Q8);
    assert!(matches!(
        recipe.dense_optimizer().unwrap(),
        DenseOptimizer::Quantized(_)
    ));

    let text = "optimizer = 'fira'\nlr = 0.01\nmoments = 'q8'\n[fira]\nmoments = 'q4'\n\
                min_quantized_len = 64\n[dense]\nmoments = 'f32'";
    let recipe = Recipe::from_toml_str("mixed", text).unwrap();
    let config = recipe.config::<FiraConfig>().unwrap();
    assert_eq!(
        (config.adam.moments, config.adam.min_quantized_len),
        (MomentPrecision::Q4, 64)
    );
    assert!(matches!(
        recipe.dense_optimizer().unwrap(),
        DenseOptimizer::Burn(_)
    ));

    // AdamW alone: the dense optimizer is all there is, and its state is a quarter-ish.
    let model: Linear = LinearConfig::new(256, 512).init(&common::device());
    let f32 = Recipe::from_toml_str("a", "optimizer = 'adamw'\nlr = 0.01").unwrap();
    let q8 = Recipe::from_toml_str("a8", "optimizer = 'adamw'\nlr = 0.01\nmoments = 'q8'").unwrap();
    let bytes = |r: &Recipe| {
        r.estimate_memory(&model, &Router::llama())
            .unwrap()
            .state_bytes()
    };
    // Weight: 1 byte per entry per moment plus an absmax per 256; the bias stays f32.
    assert_eq!(bytes(&q8), 2 * (256 * 512 + 4 * 512) + 2 * 4 * 512);
    assert_eq!(bytes(&f32), 2 * 4 * (256 * 512 + 512));

    for (text, key) in [
        ("optimizer = 'adamw'\nlr = 0.01\nmoments = 'q3'", "moments"),
        ("optimizer = 'adamw'\nlr = 0.01\nmoments = 8", "moments"),
        (
            "optimizer = 'galore'\nlr = 0.01\n[galore]\nmoments = 'int8'",
            "moments",
        ),
        (
            "optimizer = 'adamw'\nlr = 0.01\n[dense]\nmoments = 'Q8'",
            "dense.moments",
        ),
    ] {
        let message = match Recipe::from_toml_str("bad", text) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("accepted {text:?}: {r:?}"),
        };
        assert!(
            message.contains(key) && message.contains("q8"),
            "{text:?}: {message}"
        );
    }
}
