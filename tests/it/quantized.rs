//! Quantized moments: the maps and the blockwise quantizer against bitsandbytes' own, the
//! quantizer's properties, 8-bit GaLore against galore-torch's `GaLoreAdamW8bit`, and every
//! optimizer at 8 and 4 bits through `ModuleOptimizer` (training, exact resume, bytes).
//!
//! Fixtures: `tests/fixtures/quantized_parity.json`, from `fixtures/quantized_parity.py`
//! (bitsandbytes 0.50.2 on the CPU).

use crate::common;

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor};
use common::{tensor, values};
use lowrank_optim::adam::{Moments, StoredMoments};
use lowrank_optim::quant::{dequantize, dynamic_map, quantize, to_bytes, CodeMap, Normalization};
use lowrank_optim::{GaLoreConfig, GaLoreState, MomentPrecision, ProjType};
use serde::Deserialize;

const FIXTURE: &str = include_str!("../fixtures/quantized_parity.json");

#[derive(Deserialize)]
struct Fixture {
    generator: String,
    maps: Maps,
    quantizer: Vec<QuantizerCase>,
    galore8bit: Vec<GaLoreCase>,
}

#[derive(Deserialize)]
struct Maps {
    signed8: Vec<f32>,
    unsigned8: Vec<f32>,
    signed4: Vec<f32>,
    linear4: Vec<f32>,
}

#[derive(Deserialize)]
struct QuantizerCase {
    name: String,
    signed: bool,
    values: Vec<f32>,
    codes: Vec<u8>,
    absmax: Vec<f32>,
    dequantized: Vec<f32>,
}

#[derive(Deserialize)]
struct GaLoreCase {
    name: String,
    shape: [usize; 2],
    rank: usize,
    update_proj_gap: usize,
    scale: f32,
    lr: f64,
    weight_decay: f32,
    eps: f32,
    beta_1: f32,
    beta_2: f32,
    spectrum_decay: f64,
    u: Vec<f64>,
    v: Vec<f64>,
    jitters: Vec<Vec<f64>>,
    w0: Vec<f32>,
    checked_steps: Vec<usize>,
    weights: Vec<Vec<f32>>,
    codes_first: Vec<u8>,
    absmax_first: Vec<f32>,
    codes_second: Vec<u8>,
    absmax_second: Vec<f32>,
}

fn fixture() -> Fixture {
    let fixture: Fixture = serde_json::from_str(FIXTURE).expect("the fixture parses");
    assert!(
        fixture.generator.starts_with("bitsandbytes"),
        "{}",
        fixture.generator
    );
    fixture
}

fn device() -> Device {
    Device::default()
}

/// Our tables are bitsandbytes' (and torchao's 4-bit linear map) to the last bit, or to f32
/// round-off (3e-7 relative): PyTorch's `linspace`, inside `create_dynamic_map`, computes its
/// vectorized chunks as `base + k * step`, so bitsandbytes' own table depends on the CPU's
/// vector width; ours computes every entry by the scalar formula.
#[test]
fn code_tables_are_the_published_maps() {
    let maps = fixture().maps;
    for (map, published) in [
        (CodeMap::Signed8, &maps.signed8),
        (CodeMap::Unsigned8, &maps.unsigned8),
        (CodeMap::Signed4, &maps.signed4),
        (CodeMap::Linear4, &maps.linear4),
    ] {
        let ours = map.table();
        assert_eq!(ours.len(), published.len(), "{map:?}");
        let mut rounded = 0;
        for (a, b) in ours.iter().zip(published) {
            assert!((a - b).abs() <= 3e-7 * b.abs(), "{map:?}: {a} vs {b}");
            rounded += usize::from(a != b);
        }
        eprintln!(
            "{map:?}: {} entries, {rounded} differ by round-off",
            ours.len()
        );
        assert!(
            rounded * 3 <= ours.len(),
            "{map:?}: {rounded} entries differ"
        );
    }
    let exact = |map: CodeMap, published: &[f32]| map.table() == published;
    assert!(exact(CodeMap::Signed4, &maps.signed4) && exact(CodeMap::Linear4, &maps.linear4));
    assert_eq!(dynamic_map(true, 7, 8), CodeMap::Signed8.table());
}

