//! The one `burn::optim::Optimizer` every subspace optimizer is: a [`SubspaceRule`] (the
//! optimizer's own math) inside [`SubspaceStep`] (everything the rules share), inside the
//! non-finite [`guard`](crate::guard).
//!
//! The scaffold owns the split between matrices (projected through the [`SubspaceManager`]),
//! FRUGAL's blocks and every other tensor (full-size moments), where weight decay goes, and the
//! per-parameter state record. A rule only turns a prepared gradient and its moments into an
//! update.

use burn::tensor::{Device, Tensor};

use crate::adam::StoredMoments;
use crate::adam::{decay, AdamParams, Moments};
use crate::error::{Error, Result};
use crate::groups::MatrixOptimizer;
use crate::guard::{Finite, Guarded, Needs, Select, Skips, Stepped, Unguarded, Withdraw};
use crate::matrix::{as_matrix, assert_state_fits, cast_rank, is_matrix_shape};
use crate::memory::{StateFootprint, F32_BYTES};
use crate::projection::{Prepared, ProjectionMethod, Subspace, SubspaceConfig, SubspaceManager};
use crate::RecordState;

/// Where an optimizer applies decoupled weight decay `W *= 1 - lr * wd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDecay {
    /// Before the update, on the old weights (PyTorch's AdamW: FRUGAL, DCT-AdamW).
    BeforeUpdate,
    /// After the update, on the new weights (Hugging Face's AdamW: GaLore, Fira, APOLLO).
    AfterUpdate,
}

impl WeightDecay {
    /// `weights - update` with the decay `wd` in its place; `None` is no update (decay only).
    fn apply<const D: usize>(
        self,
        lr: f64,
        wd: f32,
        weights: Tensor<D>,
        update: Option<Tensor<D>>,
    ) -> Tensor<D> {
        let step = |w: Tensor<D>| match update {
            Some(u) => w.sub(u),
            None => w,
        };
        match self {
            WeightDecay::BeforeUpdate => step(decay(weights, lr, wd)),
            WeightDecay::AfterUpdate => decay(step(weights), lr, wd),
        }
    }
}

/// The inputs of a matrix rule: the gradient, its prepared projection and the limiter norm.
pub struct MatrixStep {
    /// The full gradient `G` (`m x n`).
    pub grad: Tensor<2>,
    /// The subspace, the low-rank gradient `R = project(G)` and the transported moments.
    pub prepared: Prepared,
    /// The previous scaled residual's norm (norm-growth limiter), if any.
    pub limiter: Option<Tensor<1>>,
}

/// What a full-size rule returns: the update and the new moments.
pub type DenseUpdate<const D: usize> = (Tensor<D>, Moments<D>);

/// What a matrix rule returns.
pub struct MatrixUpdate {
    /// Subtracted from the weights (learning rate included), before or after weight decay.
    pub update: Tensor<2>,
    /// The new low-rank moments.
    pub moments: Moments<2>,
    /// The limiter norm to keep for the next step.
    pub limiter: Option<Tensor<1>>,
}

/// An optimizer's own math, the algorithm box of its paper; [`SubspaceOptimizer`] runs it.
pub trait SubspaceRule: Clone + core::fmt::Debug + Send + Sync + 'static {
    /// Whether the rule updates state-free tensors ([`state_free`](Self::state_free)), which
    /// [`ProjectionMethod::Block`] needs.
    const UPDATES_STATE_FREE: bool = false;

    /// Where weight decay goes: after the update (Hugging Face's AdamW) unless a rule says
    /// otherwise.
    const WEIGHT_DECAY: WeightDecay = WeightDecay::AfterUpdate;

    /// The rule's Adam settings (weight decay included).
    fn adam(&self) -> &AdamParams;

    /// Floats of extra state per matrix (the norm-growth limiter's previous norm).
    fn limiter_floats(&self) -> usize {
        0
    }

    /// The update of a matrix from its prepared low-rank gradient and moments.
    fn matrix(&self, lr: f64, step: MatrixStep) -> MatrixUpdate;

    /// The update of a tensor kept at full size (every rank but 2; FRUGAL's state-full blocks),
    /// with its new full-size moments: by default Adam of the HF/GaLore convention, unscaled.
    fn dense<const D: usize>(&self, lr: f64, grad: Tensor<D>, m: Moments<D>) -> DenseUpdate<D> {
        self.adam().hyper().hf_update(lr, grad, m)
    }

    /// The update of a tensor that keeps no state this period (FRUGAL's state-free blocks);
    /// `None`: no update.
    fn state_free<const D: usize>(&self, _lr: f64, _grad: Tensor<D>) -> Option<Tensor<D>> {
        None
    }
}

