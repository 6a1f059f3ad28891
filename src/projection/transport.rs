//! What happens to the moments when a matrix's subspace is refreshed (`Keep`, `Reset`,
//! `Rotate`), and how aligned two subspaces are (the adaptive gap's test).

use burn::tensor::Tensor;

use super::basis::Basis;
use super::{MomentPolicy, Subspace};
use crate::adam::Moments;

/// Applies `policy` to `moments` when `old` is replaced by `new`.
pub(super) fn transport(
    policy: MomentPolicy,
    old: &Subspace,
    new: &Subspace,
    moments: Moments<2>,
) -> Moments<2> {
    // Before the first basis there is nothing to transport.
    if !old.has_basis() {
        return moments;
    }
    match policy {
        MomentPolicy::Keep => moments,
        MomentPolicy::Reset => Moments::zeros(moments.dims(), &moments.first.device()),
        MomentPolicy::Rotate => rotate(old, new, moments),
    }
}

/// `|cos|` between the leading vectors of two subspaces' bases (right side if projected,
/// else left).
pub(crate) fn leading_cosine(old: &Subspace, new: &Subspace) -> f64 {
    let pick = |s: &Subspace| {
        s.right
            .as_ref()
            .or(s.left.as_ref())
            .map(Basis::leading_column)
    };
    let (Some(a), Some(b)) = (pick(old), pick(new)) else {
        return 0.0;
    };
    let sums = Tensor::cat(
        vec![
            a.clone().mul(b.clone()).sum(),
            a.square().sum(),
            b.square().sum(),
        ],
        0,
    );
    let sums = crate::readback::data(sums).convert::<f64>();
    let [dot, na2, nb2]: [f64; 3] = sums.as_slice::<f64>().expect("f64 sums")[..3]
        .try_into()
        .expect("three sums");
    let (na, nb) = (na2.sqrt(), nb2.sqrt());
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na * nb)).abs()
}

/// `C = P_newᵀ P_old` for one side, or `None` when that side is not projected.
fn change_of_basis(old: &Option<Basis>, new: &Option<Basis>) -> Option<Tensor<2>> {
    match (old, new) {
        (Some(old), Some(new)) => Some(new.mul_t_left(old.matrix())),
        _ => None,
    }
}

/// Transports moments into the new basis: `M <- C_L M C_Rᵀ`, `V <- (C_L∘C_L) V (C_R∘C_R)ᵀ`.
fn rotate(old: &Subspace, new: &Subspace, moments: Moments<2>) -> Moments<2> {
    let c_left = change_of_basis(&old.left, &new.left);
    let c_right = change_of_basis(&old.right, &new.right);
    let apply = |x: Tensor<2>, squared: bool| {
        let square = |c: &Tensor<2>| {
            if squared {
                c.clone().square()
            } else {
                c.clone()
            }
        };
        let x = match &c_left {
            Some(c) => square(c).matmul(x),
            None => x,
        };
        match &c_right {
            Some(c) => x.matmul(square(c).transpose()),
            None => x,
        }
    };
    Moments {
        first: apply(moments.first, false),
        second: apply(moments.second, true),
        step: moments.step,
        skipped: moments.skipped,
    }
}
