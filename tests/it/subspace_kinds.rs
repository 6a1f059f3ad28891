//! The SVD-free subspace kinds (DCT, coordinates, Gaussian, random orthogonal) and the adaptive
//! refresh gap, checked against a dense f64 reference written here.

use crate::common;
use common::FromBasis;

use burn::optim::RecordState;
use burn::optim::{StateSink, StateSource};
use common::{device, Dense, PrepareFirst, TestRng};
use lowrank_optim::adam::Moments;
use lowrank_optim::projection::{Basis, DctNorm, DctScoring, Subspace, SubspaceManager};
use lowrank_optim::{MomentPolicy, ProjType, ProjectionMethod, Side, SubspaceConfig};

/// Column scores of `G Q` in f64.
fn reference_scores(g: &Dense, norm: DctNorm) -> Vec<f64> {
    common::dct_column_scores(g, norm == DctNorm::L1)
}

/// Indices of the `r` largest scores, ascending.
fn top_indices(scores: &[f64], r: usize) -> Vec<i64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut top: Vec<i64> = order[..r].iter().map(|&i| i as i64).collect();
    top.sort_unstable();
    top
}

fn manager(config: SubspaceConfig) -> SubspaceManager {
    SubspaceManager::new(config).unwrap()
}

fn dct_config(rank: usize, scoring: DctScoring, norm: DctNorm) -> SubspaceConfig {
    SubspaceConfig::new()
        .with_rank(rank)
        .with_projection(ProjectionMethod::Dct)
        .with_dct_scoring(scoring)
        .with_dct_norm(norm)
}

#[test]
fn dct_refresh_keeps_the_best_aligned_columns_on_both_sides() {
    let mut rng = TestRng::new(5);
    for scoring in [DctScoring::Fft, DctScoring::Matmul] {
        for norm in [DctNorm::L1, DctNorm::L2] {
            for (m, n) in [(24, 10), (10, 24)] {
                let g = rng.dense(m, n);
                let prepared = manager(dct_config(4, scoring, norm))
                    .prepare_first(g.to_tensor())
                    .unwrap();
                let s = &prepared.subspace;
                let (basis, scores) = match s.side() {
                    Side::Right => (s.right().unwrap(), reference_scores(&g, norm)),
                    _ => (s.left().unwrap(), reference_scores(&g.t(), norm)),
                };
                assert_eq!(basis.indices().unwrap(), top_indices(&scores, 4));
                // R = G P with P the selected DCT columns.
                let p = Dense::from_basis(basis);
                let want = match s.side() {
                    Side::Right => g.matmul(&p),
                    _ => p.t().matmul(&g),
                };
                let got = Dense::from_tensor(&prepared.low_grad);
                assert!(
                    got.max_abs_diff(&want) < 1e-4,
                    "{scoring:?} {norm:?} {m}x{n}"
                );
            }
        }
    }
}

#[test]
fn a_dct_subspace_stores_r_integers_and_no_matrix() {
    let g = TestRng::new(8).dense(40, 32);
    let prepared = manager(dct_config(6, DctScoring::Auto, DctNorm::L1))
        .prepare_first(g.to_tensor())
        .unwrap();
    let mut sink = StateSink::default();
    prepared.subspace.state_flatten("p", &mut sink);
    assert_eq!(sink.tensors.len(), 1, "{:?}", sink.tensors);
    let (name, data) = &sink.tensors[0];
    assert_eq!(name, "p.right.indices");
    assert_eq!(data.shape().to_vec(), vec![6]);
    assert_eq!(data.dtype(), burn::tensor::DType::I32);

    // And it restores to the same basis.
    let mut source = StateSource::new(sink.scalars.into_iter().collect());
    for (name, data) in sink.tensors {
        source.insert_tensor(name, data);
    }
    let back = Subspace::state_unflatten("p", &mut source, &device()).unwrap();
    assert_eq!(
        back.right().unwrap().indices(),
        prepared.subspace.right().unwrap().indices()
    );
}

