//! Routing: which parameters get the projected optimizer, which stay on a dense one.
//!
//! Projection pays off on the large 2-D weights of attention and MLP layers. Embeddings, norms,
//! biases and the output head keep a dense optimizer (AdamW): their gradients are not low-rank
//! in the same way, and the published recipes leave them full-rank.

use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{ModuleOptimizer, Optimizer};
use burn::tensor::Tensor;
use regex::Regex;

use crate::error::{Error, Result};
use crate::matrix::is_matrix_shape;

/// What a routing rule sees of one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Dotted module path, e.g. `layers.0.attention.wq.weight`.
    pub path: String,
    /// The parameter's Burn id (the key of its optimizer state).
    pub id: ParamId,
    /// The parameter's shape.
    pub shape: Vec<usize>,
    /// What the parameter is to the optimizers.
    pub role: ParamRole,
}

/// What a parameter is to the optimizers: a weight, or a part of a SwitchLoRA layer that the
/// dense model would not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// A model weight (a SwitchLoRA layer's frozen base weight too: the dense model has it).
    Weight,
    /// A SwitchLoRA adapter (`lora_a`, `lora_b`): trained in place of the dense weight.
    Adapter,
    /// A SwitchLoRA candidate pool: spare adapter vectors, never trained.
    CandidatePool,
}

/// The container type Burn reports for a SwitchLoRA layer, whose fields have their own roles.
pub(crate) const SWITCHLORA_CONTAINER: &str = "Struct:SwitchLoraLinear";

impl ParamRole {
    fn of(container: Option<&str>, field: &str) -> Self {
        match (container, field) {
            (Some(SWITCHLORA_CONTAINER), "lora_a" | "lora_b") => ParamRole::Adapter,
            (Some(SWITCHLORA_CONTAINER), "candidates_a" | "candidates_b") => {
                ParamRole::CandidatePool
            }
            _ => ParamRole::Weight,
        }
    }
}

impl ParamInfo {
    /// Number of scalars in the parameter.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Lists every float parameter of `module` with its path, in visiting order.
    pub fn collect<M: Module>(module: &M) -> Vec<ParamInfo> {
        let mut collector = Collector::default();
        module.visit(&mut collector);
        collector.params
    }
}

/// Where a module visitor is: the field names from the root down to the one being visited, each
/// with the container type Burn entered it in.
#[derive(Default)]
pub(crate) struct ModulePath(Vec<(String, String)>);

impl ModulePath {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.0.push((name.to_string(), container_type.to_string()));
    }

    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }

    /// The dotted path of the first `depth` fields.
    pub(crate) fn dotted(&self, depth: usize) -> String {
        let names: Vec<&str> = self.0[..depth].iter().map(|(n, _)| n.as_str()).collect();
        names.join(".")
    }

    /// How many fields deep the visitor is.
    pub(crate) fn depth(&self) -> usize {
        self.0.len()
    }

    /// The field being visited and the container type it belongs to.
    pub(crate) fn field(&self) -> Option<(&str, &str)> {
        self.0.last().map(|(f, c)| (f.as_str(), c.as_str()))
    }
}

#[derive(Default)]
struct Collector {
    path: ModulePath,
    params: Vec<ParamInfo>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (field, container) = self.path.field().unzip();
        self.params.push(ParamInfo {
            path: self.path.dotted(self.path.depth()),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
            role: ParamRole::of(container, field.unwrap_or("")),
        });
    }
}

/// An optimizer the [`Router`] gives one copy per routed matrix, each told the matrix's
/// position among the routed matrices of the model (its ordinal, which seeds its random bases
/// and FRUGAL's block draws): the numbering then depends on the model alone, not on the order
/// in which gradients first arrive, so it survives a resume and is the same on every replica.
pub trait MatrixOptimizer: Optimizer {
    /// This optimizer serving the routed matrix number `ordinal` only.
    fn for_matrix(&self, ordinal: usize) -> Self;
}

type Rule = Arc<dyn Fn(&ParamInfo) -> bool + Send + Sync>;

/// Decides which parameters a projected optimizer gets and builds the `ModuleOptimizer`.
///
/// Only non-empty 2-D parameters are ever projected; the rule then picks among them. With a
/// vocabulary size set, any matrix with a dimension `>= vocab_size` (embeddings, output head)
/// stays dense too.
///
/// ```
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::AdamWConfig;
/// use burn::tensor::Device;
/// use lowrank_optim::{GaLoreConfig, Router};
///
/// let model: Linear = LinearConfig::new(16, 16).init(&Device::default());
/// let router = Router::from_regex(r"weight$")?;
/// assert_eq!(router.projected_paths(&model), vec!["weight".to_string()]);
/// let optim = router.build(&model, GaLoreConfig::new().with_rank(4).build()?, AdamWConfig::new().build())?;
/// # let _ = optim;
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Clone)]
pub struct Router {
    rule: Rule,
    vocab_size: Option<usize>,
}