/// `quantize_blockwise` on bitsandbytes' CPU: identical codes except where the difference is
/// explained: a zero block (bitsandbytes divides 0 by 0 and lands on code 0, ours on the table's
/// 0; both dequantize to 0), the first-moment sign rule of bitsandbytes' GPU optimizer kernel
/// (which its plain quantizer does not apply), and values next to a midpoint, where
/// bitsandbytes' CPU binary search (an approximate "direct" search) picks the farther code and
/// ours the nearest; dequantized values equal to f32 round-off elsewhere.
#[test]
fn blockwise_codes_match_bitsandbytes() {
    for case in fixture().quantizer {
        let map = if case.signed {
            CodeMap::Signed8
        } else {
            CodeMap::Unsigned8
        };
        let table = map.table();
        let len = case.values.len();
        let codes = quantize(tensor(&case.values, [len]), map, Normalization::Blocks(256));
        let ours = to_bytes(&codes, map);
        let absmax = values(&codes.scales);
        assert_eq!(absmax, case.absmax, "{}: absmax", case.name);
        let (mut zero_block, mut sign_kept, mut nearer, mut ties) = (0, 0, 0, 0);
        for (i, (&a, &b)) in ours.iter().zip(&case.codes).enumerate() {
            if a == b {
                continue;
            }
            let x = case.values[i] / case.absmax[i / 256];
            let (ta, tb) = (table[a as usize], table[b as usize]);
            if case.absmax[i / 256] == 0.0 {
                zero_block += 1;
                assert_eq!(ta, 0.0, "{}: entry {i} of a zero block", case.name);
            } else if (tb < 0.0) != (x < 0.0) && x != 0.0 {
                sign_kept += 1;
                assert_eq!((a as i32 - b as i32).abs(), 1, "{}: entry {i}", case.name);
                assert_eq!(ta < 0.0, x < 0.0, "{}: entry {i} keeps its sign", case.name);
            } else {
                // bitsandbytes' CPU search is approximate near a midpoint; ours is the nearest.
                assert!(
                    (x - ta).abs() <= (x - tb).abs(),
                    "{}: entry {i}: {x} -> {ta} vs {tb}",
                    case.name
                );
                if (x - ta).abs() == (x - tb).abs() {
                    ties += 1;
                } else {
                    nearer += 1;
                }
            }
        }
        eprintln!(
            "{}: {} codes, {} differ: {zero_block} in zero blocks, {sign_kept} sign corrections, \
             {nearer} nearer than bitsandbytes' CPU search, {ties} ties",
            case.name,
            len,
            zero_block + sign_kept + nearer + ties
        );
        // The unsigned map's 0 is its code 0: there the codes agree.
        let zeros = case.absmax.iter().filter(|&&a| a == 0.0).count() * 256;
        let expected = if case.signed { zeros } else { 0 };
        assert_eq!(
            zero_block, expected,
            "{}: every zero-block entry and nothing else",
            case.name
        );
        assert!(
            sign_kept + nearer + ties <= len * 3 / 100,
            "{}: too many codes differ",
            case.name
        );
        let back = values(&dequantize(&codes, map, Normalization::Blocks(256), [len]));
        for (i, (&a, &b)) in back.iter().zip(&case.dequantized).enumerate() {
            let tolerance = 1e-6 * case.absmax[i / 256].max(1e-30);
            let explained = ours[i] != case.codes[i] && case.absmax[i / 256] != 0.0;
            if !explained {
                assert!(
                    (a - b).abs() <= tolerance,
                    "{}: entry {i}: {a} vs {b}",
                    case.name
                );
            }
        }
    }
}

/// Deterministic pseudo-random values at scales spread over several decades.
fn spread_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = common::TestRng::new(seed);
    (0..len)
        .map(|i| rng.normal() as f32 * 10f32.powi((i / 256 % 7) as i32 - 4))
        .collect()
}

