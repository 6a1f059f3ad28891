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
//! warmup_fraction = 0.1       # optional schedule hints, used by the training example
//! min_lr_fraction = 0.1
//! grad_clip = 1.0
//!
//! [fira]                      # the table named like `optimizer`; omitted keys keep defaults
//! rank = 128
//! proj_type = "std"           # std | reverse_std | left | right | full
//! projection = "svd"          # svd | randomized | dct | gaussian | random_orthogonal
//!                             # | coordinates (| block for frugal)
//! moment_policy = "keep"      # keep | reset | rotate
//! gamma = 1.01                # Fira/APOLLO limiter
//!
//! [dense]                     # AdamW for the parameters the router keeps dense
//! weight_decay = 0.0
//! ```
//!
//! Keys of the optimizer table: the subspace keys `rank`, `update_proj_gap`, `proj_type`,
//! `projection`, `moment_policy`, `oversample`, `power_iters`, `seed`, `dct_norm` (l1 | l2),
//! `dct_scoring` (auto | fft | matmul), `adaptive_gap`, `adaptive_gap_threshold`,
//! `adaptive_gap_window`; Adam's `beta_1`, `beta_2`, `epsilon`, `weight_decay`; and per
//! optimizer: `scale` (galore, fira, apollo), `gamma` and `scaling` (channel | tensor; fira,
//! apollo), `scale_front` and `limiter` (apollo), `rho`, `residual` (sign_sgd | sgd | none),
//! `proj_lr_scale` and `inactive_lr_scale` (frugal).
//!
//! `[switchlora]` has no subspace: it takes `rank`, `seed`, the Adam keys, `interval`,
//! `descent_fraction`, `freeze_steps` and `candidates` (host | device). Its recipe changes the
//! model too: build the routed linears from [`Recipe::adapter`] and the optimizer with
//! [`Recipe::build_with_switcher`].

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamW, AdamWConfig, ModuleOptimizer};
use serde::Deserialize;

use crate::apollo::ApolloConfig;
use crate::error::{Error, Result};
use crate::fira::FiraConfig;
use crate::frugal::{FrugalConfig, Residual};
use crate::galore::GaLoreConfig;
use crate::groups::{ParamInfo, Router};
use crate::memory::MemoryReport;
use crate::projection::{
    DctNorm, DctScoring, MomentPolicy, ProjType, ProjectionMethod, SubspaceConfig,
};
use crate::scaling::ScaleGranularity;
use crate::switchlora::{
    Adapter, AdapterFootprint, CandidatePlacement, SwitchLoraConfig, SwitchScheduleConfig, Switcher,
};

/// Which optimizer a recipe builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Burn's AdamW on every parameter.
    Adamw,
    /// [`GaLore`](crate::GaLore) on routed matrices, AdamW on the rest.
    Galore,
    /// [`Fira`](crate::Fira) on routed matrices, AdamW on the rest.
    Fira,
    /// [`Frugal`](crate::Frugal) on routed matrices, AdamW on the rest.
    Frugal,
    /// [`Apollo`](crate::Apollo) on routed matrices, AdamW on the rest.
    Apollo,
    /// [SwitchLoRA](crate::switchlora): the routed linears become SwitchLoRA layers, their
    /// adapters get per-vector AdamW, the rest AdamW.
    Switchlora,
}

impl OptimizerKind {
    /// The name of the recipe table holding this optimizer's keys.
    pub fn table(self) -> &'static str {
        match self {
            OptimizerKind::Adamw => "dense",
            OptimizerKind::Galore => "galore",
            OptimizerKind::Fira => "fira",
            OptimizerKind::Frugal => "frugal",
            OptimizerKind::Apollo => "apollo",
            OptimizerKind::Switchlora => "switchlora",
        }
    }

    /// The keys its table may hold beyond the shared subspace and Adam keys.
    fn own_keys(self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Adamw => &[],
            OptimizerKind::Galore => &["scale"],
            OptimizerKind::Fira => &["scale", "gamma", "scaling"],
            OptimizerKind::Frugal => &["rho", "residual", "proj_lr_scale", "inactive_lr_scale"],
            OptimizerKind::Apollo => &["scale", "gamma", "scaling", "scale_front", "limiter"],
            OptimizerKind::Switchlora => {
                &["interval", "descent_fraction", "freeze_steps", "candidates"]
            }
        }
    }
}

