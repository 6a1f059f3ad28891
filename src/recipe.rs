//! Optimizer recipes: a published setup (optimizer, hyperparameters, schedule) in a TOML file,
//! turned into a routed `ModuleOptimizer`.
//!
//! Recipes live in `optimizers/*.toml`. Unknown keys and bad values are errors that name the
//! file and the key, so a typo never silently falls back to a default.
//!
//! ```toml
//! optimizer = "galore"        # "adamw" or "galore"
//! lr = 0.01
//! warmup_fraction = 0.1       # optional schedule hints, used by the training example
//! min_lr_fraction = 0.1
//! grad_clip = 1.0
//!
//! [galore]                    # any GaLoreConfig field; omitted ones keep their defaults
//! rank = 128
//! proj_type = "std"           # std | reverse_std | left | right | full
//! projection = "svd"          # svd | randomized
//! moment_policy = "keep"      # keep | reset | rotate
//!
//! [dense]                     # AdamW for the parameters the router keeps dense
//! weight_decay = 0.0
//! ```

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamW, AdamWConfig, ModuleOptimizer};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::galore::GaLoreConfig;
use crate::groups::Router;
use crate::memory::MemoryReport;
use crate::projection::{MomentPolicy, ProjType, ProjectionMethod};

/// Which optimizer a recipe builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Burn's AdamW on every parameter (the full-rank baseline).
    Adamw,
    /// GaLore on the routed matrices, AdamW on the rest.
    Galore,
}

/// The `[galore]` table: every field optional, defaulting to [`GaLoreConfig::new`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaLoreSection {
    /// See [`SubspaceConfig::rank`](crate::SubspaceConfig::rank).
    pub rank: Option<usize>,
    /// See [`SubspaceConfig::update_proj_gap`](crate::SubspaceConfig::update_proj_gap).
    pub update_proj_gap: Option<usize>,
    /// See [`GaLoreConfig::scale`].
    pub scale: Option<f32>,
    /// `std`, `reverse_std`, `left`, `right` or `full`.
    pub proj_type: Option<ProjTypeName>,
    /// `svd` or `randomized`.
    pub projection: Option<ProjectionName>,
    /// `keep`, `reset` or `rotate`.
    pub moment_policy: Option<MomentPolicyName>,
    /// See [`SubspaceConfig::oversample`](crate::SubspaceConfig::oversample).
    pub oversample: Option<usize>,
    /// See [`SubspaceConfig::power_iters`](crate::SubspaceConfig::power_iters).
    pub power_iters: Option<usize>,
    /// See [`SubspaceConfig::seed`](crate::SubspaceConfig::seed).
    pub seed: Option<u64>,
    /// See [`GaLoreConfig::beta_1`].
    pub beta_1: Option<f32>,
    /// See [`GaLoreConfig::beta_2`].
    pub beta_2: Option<f32>,
    /// See [`GaLoreConfig::epsilon`].
    pub epsilon: Option<f32>,
    /// See [`GaLoreConfig::weight_decay`].
    pub weight_decay: Option<f32>,
}

/// The `[dense]` table: AdamW for the parameters that are not projected (every field optional,
/// defaulting to Burn's `AdamWConfig::new()`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSection {
    /// AdamW's `beta_1`.
    pub beta_1: Option<f32>,
    /// AdamW's `beta_2`.
    pub beta_2: Option<f32>,
    /// AdamW's `epsilon`.
    pub epsilon: Option<f32>,
    /// AdamW's decoupled weight decay.
    pub weight_decay: Option<f32>,
}

/// Recipe spelling of [`ProjType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ProjTypeName {
    Std,
    ReverseStd,
    Left,
    Right,
    Full,
}

/// Recipe spelling of [`ProjectionMethod`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ProjectionName {
    Svd,
    Randomized,
}

/// Recipe spelling of [`MomentPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum MomentPolicyName {
    Keep,
    Reset,
    Rotate,
}

/// A parsed optimizer recipe.
///
/// ```
/// use lowrank_optim::recipe::{OptimizerKind, Recipe};
///
/// let recipe = Recipe::from_toml_str("galore", "optimizer = 'galore'\nlr = 0.01\n[galore]\nrank = 64")?;
/// assert_eq!(recipe.optimizer, OptimizerKind::Galore);
/// assert_eq!(recipe.galore_config()?.subspace.rank, 64);
/// assert!(Recipe::from_toml_str("typo", "optimizer = 'galore'\nlr = 0.01\nrnak = 3").is_err());
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Display name; the file stem when loaded from a file.
    #[serde(default)]
    pub name: String,
    /// Which optimizer to build.
    pub optimizer: OptimizerKind,
    /// Peak learning rate of the published setup.
    pub lr: f64,
    /// Fraction of the steps spent in linear warm-up.
    pub warmup_fraction: Option<f64>,
    /// Final learning rate of the cosine decay, as a fraction of `lr`.
    pub min_lr_fraction: Option<f64>,
    /// Gradient-norm clipping threshold.
    pub grad_clip: Option<f64>,
    /// GaLore hyperparameters (for `optimizer = "galore"`).
    #[serde(default)]
    pub galore: Option<GaLoreSection>,
    /// AdamW hyperparameters for the dense parameters.
    #[serde(default)]
    pub dense: DenseSection,
}

