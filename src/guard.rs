//! Skipping the update of a gradient that holds a NaN or an infinity: one wrapper,
//! [`Guarded`], around an optimizer's step ([`Unguarded`]), as optax's `apply_if_finite` wraps
//! a transformation. The optimizers it wraps hold no guard logic.
//!
//! On a CPU backend the guard reads whether the gradient is finite (before a refresh computed
//! on the host, after the step otherwise, from the step's witness) and, where it is not,
//! returns the weights and the state as they were. On a GPU that read would stall the queue
//! once per parameter per step, so between refreshes the step is computed whatever the
//! gradient holds and the guard picks every new value (the weights, each state tensor:
//! [`Select`]) on the device by a one-element flag: the old value where the gradient was not
//! finite. The host keeps counting the step; the guard's [`Skips`] counter (a device tensor)
//! says how many of the counted steps were skipped, bias correction subtracts it on the device
//! ([`Moments::at_step`](crate::adam::Moments::at_step)), and the next read the host makes
//! anyway (a refresh that needs exact counts, a checkpoint) takes it out of the state's counts
//! ([`Withdraw`]) and logs the warning.

use core::ops::Deref;

use burn::optim::Optimizer;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::matrix::{all_finite, is_host_device};
use crate::{RecordState, StateSink, StateSource};

/// Whether a step's gradient was finite, kept on the device: a one-element flag, held negated
/// (what every selection and the skip counter use, computed once per step).
#[derive(Clone, Debug)]
pub struct Finite {
    not: Tensor<1, Bool>,
}

impl Finite {
    /// Checks `tensor` on the device (no read).
    fn check<const D: usize>(tensor: Tensor<D>) -> Self {
        Finite {
            not: tensor.is_finite().all().bool_not(),
        }
    }
}

/// A value the guard can hand back as it was: `self` where the gradient was finite, `old`
/// where it was not. Host values (step counts, schedules) stay `self`'s.
pub trait Select: Sized {
    /// `self` where `finite`, else `old`.
    fn choose(self, old: Self, finite: &Finite) -> Self;
}

impl<const D: usize> Select for Tensor<D> {
    fn choose(self, old: Self, finite: &Finite) -> Self {
        self.mask_where(not_finite(finite), old)
    }
}

impl<const D: usize> Select for Tensor<D, Int> {
    fn choose(self, old: Self, finite: &Finite) -> Self {
        self.mask_where(not_finite(finite), old)
    }
}

/// A value that did not exist before stays new.
impl<T: Select> Select for Option<T> {
    fn choose(self, old: Self, finite: &Finite) -> Self {
        match (self, old) {
            (Some(new), Some(old)) => Some(new.choose(old, finite)),
            (new, _) => new,
        }
    }
}

/// The flag negated, as a rank-`D` tensor that broadcasts (`mask_where` broadcasts, and fuses
/// with the update's elementwise chain where an expanded mask would be materialized).
fn not_finite<const D: usize>(finite: &Finite) -> Tensor<D, Bool> {
    finite.not.clone().reshape([1; D])
}

/// A state whose step counts can be lowered by the updates the guard skipped on the device.
pub trait Withdraw: Sized {
    /// The state with `skipped` fewer updates counted: one count per entry of the guard's
    /// counter ([`Skips`]), a single count standing for every counter of the state.
    fn withdraw(self, skipped: &[usize]) -> Self;
}

/// The guard's count of the updates it skipped on the device since the host last read it.
///
/// One entry counts for every step counter of the state until a counter restarts (a reset of
/// SwitchLoRA's per-vector counters), then one entry per counter.
/// `None` while nothing was deferred.
#[derive(Clone, Debug, Default)]
pub struct Skips(Option<Tensor<1>>);

impl Skips {
    /// The counter, for bias correction ([`Moments::at_step`](crate::adam::Moments::at_step));
    /// `None`: nothing deferred.
    pub fn counter(&self) -> Option<Tensor<1>> {
        self.0.clone()
    }