/// Round trips at every map and normalization: the error stays within half the widest gap of
/// the table (or the distance to its end) times the scale, a first moment never changes sign,
/// a second moment never goes negative, and zero blocks come back as exact zeros.
#[test]
fn quantizer_properties_hold_on_every_map() {
    let (rows, cols) = (48, 100);
    let len = rows * cols;
    let mut signed = spread_values(len, 3);
    signed[..512].iter_mut().for_each(|x| *x = 0.0);
    let unsigned: Vec<f32> = signed.iter().map(|x| x * x).collect();
    let schemes = [
        (CodeMap::Signed8, Normalization::Blocks(256), &signed),
        (CodeMap::Unsigned8, Normalization::Blocks(256), &unsigned),
        (CodeMap::Signed4, Normalization::Blocks(128), &signed),
        (
            CodeMap::Linear4,
            Normalization::Rank1 { rows, cols },
            &unsigned,
        ),
        (CodeMap::Linear4, Normalization::Blocks(128), &unsigned),
    ];
    for (map, norm, input) in schemes {
        let table = map.table();
        let widest = table.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max);
        // Beyond the table's ends: [0, 1/16) for the linear map (no zero), [-1, -0.993) for
        // the signed maps.
        let edge = if table[0] > 0.0 {
            table[0]
        } else {
            1.0 + table[0]
        };
        let bound = (0.5 * widest).max(edge);
        let codes = quantize(tensor(input, [rows, cols]), map, norm);
        assert_eq!(to_bytes(&codes, map).len(), len * map.bits() as usize / 8);
        let back = values(&dequantize(&codes, map, norm, [rows, cols]));
        let scales = values(&codes.scales);
        for (i, (&x, &y)) in input.iter().zip(&back).enumerate() {
            let scale = match norm {
                Normalization::Blocks(block) => scales[i / block],
                Normalization::Rank1 { rows, .. } => scales[i / cols].min(scales[rows + i % cols]),
            };
            assert!(y.is_finite(), "{map:?}: entry {i}");
            assert!(
                (x - y).abs() <= bound * scale * 1.0001 + 1e-30,
                "{map:?}: {x} -> {y}"
            );
            if scale == 0.0 {
                assert_eq!(y, 0.0, "{map:?}: a zero block stays zero");
            }
            if map.keeps_sign() && x < 0.0 {
                assert!(y < 0.0, "{map:?}: entry {i} {x} lost its sign ({y})");
            }
            assert!(x < 0.0 || y >= 0.0, "{map:?}: entry {i} {x} -> {y}");
        }
    }
}

/// The 4-bit second-moment map has no zero: a nonzero `v` in a block with a large one never
/// dequantizes to 0 (where Adam's step would be `m / eps`), unlike the 4-bit dynamic map.
#[test]
fn the_linear_map_has_no_zero_point() {
    let mut v = vec![1e-6f32; 4096];
    v[0] = 1.0;
    let codes = quantize(
        tensor(&v, [4096]),
        CodeMap::Linear4,
        Normalization::Blocks(128),
    );
    let back = values(&dequantize(
        &codes,
        CodeMap::Linear4,
        Normalization::Blocks(128),
        [4096],
    ));
    assert!(back.iter().all(|&x| x > 0.0));
    let dynamic = quantize(
        tensor(&v, [4096]),
        CodeMap::Signed4,
        Normalization::Blocks(128),
    );
    let zeroed = values(&dequantize(
        &dynamic,
        CodeMap::Signed4,
        Normalization::Blocks(128),
        [4096],
    ));
    assert!(
        zeroed[1..128].iter().all(|&x| x == 0.0),
        "the dynamic map rounds them to 0"
    );
}

/// The GaLoreAdamW8bit fixture's gradients: `U diag(s * jitter_t) Vᵀ` in f64, as `f32`, with
/// `s_i = 2^(-i / decay)`.
fn fixture_gradients(case: &GaLoreCase) -> Vec<Vec<f32>> {
    let [m, n] = case.shape;
    let k = case.jitters[0].len();
    let s: Vec<f64> = (0..k)
        .map(|i| 2f64.powf(-(i as f64) / case.spectrum_decay))
        .collect();
    (case.jitters.iter())
        .map(|jitter| {
            let mut g = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let sum: f64 = (0..k)
                        .map(|l| case.u[i * k + l] * (s[l] * jitter[l]) * case.v[j * k + l])
                        .sum();
                    g[i * n + j] = sum as f32;
                }
            }
            g
        })
        .collect()
}

