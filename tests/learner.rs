//! Training through burn-train: the `Learner` with every optimizer family (SwitchLoRA switching
//! in `TrainStep::optimize`), its checkpoints and resume, gradient accumulation, and the
//! multi-device strategies on two CPU devices.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, MultiGradientsParams, Optimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_train::logger::InMemoryMetricLogger;
use burn_train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim,
    SupervisedTraining, TrainOutput, TrainStep,
};
use common::toy::{cross_entropy, Toy, VOCAB};
use lowrank_optim::optim::{SubspaceOptimizer, SubspaceRule};
use lowrank_optim::projection::Basis;
use lowrank_optim::switchlora::{
    SwitchClock, SwitchLoraConfig, SwitchLoraLinear, SwitchLoraLinearConfig, SwitchScheduleConfig,
    Switcher,
};
use lowrank_optim::{
    ApolloConfig, FiraConfig, FrugalConfig, GaLoreConfig, GaLoreState, MatrixOptimizer,
    ProjectionMethod, Residual, Router, SubspaceState,
};

/// Burn draws initial weights from the device's global RNG: tests that seed it and build
/// models must not interleave.
static SEEDED_RNG: Mutex<()> = Mutex::new(());

fn seeded_rng() -> std::sync::MutexGuard<'static, ()> {
    SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A batch of the toy task: tokens and the tokens to predict.
#[derive(Clone, Debug)]
struct Batch {
    tokens: Tensor<1, Int>,
    targets: Tensor<1, Int>,
}

#[derive(Clone)]
struct PairBatcher;

impl Batcher<(i64, i64), Batch> for PairBatcher {
    fn batch(&self, items: Vec<(i64, i64)>, device: &Device) -> Batch {
        let n = items.len();
        let (xs, ys): (Vec<i64>, Vec<i64>) = items.into_iter().unzip();
        Batch {
            tokens: Tensor::from_data(TensorData::new(xs, [n]), device),
            targets: Tensor::from_data(TensorData::new(ys, [n]), device),
        }
    }
}

/// The toy task of `common::toy` (token `i` -> `3 i + 1 mod VOCAB`), in a fixed order.
fn pairs() -> Vec<(i64, i64)> {
    (0..VOCAB as i64)
        .map(|x| (x, (3 * x + 1) % VOCAB as i64))
        .collect()
}

/// Batches of `batch_size` of `items`, in order.
fn loader(items: Vec<(i64, i64)>, batch_size: usize) -> Arc<dyn DataLoader<Batch>> {
    DataLoaderBuilder::new(PairBatcher)
        .batch_size(batch_size)
        .build(InMemDataset::new(items))
}

/// The toy model with its loss multiplied by `loss_scale` (to compare runs whose gradients
/// Burn sums over micro-batches or devices with one run on the concatenation).
#[derive(Module, Debug)]
struct Lm {
    toy: Toy,
    #[module(skip)]
    loss_scale: f32,
}

impl Lm {
    fn new(device: &Device) -> Self {
        Lm {
            toy: Toy::new(device),
            loss_scale: 1.0,
        }
    }

    fn classify(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.toy.logits(batch.tokens);
        let loss = cross_entropy(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss.mul_scalar(self.loss_scale), logits, batch.targets)
    }
}

