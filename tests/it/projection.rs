//! Properties of the projection-subspace manager, checked against a dense f64 reference.

use crate::common;
use common::FromBasis;

use common::{captured_fraction, device, with_spectrum, Dense, PrepareFirst, TestRng};
use lowrank_optim::adam::Moments;
use lowrank_optim::projection::{Prepared, Subspace, SubspaceManager};
use lowrank_optim::{MomentPolicy, ProjType, ProjectionMethod, Side, SubspaceConfig};

const PROJ_TYPES: [ProjType; 5] = [
    ProjType::Std,
    ProjType::ReverseStd,
    ProjType::Left,
    ProjType::Right,
    ProjType::Full,
];
const METHODS: [ProjectionMethod; 2] = [ProjectionMethod::Svd, ProjectionMethod::Randomized];

fn manager(rank: usize, proj_type: ProjType, method: ProjectionMethod) -> SubspaceManager {
    SubspaceManager::new(
        SubspaceConfig::new()
            .with_rank(rank)
            .with_proj_type(proj_type)
            .with_projection(method)
            .with_update_proj_gap(10),
    )
    .unwrap()
}

fn prepare(manager: &SubspaceManager, g: &Dense) -> Prepared {
    manager
        .prepare_first(g.to_tensor())
        .expect("finite gradient")
}

/// A gradient-like matrix: singular values `1/i` plus small noise.
fn gradient_like(rng: &mut TestRng, m: usize, n: usize) -> (Dense, Dense, Dense) {
    let s: Vec<f64> = (1..=m.min(n)).map(|i| 1.0 / i as f64).collect();
    with_spectrum(rng, m, n, &s, 1e-4)
}

fn bases(sub: &Subspace) -> (Option<Dense>, Option<Dense>) {
    (
        sub.left().map(Dense::from_basis),
        sub.right().map(Dense::from_basis),
    )
}

fn assert_orthonormal(p: &Dense, what: &str) {
    let gram = p.t().matmul(p);
    let err = gram.max_abs_diff(&Dense::identity(p.cols));
    assert!(err < 1e-5, "{what}: |PᵀP - I| = {err:e}");
}

#[test]
fn every_side_and_method_gives_orthonormal_bases_of_the_right_shape() {
    let mut rng = TestRng::new(1);
    for (m, n) in [(30, 12), (12, 30), (16, 16)] {
        let (g, _, _) = gradient_like(&mut rng, m, n);
        for proj_type in PROJ_TYPES {
            for method in METHODS {
                let what = format!("{m}x{n} {proj_type:?} {method:?}");
                let p = prepare(&manager(5, proj_type, method), &g);
                let side = proj_type.side(m, n);
                assert_eq!(p.subspace.side(), side, "{what}");
                let (left, right) = bases(&p.subspace);
                assert_eq!(left.is_some(), side.has_left(), "{what}");
                assert_eq!(right.is_some(), side.has_right(), "{what}");
                if let Some(l) = left {
                    assert_eq!((l.rows, l.cols), (m, 5), "{what}");
                    assert_orthonormal(&l, &what);
                }
                if let Some(r) = right {
                    assert_eq!((r.rows, r.cols), (n, 5), "{what}");
                    assert_orthonormal(&r, &what);
                }
                assert_eq!(p.low_grad.dims(), side.projected_shape([m, n], 5), "{what}");
            }
        }
    }
}