/// Steps the fixture's matrix in the reference's own layout (`[out, in]`; `ProjType::Left`
/// on the raw tensor keeps its right side, as galore-torch's `std` does for `out >= in`): the
/// weights after each checked step and the final state.
fn run_galore(case: &GaLoreCase, precision: MomentPrecision) -> (Vec<Vec<f32>>, GaLoreState<2>) {
    let optim = GaLoreConfig::new()
        .with_rank(case.rank)
        .with_update_proj_gap(case.update_proj_gap)
        .with_proj_type(ProjType::Left)
        .with_scale(case.scale)
        .with_beta_1(case.beta_1)
        .with_beta_2(case.beta_2)
        .with_epsilon(case.eps)
        .with_weight_decay(case.weight_decay)
        .with_moments(precision)
        .build()
        .unwrap();
    let mut w: Tensor<2> = tensor(&case.w0, case.shape);
    let mut state = None;
    let mut checked = Vec::new();
    for (step, g) in fixture_gradients(case).iter().enumerate() {
        let (next, next_state) = optim.step(case.lr, w, tensor(g, case.shape), state);
        (w, state) = (next, next_state);
        if case.checked_steps.contains(&(step + 1)) {
            checked.push(values(&w));
        }
    }
    (checked, state.unwrap())
}

/// 8-bit GaLore quantizes the projected moments as `GaLoreAdamW8bit` does (block 256, the
/// signed and unsigned dynamic maps, the state's own absmax, the CUDA kernel's rounding),
/// across a refresh and with weight decay: every final code equal (seen: all 8192), weights
/// within 1e-4 after steps 2 and 4 (seen: 1.6e-5, 3.5e-5), where the same run with f32 moments
/// is 48x and 109x farther. The fixture sets `eps = 1e-10`, where GaLore's Hugging Face
/// convention (`m / (sqrt(v) + eps)`) and bitsandbytes' PyTorch one (`eps` on the
/// bias-corrected `sqrt(v)`) agree; what remains is f32 round-off (`1 - beta` in f32 here, in
/// f64 there), amplified in the entries whose `v` is tiny.
#[test]
fn galore_8bit_follows_galore_adamw8bit() {
    for case in fixture().galore8bit {
        let (ours, state) = run_galore(&case, MomentPrecision::Q8);
        let (full, _) = run_galore(&case, MomentPrecision::F32);
        let moments = state.inner.moments.expect("the matrix has moments");
        let [m, r] = [case.shape[0], case.rank];
        assert_eq!(
            moments.dims(),
            [m, r],
            "{}: the reference's projected shape",
            case.name
        );
        let StoredMoments::Quantized(q) = moments else {
            panic!("{}: {m}x{r} moments are 8-bit", case.name)
        };
        for (codes, map, published, absmax, published_absmax) in [
            (
                &q.first,
                CodeMap::Signed8,
                &case.codes_first,
                values(&q.first.scales),
                &case.absmax_first,
            ),
            (
                &q.second,
                CodeMap::Unsigned8,
                &case.codes_second,
                values(&q.second.scales),
                &case.absmax_second,
            ),
        ] {
            // f32 round-off (`1 - beta` in f32 here, in f64 there; two SVDs) moves a few
            // values across a rounding boundary: those codes land one step apart, or several
            // steps in the table's dense middle, where steps are tiny against the absmax.
            let bytes = to_bytes(codes, map);
            let table = map.table();
            let differ = bytes.iter().zip(published).filter(|(a, b)| a != b).count();
            let far = (bytes.iter().zip(published).enumerate())
                .filter(|(i, (a, b))| {
                    let gap = (table[**a as usize] - table[**b as usize]).abs();
                    a.abs_diff(**b) > 1 && gap * absmax[i / 256] > 1e-4 * published_absmax[i / 256]
                })
                .count();
            eprintln!("{}: {map:?}: {differ} of {} codes differ, {far} by more than one step and 1e-4 of the absmax", case.name, bytes.len());
            assert!(
                differ * 100 <= bytes.len() && far == 0,
                "{}: {map:?}: {differ} codes differ, {far} far",
                case.name
            );
            let absmax_diff = common::max_abs_diff(&absmax, published_absmax);
            let largest = published_absmax.iter().fold(0f32, |a, &b| a.max(b));
            assert!(
                absmax_diff <= 1e-4 * largest,
                "{}: {map:?} absmax off by {absmax_diff:e}",
                case.name
            );
        }
        for (k, reference) in case.weights.iter().enumerate() {
            let q8 = common::max_abs_diff(&ours[k], reference);
            let f32 = common::max_abs_diff(&full[k], reference);
            eprintln!(
                "{}: step {}: q8 {q8:e}, f32 {f32:e} from the reference",
                case.name, case.checked_steps[k]
            );
            assert!(
                q8 <= 1e-4,
                "{}: step {}: {q8:e} from the reference",
                case.name,
                case.checked_steps[k]
            );
            assert!(
                f32 >= 10.0 * q8,
                "{}: the fixture cannot tell 8-bit from f32 ({f32:e})",
                case.name
            );
        }
    }
}