#[test]
fn dct_rotate_transports_moments_like_the_dense_reference() {
    let mut rng = TestRng::new(11);
    let config = dct_config(5, DctScoring::Auto, DctNorm::L1)
        .with_moment_policy(MomentPolicy::Rotate)
        .with_update_proj_gap(1);
    let manager = manager(config);
    for (m, n) in [(30, 12), (12, 30)] {
        let first = manager.prepare_first(rng.dense(m, n).to_tensor()).unwrap();
        let [a, b] = first.subspace.projected_shape();
        let (m1, v1) = (rng.dense(a, b), rng.dense(a, b).map(|x| x * x));
        let moments = Moments {
            first: m1.to_tensor(),
            second: v1.to_tensor(),
            step: 3,
            skipped: None,
        };
        let second = manager
            .prepare(
                first.subspace.clone(),
                Some(moments),
                rng.dense(m, n).to_tensor(),
                1,
            )
            .unwrap();
        let basis = |s: &Subspace| Dense::from_basis(s.right().or(s.left()).unwrap());
        let c = basis(&second.subspace).t().matmul(&basis(&first.subspace));
        let c2 = c.map(|x| x * x);
        let (want_m, want_v) = match first.subspace.side() {
            Side::Right => (m1.matmul(&c.t()), v1.matmul(&c2.t())),
            _ => (c.matmul(&m1), c2.matmul(&v1)),
        };
        assert!(Dense::from_tensor(&second.moments.first).max_abs_diff(&want_m) < 1e-5);
        assert!(Dense::from_tensor(&second.moments.second).max_abs_diff(&want_v) < 1e-5);
        assert_eq!(second.moments.step, 3);
        // Columns kept by both bases carry their moments over unchanged.
        let old = first.subspace.right().or(first.subspace.left()).unwrap();
        let new = second.subspace.right().or(second.subspace.left()).unwrap();
        let (old, new) = (old.indices().unwrap(), new.indices().unwrap());
        assert!(v1.data.iter().all(|&x| x >= 0.0));
        for (i, idx) in new.iter().enumerate() {
            if let Some(j) = old.iter().position(|o| o == idx) {
                let moved = Dense::from_tensor(&second.moments.first);
                let same = match first.subspace.side() {
                    Side::Right => (0..a).all(|r| (moved.at(r, i) - m1.at(r, j)).abs() < 1e-6),
                    _ => (0..b).all(|c| (moved.at(i, c) - m1.at(j, c)).abs() < 1e-6),
                };
                assert!(same, "kept column {idx} moved");
            }
        }
    }
}

#[test]
fn coordinate_subspaces_gather_and_scatter() {
    let mut rng = TestRng::new(17);
    let config = SubspaceConfig::new()
        .with_projection(ProjectionMethod::Coordinates)
        .with_density(Some(0.25))
        .with_proj_type(ProjType::Std);
    let manager = manager(config);
    for (m, n) in [(16, 12), (12, 16)] {
        let g = rng.dense(m, n);
        let p = manager.prepare_first(g.to_tensor()).unwrap();
        let basis = p.subspace.right().or(p.subspace.left()).unwrap();
        let indices = basis.indices().unwrap();
        assert_eq!(indices.len(), 3, "round(0.25 * 12)");
        assert!(indices.windows(2).all(|w| w[0] < w[1]));
        let dense = Dense::from_basis(basis);
        let want = match p.subspace.side() {
            Side::Right => g.matmul(&dense),
            _ => dense.t().matmul(&g),
        };
        assert!(Dense::from_tensor(&p.low_grad).max_abs_diff(&want) < 1e-6);
        let back = Dense::from_tensor(&p.subspace.project_back(p.low_grad.clone()));
        let want_back = match p.subspace.side() {
            Side::Right => want.matmul(&dense.t()),
            _ => dense.matmul(&want),
        };
        assert!(back.max_abs_diff(&want_back) < 1e-6);
    }
}

