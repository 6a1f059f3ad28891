//! Recipes: every bundled recipe loads and builds; unknown keys and bad values name the problem.

mod common;

use burn::nn::{Linear, LinearConfig};
use lowrank_optim::recipe::{OptimizerKind, Recipe};
use lowrank_optim::{Error, MomentPolicy, ProjectionMethod, Router};

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
    assert_eq!(galore.optimizer, OptimizerKind::Galore);
    assert_eq!(galore.lr, 0.01);
    let config = galore.galore_config().unwrap();
    assert_eq!(config.subspace.rank, 128);
    assert_eq!(config.subspace.update_proj_gap, 200);
    assert_eq!(config.scale, 0.25);
    assert_eq!(config.subspace.projection, ProjectionMethod::Svd);
    assert_eq!(config.subspace.moment_policy, MomentPolicy::Keep);
    let adamw = Recipe::load("optimizers/adamw.toml").unwrap();
    assert_eq!(adamw.optimizer, OptimizerKind::Adamw);
    assert_eq!(adamw.lr, 0.001);
}

#[test]
fn every_bundled_recipe_builds_an_optimizer_and_a_memory_estimate() {
    let model: Linear = LinearConfig::new(32, 48).init(&common::device());
    let mut count = 0;
    for entry in std::fs::read_dir("optimizers").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let recipe = Recipe::load(&path).unwrap();
            recipe.build(&model, &Router::llama()).unwrap();
            let report = recipe.estimate_memory(&model, &Router::llama()).unwrap();
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