/// Every key an optimizer table may hold; [`OptimizerKind`] decides which apply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct OptimizerSection {
    pub rank: Option<usize>,
    pub update_proj_gap: Option<usize>,
    pub proj_type: Option<String>,
    pub projection: Option<String>,
    pub moment_policy: Option<String>,
    pub oversample: Option<usize>,
    pub power_iters: Option<usize>,
    pub seed: Option<u64>,
    pub dct_norm: Option<String>,
    pub dct_scoring: Option<String>,
    pub adaptive_gap: Option<bool>,
    pub adaptive_gap_threshold: Option<f32>,
    pub adaptive_gap_window: Option<usize>,
    pub beta_1: Option<f32>,
    pub beta_2: Option<f32>,
    pub epsilon: Option<f32>,
    pub weight_decay: Option<f32>,
    pub scale: Option<f32>,
    pub gamma: Option<f32>,
    pub scaling: Option<String>,
    pub scale_front: Option<bool>,
    pub limiter: Option<bool>,
    pub rho: Option<f32>,
    pub residual: Option<String>,
    pub proj_lr_scale: Option<f32>,
    pub inactive_lr_scale: Option<f32>,
    pub interval: Option<usize>,
    pub descent_fraction: Option<f64>,
    pub freeze_steps: Option<usize>,
    pub candidates: Option<String>,
}

/// The `[dense]` table: AdamW hyperparameters for the parameters the router keeps dense.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DenseSection {
    pub beta_1: Option<f32>,
    pub beta_2: Option<f32>,
    pub epsilon: Option<f32>,
    pub weight_decay: Option<f32>,
}

/// `value` looked up in `options`, or a typed error naming `field` and listing the choices.
fn choose<T: Copy>(
    field: &'static str,
    value: &str,
    options: &[(&str, T)],
    expected: &'static str,
) -> Result<T> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| Error::InvalidConfig {
            field,
            value: format!("\"{value}\""),
            expected,
        })
}

/// Overwrites `$dst` with `$src` when the recipe sets it.
macro_rules! set {
    ($dst:expr, $src:expr) => {
        if let Some(v) = $src {
            $dst = v;
        }
    };
}

/// Overwrites a config's Adam fields (`beta_1`, `beta_2`, `epsilon`, `weight_decay`) with the
/// ones the table sets.
macro_rules! set_adam {
    ($config:expr, $section:expr) => {
        set!($config.beta_1, $section.beta_1);
        set!($config.beta_2, $section.beta_2);
        set!($config.epsilon, $section.epsilon);
        set!($config.weight_decay, $section.weight_decay);
    };
}

impl OptimizerSection {
    /// Applies the subspace keys to `c`.
    fn apply_subspace(&self, c: &mut SubspaceConfig) -> Result<()> {
        use ProjectionMethod as P;
        set!(c.rank, self.rank);
        set!(c.update_proj_gap, self.update_proj_gap);
        if let Some(v) = &self.proj_type {
            let options = [
                ("std", ProjType::Std),
                ("reverse_std", ProjType::ReverseStd),
                ("left", ProjType::Left),
                ("right", ProjType::Right),
                ("full", ProjType::Full),
            ];
            let expected = "one of std, reverse_std, left, right, full";
            c.proj_type = choose("proj_type", v, &options, expected)?;
        }
        if let Some(v) = self.projection.as_deref().filter(|v| *v != "block") {
            let options = [
                ("svd", P::Svd),
                ("randomized", P::Randomized),
                ("dct", P::Dct),
                ("gaussian", P::Gaussian),
                ("random_orthogonal", P::RandomOrthogonal),
                ("coordinates", P::Coordinates),
            ];
            let expected = "one of svd, randomized, dct, gaussian, random_orthogonal, \
                            coordinates (and block for frugal)";
            c.projection = choose("projection", v, &options, expected)?;
        }
        if let Some(v) = &self.moment_policy {
            let options = [
                ("keep", MomentPolicy::Keep),
                ("reset", MomentPolicy::Reset),
                ("rotate", MomentPolicy::Rotate),
            ];
            let expected = "one of keep, reset, rotate";
            c.moment_policy = choose("moment_policy", v, &options, expected)?;
        }
        if let Some(v) = &self.dct_norm {
            let options = [("l1", DctNorm::L1), ("l2", DctNorm::L2)];
            c.dct_norm = choose("dct_norm", v, &options, "one of l1, l2")?;
        }
        if let Some(v) = &self.dct_scoring {
            let options = [
                ("auto", DctScoring::Auto),
                ("fft", DctScoring::Fft),
                ("matmul", DctScoring::Matmul),
            ];
            c.dct_scoring = choose("dct_scoring", v, &options, "one of auto, fft, matmul")?;
        }
        set!(c.oversample, self.oversample);
        set!(c.power_iters, self.power_iters);
        set!(c.seed, self.seed);
        set!(c.adaptive_gap, self.adaptive_gap);
        set!(c.adaptive_gap_threshold, self.adaptive_gap_threshold);
        set!(c.adaptive_gap_window, self.adaptive_gap_window);
        Ok(())
    }