impl core::fmt::Debug for Router {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Router")
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

/// Path segments that mark a parameter as an embedding, a norm or an output head.
const DENSE_SEGMENT_PARTS: [&str; 2] = ["embed", "norm"];
const DENSE_SEGMENTS: [&str; 6] = ["output", "lm_head", "head", "wte", "wpe", "classifier"];

impl Router {
    /// The LLaMA-style default: every 2-D weight except those under a path segment containing
    /// `embed` or `norm`, or named `output`, `lm_head`, `head`, `wte`, `wpe` or `classifier`.
    /// Matches both Burn's `llama-burn` names (`attention.wq`, `feed_forward.w1`) and Hugging
    /// Face names (`self_attn.q_proj`, `mlp.gate_proj`).
    pub fn llama() -> Self {
        Self::from_predicate(|param| {
            !param.path.split('.').any(|segment| {
                let segment = segment.to_ascii_lowercase();
                DENSE_SEGMENT_PARTS
                    .iter()
                    .any(|part| segment.contains(part))
                    || DENSE_SEGMENTS.contains(&segment.as_str())
            })
        })
    }

    /// Projects the 2-D parameters whose dotted path matches `pattern`.
    pub fn from_regex(pattern: &str) -> Result<Self> {
        let regex = Regex::new(pattern).map_err(|e| Error::InvalidPattern {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_predicate(move |param| {
            regex.is_match(&param.path)
        }))
    }

    /// Projects the 2-D parameters for which `rule` returns true.
    pub fn from_predicate(rule: impl Fn(&ParamInfo) -> bool + Send + Sync + 'static) -> Self {
        Self {
            rule: Arc::new(rule),
            vocab_size: None,
        }
    }

    /// Also keeps dense every matrix with a dimension `>= vocab_size`.
    pub fn with_vocab_size(mut self, vocab_size: usize) -> Self {
        self.vocab_size = Some(vocab_size);
        self
    }

    /// Whether `param` goes to the projected optimizer.
    pub fn is_projected(&self, param: &ParamInfo) -> bool {
        let matrix = is_matrix_shape(&param.shape);
        let below_vocab = self
            .vocab_size
            .is_none_or(|vocab| param.shape.iter().all(|&d| d < vocab));
        matrix && below_vocab && (self.rule)(param)
    }

    /// The dotted paths of `module`'s parameters that go to the projected optimizer.
    pub fn projected_paths<M: Module>(&self, module: &M) -> Vec<String> {
        ParamInfo::collect(module)
            .into_iter()
            .filter(|p| self.is_projected(p))
            .map(|p| p.path)
            .collect()
    }

    /// A `ModuleOptimizer` with `projected` on the routed matrices (one copy per matrix, see
    /// [`MatrixOptimizer`]) and `dense` on the rest; an error when the rule routes nothing (a
    /// projected optimizer that would silently never run).
    ///
    /// Routing is by path, not by [`ParamId`], so the optimizer keeps working after the model's
    /// record is loaded from a checkpoint.
    pub fn build<M: Module, P: MatrixOptimizer, F: Optimizer>(
        &self,
        module: &M,
        projected: P,
        dense: F,
    ) -> Result<ModuleOptimizer> {
        self.route(&ParamInfo::collect(module), projected, dense)
    }

    /// [`build`](Self::build) from the module's parameter list.
    pub(crate) fn route<P: MatrixOptimizer, F: Optimizer>(
        &self,
        params: &[ParamInfo],
        projected: P,
        dense: F,
    ) -> Result<ModuleOptimizer> {
        let paths: Vec<&str> = params
            .iter()
            .filter(|p| self.is_projected(p))
            .map(|p| p.path.as_str())
            .collect();
        if paths.is_empty() {
            return Err(Error::InvalidConfig {
                field: "router",
                value: "a rule that matches no parameter of this model".into(),
                expected: "at least one 2-D parameter routed to the projected optimizer",
            });
        }
        let mut optim = ModuleOptimizer::from(dense);
        for (ordinal, path) in paths.into_iter().enumerate() {
            let group = ParamGroup::from_path(path);
            optim = optim.with_group(group, projected.for_matrix(ordinal), None);
        }
        Ok(optim)
    }
}