/// The rules are galore-torch's on the layer's PyTorch view `[out, in]`, so on a Burn weight
/// `[d_in, d_out]` every side is the transpose of the one galore-torch picks for that view.
#[test]
fn proj_types_pick_the_references_side_of_the_same_layer() {
    // galore-torch verbatim, on [rows, cols] = [out, in].
    assert_eq!(ProjType::Std.torch_side(30, 12), Side::Right);
    assert_eq!(ProjType::Std.torch_side(12, 30), Side::Left);
    assert_eq!(ProjType::Std.torch_side(16, 16), Side::Right);
    assert_eq!(ProjType::ReverseStd.torch_side(30, 12), Side::Left);
    assert_eq!(ProjType::ReverseStd.torch_side(16, 16), Side::Left);
    // The same layers in Burn's layout [d_in, d_out] = [cols, rows].
    assert_eq!(ProjType::Std.side(12, 30), Side::Left);
    assert_eq!(ProjType::Std.side(30, 12), Side::Right);
    assert_eq!(ProjType::Std.side(16, 16), Side::Left);
    assert_eq!(ProjType::ReverseStd.side(12, 30), Side::Right);
    assert_eq!(ProjType::ReverseStd.side(30, 12), Side::Left);
    assert_eq!(ProjType::ReverseStd.side(16, 16), Side::Right);
    for (m, n) in [(12, 30), (30, 12), (16, 16)] {
        assert_eq!(ProjType::Left.side(m, n), Side::Right, "{m}x{n}");
        assert_eq!(ProjType::Right.side(m, n), Side::Left, "{m}x{n}");
        assert_eq!(ProjType::Full.side(m, n), Side::Both, "{m}x{n}");
        for proj_type in PROJ_TYPES {
            assert_eq!(
                proj_type.side(m, n),
                proj_type.torch_side(n, m).transposed(),
                "{proj_type:?} {m}x{n}"
            );
        }
    }
}

#[test]
fn back_of_project_is_the_orthogonal_projection_of_the_gradient() {
    let mut rng = TestRng::new(2);
    for (m, n) in [(24, 10), (10, 24)] {
        let (g, _, _) = gradient_like(&mut rng, m, n);
        for proj_type in PROJ_TYPES {
            let p = prepare(&manager(4, proj_type, ProjectionMethod::Svd), &g);
            let ours = Dense::from_tensor(&p.subspace.project_back(p.low_grad.clone()));
            let (left, right) = bases(&p.subspace);
            let mut expected = g.clone();
            if let Some(l) = left {
                expected = l.matmul(&l.t()).matmul(&expected);
            }
            if let Some(r) = right {
                expected = expected.matmul(&r.matmul(&r.t()));
            }
            let err = ours.max_abs_diff(&expected);
            assert!(
                err < 1e-5,
                "{m}x{n} {proj_type:?}: back(project(G)) off by {err:e}"
            );
            // Projecting twice changes nothing: P Pᵀ is a projector.
            let again = p
                .subspace
                .project_back(p.subspace.project(ours.to_tensor()));
            assert!(Dense::from_tensor(&again).max_abs_diff(&ours) < 1e-5);
        }
    }
}

#[test]
fn exact_svd_spans_the_top_singular_subspace() {
    let mut rng = TestRng::new(3);
    let (m, n, r) = (40, 20, 6);
    let s: Vec<f64> = (0..n).map(|i| 2f64.powf(-(i as f64) / 2.0)).collect();
    let (g, u, v) = with_spectrum(&mut rng, m, n, &s, 0.0);
    let u_r = Dense::from_fn(m, r, |i, j| u.at(i, j));
    let v_r = Dense::from_fn(n, r, |i, j| v.at(i, j));
    let p = prepare(&manager(r, ProjType::Full, ProjectionMethod::Svd), &g);
    let (left, right) = bases(&p.subspace);
    // ||U_rᵀ L||² = r exactly when span(L) = span(U_r).
    let overlap_left = u_r.t().matmul(&left.unwrap()).frobenius_sq();
    let overlap_right = v_r.t().matmul(&right.unwrap()).frobenius_sq();
    assert!(
        (overlap_left - r as f64).abs() < 1e-4,
        "left overlap {overlap_left}"
    );
    assert!(
        (overlap_right - r as f64).abs() < 1e-4,
        "right overlap {overlap_right}"
    );
}