/// Per-parameter state of a [`SubspaceOptimizer`] (inside the guard's
/// [`GuardedState`](crate::guard::GuardedState), which dereferences to it).
#[derive(RecordState, Clone, Debug)]
pub struct SubspaceState<const D: usize> {
    /// Adam moments: of the projected gradient for matrices, full-size otherwise, stored at the
    /// configured [`MomentPrecision`](crate::MomentPrecision); `None` while a parameter has no
    /// state-full part (FRUGAL's state-free blocks) or before its first update.
    pub moments: Option<StoredMoments<D>>,
    /// The matrix's (or block's) subspace; `None` for tensors kept at full size.
    pub subspace: Option<Subspace>,
    /// Norm of the previous scaled residual for the norm-growth limiter (Fira, APOLLO).
    pub limiter: Option<Tensor<1>>,
    /// Updates applied to this parameter (with those the guard skipped on the device and has
    /// not read back); drives the refresh schedule.
    pub step: usize,
}

impl<const D: usize> SubspaceState<D> {
    fn empty() -> Self {
        Self {
            moments: None,
            subspace: None,
            limiter: None,
            step: 0,
        }
    }

    /// The stored moments in `f32`, with the guard's skip counter for bias correction.
    fn loaded_moments(&self, skips: &Skips) -> Option<Moments<D>> {
        let moments = self.moments.clone()?.load();
        Some(Moments {
            skipped: skips.counter(),
            ..moments
        })
    }

    /// Moves every tensor to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        SubspaceState {
            moments: self.moments.map(|m| m.to_device(device)),
            subspace: self.subspace.map(|s| s.to_device(device)),
            limiter: self.limiter.map(|t| t.to_device(device)),
            step: self.step,
        }
    }
}

impl<const D: usize> Select for SubspaceState<D> {
    fn choose(self, old: Self, finite: &Finite) -> Self {
        SubspaceState {
            moments: self.moments.choose(old.moments, finite),
            subspace: self.subspace.choose(old.subspace, finite),
            limiter: self.limiter.choose(old.limiter, finite),
            step: self.step,
        }
    }
}

impl<const D: usize> Withdraw for SubspaceState<D> {
    fn withdraw(self, skipped: &[usize]) -> Self {
        SubspaceState {
            moments: self.moments.map(|m| m.uncounted(skipped[0])),
            step: self.step - skipped[0],
            ..self
        }
    }
}

/// A subspace optimizer: the [`SubspaceManager`] decides which subspace each matrix's state
/// lives in and when it changes, the rule `R` decides the update, the guard skips a
/// non-finite gradient's update.
///
/// [`GaLore`](crate::GaLore), [`Fira`](crate::Fira), [`Frugal`](crate::Frugal) and
/// [`Apollo`](crate::Apollo) are this type with their rules. A gradient holding a NaN or an
/// infinity (anywhere, whatever the basis) skips that parameter's update and leaves its state
/// as it was (logged as a warning).
pub type SubspaceOptimizer<R> = Guarded<SubspaceStep<R>>;

/// A [`SubspaceOptimizer`] without its guard: the manager and the rule.
#[derive(Clone, Debug)]
pub struct SubspaceStep<R> {
    manager: SubspaceManager,
    rule: R,
}