/// A gradient holding NaN skips the step and leaves quantized state bitwise as it was.
#[test]
fn a_non_finite_gradient_leaves_quantized_state_alone() {
    let optim = GaLoreConfig::new()
        .with_rank(32)
        .with_moments(MomentPrecision::Q8)
        .build()
        .unwrap();
    let mut rng = common::TestRng::new(5);
    let w = rng.dense(64, 128).to_tensor();
    let (w, state) = optim.step(0.01, w, rng.dense(64, 128).to_tensor(), None);
    let before = record_codes(state.as_ref().unwrap());
    let mut poisoned = values(&rng.dense(64, 128).to_tensor());
    poisoned[7] = f32::NAN;
    let (w2, state) = optim.step(0.01, w.clone(), tensor(&poisoned, [64, 128]), state);
    assert_eq!(values(&w2), values(&w));
    assert_eq!(record_codes(state.as_ref().unwrap()), before);
    // One update applied: the step count less the skips a GPU backend counted on the device.
    assert_eq!(common::applied_steps(state.as_ref().unwrap()), 1);
}

/// The codes and scales of a quantized state, as a checkpoint holds them.
fn record_codes(state: &GaLoreState<2>) -> (Vec<u8>, Vec<u8>, Vec<f32>, Vec<f32>) {
    match state.moments.as_ref().unwrap() {
        StoredMoments::Quantized(q) => (
            to_bytes(&q.first, CodeMap::Signed8),
            to_bytes(&q.second, CodeMap::Unsigned8),
            values(&q.first.scales),
            values(&q.second.scales),
        ),
        StoredMoments::F32(_) => panic!("64x32 moments are quantized"),
    }
}

/// At a refresh, `Reset` starts quantized moments from zero (step count 1 after the step),
/// `Rotate` carries them (dequantized, transported, requantized) and lands next to the f32
/// run's rotated moments, within the quantization error.
#[test]
fn refresh_policies_work_on_quantized_moments() {
    use lowrank_optim::MomentPolicy;
    let mut rng = common::TestRng::new(11);
    let grads: Vec<Tensor<2>> = (0..3).map(|_| rng.dense(64, 128).to_tensor()).collect();
    let run = |policy: MomentPolicy, precision: MomentPrecision| -> Moments<2> {
        let optim = GaLoreConfig::new()
            .with_rank(32)
            .with_update_proj_gap(2)
            .with_moment_policy(policy)
            .with_moments(precision)
            .build()
            .unwrap();
        let mut w = Tensor::<2>::zeros([64, 128], &device());
        let mut state = None;
        for g in &grads {
            let (next, next_state) = optim.step(0.01, w, g.clone(), state);
            (w, state) = (next, next_state);
        }
        state.unwrap().inner.moments.unwrap().load()
    };
    let relative = |a: &Tensor<2>, b: &Tensor<2>| {
        let (a, b) = (values(a), values(b));
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        common::max_abs_diff(&a, &b) / scale
    };
    for policy in [
        MomentPolicy::Reset,
        MomentPolicy::Rotate,
        MomentPolicy::Keep,
    ] {
        let (q8, f32) = (
            run(policy, MomentPrecision::Q8),
            run(policy, MomentPrecision::F32),
        );
        let expected_step = if policy == MomentPolicy::Reset { 1 } else { 3 };
        assert_eq!(
            (q8.step, f32.step),
            (expected_step, expected_step),
            "{policy:?}"
        );
        for (a, b, what) in [(&q8.first, &f32.first, "m"), (&q8.second, &f32.second, "v")] {
            let error = relative(a, b);
            assert!(
                error < 0.05,
                "{policy:?}: {what} off by {error} of its largest entry"
            );
        }
    }
    let (rotated, kept) = (
        run(MomentPolicy::Rotate, MomentPrecision::Q8),
        run(MomentPolicy::Keep, MomentPrecision::Q8),
    );
    assert!(
        relative(&rotated.first, &kept.first) > 0.1,
        "Rotate transports the moments"
    );
}