#[test]
fn randomized_svd_captures_99_percent_of_the_top_energy() {
    let mut rng = TestRng::new(4);
    let (m, n, r) = (160, 96, 12);
    let (g, u, _) = gradient_like(&mut rng, m, n);
    let top = Dense::from_fn(m, r, |i, j| u.at(i, j));
    let p = prepare(
        // `Right` reduces the layer's input dimension: the rows of a Burn weight.
        &manager(r, ProjType::Right, ProjectionMethod::Randomized),
        &g,
    );
    let fraction = captured_fraction(&g, &bases(&p.subspace).0.unwrap(), &top);
    assert!(fraction >= 0.99, "captured {fraction}");
    assert!(
        fraction <= 1.0 + 1e-6,
        "captured {fraction} > 1: basis not orthonormal"
    );
}

#[test]
fn singular_vector_signs_are_canonical() {
    let mut rng = TestRng::new(5);
    let (g, _, _) = gradient_like(&mut rng, 20, 12);
    for method in METHODS {
        let m = manager(4, ProjType::Full, method);
        let plus = prepare(&m, &g);
        let minus = prepare(&m, &g.map(|x| -x));
        for (a, b) in [
            (plus.subspace.left(), minus.subspace.left()),
            (plus.subspace.right(), minus.subspace.right()),
        ] {
            let (a, b) = (Dense::from_basis(a.unwrap()), Dense::from_basis(b.unwrap()));
            for j in 0..a.cols {
                let pivot = (0..a.rows).map(|i| a.at(i, j)).fold(0.0, |p: f64, x| {
                    if x.abs() > p.abs() {
                        x
                    } else {
                        p
                    }
                });
                assert!(
                    pivot > 0.0,
                    "{method:?} column {j}: largest entry {pivot} is negative"
                );
            }
            // G and -G share singular subspaces; canonical signs make their bases equal.
            assert!(a.max_abs_diff(&b) < 1e-4, "{method:?}: basis of -G differs");
        }
    }
}

#[test]
fn rank_above_the_matrix_size_is_clamped_not_a_panic() {
    let mut rng = TestRng::new(6);
    let (g, _, _) = gradient_like(&mut rng, 10, 6);
    for proj_type in PROJ_TYPES {
        let p = prepare(&manager(50, proj_type, ProjectionMethod::Svd), &g);
        assert_eq!(p.subspace.rank(), 6, "{proj_type:?}");
        // At full rank on the projected side (the 6 columns) the projection loses nothing.
        let back = Dense::from_tensor(&p.subspace.project_back(p.low_grad.clone()));
        if p.subspace.side() == Side::Right {
            assert!(back.max_abs_diff(&g) < 1e-5, "{proj_type:?}");
        }
    }
}

/// Steps `manager` through gradients `gs` (moments are fed back untouched) and returns the
/// subspace after each step.
fn subspaces_over(manager: &SubspaceManager, gs: &[Dense]) -> Vec<Subspace> {
    let mut subspace = manager.create([gs[0].rows, gs[0].cols], 0);
    let mut moments = None;
    let mut out = Vec::new();
    for (step, g) in gs.iter().enumerate() {
        let p = manager
            .prepare(subspace, moments, g.to_tensor(), step)
            .unwrap();
        out.push(p.subspace.clone());
        subspace = p.subspace;
        moments = Some(p.moments);
    }
    out
}

