//! A SwitchLoRA model's step count, kept in its record: the step a [`Switcher`](super::Switcher)
//! needs, for training loops that do not count their own (burn-train's `Learner`).

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::linear::CandidatePlacement;
use super::resident::Resident;

/// How many optimizer steps a SwitchLoRA model has taken. A field of the model, saved and
/// loaded with its record (on the host, never trained), so a run resumed from a checkpoint
/// switches on the same schedule as a straight one, and every data-parallel replica reads the
/// same count.
///
/// In burn-train, switch in `TrainStep::optimize` (and `optimize_multi` for sharded
/// multi-device training), between the backward pass and the step:
///
/// ```
/// use burn::tensor::Device;
/// use lowrank_optim::switchlora::SwitchClock;
///
/// let clock = SwitchClock::new(&Device::default());
/// assert_eq!(clock.steps(), 0);
/// // ... `switcher.switch(model, clock.steps())`, then the optimizer step ...
/// let clock = clock.tick();
/// assert_eq!(clock.steps(), 1);
/// ```
#[derive(Module, Debug)]
pub struct SwitchClock {
    steps: Resident<Param<Tensor<1, Int>>>,
}

impl SwitchClock {
    /// A clock at step 0, kept where the candidate pools of a model on `device` live.
    pub fn new(device: &Device) -> Self {
        Self::at(0, &CandidatePlacement::Host.device(device), ParamId::new())
    }

    fn at(steps: usize, device: &Device, id: ParamId) -> Self {
        let count = Tensor::from_data(TensorData::new(vec![steps as i64], [1]), device);
        Self {
            steps: Resident(Param::initialized(id, count)),
        }
    }

    /// Optimizer steps taken so far: the `step` to hand [`Switcher::switch`](super::Switcher::switch).
    pub fn steps(&self) -> usize {
        crate::readback::data(self.steps.0.val())
            .convert::<i64>()
            .as_slice::<i64>()
            .expect("an i64 count")[0] as usize
    }

    /// The clock one step later.
    pub fn tick(self) -> Self {
        let param = &self.steps.0;
        Self::at(self.steps() + 1, &param.val().device(), param.id)
    }
}