impl<R: SubspaceRule> SubspaceOptimizer<R> {
    /// The optimizer running `rule` on the subspaces `subspace` describes, or the invalid
    /// field named. This is how a new optimizer is made: its rule is all it writes.
    ///
    /// ```
    /// use burn::optim::Optimizer;
    /// use burn::tensor::{Device, Tensor};
    /// use lowrank_optim::adam::AdamParams;
    /// use lowrank_optim::optim::{MatrixStep, MatrixUpdate, SubspaceOptimizer, SubspaceRule};
    /// use lowrank_optim::SubspaceConfig;
    ///
    /// /// Plain SGD through the subspace: `W -= lr back(project(G))`; other tensors get Adam.
    /// #[derive(Clone, Debug)]
    /// struct ProjectedSgd {
    ///     adam: AdamParams,
    /// }
    ///
    /// impl SubspaceRule for ProjectedSgd {
    ///     fn adam(&self) -> &AdamParams {
    ///         &self.adam
    ///     }
    ///     fn matrix(&self, lr: f64, step: MatrixStep) -> MatrixUpdate {
    ///         let prepared = step.prepared;
    ///         let update = prepared.subspace.project_back(prepared.low_grad.mul_scalar(lr));
    ///         MatrixUpdate { update, moments: prepared.moments, limiter: None }
    ///     }
    /// }
    ///
    /// let rule = ProjectedSgd { adam: AdamParams::new() };
    /// let optim = SubspaceOptimizer::new(SubspaceConfig::new().with_rank(2), rule)?;
    /// let device = Device::default();
    /// let (w, g) = (Tensor::<2>::ones([6, 4], &device), Tensor::<2>::ones([6, 4], &device));
    /// let (w, state) = optim.step(0.1, w, g, None);
    /// assert_eq!(state.unwrap().step, 1);
    /// // The all-ones gradient lies in its own top singular subspace: W = 1 - 0.1.
    /// let first: f32 = w.slice([0..1, 0..1]).into_scalar();
    /// assert!((first - 0.9).abs() < 1e-5);
    /// # Ok::<(), lowrank_optim::Error>(())
    /// ```
    pub fn new(subspace: SubspaceConfig, rule: R) -> Result<Self> {
        if subspace.projection == ProjectionMethod::Block && !R::UPDATES_STATE_FREE {
            return Err(Error::InvalidConfig {
                field: "projection",
                value: "block".into(),
                expected: "a subspace kind: block mode needs a state-free update (FRUGAL)",
            });
        }
        Ok(Guarded::wrap(SubspaceStep {
            manager: SubspaceManager::new(subspace)?,
            rule,
        }))
    }

    /// The subspace manager in use.
    pub fn manager(&self) -> &SubspaceManager {
        &self.inner().manager
    }

    /// The update rule in use.
    pub fn rule(&self) -> &R {
        &self.inner().rule
    }
}

impl<R: SubspaceRule> SubspaceStep<R> {
    fn block_mode(&self) -> bool {
        self.manager.config().projection == ProjectionMethod::Block
    }

    /// The new moments as they are kept until the next step.
    fn store<const D: usize>(&self, moments: Moments<D>) -> StoredMoments<D> {
        StoredMoments::store(moments, self.rule.adam().moment_format())
    }

    /// `weights - update` with the rule's weight decay in its place.
    fn apply<const D: usize>(
        &self,
        lr: f64,
        weights: Tensor<D>,
        update: Option<Tensor<D>>,
    ) -> Tensor<D> {
        R::WEIGHT_DECAY.apply(lr, self.rule.adam().weight_decay, weights, update)
    }

    /// The subspace of a matrix (or block, as one `[numel, 1]` column) on first sight.
    fn create<const D: usize>(&self, weights: &Tensor<D>, grad: &Tensor<D>) -> Subspace {
        let dims = grad.dims();
        let ordinal = self.manager.ordinal_of(weights, grad);
        match self.block_mode() {
            true => self.manager.create([dims.iter().product(), 1], ordinal),
            false => self.manager.create([dims[0], dims[1]], ordinal),
        }
    }

    /// A projected matrix: prepare (refresh, transport, project), then the rule. The
    /// projected gradient stands witness for the gradient where it mixes every entry.
    fn step_matrix(
        &self,
        lr: f64,
        weights: Tensor<2>,
        grad: Tensor<2>,
        state: SubspaceState<2>,
        skips: &Skips,
    ) -> Stepped<SubspaceState<2>, 2> {
        let subspace = (state.subspace.clone()).unwrap_or_else(|| self.create(&weights, &grad));
        let loaded = state.loaded_moments(skips);
        let prepared = match self
            .manager
            .prepare(subspace, loaded, grad.clone(), state.step)
        {
            Ok(prepared) => prepared,
            Err((subspace, _)) => {
                log::warn!("lowrank-optim: no basis for a {:?} gradient", grad.dims());
                let state = SubspaceState {
                    subspace: Some(subspace),
                    ..state
                };
                return Stepped {
                    weights,
                    state,
                    witness: None,
                };
            }
        };
        let subspace = prepared.subspace.clone();
        let witness = (subspace.projection_sees_every_entry())
            .then(|| prepared.low_grad.clone().reshape([-1]));
        let update = self.rule.matrix(
            lr,
            MatrixStep {
                grad,
                prepared,
                limiter: state.limiter,
            },
        );
        let state = SubspaceState {
            moments: Some(self.store(update.moments)),
            subspace: Some(subspace),
            limiter: update.limiter,
            step: state.step + 1,
        };
        Stepped {
            weights: self.apply(lr, weights, Some(update.update)),
            state,
            witness,
        }
    }