#[test]
fn refresh_happens_at_steps_0_t_2t_like_the_reference() {
    let mut rng = TestRng::new(7);
    let gs: Vec<Dense> = (0..8).map(|_| gradient_like(&mut rng, 18, 9).0).collect();
    let m =
        SubspaceManager::new(SubspaceConfig::new().with_rank(3).with_update_proj_gap(3)).unwrap();
    let subspaces = subspaces_over(&m, &gs);
    let mut changed_at = Vec::new();
    for step in 1..subspaces.len() {
        let before = Dense::from_basis(subspaces[step - 1].right().unwrap());
        let after = Dense::from_basis(subspaces[step].right().unwrap());
        if before.max_abs_diff(&after) > 1e-6 {
            changed_at.push(step);
        }
    }
    assert_eq!(changed_at, vec![3, 6]);
    assert_eq!(subspaces.last().unwrap().refreshes(), 3);
    // Each refreshed basis is the exact top-3 basis of that step's gradient.
    for step in [0, 3, 6] {
        let fresh = m.prepare_first(gs[step].to_tensor()).unwrap();
        let a = Dense::from_basis(fresh.subspace.right().unwrap());
        let b = Dense::from_basis(subspaces[step].right().unwrap());
        assert!(a.max_abs_diff(&b) < 1e-5, "step {step}");
    }
}

/// Moments on the first basis of `g1`, then a refresh on `g2` under `policy`.
fn refresh_with(
    policy: MomentPolicy,
    side: ProjType,
    g1: &Dense,
    g2: &Dense,
) -> (Prepared, Moments<2>, Prepared) {
    let m = SubspaceManager::new(
        SubspaceConfig::new()
            .with_rank(3)
            .with_update_proj_gap(5)
            .with_proj_type(side)
            .with_moment_policy(policy),
    )
    .unwrap();
    let first = m.prepare_first(g1.to_tensor()).unwrap();
    let mut rng = TestRng::new(11);
    let [a, b] = first.moments.dims();
    let moments = Moments {
        first: rng.dense(a, b).to_tensor(),
        second: rng.dense(a, b).map(|x| x * x).to_tensor(),
        step: 5,
        skipped: None,
    };
    let second = m
        .prepare(
            first.subspace.clone(),
            Some(moments.clone()),
            g2.to_tensor(),
            5,
        )
        .unwrap();
    (first, moments, second)
}

#[test]
fn keep_carries_moments_and_reset_zeroes_them() {
    let mut rng = TestRng::new(8);
    let (g1, g2) = (
        gradient_like(&mut rng, 16, 8).0,
        gradient_like(&mut rng, 16, 8).0,
    );
    let (_, before, kept) = refresh_with(MomentPolicy::Keep, ProjType::Std, &g1, &g2);
    assert_eq!(kept.subspace.refreshes(), 2);
    assert_eq!(
        Dense::from_tensor(&kept.moments.first),
        Dense::from_tensor(&before.first)
    );
    assert_eq!(kept.moments.step, 5);
    let (_, _, reset) = refresh_with(MomentPolicy::Reset, ProjType::Std, &g1, &g2);
    assert_eq!(reset.moments.step, 0);
    assert_eq!(Dense::from_tensor(&reset.moments.first).frobenius_sq(), 0.0);
    assert_eq!(
        Dense::from_tensor(&reset.moments.second).frobenius_sq(),
        0.0
    );
}

#[test]
fn rotate_matches_the_dense_reference_on_every_side() {
    let mut rng = TestRng::new(9);
    let (g1, g2) = (
        gradient_like(&mut rng, 14, 9).0,
        gradient_like(&mut rng, 14, 9).0,
    );
    for side in [ProjType::Right, ProjType::Left, ProjType::Full] {
        let (first, before, rotated) = refresh_with(MomentPolicy::Rotate, side, &g1, &g2);
        let (old_l, old_r) = bases(&first.subspace);
        let (new_l, new_r) = bases(&rotated.subspace);
        let c_l = new_l
            .as_ref()
            .map(|n| n.t().matmul(old_l.as_ref().unwrap()));
        let c_r = new_r
            .as_ref()
            .map(|n| n.t().matmul(old_r.as_ref().unwrap()));
        let transport = |x: Dense, square: bool| {
            let sq = |c: &Dense| if square { c.map(|v| v * v) } else { c.clone() };
            let x = match &c_l {
                Some(c) => sq(c).matmul(&x),
                None => x,
            };
            match &c_r {
                Some(c) => x.matmul(&sq(c).t()),
                None => x,
            }
        };
        let want_m = transport(Dense::from_tensor(&before.first), false);
        let want_v = transport(Dense::from_tensor(&before.second), true);
        assert!(
            Dense::from_tensor(&rotated.moments.first).max_abs_diff(&want_m) < 1e-5,
            "{side:?} M"
        );
        assert!(
            Dense::from_tensor(&rotated.moments.second).max_abs_diff(&want_v) < 1e-5,
            "{side:?} V"
        );
        assert!(
            Dense::from_tensor(&rotated.moments.second)
                .data
                .iter()
                .all(|&v| v >= 0.0),
            "{side:?} V < 0"
        );
        assert_eq!(
            rotated.moments.step, 5,
            "{side:?}: Rotate keeps bias correction"
        );
    }
}