    /// After a step computed on the device: one more skipped where the gradient was not
    /// finite.
    fn after(self, finite: &Finite) -> Self {
        let missed = finite.not.clone().float();
        Skips(Some(match self.0 {
            Some(skipped) => skipped.add(missed),
            None => missed,
        }))
    }

    /// Restarts the counters where `keep` is 0 (a reset of those counts): a state of
    /// `keep.len()` counters, whose counts are kept where `keep` is 1.
    pub(crate) fn restart(&mut self, keep: &[f32], device: &Device) {
        if let Some(skipped) = self.0.take() {
            let len = keep.len();
            let keep = Tensor::from_data(TensorData::new(keep.to_vec(), [len]), device);
            self.0 = Some(skipped.mul(keep));
        }
    }

    /// Reads the counter back (one read), logging the skipped updates of a `dims` parameter;
    /// the counts, or none when nothing was deferred.
    fn read_back(self, dims: &[usize]) -> Vec<usize> {
        let Some(skipped) = self.0 else {
            return vec![0];
        };
        let data = crate::readback::data(skipped).convert::<f32>();
        let counts: Vec<usize> = data.iter::<f32>().map(|c| c.round() as usize).collect();
        let most = counts.iter().copied().max().unwrap_or(0);
        if most > 0 {
            log::warn!(
                "lowrank-optim: skipped {most} update(s) of a {dims:?} parameter on the device: \
                 its gradient held NaN or infinity"
            );
        }
        counts
    }
}

/// A per-step coefficient (a step size, a bias correction): a number on the host, or a
/// one-element tensor on the device when the step count it depends on is only known there
/// (updates skipped on the device, [`Skips`]).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a tensor handle, moved, never boxed
pub enum Coefficient {
    /// Known on the host.
    Host(f64),
    /// A one-element tensor on the parameter's device.
    Device(Tensor<1>),
}

impl Coefficient {
    /// `x * c`.
    pub fn times<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Coefficient::Host(c) => x.mul_scalar(*c),
            Coefficient::Device(c) => x.mul(c.clone().reshape([1; D])),
        }
    }

    /// `x + c`.
    pub fn plus<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Coefficient::Host(c) => x.add_scalar(*c),
            Coefficient::Device(c) => x.add(c.clone().reshape([1; D])),
        }
    }

    /// `x / c`.
    pub fn divides<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Coefficient::Host(c) => x.div_scalar(*c),
            Coefficient::Device(c) => x.div(c.clone().reshape([1; D])),
        }
    }

    /// `c * k`.
    pub fn scaled(self, k: f64) -> Self {
        match self {
            Coefficient::Host(c) => Coefficient::Host(c * k),
            Coefficient::Device(c) => Coefficient::Device(c.mul_scalar(k)),
        }
    }
}

/// `host(t)` for the bias-correction count `t = step - skipped`: computed on the host when
/// nothing was deferred; otherwise a one-element device tensor, `host(step)` while nothing
/// was skipped (the common case, bit for bit the host value), `device(step - skipped)` after
/// a skip. `skipped` is the guard's one-entry counter ([`Skips::counter`]).
pub(crate) fn at_step(
    step: usize,
    skipped: Option<&Tensor<1>>,
    host: impl Fn(i32) -> f64,
    device: impl Fn(Tensor<1>) -> Tensor<1>,
) -> Coefficient {
    let exact = host(step as i32);
    let Some(skipped) = skipped else {
        return Coefficient::Host(exact);
    };
    let t = skipped.clone().neg().add_scalar(step as f64);
    let exact_value = Tensor::full([1], exact, &skipped.device());
    Coefficient::Device(exact_value.mask_where(skipped.clone().greater_elem(0.0), device(t)))
}

