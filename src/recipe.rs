//! Optimizer recipes: a published setup (optimizer, hyperparameters, schedule) in a TOML file,
//! turned into a routed `ModuleOptimizer`.
//!
//! Recipes live in `optimizers/*.toml`. Unknown keys, keys another optimizer owns and bad
//! values are errors that name the file and the key, so a typo never silently falls back to a
//! default.
//!
//! ```toml
//! optimizer = "fira"          # adamw | galore | fira | frugal | apollo | switchlora
//! lr = 0.01
//! moments = "q8"              # optional: f32 (default) | q8 | q4, for every moment
//! warmup_fraction = 0.1       # optional schedule hints, used by the training example
//! min_lr_fraction = 0.1
//! grad_clip = 1.0
//!
//! [fira]                      # the table named like `optimizer`; omitted keys keep defaults
//! rank = 128
//! proj_type = "std"           # std | reverse_std | left | right | full
//! projection = "svd"          # svd | randomized | dct | gaussian | random_orthogonal
//!                             # | coordinates | block (frugal only)
//! moment_policy = "keep"      # keep | reset | rotate
//! gamma = 1.01                # Fira/APOLLO limiter
//!
//! [dense]                     # AdamW for the parameters the router keeps dense
//! weight_decay = 0.0
//! ```
//!
//! The keys of an optimizer's table are the fields of its config and of the configs it nests
//! ([`SubspaceConfig`](crate::SubspaceConfig)'s `rank`, `proj_type`, ...;
//! [`AdamParams`](crate::adam::AdamParams)' `beta_1`, `moments`, ...; the optimizer's own
//! `scale`, `gamma`, ...), read through the configs' serde; an enum's value is its variant in
//! snake case. An unknown key is an error that lists every valid one. Spelled otherwise:
//! FRUGAL's `rho` (the subspace density), `scaling`'s aliases `column` and `matrix`, and a
//! top-level `moments`, which sets the optimizer's and `[dense]`'s.
//!
//! `[switchlora]` has no subspace: its keys are the switch schedule's (`interval`,
//! `descent_fraction`, `freeze_steps`, `seed`), Adam's, and the adapters' `rank` and
//! `candidates` (host | device). Its recipe changes the model too: build the routed linears
//! from [`Recipe::adapter`] and the optimizer with [`Recipe::build_with_switcher`].
//!
//! A subspace optimizer joins the recipes with a [`RecipeOptimizer`] variant and a
//! [`RecipeTable`] implementation (in `tables.rs`).

mod file;
mod table;
mod tables;

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::groups::{ParamInfo, Router};
use crate::memory::MemoryReport;
use crate::optim::{ApolloConfig, DenseOptimizer, FiraConfig, FrugalConfig, GaLoreConfig};
use crate::quant::MomentPrecision;
use crate::switchlora::{Adapter, AdapterFootprint, SwitchLoraConfig, Switcher};
pub use file::DenseSection;
pub use table::{RecipeTable, Routed, Table};

/// The optimizer a recipe names (`optimizer = "galore"`), each with its table's name.
///
/// ```
/// use lowrank_optim::recipe::RecipeOptimizer;
///
/// assert_eq!(RecipeOptimizer::from_name("fira"), Some(RecipeOptimizer::Fira));
/// assert_eq!(RecipeOptimizer::SwitchLora.name(), "switchlora");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipeOptimizer {
    /// Burn's AdamW on every parameter: the baseline, with no table of its own.
    AdamW,
    /// [`GaLoreConfig`], `[galore]`.
    GaLore,
    /// [`FiraConfig`], `[fira]`.
    Fira,
    /// [`FrugalConfig`], `[frugal]`.
    Frugal,
    /// [`ApolloConfig`], `[apollo]`.
    Apollo,
    /// [`SwitchLoraConfig`], `[switchlora]`: it changes the model too.
    SwitchLora,
}

impl RecipeOptimizer {
    /// Every optimizer a recipe can name.
    pub const ALL: [RecipeOptimizer; 6] = [
        RecipeOptimizer::AdamW,
        RecipeOptimizer::GaLore,
        RecipeOptimizer::Fira,
        RecipeOptimizer::Frugal,
        RecipeOptimizer::Apollo,
        RecipeOptimizer::SwitchLora,
    ];

    /// The name `optimizer = "..."` takes, and the optimizer's table's.
    pub fn name(self) -> &'static str {
        match self {
            RecipeOptimizer::AdamW => "adamw",
            RecipeOptimizer::GaLore => "galore",
            RecipeOptimizer::Fira => "fira",
            RecipeOptimizer::Frugal => "frugal",
            RecipeOptimizer::Apollo => "apollo",
            RecipeOptimizer::SwitchLora => "switchlora",
        }
    }

    /// The optimizer named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Every name, as an error lists them.
    fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl core::fmt::Display for RecipeOptimizer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for RecipeOptimizer {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> core::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown optimizer \"{name}\": one of {}",
                Self::names()
            ))
        })
    }
}