mod every_optimizer {
    //! Every optimizer at 8 and 4 bits on the toy model through `ModuleOptimizer`, dense
    //! parameters on `DenseAdamW` at the same precision. The toy's tensors are small, so the
    //! size threshold is lowered to 64 entries: every state here is quantized (partial blocks
    //! included).

    use super::common::toy::{device, train, Toy, VOCAB};
    use super::common::{assert_reproduced, values};
    use burn::optim::ModuleOptimizer;
    use lowrank_optim::optim::DenseAdamWConfig;
    use lowrank_optim::{
        ApolloConfig, FiraConfig, FrugalConfig, GaLoreConfig, MatrixOptimizer, MemoryReport,
        MomentPrecision, ProjectionMethod, Router, StateFootprint,
    };

    const MIN_LEN: usize = 64;

    struct Case {
        name: String,
        build: Box<dyn Fn(&Toy) -> ModuleOptimizer>,
        estimate: Box<dyn Fn(&Toy) -> MemoryReport>,
        lr: f64,
    }

    fn case<O>(
        name: String,
        lr: f64,
        precision: MomentPrecision,
        make: impl Fn() -> O + Clone + 'static,
    ) -> Case
    where
        O: MatrixOptimizer + StateFootprint + 'static,
    {
        let router = || Router::llama().with_vocab_size(VOCAB);
        let dense = move || {
            let c = DenseAdamWConfig::new()
                .with_weight_decay(0.0)
                .with_moments(precision);
            c.with_min_quantized_len(MIN_LEN).build().unwrap()
        };
        let make2 = make.clone();
        Case {
            name,
            build: Box::new(move |model| router().build(model, make(), dense()).unwrap()),
            estimate: Box::new(move |model| {
                MemoryReport::estimate(model, &router(), &make2(), &dense())
            }),
            lr,
        }
    }

    fn cases() -> Vec<Case> {
        let mut out = Vec::new();
        for p in [MomentPrecision::Q8, MomentPrecision::Q4] {
            let name = |optim: &str| format!("{optim}/{}", p.name());
            out.push(case(name("galore"), 0.02, p, move || {
                let c = GaLoreConfig::new()
                    .with_rank(4)
                    .with_update_proj_gap(3)
                    .with_scale(1.0);
                c.with_moments(p)
                    .with_min_quantized_len(MIN_LEN)
                    .build()
                    .unwrap()
            }));
            out.push(case(name("galore-rotate"), 0.02, p, move || {
                let c = GaLoreConfig::new()
                    .with_rank(4)
                    .with_update_proj_gap(3)
                    .with_scale(1.0);
                let c = c.with_moment_policy(lowrank_optim::MomentPolicy::Rotate);
                c.with_moments(p)
                    .with_min_quantized_len(MIN_LEN)
                    .build()
                    .unwrap()
            }));
            out.push(case(name("fira"), 0.01, p, move || {
                let c = FiraConfig::new().with_rank(4).with_update_proj_gap(3);
                c.with_moments(p)
                    .with_min_quantized_len(MIN_LEN)
                    .build()
                    .unwrap()
            }));
            out.push(case(name("frugal"), 0.01, p, move || {
                let c = FrugalConfig::new().with_update_proj_gap(3);
                c.with_moments(p)
                    .with_min_quantized_len(MIN_LEN)
                    .build()
                    .unwrap()
            }));
            out.push(case(name("frugal-block"), 0.01, p, move || {
                let c = FrugalConfig::new()
                    .with_projection(ProjectionMethod::Block)
                    .with_rho(0.5);
                c.with_update_proj_gap(3)
                    .with_moments(p)
                    .with_min_quantized_len(MIN_LEN)
                    .build()
                    .unwrap()
            }));
            out.push(case(name("apollo"), 0.01, p, move || {
                let c = ApolloConfig::new().with_rank(4).with_update_proj_gap(3);
                c.with_moments(p)
                    .with_min_quantized_len(MIN_LEN)
                    .build()
                    .unwrap()
            }));
        }
        out
    }