impl Recipe {
    /// Reads and validates a recipe file; its name defaults to the file stem.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Recipe {
            file: source.clone(),
            reason: e.to_string(),
        })?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let mut recipe = Self::parse(&source, &text)?;
        if recipe.name.is_empty() {
            recipe.name = stem.unwrap_or(source);
        }
        Ok(recipe)
    }

    /// Parses and validates a recipe from TOML text, naming it `name`.
    pub fn from_toml_str(name: &str, text: &str) -> Result<Self> {
        let mut recipe = Self::parse(name, text)?;
        if recipe.name.is_empty() {
            recipe.name = name.to_string();
        }
        Ok(recipe)
    }

    fn parse(source: &str, text: &str) -> Result<Self> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| Error::Recipe {
            file: source.to_string(),
            reason: e.message().to_string(),
        })?;
        recipe.validate().map_err(|e| Error::Recipe {
            file: source.to_string(),
            reason: e.to_string(),
        })?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<()> {
        use crate::error::check;
        check::positive("lr", self.lr)?;
        if let Some(w) = self.warmup_fraction {
            check::unit_interval("warmup_fraction", w)?;
        }
        if let Some(f) = self.min_lr_fraction {
            check::non_negative("min_lr_fraction", f)?;
        }
        if let Some(c) = self.grad_clip {
            check::positive("grad_clip", c)?;
        }
        let d = &self.dense;
        for (field, beta) in [("dense.beta_1", d.beta_1), ("dense.beta_2", d.beta_2)] {
            beta.map_or(Ok(()), |v| check::unit_interval(field, v as f64))?;
        }
        for (field, value) in [
            ("dense.epsilon", d.epsilon),
            ("dense.weight_decay", d.weight_decay),
        ] {
            value.map_or(Ok(()), |v| check::non_negative(field, v as f64))?;
        }
        match self.optimizer {
            OptimizerKind::Galore => self.galore_config()?.validate(),
            OptimizerKind::Adamw if self.galore.is_some() => Err(Error::InvalidConfig {
                field: "galore",
                value: "a [galore] table".into(),
                expected: "only with optimizer = \"galore\"",
            }),
            OptimizerKind::Adamw => Ok(()),
        }
    }

    /// The AdamW config of the dense parameters.
    pub fn adamw_config(&self) -> AdamWConfig {
        let d = &self.dense;
        let mut c = AdamWConfig::new();
        if let Some(v) = d.beta_1 {
            c = c.with_beta_1(v);
        }
        if let Some(v) = d.beta_2 {
            c = c.with_beta_2(v);
        }
        if let Some(v) = d.epsilon {
            c = c.with_epsilon(v);
        }
        if let Some(v) = d.weight_decay {
            c = c.with_weight_decay(v);
        }
        c
    }

    /// The GaLore config (defaults overridden by the `[galore]` table), validated.
    pub fn galore_config(&self) -> Result<GaLoreConfig> {
        let s = self.galore.clone().unwrap_or_default();
        let mut c = GaLoreConfig::new();
        if let Some(v) = s.rank {
            c.subspace.rank = v;
        }
        if let Some(v) = s.update_proj_gap {
            c.subspace.update_proj_gap = v;
        }
        if let Some(v) = s.proj_type {
            c.subspace.proj_type = match v {
                ProjTypeName::Std => ProjType::Std,
                ProjTypeName::ReverseStd => ProjType::ReverseStd,
                ProjTypeName::Left => ProjType::Left,
                ProjTypeName::Right => ProjType::Right,
                ProjTypeName::Full => ProjType::Full,
            };
        }
        if let Some(v) = s.projection {
            c.subspace.projection = match v {
                ProjectionName::Svd => ProjectionMethod::Svd,
                ProjectionName::Randomized => ProjectionMethod::Randomized,
            };
        }
        if let Some(v) = s.moment_policy {
            c.subspace.moment_policy = match v {
                MomentPolicyName::Keep => MomentPolicy::Keep,
                MomentPolicyName::Reset => MomentPolicy::Reset,
                MomentPolicyName::Rotate => MomentPolicy::Rotate,
            };
        }
        if let Some(v) = s.oversample {
            c.subspace.oversample = v;
        }
        if let Some(v) = s.power_iters {
            c.subspace.power_iters = v;
        }
        if let Some(v) = s.seed {
            c.subspace.seed = v;
        }
        if let Some(v) = s.scale {
            c.scale = v;
        }
        if let Some(v) = s.beta_1 {
            c.beta_1 = v;
        }
        if let Some(v) = s.beta_2 {
            c.beta_2 = v;
        }
        if let Some(v) = s.epsilon {
            c.epsilon = v;
        }
        if let Some(v) = s.weight_decay {
            c.weight_decay = v;
        }
        c.validate()?;
        Ok(c)
    }

    fn dense(&self) -> AdamW {
        self.adamw_config().build()
    }

    /// The optimizer for `module`: the recipe's optimizer on what `router` routes, AdamW on the rest.
    pub fn build<M: Module>(&self, module: &M, router: &Router) -> Result<ModuleOptimizer> {
        Ok(match self.optimizer {
            OptimizerKind::Adamw => ModuleOptimizer::from(self.dense()),
            OptimizerKind::Galore => {
                router.build(module, self.galore_config()?.init()?, self.dense())
            }
        })
    }

    /// The optimizer-state memory [`build`](Self::build) will hold for `module`, from shapes only.
    pub fn estimate_memory<M: Module>(&self, module: &M, router: &Router) -> Result<MemoryReport> {
        Ok(match self.optimizer {
            OptimizerKind::Adamw => MemoryReport::estimate(
                module,
                &Router::from_predicate(|_| false),
                &self.dense(),
                &self.dense(),
            ),
            OptimizerKind::Galore => MemoryReport::estimate(
                module,
                router,
                &self.galore_config()?.init()?,
                &self.dense(),
            ),
        })
    }
}