#[test]
fn random_bases_differ_per_matrix_and_refresh_but_are_seeded() {
    for method in [
        ProjectionMethod::Gaussian,
        ProjectionMethod::RandomOrthogonal,
    ] {
        let config = SubspaceConfig::new()
            .with_rank(4)
            .with_projection(method)
            .with_update_proj_gap(1)
            .with_seed(9);
        let g = TestRng::new(1).dense(20, 16).to_tensor();
        let run = || {
            let manager = manager(config.clone());
            let a = manager.prepare_first(g.clone()).unwrap().subspace;
            let other = manager.create(g.dims(), 1);
            let b = manager.prepare(other, None, g.clone(), 0).unwrap().subspace;
            let a2 = manager
                .prepare(a.clone(), None, g.clone(), 1)
                .unwrap()
                .subspace;
            [a, b, a2].map(|s| Dense::from_basis(s.right().unwrap()))
        };
        let [a, b, a2] = run();
        let [a_again, ..] = run();
        assert_eq!(a.max_abs_diff(&a_again), 0.0, "{method:?}: not seeded");
        assert!(
            a.max_abs_diff(&b) > 1e-3,
            "{method:?}: two matrices share a basis"
        );
        assert!(
            a.max_abs_diff(&a2) > 1e-3,
            "{method:?}: a refresh kept the basis"
        );
        let gram = a.t().matmul(&a);
        if method == ProjectionMethod::RandomOrthogonal {
            assert!(gram.max_abs_diff(&Dense::identity(4)) < 1e-5);
        }
    }
}

#[test]
fn gaussian_bases_are_checkpointed_as_a_seed() {
    let basis = Basis::gaussian(42, 300, 50, &device());
    let mut sink = StateSink::default();
    basis.state_flatten("b", &mut sink);
    assert!(sink.tensors.is_empty());
    let mut source = StateSource::new(sink.scalars.into_iter().collect());
    let back = Basis::state_unflatten("b", &mut source, &device()).unwrap();
    let (a, b) = (Dense::from_basis(&basis), Dense::from_basis(&back));
    assert_eq!(a.max_abs_diff(&b), 0.0);
    // Entries are N(0, 1/r).
    let var = a.frobenius_sq() / (300.0 * 50.0);
    assert!((var - 1.0 / 50.0).abs() < 0.002, "variance {var}");
}

/// `refresh_steps` of a matrix whose gradients at refreshes come from `grad_at`.
fn refresh_gaps(adaptive: bool, grad_at: impl Fn(usize) -> Dense) -> Vec<usize> {
    let config = SubspaceConfig::new()
        .with_rank(2)
        .with_update_proj_gap(2)
        .with_adaptive_gap(adaptive)
        .with_adaptive_gap_window(2);
    let manager = manager(config);
    let mut subspace = manager.create([12, 8], 0);
    let mut gaps = Vec::new();
    for step in 0..40 {
        let prepared = manager
            .prepare(subspace, None, grad_at(step).to_tensor(), step)
            .unwrap();
        if prepared.refreshed {
            gaps.push(prepared.subspace.gap());
        }
        subspace = prepared.subspace;
    }
    gaps
}

#[test]
fn adaptive_gap_doubles_only_while_bases_stay_aligned() {
    let mut rng = TestRng::new(23);
    let fixed = rng.dense(12, 8);
    let steady = refresh_gaps(true, |_| fixed.clone());
    // First basis, then two aligned refreshes double the gap: 2, 2, 4 (window 2), ...
    assert_eq!(&steady[..4], &[2, 2, 4, 4]);
    assert!(steady.contains(&8), "{steady:?}");
    // Off by default: the gap never moves.
    assert!(refresh_gaps(false, |_| fixed.clone())
        .iter()
        .all(|&g| g == 2));
    // Gradients whose leading directions alternate between orthogonal planes never align.
    let a = Dense::from_fn(12, 8, |i, j| {
        if i == j {
            1.0 + (i == 0) as u8 as f64
        } else {
            0.0
        }
    });
    let b = Dense::from_fn(12, 8, |i, j| {
        if i == j {
            1.0 + (i == 5) as u8 as f64
        } else {
            0.0
        }
    });
    let turning = refresh_gaps(true, |step| {
        if (step / 2) % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        }
    });
    assert!(turning.iter().all(|&g| g == 2), "{turning:?}");
}