/// [`at_step`] for a state with one step count per entry (`steps`, SwitchLoRA's vectors):
/// the `[steps.len()]` values `host(t)`, uploaded, or computed on the device where the
/// counter's entries are positive.
pub(crate) fn at_each_step(
    steps: &[u32],
    skips: &Skips,
    host: impl Fn(i32) -> f64,
    device: impl Fn(Tensor<1>) -> Tensor<1>,
    on: &Device,
) -> Tensor<1> {
    let count = steps.len();
    let upload = |values: Vec<f32>| Tensor::from_data(TensorData::new(values, [count]), on);
    let exact = upload(steps.iter().map(|&t| host(t as i32) as f32).collect());
    let Some(skipped) = skips.counter() else {
        return exact;
    };
    let skipped = match skipped.dims()[0] {
        1 => skipped.expand([count]),
        _ => skipped.narrow(0, 0, count),
    };
    let t = upload(steps.iter().map(|&t| t as f32).collect()).sub(skipped.clone());
    exact.mask_where(skipped.greater_elem(0.0), device(t))
}

/// What a step needs of the host before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: the finiteness check can stay on the device.
    Nothing,
    /// Exact step counts (a refresh schedule decides from them); the check can stay on the
    /// device.
    ExactCounts,
    /// Exact counts and a gradient known to be finite (a refresh computed on the host, the
    /// first step of a state).
    FiniteOnHost,
}

/// What an [`Unguarded`] step returns.
#[derive(Clone, Debug)]
pub struct Stepped<S, const D: usize> {
    /// The new weights.
    pub weights: Tensor<D>,
    /// The new state.
    pub state: S,
    /// A smaller tensor that holds a NaN or an infinity whenever the gradient does (a
    /// projection that mixes every entry), which the check reads instead of the whole
    /// gradient; `None`: the gradient itself.
    pub witness: Option<Tensor<1>>,
}

/// An optimizer's step with no non-finite guard: what [`Guarded`] makes an `Optimizer`.
pub trait Unguarded: Clone + Send + Sync + 'static {
    /// Per-parameter state.
    type State<const D: usize>: Clone + Send + Sync + RecordState + Select + Withdraw + 'static;

    /// What this step needs of the host, for a state that exists (`None` is a first step,
    /// checked on the host).
    fn needs<const D: usize>(&self, state: &Self::State<D>, grad: &Tensor<D>) -> Needs;

    /// What the step does to the state whether or not the gradient is finite (create it, apply
    /// queued resets, check it fits the parameter); runs before the check.
    fn prepare<const D: usize>(
        &self,
        _weights: &Tensor<D>,
        _grad: &Tensor<D>,
        state: Option<Self::State<D>>,
        _skips: &mut Skips,
    ) -> Option<Self::State<D>> {
        state
    }

    /// The new weights and state, computed whatever `grad` holds; bias correction subtracts
    /// `skips` ([`Moments::at_step`](crate::adam::Moments::at_step)).
    fn update<const D: usize>(
        &self,
        lr: f64,
        weights: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
        skips: &Skips,
    ) -> Stepped<Self::State<D>, D>;

    /// Moves a state to `device`.
    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D>;
}

/// An [`Unguarded`] optimizer made a Burn `Optimizer` that skips the update of a gradient
/// holding a NaN or an infinity (anywhere) and leaves that parameter's state as it was,
/// logging a warning.
#[derive(Clone, Debug)]
pub struct Guarded<O> {
    inner: O,
}

impl<O> Guarded<O> {
    /// `inner` with the guard.
    pub fn wrap(inner: O) -> Self {
        Self { inner }
    }

    /// The optimizer inside.
    pub fn inner(&self) -> &O {
        &self.inner
    }
}