    fn scaling(&self) -> Result<Option<ScaleGranularity>> {
        let options = [
            ("channel", ScaleGranularity::Channel),
            ("column", ScaleGranularity::Channel),
            ("tensor", ScaleGranularity::Tensor),
            ("matrix", ScaleGranularity::Tensor),
        ];
        let expected = "one of channel (column), tensor (matrix)";
        self.scaling
            .as_deref()
            .map(|v| choose("scaling", v, &options, expected))
            .transpose()
    }
}

/// A parsed optimizer recipe.
///
/// ```
/// use lowrank_optim::recipe::{OptimizerKind, Recipe};
///
/// let recipe = Recipe::from_toml_str("galore", "optimizer = 'galore'\nlr = 0.01\n[galore]\nrank = 64")?;
/// assert_eq!(recipe.optimizer, OptimizerKind::Galore);
/// assert_eq!(recipe.galore_config()?.subspace.rank, 64);
/// let fira = Recipe::from_toml_str("fira", "optimizer = 'fira'\nlr = 0.01\n[fira]\ngamma = 1.01")?;
/// assert_eq!(fira.fira_config()?.gamma, 1.01);
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
    pub optimizer: OptimizerKind,
    /// Peak learning rate of the published setup.
    pub lr: f64,
    /// Fraction of the steps spent in linear warm-up.
    pub warmup_fraction: Option<f64>,
    /// Final learning rate of the cosine decay, as a fraction of `lr`.
    pub min_lr_fraction: Option<f64>,
    /// Gradient-norm clipping threshold.
    pub grad_clip: Option<f64>,
    /// GaLore keys (for `optimizer = "galore"`).
    #[serde(default)]
    pub galore: Option<OptimizerSection>,
    /// Fira keys (for `optimizer = "fira"`).
    #[serde(default)]
    pub fira: Option<OptimizerSection>,
    /// FRUGAL keys (for `optimizer = "frugal"`).
    #[serde(default)]
    pub frugal: Option<OptimizerSection>,
    /// APOLLO keys (for `optimizer = "apollo"`).
    #[serde(default)]
    pub apollo: Option<OptimizerSection>,
    /// SwitchLoRA keys (for `optimizer = "switchlora"`).
    #[serde(default)]
    pub switchlora: Option<OptimizerSection>,
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
        let recipe_error = |reason: String| Error::Recipe {
            file: source.to_string(),
            reason,
        };
        let recipe: Recipe =
            toml::from_str(text).map_err(|e| recipe_error(e.message().to_string()))?;
        let table: toml::Table =
            toml::from_str(text).map_err(|e| recipe_error(e.message().to_string()))?;
        recipe
            .validate(&table)
            .map_err(|e| recipe_error(e.to_string()))?;
        Ok(recipe)
    }

    /// The optimizer table of this recipe, if it has one.
    pub fn section(&self) -> Option<&OptimizerSection> {
        self.slot(self.optimizer).as_ref()
    }

    /// The optimizer table, for changing it (created empty if absent; `None` for AdamW).
    pub fn section_mut(&mut self) -> Option<&mut OptimizerSection> {
        let slot = match self.optimizer {
            OptimizerKind::Adamw => return None,
            OptimizerKind::Galore => &mut self.galore,
            OptimizerKind::Fira => &mut self.fira,
            OptimizerKind::Frugal => &mut self.frugal,
            OptimizerKind::Apollo => &mut self.apollo,
            OptimizerKind::Switchlora => &mut self.switchlora,
        };
        Some(slot.get_or_insert_with(Default::default))
    }

    /// The table field of `kind` (always empty for AdamW, which has none).
    fn slot(&self, kind: OptimizerKind) -> &Option<OptimizerSection> {
        match kind {
            OptimizerKind::Adamw => &None,
            OptimizerKind::Galore => &self.galore,
            OptimizerKind::Fira => &self.fira,
            OptimizerKind::Frugal => &self.frugal,
            OptimizerKind::Apollo => &self.apollo,
            OptimizerKind::Switchlora => &self.switchlora,
        }
    }

    fn validate(&self, table: &toml::Table) -> Result<()> {
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
        self.check_tables(table)?;
        match self.optimizer {
            OptimizerKind::Adamw => Ok(()),
            OptimizerKind::Galore => self.galore_config().map(drop),
            OptimizerKind::Fira => self.fira_config().map(drop),
            OptimizerKind::Frugal => self.frugal_config().map(drop),
            OptimizerKind::Apollo => self.apollo_config().map(drop),
            OptimizerKind::Switchlora => self.switchlora_config(1).map(drop),
        }
    }

    /// Only the table of the chosen optimizer may appear, holding only keys that apply to it.
    fn check_tables(&self, table: &toml::Table) -> Result<()> {
        const ALL: [OptimizerKind; 5] = [
            OptimizerKind::Galore,
            OptimizerKind::Fira,
            OptimizerKind::Frugal,
            OptimizerKind::Apollo,
            OptimizerKind::Switchlora,
        ];
        // SwitchLoRA has no subspace: of the shared keys it takes only these.
        const SWITCHLORA_SHARED: [&str; 6] = [
            "rank",
            "seed",
            "beta_1",
            "beta_2",
            "epsilon",
            "weight_decay",
        ];
        const OWN_KEYS: [&str; 13] = [
            "scale",
            "gamma",
            "scaling",
            "scale_front",
            "limiter",
            "rho",
            "residual",
            "proj_lr_scale",
            "inactive_lr_scale",
            "interval",
            "descent_fraction",
            "freeze_steps",
            "candidates",
        ];
        for kind in ALL {
            let Some(section) = table.get(kind.table()).and_then(|t| t.as_table()) else {
                continue;
            };
            if kind != self.optimizer {
                return Err(Error::InvalidConfig {
                    field: kind.table(),
                    value: format!("a [{}] table", kind.table()),
                    expected: "only the table named like `optimizer`",
                });
            }
            for key in section.keys() {
                let foreign = OWN_KEYS
                    .iter()
                    .find(|k| **k == key.as_str() && !kind.own_keys().contains(k));
                if let Some(field) = foreign {
                    return Err(Error::InvalidConfig {
                        field,
                        value: format!("set in [{}]", kind.table()),
                        expected: "a key of another optimizer (see the recipe module docs)",
                    });
                }
                let switchlora = kind == OptimizerKind::Switchlora;
                let own = kind.own_keys().contains(&key.as_str());
                if switchlora && !own && !SWITCHLORA_SHARED.contains(&key.as_str()) {
                    return Err(Error::InvalidConfig {
                        field: "switchlora",
                        value: format!("`{key}` set in [switchlora]"),
                        expected: "no subspace keys: SwitchLoRA takes rank, seed, the Adam \
                                   keys, interval, descent_fraction, freeze_steps, candidates",
                    });
                }
            }
        }
        if let Some(projection) = self.section().and_then(|s| s.projection.as_deref()) {
            if projection == "block" && self.optimizer != OptimizerKind::Frugal {
                return Err(Error::InvalidConfig {
                    field: "projection",
                    value: "\"block\"".into(),
                    expected: "block mode only with optimizer = \"frugal\"",
                });
            }
        }
        Ok(())
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

    fn table_of(&self, kind: OptimizerKind) -> OptimizerSection {
        self.slot(kind).clone().unwrap_or_default()
    }

    /// The GaLore config (defaults overridden by the `[galore]` table), validated.
    pub fn galore_config(&self) -> Result<GaLoreConfig> {
        let s = self.table_of(OptimizerKind::Galore);
        let mut c = GaLoreConfig::new();
        s.apply_subspace(&mut c.subspace)?;
        set!(c.scale, s.scale);
        set_adam!(c, s);
        c.validate()?;
        Ok(c)
    }

    /// The Fira config (defaults overridden by the `[fira]` table), validated.
    pub fn fira_config(&self) -> Result<FiraConfig> {
        let s = self.table_of(OptimizerKind::Fira);
        let mut c = FiraConfig::new();
        s.apply_subspace(&mut c.subspace)?;
        set!(c.scale, s.scale);
        set!(c.gamma, s.gamma);
        set!(c.scaling, s.scaling()?);
        set_adam!(c, s);
        c.validate()?;
        Ok(c)
    }

    /// The FRUGAL config (defaults overridden by the `[frugal]` table), validated. A `rank`
    /// without `rho` fixes the rank of every matrix instead of the density.
    pub fn frugal_config(&self) -> Result<FrugalConfig> {
        let s = self.table_of(OptimizerKind::Frugal);
        let mut c = FrugalConfig::new();
        s.apply_subspace(&mut c.subspace)?;
        if s.rank.is_some() {
            c.subspace.density = None;
        }
        if let Some(rho) = s.rho {
            c.subspace.density = Some(rho);
        }
        c.block = s.projection.as_deref() == Some("block");
        if let Some(v) = &s.residual {
            let options = [
                ("sign_sgd", Residual::SignSgd),
                ("sgd", Residual::Sgd),
                ("none", Residual::None),
            ];
            c.residual = choose("residual", v, &options, "one of sign_sgd, sgd, none")?;
        }
        set!(c.proj_lr_scale, s.proj_lr_scale);
        set!(c.inactive_lr_scale, s.inactive_lr_scale);
        set_adam!(c, s);
        c.validate()?;
        Ok(c)
    }

    /// The APOLLO config (defaults overridden by the `[apollo]` table), validated.
    pub fn apollo_config(&self) -> Result<ApolloConfig> {
        let s = self.table_of(OptimizerKind::Apollo);
        let mut c = ApolloConfig::new();
        s.apply_subspace(&mut c.subspace)?;
        set!(c.scale, s.scale);
        set!(c.gamma, s.gamma);
        set!(c.scaling, s.scaling()?);
        set!(c.scale_front, s.scale_front);
        set!(c.limiter, s.limiter);
        set_adam!(c, s);
        c.validate()?;
        Ok(c)
    }

    /// The SwitchLoRA config for a run of `total_steps` steps (defaults overridden by the
    /// `[switchlora]` table), validated.
    pub fn switchlora_config(&self, total_steps: usize) -> Result<SwitchLoraConfig> {
        let s = self.table_of(OptimizerKind::Switchlora);
        if let Some(rank) = s.rank {
            crate::error::check::positive_count("rank", rank)?;
        }
        let mut schedule = SwitchScheduleConfig::new(total_steps);
        set!(schedule.interval, s.interval);
        set!(schedule.descent_fraction, s.descent_fraction);
        set!(schedule.freeze_steps, s.freeze_steps);
        set!(schedule.seed, s.seed);
        let mut c = SwitchLoraConfig::new(schedule);
        set_adam!(c, s);
        c.validate()?;
        self.candidate_placement()?;
        Ok(c)
    }

    /// The SwitchLoRA adapter the model's routed linears should be built with: `None` unless
    /// `optimizer = "switchlora"`; the rank is the reference's 128 when the table leaves it out.
    pub fn adapter(&self) -> Result<Option<Adapter>> {
        if self.optimizer != OptimizerKind::Switchlora {
            return Ok(None);
        }
        Ok(Some(Adapter {
            rank: self.section().and_then(|s| s.rank).unwrap_or(128),
            candidates: self.candidate_placement()?,
        }))
    }

    /// Where SwitchLoRA layers keep their candidate pools (`candidates = "host" | "device"`).
    pub fn candidate_placement(&self) -> Result<CandidatePlacement> {
        let value = self.section().and_then(|s| s.candidates.as_deref());
        let options = [
            ("host", CandidatePlacement::Host),
            ("device", CandidatePlacement::Device),
        ];
        value.map_or(Ok(CandidatePlacement::Host), |v| {
            choose("candidates", v, &options, "one of host, device")
        })
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
        if self.optimizer != OptimizerKind::Switchlora {
            return Ok((self.build(module, router)?, None));
        }
        let (optim, switcher) = self
            .switchlora_config(total_steps)?
            .build(module, self.dense())?;
        Ok((optim, Some(switcher)))
    }

    fn dense(&self) -> AdamW {
        self.adamw_config().build()
    }

    /// Rejects a rank above `min(m, n)` of a routed matrix (the optimizers themselves clamp
    /// it): in a recipe it is a mistake worth naming.
    fn check_rank<M: Module>(&self, module: &M, router: &Router) -> Result<()> {
        let Some(rank) = self.section().and_then(|s| s.rank) else {
            return Ok(());
        };
        if self.section().and_then(|s| s.rho).is_some() {
            return Ok(());
        }
        for p in ParamInfo::collect(module) {
            if !router.is_projected(&p) || p.shape.len() != 2 {
                continue;
            }
            let smaller = p.shape[0].min(p.shape[1]);
            if rank > smaller {
                return Err(Error::InvalidConfig {
                    field: "rank",
                    value: format!(
                        "{rank} (the {:?} matrix {} has min(m, n) = {smaller})",
                        p.shape, p.path
                    ),
                    expected: "at most the smaller side of every projected matrix",
                });
            }
        }
        Ok(())
    }

    /// The optimizer for `module`: the recipe's optimizer on what `router` routes, AdamW on
    /// the rest. A `rank` larger than a routed matrix is an error naming the matrix.
    pub fn build<M: Module>(&self, module: &M, router: &Router) -> Result<ModuleOptimizer> {
        self.check_rank(module, router)?;
        let dense = self.dense();
        Ok(match self.optimizer {
            OptimizerKind::Switchlora => {
                return Err(Error::InvalidConfig {
                    field: "optimizer",
                    value: "\"switchlora\" in Recipe::build".into(),
                    expected: "Recipe::build_with_switcher (SwitchLoRA also switches the model)",
                })
            }
            OptimizerKind::Adamw => ModuleOptimizer::from(dense),
            OptimizerKind::Galore => router.build(module, self.galore_config()?.init()?, dense),
            OptimizerKind::Fira => router.build(module, self.fira_config()?.init()?, dense),
            OptimizerKind::Frugal => router.build(module, self.frugal_config()?.init()?, dense),
            OptimizerKind::Apollo => router.build(module, self.apollo_config()?.init()?, dense),
        })
    }

    /// The optimizer-state memory [`build`](Self::build) will hold for `module`, from shapes only.
    /// For SwitchLoRA, `module` is the dense model: each routed matrix counts as a
    /// SwitchLoRA layer of [`adapter`](Self::adapter)'s rank.
    pub fn estimate_memory<M: Module>(&self, module: &M, router: &Router) -> Result<MemoryReport> {
        let dense = self.dense();
        Ok(match self.optimizer {
            OptimizerKind::Adamw => {
                MemoryReport::estimate(module, &Router::from_predicate(|_| false), &dense, &dense)
            }
            OptimizerKind::Galore => {
                MemoryReport::estimate(module, router, &self.galore_config()?.init()?, &dense)
            }
            OptimizerKind::Fira => {
                MemoryReport::estimate(module, router, &self.fira_config()?.init()?, &dense)
            }
            OptimizerKind::Frugal => {
                MemoryReport::estimate(module, router, &self.frugal_config()?.init()?, &dense)
            }
            OptimizerKind::Apollo => {
                MemoryReport::estimate(module, router, &self.apollo_config()?.init()?, &dense)
            }
            OptimizerKind::Switchlora => {
                let rank = self.adapter()?.map_or(128, |a| a.rank);
                MemoryReport::estimate(module, router, &AdapterFootprint { rank }, &dense)
            }
        })
    }
}