/// What a Gaussian basis keeps on the device between refreshes (it is checkpointed as a seed)
/// is what `transient_basis_bytes` reports; other kinds keep nothing transient.
#[test]
fn transient_basis_bytes_are_the_gaussian_matrix_held_on_the_device() {
    let mut rng = TestRng::new(11);
    for (m, n) in [(12, 7), (7, 12)] {
        let g = rng.dense(m, n).to_tensor();
        for kind in [
            ProjectionMethod::Gaussian,
            ProjectionMethod::Svd,
            ProjectionMethod::Dct,
        ] {
            let manager =
                SubspaceManager::new(SubspaceConfig::new().with_rank(3).with_projection(kind))
                    .unwrap();
            let subspace = manager.prepare_first(g.clone()).unwrap().subspace;
            let held: usize = [subspace.left(), subspace.right()]
                .into_iter()
                .flatten()
                .map(|basis| match basis {
                    Basis::Gaussian { matrix, .. } => 4 * matrix.dims().iter().product::<usize>(),
                    _ => 0,
                })
                .sum();
            assert_eq!(
                manager.transient_basis_bytes([m, n]),
                held,
                "{kind:?} {m}x{n}"
            );
            assert_eq!(
                held > 0,
                kind == ProjectionMethod::Gaussian,
                "{kind:?} {m}x{n}"
            );
        }
    }
}

/// Block mode lives in the manager like every other kind: a state-full block keeps or resets
/// its moments at a refresh per the policy, and the adaptive gap doubles the period after a
/// window of refreshes that left the block's subspace as it was.
#[test]
fn blocks_follow_the_moment_policy_and_the_adaptive_gap() {
    let grad = Dense::from_fn(3, 4, |i, j| (i * 4 + j) as f64 * 0.1).to_tensor();
    let config = || {
        SubspaceConfig::new()
            .with_projection(ProjectionMethod::Block)
            .with_density(Some(1.0))
            .with_update_proj_gap(2)
    };
    for policy in [MomentPolicy::Keep, MomentPolicy::Reset] {
        let manager = SubspaceManager::new(config().with_moment_policy(policy)).unwrap();
        let mut subspace = manager.create([12, 1], 0);
        let mut moments: Option<Moments<2>> = None;
        for step in 0..3 {
            let block = manager.prepare_block(subspace, moments, &grad, step);
            let prepared = block.moments.expect("rho = 1: always state-full");
            // Steps 0 and 2 refresh: a reset restarts bias correction there.
            let expected = match (policy, step) {
                (MomentPolicy::Reset, 2) | (_, 0) => 0,
                _ => step,
            };
            assert_eq!(prepared.step, expected, "{policy:?} step {step}");
            moments = Some(Moments {
                step: prepared.step + 1,
                ..prepared
            });
            subspace = block.subspace;
        }
    }
    let mut config = config().with_adaptive_gap(true);
    config.adaptive_gap_window = 2;
    let manager = SubspaceManager::new(config).unwrap();
    let mut subspace = manager.create([12, 1], 0);
    let mut refreshes = vec![];
    for step in 0..12 {
        let before = subspace.refreshes();
        subspace = manager.prepare_block(subspace, None, &grad, step).subspace;
        if subspace.refreshes() > before {
            refreshes.push(step);
        }
    }
    // Gap 2, two aligned refreshes (2, 4) double it to 4.
    assert_eq!(refreshes, [0, 2, 4, 8]);
}