    fn dense_case(precision: MomentPrecision) -> (ModuleOptimizer, f64) {
        let c = DenseAdamWConfig::new()
            .with_weight_decay(0.0)
            .with_moments(precision);
        (c.with_min_quantized_len(MIN_LEN).init().unwrap(), 0.01)
    }

    #[test]
    fn every_optimizer_trains_at_low_precision() {
        let mut runs: Vec<(String, ModuleOptimizer, f64)> = cases()
            .into_iter()
            .map(|c| (c.name.clone(), (c.build)(&Toy::new(&device())), c.lr))
            .collect();
        for p in [MomentPrecision::Q8, MomentPrecision::Q4] {
            let (optim, lr) = dense_case(p);
            runs.push((format!("adamw/{}", p.name()), optim, lr));
        }
        for (name, mut optim, lr) in runs {
            let (_, losses) = train(Toy::new(&device()), &mut optim, 40, lr);
            let (first, last) = (losses[0], *losses.last().unwrap());
            assert!(
                last.is_finite() && last < 0.8 * first,
                "{name}: loss {first} -> {last}"
            );
        }
    }

    /// Eight steps straight against four, a save, a fresh optimizer loading the record, four
    /// more: the same weights (bitwise on CPU).
    #[test]
    fn quantized_state_resumes_exactly() {
        for case in cases() {
            let start = Toy::new(&device());
            let mut straight_optim = (case.build)(&start);
            let (straight, _) = train(start.clone(), &mut straight_optim, 8, case.lr);
            let mut first = (case.build)(&start);
            let (halfway, _) = train(start, &mut first, 4, case.lr);
            let bytes = first.into_bytes().unwrap();
            let mut resumed_optim = (case.build)(&halfway).from_bytes(bytes).unwrap();
            let (resumed, _) = train(halfway, &mut resumed_optim, 4, case.lr);
            let weights = |m: &Toy| {
                let (a, f) = (&m.attention, &m.feed_forward);
                [
                    &a.wq.weight,
                    &a.wo.weight,
                    &f.w1.weight,
                    &f.w2.weight,
                    &m.tok_embeddings.weight,
                ]
                .map(|w| values(&w.val()))
            };
            for (a, b) in weights(&straight).iter().zip(&weights(&resumed)) {
                assert_reproduced(a, b, &format!("{}: resumed run", case.name));
            }
        }
    }

    /// The bytes read from the record (codes, scales and `f32` leftovers) equal the shape
    /// estimate for every parameter, and are below the `f32` state.
    #[test]
    fn quantized_state_bytes_match_the_record() {
        for case in cases() {
            let model = Toy::new(&device());
            let mut optim = (case.build)(&model);
            let (model, _) = train(model, &mut optim, 2, case.lr);
            let measured = MemoryReport::measure(&optim, &model).unwrap();
            let estimated = (case.estimate)(&model);
            assert_eq!(measured.params, estimated.params, "{}", case.name);
            assert!(
                measured.state_bytes() * 2 < measured.adamw_bytes(),
                "{}",
                case.name
            );
        }
    }
}