impl TrainStep for Lm {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Lm {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// Mean loss of `toy` over the whole task.
fn task_loss(toy: &Toy) -> f32 {
    let device = toy.output.weight.device();
    let batch = PairBatcher.batch(pairs(), &device);
    common::values(&toy.loss(batch.tokens, batch.targets))[0]
}

/// Every tensor of a model's record, by name.
fn weights<M: Module>(model: &M) -> Vec<(String, Vec<u8>)> {
    let bytes = model.clone().into_record().into_bytes().unwrap();
    common::record_tensors(&burn_pack::Reader::from_bytes(bytes).unwrap())
}

/// A run of `epochs` epochs over the task in `dir`, batches of `batch`, `configure` applied
/// last.
fn fit<M>(
    learner: Learner<M>,
    dir: &Path,
    epochs: usize,
    batch: usize,
    configure: impl FnOnce(SupervisedTraining<M>) -> SupervisedTraining<M>,
) -> M
where
    M: burn_train::LearnerModel + TrainStep<Input = Batch> + InferenceStep<Input = Batch>,
{
    fit_on(learner, dir, epochs, loader(pairs(), batch), configure)
}

/// [`fit`] over the batches of `train`.
fn fit_on<M>(
    learner: Learner<M>,
    dir: &Path,
    epochs: usize,
    train: Arc<dyn DataLoader<Batch>>,
    configure: impl FnOnce(SupervisedTraining<M>) -> SupervisedTraining<M>,
) -> M
where
    M: burn_train::LearnerModel + TrainStep<Input = Batch> + InferenceStep<Input = Batch>,
{
    let training = SupervisedTraining::new(dir, train, loader(pairs(), VOCAB))
        .num_epochs(epochs)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None);
    let result = configure(training).launch(learner);
    assert!(
        result.error.is_none(),
        "training failed: {:?}",
        result.error
    );
    result.model
}

/// Where each projected parameter's state was when it was stepped: the device of the step,
/// and whether every tensor of the state (moments, bases, indices, limiter norm) was on it,
/// before the step and after.
type Placements = Arc<Mutex<Vec<(String, bool)>>>;

/// A subspace optimizer that notes [`Placements`].
#[derive(Clone)]
struct Placed<O> {
    inner: O,
    log: Placements,
}

fn state_devices<const D: usize>(state: &SubspaceState<D>) -> Vec<Device> {
    let mut out = Vec::new();
    if let Some(m) = &state.moments {
        out.extend(m.devices());
    }
    for basis in state
        .subspace
        .iter()
        .flat_map(|s| [s.left(), s.right()])
        .flatten()
    {
        out.push(match basis {
            Basis::Dense(t) => t.device(),
            Basis::Dct { indices, .. } | Basis::Coordinates { indices, .. } => indices.device(),
            Basis::Gaussian { matrix, .. } => matrix.device(),
        });
    }
    out.extend(state.limiter.iter().map(|t| t.device()));
    out
}

impl<R: SubspaceRule> Optimizer for Placed<SubspaceOptimizer<R>> {
    type State<const D: usize> = GaLoreState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<GaLoreState<D>>,
    ) -> (Tensor<D>, Option<GaLoreState<D>>) {
        let device = grad.device();
        let on_device = |s: &Option<GaLoreState<D>>| {
            s.iter().flat_map(|s| state_devices(s)).all(|d| d == device)
        };
        let before = on_device(&state);
        let (tensor, state) = self.inner.step(lr, tensor, grad, state);
        let ok = before && on_device(&state);
        self.log.lock().unwrap().push((format!("{device:?}"), ok));
        (tensor, state)
    }

    fn to_device<const D: usize>(state: GaLoreState<D>, device: &Device) -> GaLoreState<D> {
        SubspaceOptimizer::<R>::to_device(state, device)
    }
}

impl<R: SubspaceRule> MatrixOptimizer for Placed<SubspaceOptimizer<R>> {
    fn for_matrix(&self, ordinal: usize) -> Self {
        Placed {
            inner: self.inner.for_matrix(ordinal),
            log: self.log.clone(),
        }
    }
}

/// One subspace optimizer family: its name, learning rate and Router-built optimizer.
struct Family {
    name: &'static str,
    lr: f64,
    build: fn(&Lm, &Placements) -> ModuleOptimizer,
}

fn routed<R: SubspaceRule>(
    model: &Lm,
    inner: SubspaceOptimizer<R>,
    log: &Placements,
) -> ModuleOptimizer {
    let dense = AdamWConfig::new().with_weight_decay(0.0).build();
    let router = Router::llama().with_vocab_size(VOCAB);
    let projected = Placed {
        inner,
        log: log.clone(),
    };
    router.build(model, projected, dense).unwrap()
}