    /// A whole tensor that is state-full or state-free for the current period (block mode).
    fn step_block<const D: usize>(
        &self,
        lr: f64,
        weights: Tensor<D>,
        grad: Tensor<D>,
        state: SubspaceState<D>,
        skips: &Skips,
    ) -> (Tensor<D>, SubspaceState<D>) {
        let subspace = (state.subspace.clone()).unwrap_or_else(|| self.create(&weights, &grad));
        let loaded = state.loaded_moments(skips);
        let block = self
            .manager
            .prepare_block(subspace, loaded, &grad, state.step);
        let (update, moments) = match block.moments {
            Some(moments) => {
                let (update, moments) = self.rule.dense(lr, grad, moments);
                (Some(update), Some(self.store(moments)))
            }
            None => (self.rule.state_free(lr, grad), None),
        };
        let state = SubspaceState {
            moments,
            subspace: Some(block.subspace),
            limiter: None,
            step: state.step + 1,
        };
        (self.apply(lr, weights, update), state)
    }

    /// A tensor kept at full size: Adam (or the rule's equivalent) on full-size moments.
    fn step_dense<const D: usize>(
        &self,
        lr: f64,
        weights: Tensor<D>,
        grad: Tensor<D>,
        state: SubspaceState<D>,
        skips: &Skips,
    ) -> (Tensor<D>, SubspaceState<D>) {
        let moments = (state.loaded_moments(skips))
            .unwrap_or_else(|| Moments::zeros(grad.dims(), &grad.device()));
        let (update, moments) = self.rule.dense(lr, grad, moments);
        let state = SubspaceState {
            moments: Some(self.store(moments)),
            step: state.step + 1,
            ..state
        };
        (self.apply(lr, weights, Some(update)), state)
    }
}

/// [`cast_rank`] for a whole state, inside a `D == 2` branch.
fn cast_state<const A: usize, const B: usize>(state: SubspaceState<A>) -> SubspaceState<B> {
    SubspaceState {
        moments: state.moments.map(StoredMoments::cast),
        subspace: state.subspace,
        limiter: state.limiter,
        step: state.step,
    }
}

impl<R: SubspaceRule> Unguarded for SubspaceStep<R> {
    type State<const D: usize> = SubspaceState<D>;

    /// A first step (no moments yet, or a block's first period) and a refresh computed on the
    /// host need a finite gradient there; a refresh on the device (DCT columns) needs exact
    /// counts, unless it comes every step.
    fn needs<const D: usize>(&self, state: &SubspaceState<D>, grad: &Tensor<D>) -> Needs {
        let (Some(subspace), false) = (&state.subspace, state.step == 0) else {
            return match state.moments {
                Some(_) => Needs::Nothing,
                None => Needs::FiniteOnHost,
            };
        };
        if !self.manager.refresh_due(subspace, state.step) {
            return Needs::Nothing;
        }
        if self.block_mode() || !self.manager.refreshes_on_device(subspace, &grad.device()) {
            return Needs::FiniteOnHost;
        }
        match subspace.gap() {
            1 => Needs::Nothing,
            _ => Needs::ExactCounts,
        }
    }