/// A [`Guarded`] optimizer's per-parameter state: the inner state (which it dereferences to)
/// and the skip counter.
///
/// Its checkpoint is the inner state's record with the applied updates only: a counter still
/// on the device is read back and taken out of the counts when the record is written, so a
/// record is the same whichever backend wrote it.
#[derive(Clone, Debug)]
pub struct GuardedState<S> {
    /// The inner optimizer's state.
    pub inner: S,
    skips: Skips,
    dims: Vec<usize>,
}

impl<S> Deref for GuardedState<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.inner
    }
}

impl<S: Withdraw> GuardedState<S> {
    /// The inner state with the updates skipped on the device read back (one read when any
    /// were deferred) and taken out of its counts.
    pub fn applied(self) -> S {
        let counts = self.skips.read_back(&self.dims);
        self.inner.withdraw(&counts)
    }
}

impl<S: Clone + RecordState + Withdraw> RecordState for GuardedState<S> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        self.clone().applied().state_flatten(prefix, out);
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let inner = S::state_unflatten(prefix, src, device)?;
        Some(Self {
            inner,
            skips: Skips::default(),
            dims: vec![],
        })
    }
}

/// Logs an update skipped because its gradient is not finite.
fn log_skip(dims: &[usize]) {
    log::warn!(
        "lowrank-optim: skipped the update of a {dims:?} parameter: its gradient holds NaN or infinity"
    );
}

impl<O: Unguarded> Optimizer for Guarded<O> {
    type State<const D: usize> = GuardedState<O::State<D>>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // Nothing to update; some backends cannot even run elementwise ops on empty tensors.
        if grad.dims().contains(&0) {
            return (tensor, state);
        }
        let dims = grad.dims().to_vec();
        let (mut inner, mut skips) = match state {
            Some(GuardedState { inner, skips, .. }) => (Some(inner), skips),
            None => (None, Skips::default()),
        };
        let needs = |inner: &Option<O::State<D>>| match inner {
            Some(inner) => self.inner.needs(inner, &grad),
            None => Needs::FiniteOnHost,
        };
        // A schedule decides from exact counts.
        if skips.0.is_some() && needs(&inner) != Needs::Nothing {
            let counts = core::mem::take(&mut skips).read_back(&dims);
            inner = inner.map(|s| s.withdraw(&counts));
        }
        // A refresh computed on the host (and a first step) must not see a non-finite gradient.
        let check_first = needs(&inner) == Needs::FiniteOnHost;
        let inner = self.inner.prepare(&tensor, &grad, inner, &mut skips);
        let wrap = |inner, skips| GuardedState {
            inner,
            skips,
            dims: dims.clone(),
        };
        let skip = |inner: Option<O::State<D>>, skips| {
            log_skip(&dims);
            (tensor.clone(), inner.map(|inner| wrap(inner, skips)))
        };
        if check_first {
            if !all_finite(&grad) {
                return skip(inner, skips);
            }
            let stepped = self
                .inner
                .update(lr, tensor.clone(), grad.clone(), inner, &skips);
            return (stepped.weights, Some(wrap(stepped.state, skips)));
        }
        let old = inner.clone();
        let stepped = self
            .inner
            .update(lr, tensor.clone(), grad.clone(), inner, &skips);
        let finite = Finite::check(
            stepped
                .witness
                .unwrap_or_else(|| grad.clone().reshape([-1])),
        );
        if is_host_device(&grad.device()) {
            // A CPU backend reads the flag (cheap there) and hands back the old values.
            if crate::readback::flag(finite.not) {
                return skip(old, skips);
            }
            return (stepped.weights, Some(wrap(stepped.state, skips)));
        }
        let state = match old {
            Some(old) => stepped.state.choose(old, &finite),
            None => stepped.state,
        };
        let weights = stepped.weights.choose(tensor.clone(), &finite);
        (weights, Some(wrap(state, skips.after(&finite))))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        GuardedState {
            inner: O::to_device(state.inner, device),
            skips: Skips(state.skips.0.map(|s| s.to_device(device))),
            dims: state.dims,
        }
    }
}
