//! GaLore as a drop-in Burn optimizer: routing, training through `ModuleOptimizer`, resume from a
//! saved record (bitwise exact on CPU), and memory accounting checked against the record and the
//! formula.

use crate::common;

use burn::optim::{AdamWConfig, ModuleOptimizer};
use common::values;
use lowrank_optim::memory::F32_BYTES;
use lowrank_optim::{GaLoreConfig, MemoryReport, ProjectionMethod, Router};

use common::toy::{device, train, Toy, FFN, VOCAB};

fn galore() -> GaLoreConfig {
    GaLoreConfig::new()
        .with_rank(4)
        .with_update_proj_gap(3)
        .with_scale(1.0)
}

fn optimizer(model: &Toy, config: &GaLoreConfig) -> ModuleOptimizer {
    Router::llama()
        .with_vocab_size(VOCAB)
        .build(
            model,
            config.build().unwrap(),
            AdamWConfig::new().with_weight_decay(0.0).build(),
        )
        .unwrap()
}

#[test]
fn the_llama_rule_projects_attention_and_mlp_matrices_only() {
    let model = Toy::new(&device());
    let paths = Router::llama()
        .with_vocab_size(VOCAB)
        .projected_paths(&model);
    assert_eq!(
        paths,
        vec![
            "attention.wq.weight",
            "attention.wo.weight",
            "feed_forward.w1.weight",
            "feed_forward.w2.weight"
        ]
    );
    // Without the vocabulary rule the head is still excluded by its name.
    assert_eq!(Router::llama().projected_paths(&model).len(), 4);
    let custom = Router::from_regex(r"^feed_forward\.")
        .unwrap()
        .projected_paths(&model);
    assert_eq!(
        custom,
        vec!["feed_forward.w1.weight", "feed_forward.w2.weight"]
    );
    let by_shape = Router::from_predicate(|p| p.shape[1] == FFN).projected_paths(&model);
    assert_eq!(by_shape, vec!["feed_forward.w1.weight"]);
}

#[test]
fn loss_falls_when_training_through_module_optimizer() {
    let model = Toy::new(&device());
    let mut optim = optimizer(&model, &galore());
    let (_, losses) = train(model, &mut optim, 60, 0.02);
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

#[test]
fn resume_from_a_saved_record_is_exact() {
    for method in [ProjectionMethod::Svd, ProjectionMethod::Randomized] {
        let config = galore().with_projection(method);
        let start = Toy::new(&device());
        let mut straight_optim = optimizer(&start, &config);
        let (straight, _) = train(start.clone(), &mut straight_optim, 8, 0.01);

        let mut first_optim = optimizer(&start, &config);
        let (halfway, _) = train(start, &mut first_optim, 4, 0.01);
        let bytes = first_optim.into_bytes().unwrap();
        let mut resumed_optim = optimizer(&halfway, &config).from_bytes(bytes).unwrap();
        let (resumed, _) = train(halfway, &mut resumed_optim, 4, 0.01);

        for (a, b) in [
            (&straight.attention.wq.weight, &resumed.attention.wq.weight),
            (
                &straight.feed_forward.w1.weight,
                &resumed.feed_forward.w1.weight,
            ),
            (&straight.output.weight, &resumed.output.weight),
        ] {
            let what = format!("{method:?}: resumed run");
            common::assert_reproduced(&values(&a.val()), &values(&b.val()), &what);
        }
    }
}

#[test]
fn a_fresh_optimizer_without_the_record_diverges() {
    // Guards the resume test: dropping the state must make a visible difference.
    let start = Toy::new(&device());
    let mut optim = optimizer(&start, &galore());
    let (straight, _) = train(start.clone(), &mut optim, 8, 0.01);
    let mut first = optimizer(&start, &galore());
    let (halfway, _) = train(start, &mut first, 4, 0.01);
    let mut fresh = optimizer(&halfway, &galore());
    let (restarted, _) = train(halfway, &mut fresh, 4, 0.01);
    assert_ne!(
        values(&straight.attention.wq.weight.val()),
        values(&restarted.attention.wq.weight.val())
    );
}

#[test]
fn memory_report_matches_the_record_and_the_formula() {
    let rank = 4;
    let config = galore();
    let model = Toy::new(&device());
    let mut optim = optimizer(&model, &config);
    let (model, _) = train(model, &mut optim, 2, 0.01);

    let measured = MemoryReport::measure(&optim, &model).unwrap();
    let galore = config.build().unwrap();
    let adamw = AdamWConfig::new().build();
    let router = Router::llama().with_vocab_size(VOCAB);
    let estimated = MemoryReport::estimate(&model, &router, &galore, &adamw);
    assert_eq!(measured.params, estimated.params);

    for p in &measured.params {
        let numel: usize = p.shape.iter().product();
        let expected = if router.projected_paths(&model).contains(&p.path) {
            let (big, small) = (p.shape[0].max(p.shape[1]), p.shape[0].min(p.shape[1]));
            F32_BYTES * (2 * rank * big + rank * small)
        } else {
            F32_BYTES * 2 * numel
        };
        assert_eq!(p.state_bytes, expected, "{}", p.path);
    }
    assert!(measured.state_bytes() < measured.adamw_bytes());
    // Serialized size = state tensors + names, shapes and scalars: a few hundred bytes each.
    let record = measured.record_bytes.unwrap();
    let overhead = record - measured.state_bytes();
    assert!(record > measured.state_bytes());
    assert!(
        overhead < 256 * 2 * measured.params.len() + 4096,
        "record overhead {overhead} B"
    );
    let table = measured.to_string();
    assert!(table.contains("attention.wq.weight") && table.contains("% of AdamW"));
}

#[test]
fn cpu_backends_are_checked_bitwise() {
    // Guards `common::assert_reproduced`: exact on the CPU backends (flex is the default when
    // BURN_DEVICE is unset), within a tolerance on the others.
    let device = std::env::var("BURN_DEVICE").unwrap_or_default();
    let cpu = matches!(device.as_str(), "" | "flex" | "ndarray");
    assert_eq!(
        common::bitwise_reproducible(),
        cpu,
        "BURN_DEVICE={device:?}: {:?}",
        common::device()
    );
}