    /// Creates the subspace on first sight (kept even when the first gradient is skipped);
    /// checks that restored moments fit.
    fn prepare<const D: usize>(
        &self,
        weights: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<SubspaceState<D>>,
        _skips: &mut Skips,
    ) -> Option<SubspaceState<D>> {
        if !self.block_mode() && !is_matrix_shape(&grad.dims()) {
            if let Some(stored) = state.as_ref().and_then(|s| s.moments.as_ref()) {
                assert_state_fits("optimizer moments", &stored.dims(), &grad.dims());
            }
            return state;
        }
        let mut state = state.unwrap_or_else(SubspaceState::empty);
        if state.subspace.is_none() {
            state.subspace = Some(self.create(weights, grad));
        }
        Some(state)
    }

    fn update<const D: usize>(
        &self,
        lr: f64,
        weights: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SubspaceState<D>>,
        skips: &Skips,
    ) -> Stepped<SubspaceState<D>, D> {
        let state = state.unwrap_or_else(SubspaceState::empty);
        let (weights, state) = if self.block_mode() {
            self.step_block(lr, weights, grad, state, skips)
        } else if let Some(grad) = as_matrix(&grad) {
            let stepped = self.step_matrix(lr, cast_rank(weights), grad, cast_state(state), skips);
            return Stepped {
                weights: cast_rank(stepped.weights),
                state: cast_state(stepped.state),
                witness: stepped.witness,
            };
        } else {
            self.step_dense(lr, weights, grad, state, skips)
        };
        Stepped {
            weights,
            state,
            witness: None,
        }
    }

    fn to_device<const D: usize>(state: SubspaceState<D>, device: &Device) -> SubspaceState<D> {
        state.to_device(device)
    }
}

impl<R: SubspaceRule> MatrixOptimizer for SubspaceOptimizer<R> {
    fn for_matrix(&self, ordinal: usize) -> Self {
        Guarded::wrap(SubspaceStep {
            manager: self.manager().with_fixed_ordinal(ordinal),
            rule: self.rule().clone(),
        })
    }
}

impl<R: SubspaceRule> StateFootprint for SubspaceOptimizer<R> {
    /// Matrices: two projected moments, the basis as its kind stores it (`f32` columns, `i32`
    /// indices, or only a seed) and the rule's limiter floats; blocks: two full moments while
    /// state-full (the first period's draw for this ordinal), nothing while state-free; other
    /// tensors: two full moments. Moments count at their precision
    /// ([`MomentFormat::pair_bytes`](crate::quant::MomentFormat::pair_bytes)).
    fn state_bytes(&self, shape: &[usize], ordinal: usize) -> usize {
        let manager = self.manager();
        let precision = self.rule().adam().moment_format();
        let full = precision.pair_bytes(shape);
        if manager.config().projection == ProjectionMethod::Block {
            return if manager.block_is_active(ordinal, 0) {
                full
            } else {
                0
            };
        }
        if !is_matrix_shape(shape) {
            return full;
        }
        let dims = [shape[0], shape[1]];
        let side = manager.config().proj_type.side(dims[0], dims[1]);
        let projected = side.projected_shape(dims, manager.effective_rank(dims));
        precision.pair_bytes(&projected)
            + F32_BYTES * self.rule().limiter_floats()
            + manager.basis_bytes(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two placements against their formulas: PyTorch's `W (1 - lr wd) - U`, Hugging
    /// Face's `(W - U)(1 - lr wd)`; no update is decay alone.
    #[test]
    fn weight_decay_goes_before_or_after_the_update() {
        let device = Device::default();
        let (w, u) = (2.0f32, 0.5f32);
        let (lr, wd) = (0.1f64, 0.3f32);
        let apply = |placement: WeightDecay, update: Option<f32>| -> f32 {
            let weights = Tensor::<1>::full([1], w, &device);
            let update = update.map(|u| Tensor::<1>::full([1], u, &device));
            placement.apply(lr, wd, weights, update).into_scalar()
        };
        let kept = 1.0 - lr * wd as f64;
        let close = |got: f32, want: f64| (got as f64 - want).abs() < 1e-6;
        assert!(close(
            apply(WeightDecay::BeforeUpdate, Some(u)),
            w as f64 * kept - u as f64
        ));
        assert!(close(
            apply(WeightDecay::AfterUpdate, Some(u)),
            (w - u) as f64 * kept
        ));
        assert!(close(
            apply(WeightDecay::AfterUpdate, None),
            w as f64 * kept
        ));
        assert!(close(
            apply(WeightDecay::BeforeUpdate, None),
            w as f64 * kept
        ));
    }
}