const FAMILIES: [Family; 5] = [
    Family {
        name: "galore",
        lr: 0.02,
        build: |model, log| {
            let c = GaLoreConfig::new().with_rank(4).with_update_proj_gap(3);
            routed(model, c.with_scale(1.0).build().unwrap(), log)
        },
    },
    Family {
        name: "fira",
        lr: 0.01,
        build: |model, log| {
            let c = FiraConfig::new().with_rank(4).with_update_proj_gap(3);
            routed(model, c.build().unwrap(), log)
        },
    },
    Family {
        name: "frugal",
        lr: 0.01,
        build: |model, log| {
            let c = FrugalConfig::new().with_update_proj_gap(3);
            routed(model, c.build().unwrap(), log)
        },
    },
    Family {
        name: "dct-adamw",
        lr: 0.01,
        build: |model, log| {
            let c = FrugalConfig::new().with_density(None).with_rank(4);
            let c = c
                .with_projection(ProjectionMethod::Dct)
                .with_residual(Residual::None);
            routed(model, c.with_update_proj_gap(1).build().unwrap(), log)
        },
    },
    Family {
        name: "apollo",
        lr: 0.01,
        build: |model, log| {
            let c = ApolloConfig::new().with_rank(4).with_update_proj_gap(3);
            routed(model, c.build().unwrap(), log)
        },
    },
];

/// A toy model on a seeded `device` and `family`'s optimizer for it.
fn toy_run(family: &Family, device: &Device, seed: u64) -> (Lm, ModuleOptimizer) {
    device.seed(seed);
    let model = Lm::new(device);
    let optim = (family.build)(&model, &Placements::default());
    (model, optim)
}

#[test]
fn every_subspace_optimizer_trains_through_the_learner() {
    let _rng = seeded_rng();
    for family in &FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        let model = Lm::new(&common::toy::device());
        let log = Placements::default();
        let optim = (family.build)(&model, &log);
        let before = task_loss(&model.toy);
        let trained = fit(
            Learner::new(model, optim, family.lr),
            dir.path(),
            5,
            8,
            |t| t,
        );
        let after = task_loss(&trained.toy);
        // 40 steps of the four attention and MLP matrices.
        assert_eq!(log.lock().unwrap().len(), 4 * 40, "{}", family.name);
        assert!(
            after.is_finite() && after < 0.8 * before,
            "{}: loss {before} -> {after}",
            family.name
        );
    }
}

/// A SwitchLoRA model for the toy task: its hidden linear trains through a switched adapter.
/// The switch goes in `TrainStep::optimize`, the Learner's hook between backward and step; the
/// step count it needs is a field of the model ([`SwitchClock`]), so checkpoints keep it.
#[derive(Module, Debug)]
struct SwitchLm {
    embedding: Embedding,
    hidden: SwitchLoraLinear,
    output: Linear,
    clock: SwitchClock,
    #[module(skip)]
    switcher: Option<Switcher>,
}

impl SwitchLm {
    fn new(device: &Device) -> Self {
        let d = common::toy::D_MODEL;
        SwitchLm {
            embedding: EmbeddingConfig::new(VOCAB, d).init(device),
            hidden: SwitchLoraLinearConfig::new(d, d, 4).init(device).unwrap(),
            output: LinearConfig::new(d, VOCAB).init(device),
            clock: SwitchClock::new(device),
            switcher: None,
        }
    }

