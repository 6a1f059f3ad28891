//! Finding the SwitchLoRA layers of any Burn model, and writing new values back into it.
//!
//! A model holds its [`SwitchLoraLinear`](super::SwitchLoraLinear)s wherever its author put them;
//! Burn's visitors report each field with the name of the struct that owns it, which is how the
//! layers are found without the model implementing anything.

use std::collections::{HashMap, HashSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::matrix::cast_rank;

use crate::groups::{ModulePath, SWITCHLORA_CONTAINER as CONTAINER};

/// One parameter of a layer: its id and current value.
#[derive(Clone, Debug)]
pub(crate) struct Part<T> {
    pub id: ParamId,
    pub value: T,
}

/// The parameters of one SwitchLoRA layer, as found in a model.
#[derive(Clone, Debug, Default)]
pub(crate) struct LayerParts {
    /// Dotted path of the layer, e.g. `layers.0.attention.wq.SwitchLora`.
    pub path: String,
    pub weight: Option<Part<Tensor<2>>>,
    pub lora_a: Option<Part<Tensor<2>>>,
    pub lora_b: Option<Part<Tensor<2>>>,
    pub candidates_a: Option<Part<Tensor<2>>>,
    pub candidates_b: Option<Part<Tensor<2>>>,
    pub slots: Option<Part<Tensor<1, Int>>>,
}

impl LayerParts {
    /// The path of one of the layer's fields.
    pub fn field_path(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }
}

/// Every SwitchLoRA layer of `model`, in visiting order.
pub(crate) fn find_layers<M: Module>(model: &M) -> Vec<LayerParts> {
    let mut finder = Finder::default();
    model.visit(&mut finder);
    finder.layers
}

#[derive(Default)]
struct Finder {
    path: ModulePath,
    layers: Vec<LayerParts>,
}

impl Finder {
    /// The layer owning the field being visited, and the field's name, if it is a layer's.
    fn current(&mut self) -> Option<(&mut LayerParts, String)> {
        let (field, container) = self.path.field()?;
        if container != CONTAINER {
            return None;
        }
        let field = field.to_string();
        let path = self.path.dotted(self.path.depth() - 1);
        if self.layers.last().is_none_or(|l| l.path != path) {
            self.layers.push(LayerParts {
                path,
                ..Default::default()
            });
        }
        Some((self.layers.last_mut()?, field))
    }
}

impl ModuleVisitor for Finder {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D != 2 {
            return;
        }
        let Some((layer, field)) = self.current() else {
            return;
        };
        let part = Some(Part {
            id: param.id,
            value: cast_rank::<D, 2>(param.val()),
        });
        match field.as_str() {
            "weight" => layer.weight = part,
            "lora_a" => layer.lora_a = part,
            "lora_b" => layer.lora_b = part,
            "candidates_a" => layer.candidates_a = part,
            "candidates_b" => layer.candidates_b = part,
            _ => {}
        }
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        if D != 1 {
            return;
        }
        if let Some((layer, field)) = self.current() {
            if field == "slots" {
                let value = param
                    .val()
                    .reshape([param.val().dims().iter().product::<usize>()]);
                layer.slots = Some(Part {
                    id: param.id,
                    value,
                });
            }
        }
    }
}

/// New values for parameters, by id.
#[derive(Default)]
pub(crate) struct Replacements {
    pub floats: HashMap<ParamId, Tensor<2>>,
    pub ints: HashMap<ParamId, Tensor<1, Int>>,
}

impl Replacements {
    /// Writes the new values into `model`, keeping each parameter's id and gradient setting.
    pub fn apply<M: Module>(self, model: M) -> M {
        let mut writer = Writer(self);
        model.map(&mut writer)
    }
}

/// Takes the matrices `ids` out of `model`, leaving empty placeholders, so the caller holds the
/// only handle to each and a backend can write into them in place (a copy of a 350M layer's
/// pools costs more than the switch's own math).
pub(crate) fn take<M: Module>(model: M, ids: HashSet<ParamId>) -> (M, HashMap<ParamId, Tensor<2>>) {
    let mut taker = Taker {
        ids,
        taken: HashMap::new(),
    };
    let model = model.map(&mut taker);
    (model, taker.taken)
}

struct Taker {
    ids: HashSet<ParamId>,
    taken: HashMap<ParamId, Tensor<2>>,
}

impl ModuleMapper for Taker {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 2 || !self.ids.contains(&param.id) {
            return param;
        }
        let id = param.id;
        param.map(|value| {
            let device = value.device();
            self.taken.insert(id, cast_rank(value));
            Tensor::zeros([0; D], &device)
        })
    }
}

struct Writer(Replacements);

impl ModuleMapper for Writer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(new) = self.0.floats.remove(&param.id) else {
            return param;
        };
        param.map(|old| {
            let new = cast_rank::<2, D>(new).detach();
            if old.is_require_grad() {
                new.require_grad()
            } else {
                new
            }
        })
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        match self.0.ints.remove(&param.id) {
            Some(new) => param.map(|old| new.reshape(old.dims())),
            None => param,
        }
    }
}

/// `indices` as an index tensor on `device`.
pub(crate) fn indices(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// `t[indices, :]`.
pub(crate) fn rows(t: &Tensor<2>, rows: &[usize]) -> Tensor<2> {
    t.clone().select(0, indices(rows, &t.device()))
}