/// The recipe's subspace optimizer of `table`, built and validated.
fn read<C: RecipeTable>(table: &Table) -> Result<Box<dyn Routed>> {
    C::from_table(table)?.routed()
}

/// A parsed optimizer recipe.
///
/// ```
/// use lowrank_optim::recipe::{Recipe, RecipeOptimizer};
/// use lowrank_optim::{FiraConfig, GaLoreConfig};
///
/// let recipe = Recipe::from_toml_str("galore", "optimizer = 'galore'\nlr = 0.01\n[galore]\nrank = 64")?;
/// assert_eq!(recipe.optimizer, RecipeOptimizer::GaLore);
/// assert_eq!(recipe.config::<GaLoreConfig>()?.subspace.rank, 64);
/// let fira = Recipe::from_toml_str("fira", "optimizer = 'fira'\nlr = 0.01\n[fira]\ngamma = 1.01")?;
/// assert_eq!(fira.config::<FiraConfig>()?.gamma, 1.01);
/// // A key of another optimizer is named in the error.
/// assert!(Recipe::from_toml_str("mix", "optimizer = 'galore'\nlr = 0.01\n[galore]\ngamma = 1.0").is_err());
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
    pub optimizer: RecipeOptimizer,
    /// Peak learning rate of the published setup.
    pub lr: f64,
    /// Fraction of the steps spent in linear warm-up.
    pub warmup_fraction: Option<f64>,
    /// Final learning rate of the cosine decay, as a fraction of `lr`.
    pub min_lr_fraction: Option<f64>,
    /// Gradient-norm clipping threshold.
    pub grad_clip: Option<f64>,
    /// The optimizer's table (empty when the recipe has none).
    #[serde(skip)]
    pub table: Table,
    /// AdamW hyperparameters for the dense parameters.
    #[serde(skip)]
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
        Self::parse(&source, &text, stem.unwrap_or_else(|| source.clone()))
    }

    /// Parses and validates a recipe from TOML text, naming it `name`.
    pub fn from_toml_str(name: &str, text: &str) -> Result<Self> {
        Self::parse(name, text, name.to_string())
    }

    fn parse(source: &str, text: &str, default_name: String) -> Result<Self> {
        let recipe = Self::read(text).and_then(|r| r.validate().map(|()| r));
        let mut recipe = recipe.map_err(|e| Error::Recipe {
            file: source.to_string(),
            reason: match e {
                Error::Recipe { file, reason } => format!("in {file}: {reason}"),
                other => other.to_string(),
            },
        })?;
        if recipe.name.is_empty() {
            recipe.name = default_name;
        }
        Ok(recipe)
    }

    fn read(text: &str) -> Result<Self> {
        file::split(text)
    }

    fn validate(&self) -> Result<()> {
        file::check_schedule(
            self.lr,
            self.warmup_fraction,
            self.min_lr_fraction,
            self.grad_clip,
        )?;
        self.dense.validate()?;
        match self.optimizer {
            RecipeOptimizer::AdamW => Ok(()),
            RecipeOptimizer::SwitchLora => self.switchlora_config(1).map(drop),
            _ => self.subspace_optimizer().map(drop),
        }
    }

    /// The config of a subspace optimizer (defaults overridden by its table), e.g.
    /// `recipe.config::<GaLoreConfig>()`; an error if the recipe names another optimizer.
    pub fn config<C: RecipeTable>(&self) -> Result<C> {
        if self.optimizer != C::OPTIMIZER {
            return Err(Error::InvalidConfig {
                field: "optimizer",
                value: format!("\"{}\"", self.optimizer),
                expected: "the optimizer whose config is asked for",
            });
        }
        C::from_table(&self.table)
    }

    /// The recipe's subspace optimizer, built and validated.
    fn subspace_optimizer(&self) -> Result<Box<dyn Routed>> {
        match self.optimizer {
            RecipeOptimizer::GaLore => read::<GaLoreConfig>(&self.table),
            RecipeOptimizer::Fira => read::<FiraConfig>(&self.table),
            RecipeOptimizer::Frugal => read::<FrugalConfig>(&self.table),
            RecipeOptimizer::Apollo => read::<ApolloConfig>(&self.table),
            RecipeOptimizer::AdamW | RecipeOptimizer::SwitchLora => Err(Error::InvalidConfig {
                field: "optimizer",
                value: format!("\"{}\"", self.optimizer),
                expected: "a subspace optimizer (galore, fira, frugal, apollo)",
            }),
        }
    }

    /// The SwitchLoRA config for a run of `total_steps` steps, validated.
    pub fn switchlora_config(&self, total_steps: usize) -> Result<SwitchLoraConfig> {
        SwitchLoraConfig::from_table(&self.table, total_steps).map(|(config, _)| config)
    }

    /// The SwitchLoRA adapter the model's routed linears should be built with: `None` unless
    /// `optimizer = "switchlora"`.
    pub fn adapter(&self) -> Result<Option<Adapter>> {
        if self.optimizer != RecipeOptimizer::SwitchLora {
            return Ok(None);
        }
        SwitchLoraConfig::from_table(&self.table, 1).map(|(_, adapter)| Some(adapter))
    }

    /// The AdamW config of the dense parameters (their hyperparameters; the moments'
    /// precision is [`dense_optimizer`](Self::dense_optimizer)'s).
    pub fn adamw_config(&self) -> AdamWConfig {
        self.dense.adamw()
    }

    /// The optimizer of the dense parameters (of every parameter for `optimizer = "adamw"`):
    /// Burn's AdamW, or [`DenseAdamW`](crate::optim::DenseAdamW) when `[dense]` (or the top
    /// level) sets quantized `moments`.
    pub fn dense_optimizer(&self) -> Result<DenseOptimizer> {
        self.dense.optimizer()
    }

    /// Stores every moment of this recipe at `precision`: the optimizer's and the dense
    /// parameters' (as a top-level `moments = "q8"` does).
    pub fn set_moments(&mut self, precision: MomentPrecision) {
        self.dense.moments = Some(precision.name().to_string());
        if self.optimizer != RecipeOptimizer::AdamW {
            self.table.set("moments", precision.name());
        }
    }

    /// The precision of the recipe's optimizer moments: its table's `moments` (for `adamw`,
    /// the dense parameters').
    pub fn moments(&self) -> Result<MomentPrecision> {
        match self.table.get("moments").and_then(|v| v.as_str()) {
            Some(v) if self.optimizer != RecipeOptimizer::AdamW => {
                table::variant("moments", v, table::MOMENTS_EXPECTED)
            }
            _ => self.dense.precision(),
        }
    }

    /// The optimizer for `module` and, for SwitchLoRA, its switcher (`total_steps` sets the
    /// switching schedule). A SwitchLoRA recipe needs a module built with
    /// [`adapter`](Self::adapter)'s SwitchLoRA layers.
    pub fn build_with_switcher<M: Module>(
        &self,
        module: &M,
        router: &Router,
        total_steps: usize,
    ) -> Result<(ModuleOptimizer, Option<Switcher>)> {
        if self.optimizer != RecipeOptimizer::SwitchLora {
            return Ok((self.build(module, router)?, None));
        }
        let config = self.switchlora_config(total_steps)?;
        let (optim, switcher) = match self.dense_optimizer()? {
            DenseOptimizer::Burn(adamw) => config.build(module, adamw)?,
            DenseOptimizer::Quantized(adamw) => config.build(module, adamw)?,
        };
        Ok((optim, Some(switcher)))
    }

    /// The optimizer for `module`: the recipe's optimizer on what `router` routes, AdamW on
    /// the rest. A `rank` larger than a routed matrix is an error naming the matrix.
    pub fn build<M: Module>(&self, module: &M, router: &Router) -> Result<ModuleOptimizer> {
        let dense = self.dense_optimizer()?;
        match self.optimizer {
            RecipeOptimizer::AdamW => Ok(dense.into_module_optimizer()),
            RecipeOptimizer::SwitchLora => Err(Error::InvalidConfig {
                field: "optimizer",
                value: "\"switchlora\" in Recipe::build".into(),
                expected: "Recipe::build_with_switcher (SwitchLoRA also switches the model)",
            }),
            _ => {
                let params = ParamInfo::collect(module);
                self.table.check_rank(&params, router)?;
                self.subspace_optimizer()?.route(&params, router, dense)
            }
        }
    }

    /// The optimizer-state memory [`build`](Self::build) will hold for `module`, from shapes
    /// only. For SwitchLoRA, `module` is the dense model: each routed matrix counts as a
    /// SwitchLoRA layer of [`adapter`](Self::adapter)'s rank.
    pub fn estimate_memory<M: Module>(&self, module: &M, router: &Router) -> Result<MemoryReport> {
        let dense = self.dense_optimizer()?;
        Ok(match self.optimizer {
            RecipeOptimizer::AdamW => {
                MemoryReport::estimate(module, &Router::from_predicate(|_| false), &dense, &dense)
            }
            RecipeOptimizer::SwitchLora => {
                let rank = self.adapter()?.map_or(128, |a| a.rank);
                let moments = self.switchlora_config(1)?.adam.moment_format();
                let footprint = AdapterFootprint { rank, moments };
                MemoryReport::estimate(module, router, &footprint, &dense)
            }
            _ => {
                MemoryReport::estimate(module, router, self.subspace_optimizer()?.as_ref(), &dense)
            }
        })
    }
}