    fn classify(&self, batch: Batch) -> ClassificationOutput {
        let [n] = batch.tokens.dims();
        let x = self.embedding.forward(batch.tokens.reshape([n, 1]));
        let x = x.reshape([n, common::toy::D_MODEL]);
        let x = x.clone() + burn::tensor::activation::silu(self.hidden.forward(x));
        let logits = self.output.forward(x);
        let loss = cross_entropy(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for SwitchLm {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        optim.step(lr, self.switched(), grads)
    }

    /// The hook of `MultiDevice(.., OptimSharded)`.
    fn optimize_multi(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: MultiGradientsParams,
    ) -> Self {
        optim.step_multi(lr, self.switched(), grads)
    }
}

impl SwitchLm {
    /// The model after this step's switches, its clock one step on.
    fn switched(self) -> Self {
        let switcher = self
            .switcher
            .clone()
            .expect("a switcher wired to the optimizer");
        let step = self.clock.steps();
        let (mut model, _) = switcher.switch(self, step).expect("the switcher's model");
        model.clock = model.clock.tick();
        model
    }
}

impl InferenceStep for SwitchLm {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// A SwitchLoRA model and its optimizer, wired together.
fn switch_lora(device: &Device) -> (SwitchLm, ModuleOptimizer) {
    let mut model = SwitchLm::new(device);
    let schedule = SwitchScheduleConfig::new(1_000)
        .with_interval(10)
        .with_seed(3);
    let dense = AdamWConfig::new().with_weight_decay(0.0).build();
    let (optim, switcher) = SwitchLoraConfig::new(schedule)
        .build(&model, dense)
        .unwrap();
    model.switcher = Some(switcher);
    (model, optim)
}

fn switch_lm_loss(model: &SwitchLm) -> f32 {
    let device = model.output.weight.device();
    common::values(&model.classify(PairBatcher.batch(pairs(), &device)).loss)[0]
}

#[test]
fn switch_lora_trains_through_the_learner_switching_in_optimize() {
    let _rng = seeded_rng();
    let dir = tempfile::tempdir().unwrap();
    let (model, optim) = switch_lora(&common::toy::device());
    let before = switch_lm_loss(&model);
    let pools = weights(&model.hidden.candidates_a.0);
    let trained = fit(Learner::new(model, optim, 0.01), dir.path(), 5, 8, |t| t);
    let after = switch_lm_loss(&trained);
    assert!(after < 0.8 * before, "loss {before} -> {after}");
    // 5 epochs of 8 batches: the clock counted every step, and vectors were switched.
    assert_eq!(trained.clock.steps(), 40);
    assert_ne!(
        weights(&trained.hidden.candidates_a.0),
        pools,
        "nothing switched"
    );
}

/// `epochs` epochs from the start, against `first` epochs, a checkpoint, and a fresh learner
/// resuming from it: the same weights, bitwise on CPU.
fn assert_learner_resumes_exactly<M>(make: impl Fn() -> (M, ModuleOptimizer), lr: f64, what: &str)
where
    M: burn_train::LearnerModel + TrainStep<Input = Batch> + InferenceStep<Input = Batch>,
{
    let (epochs, first) = (4, 2);
    let straight_dir = tempfile::tempdir().unwrap();
    let (model, optim) = make();
    let straight = fit(
        Learner::new(model, optim, lr),
        straight_dir.path(),
        epochs,
        8,
        |t| t,
    );

    let dir = tempfile::tempdir().unwrap();
    let (model, optim) = make();
    fit(Learner::new(model, optim, lr), dir.path(), first, 8, |t| {
        t.with_default_checkpointers()
    });
    // A new process would build its model and optimizer afresh: new weights, new ids.
    let (model, optim) = make();
    let resumed = fit(Learner::new(model, optim, lr), dir.path(), epochs, 8, |t| {
        t.with_default_checkpointers().checkpoint(first)
    });
    let what = format!("{what}: resumed through the Learner");
    common::assert_same_tensors(&weights(&straight), &weights(&resumed), &what);
}

#[test]
fn learner_checkpoints_resume_exactly() {
    let _rng = seeded_rng();
    let device = common::toy::device();
    for family in &FAMILIES {
        let make = || toy_run(family, &device, 11);
        assert_learner_resumes_exactly(make, family.lr, family.name);
    }
    // On wgpu a resumed SwitchLoRA run ends 6.5e-2 away from the straight one (the five
    // subspace optimizers stay within 1e-4 there): checked where runs are bitwise reproducible.
    if common::bitwise_reproducible() {
        let make = || {
            device.seed(12);
            switch_lora(&device)
        };
        assert_learner_resumes_exactly(make, 0.01, "switchlora");
    }
}

#[test]
fn learner_gradient_accumulation_equals_one_step_on_the_concatenation() {
    let _rng = seeded_rng();
    // GaLore refreshing every 2 steps: 8 steps of 4 micro-batches of 4 cross 4 refreshes.
    let k = 4;
    let device = common::toy::device();
    let galore = &FAMILIES[0];
    let (model, optim) = toy_run(galore, &device, 5);
    let dir = tempfile::tempdir().unwrap();
    let lr = galore.lr;
    let accumulated = fit(Learner::new(model, optim, lr), dir.path(), 2, 4, |t| {
        t.grads_accumulation(k)
    });
    // Burn sums the micro-batches' gradients: one batch of all k with its mean loss times k.
    let (mut model, optim) = toy_run(galore, &device, 5);
    model.loss_scale = k as f32;
    let dir = tempfile::tempdir().unwrap();
    let whole = fit(Learner::new(model, optim, lr), dir.path(), 2, 4 * k, |t| t);
    let diff = max_weight_diff(&accumulated, &whole);
    assert!(
        diff < 1e-4,
        "accumulated vs concatenated: max weight difference {diff:e}"
    );
}

fn max_weight_diff<M: Module>(a: &M, b: &M) -> f32 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|((_, x), (_, y))| common::max_abs_diff(&common::floats(x), &common::floats(y)))
        .fold(0.0, f32::max)
}

/// The ids of the toy's attention and MLP matrices (what the Router projects).
fn projected_ids(toy: &Toy) -> Vec<u64> {
    let (a, f) = (&toy.attention, &toy.feed_forward);
    [&a.wq.weight, &a.wo.weight, &f.w1.weight, &f.w2.weight]
        .map(|w| w.id.val())
        .to_vec()
}

/// Two devices: flex and, when the wgpu backend is compiled in, wgpu's (in CI, Mesa's CPU
/// Vulkan), so every state's placement is checked across two backends; without it, two flex
/// replicas (a flex device reports one id for every instance), which still run the strategies'
/// splitting, summing and sharding.
fn two_devices() -> Vec<Device> {
    #[cfg(feature = "wgpu")]
    let second = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    #[cfg(not(feature = "wgpu"))]
    let second = Device::flex();
    vec![Device::flex(), second]
}

fn multi_device(optim: MultiDeviceOptim) -> ExecutionStrategy {
    ExecutionStrategy::MultiDevice(two_devices(), optim)
}

#[test]
fn both_multi_device_strategies_train_every_optimizer_with_state_where_it_is_updated() {
    let _rng = seeded_rng();
    let devices: Vec<String> = two_devices().iter().map(|d| format!("{d:?}")).collect();
    for strategy in [
        MultiDeviceOptim::OptimMainDevice,
        MultiDeviceOptim::OptimSharded,
    ] {
        for family in &FAMILIES {
            let what = format!("{strategy:?} {}", family.name);
            let device = two_devices()[0].clone().autodiff();
            device.seed(3);
            let model = Lm::new(&device);
            let model_ids = model.toy.clone();
            let log = Placements::default();
            let optim = (family.build)(&model, &log);
            let before = task_loss(&model.toy);
            let dir = tempfile::tempdir().unwrap();
            let trained = fit(
                Learner::new(model, optim, family.lr),
                dir.path(),
                4,
                8,
                |t| t.with_training_strategy(multi_device(strategy).into()),
            );
            let after = task_loss(&trained.toy.clone().train());
            assert!(after < 0.9 * before, "{what}: loss {before} -> {after}");
            let log = log.lock().unwrap();
            assert!(
                log.iter().all(|(_, ok)| *ok),
                "{what}: state off its parameter's device"
            );
            // Sharded: a parameter and its state go to device `id % 2` (Burn's
            // `MultiGradientsParams`). 4 epochs of 4 steps (each device takes a batch of its
            // half of the data per step) of each projected matrix.
            let mut expected = BTreeMap::new();
            for id in projected_ids(&model_ids) {
                let index = match strategy {
                    MultiDeviceOptim::OptimMainDevice => 0,
                    MultiDeviceOptim::OptimSharded => (id % 2) as usize,
                };
                *expected.entry(devices[index].clone()).or_insert(0) += 16;
            }
            let mut used = BTreeMap::new();
            for (device, _) in log.iter() {
                *used.entry(device.clone()).or_insert(0) += 1;
            }
            assert_eq!(used, expected, "{what}: devices the optimizer stepped on");
        }
        let (model, optim) = switch_lora(&two_devices()[0].clone().autodiff());
        let before = switch_lm_loss(&model);
        let pools = weights(&model.hidden.candidates_a.0);
        let dir = tempfile::tempdir().unwrap();
        let trained = fit(Learner::new(model, optim, 0.01), dir.path(), 4, 8, |t| {
            t.with_training_strategy(multi_device(strategy).into())
        });
        let after = switch_lm_loss(&trained);
        assert!(
            after < 0.9 * before,
            "{strategy:?} switchlora: loss {before} -> {after}"
        );
        assert_eq!(
            trained.clock.steps(),
            16,
            "{strategy:?} switchlora: steps switched"
        );
        assert_ne!(
            weights(&trained.hidden.candidates_a.0),
            pools,
            "{strategy:?}: no switch"
        );
    }
}

#[test]
fn main_device_training_equals_one_device_on_the_replicas_batches() {
    let _rng = seeded_rng();
    // The strategy gives each device a contiguous half of the data, batch i of each half per
    // step, and sums the two gradients: one device stepping on both batches at once with the
    // mean loss doubled sees the same gradient, up to f32 rounding (and the two backends'
    // kernels).
    let galore = &FAMILIES[0];
    let device = two_devices()[0].clone().autodiff();
    let (model, optim) = toy_run(galore, &device, 9);
    let dir = tempfile::tempdir().unwrap();
    let strategy = multi_device(MultiDeviceOptim::OptimMainDevice);
    let replicas = fit(
        Learner::new(model, optim, galore.lr),
        dir.path(),
        2,
        8,
        |t| t.with_training_strategy(strategy.into()),
    );

    let items = pairs();
    let half = items.len() / 2;
    let paired: Vec<(i64, i64)> = (0..half / 8)
        .flat_map(|i| {
            [
                &items[8 * i..8 * i + 8],
                &items[half + 8 * i..half + 8 * i + 8],
            ]
        })
        .flatten()
        .copied()
        .collect();
    let (mut model, optim) = toy_run(galore, &device, 9);
    model.loss_scale = 2.0;
    let dir = tempfile::tempdir().unwrap();
    let single = fit_on(
        Learner::new(model, optim, galore.lr),
        dir.path(),
        2,
        loader(paired, 16),
        |t| t,
    );
    let diff = max_weight_diff(&replicas, &single);
    assert!(
        diff < 1e-4,
        "MainDevice vs one device: max weight difference {diff:e}"
    );
}

/// `to_device` moves every tensor of every kind of state: moments, dense and Gaussian bases,
/// DCT and coordinate indices, limiter norms.
#[test]
fn every_state_moves_to_another_device() {
    let _rng = seeded_rng();
    let [from, to] = [two_devices()[0].clone(), two_devices()[1].clone()];
    let kinds = [
        ProjectionMethod::Svd,
        ProjectionMethod::Dct,
        ProjectionMethod::Gaussian,
        ProjectionMethod::Coordinates,
    ];
    let w = Tensor::<2>::from_data(
        TensorData::new((0..48).map(|i| (i % 7) as f32).collect(), [8, 6]),
        &from,
    );
    let g = w.clone().cos();
    for kind in kinds {
        let fira = FiraConfig::new()
            .with_rank(2)
            .with_projection(kind)
            .build()
            .unwrap();
        let (w1, state) = fira.step(0.1, w.clone(), g.clone(), None);
        let (_, state) = fira.step(0.1, w1, g.clone(), state);
        let state = state.unwrap();
        assert!(state.limiter.is_some(), "{kind:?}: a limiter norm to move");
        assert!(state_devices(&state).iter().all(|d| *d == from));
        let moved = lowrank_optim::Fira::to_device(state, &to);
        let placed = state_devices(&moved);
        assert!(
            placed.len() >= 3 && placed.iter().all(|d| *d == to),
            "{kind:?}: {placed:?}"
        );
    }
}