#[test]
fn rotate_preserves_the_full_space_moment_when_the_span_is_unchanged() {
    // Same singular subspace, different order of the top values: the new basis is a signed
    // permutation of the old one, and M Pᵀ must survive the refresh exactly.
    let mut rng = TestRng::new(10);
    let (m, n) = (16, 10);
    let s1 = [8.0, 4.0, 2.0, 0.1, 0.05, 0.02];
    let s2 = [2.0, 8.0, 4.0, 0.1, 0.05, 0.02];
    let (g1, u, v) = with_spectrum(&mut rng, m, n, &s1, 0.0);
    let us2 = Dense::from_fn(m, 6, |i, j| u.at(i, j) * s2[j]);
    let g2 = us2.matmul(&v.t());
    // `Left` (the layer's output dimension) projects the columns of the raw matrix.
    let (first, before, rotated) = refresh_with(MomentPolicy::Rotate, ProjType::Left, &g1, &g2);
    let old = bases(&first.subspace).1.unwrap();
    let new = bases(&rotated.subspace).1.unwrap();
    assert!(
        old.max_abs_diff(&new) > 0.1,
        "the basis must actually change"
    );
    let full_before = Dense::from_tensor(&before.first).matmul(&old.t());
    let full_after = Dense::from_tensor(&rotated.moments.first).matmul(&new.t());
    assert!(full_before.max_abs_diff(&full_after) < 1e-5);
}

/// A basis computed on the host from a gradient holding a NaN or an infinity is refused, the
/// subspace and moments handed back as they were (between refreshes the optimizers' guard
/// skips such a gradient: `bad_input.rs`).
#[test]
fn a_refresh_from_a_non_finite_gradient_hands_the_state_back() {
    let mut rng = TestRng::new(12);
    let (g, _, _) = gradient_like(&mut rng, 12, 6);
    let m = manager(3, ProjType::Std, ProjectionMethod::Svd);
    for bad in [f64::NAN, f64::INFINITY] {
        let mut poisoned = g.clone();
        poisoned.data[7] = bad;
        assert!(m.prepare_first(poisoned.to_tensor()).is_err());
        let ok = m.prepare_first(g.to_tensor()).unwrap();
        let due = ok.subspace.gap();
        let (sub, moments) = m
            .prepare(
                ok.subspace.clone(),
                Some(ok.moments.clone()),
                poisoned.to_tensor(),
                due,
            )
            .unwrap_err();
        assert_eq!(sub.refreshes(), 1);
        assert_eq!(moments.unwrap().step, 0);
    }
}

#[test]
fn subspace_state_moves_between_devices() {
    let mut rng = TestRng::new(13);
    let (g, _, _) = gradient_like(&mut rng, 12, 6);
    let p = prepare(&manager(3, ProjType::Full, ProjectionMethod::Svd), &g);
    let moved = p.subspace.clone().to_device(&device());
    assert_eq!(
        Dense::from_basis(moved.left().unwrap()),
        Dense::from_basis(p.subspace.left().unwrap())
    );
}
