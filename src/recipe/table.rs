//! One optimizer table of a [recipe](crate::recipe) (`[galore]`, `[fira]`, ...) and how a
//! config reads it: the subspace and Adam keys every subspace optimizer shares are read here
//! once, each optimizer reads its own keys (from a struct with `deny_unknown_fields`, so a
//! stray key is named in the error) in its [`RecipeTable`] implementation.

use burn::optim::ModuleOptimizer;
use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;

use super::RecipeOptimizer;
use crate::adam::AdamParams;
use crate::error::{Error, Result};
use crate::groups::{MatrixOptimizer, ParamInfo, Router};
use crate::memory::StateFootprint;
use crate::optim::DenseOptimizer;
use crate::projection::SubspaceConfig;

/// A subspace optimizer's config as a recipe table.
pub trait RecipeTable: Sized {
    /// The optimizer a recipe names for this config.
    const OPTIMIZER: RecipeOptimizer;
    /// The config: defaults overridden by the table's keys.
    fn from_table(table: &Table) -> Result<Self>;
    /// The validated optimizer, ready to be routed onto a model.
    fn routed(&self) -> Result<Box<dyn Routed>>;
}

/// A projected optimizer whatever its type (what a recipe builds): routed onto a model,
/// counted from shapes.
pub trait Routed: StateFootprint {
    /// The `ModuleOptimizer` with this optimizer on `router`'s matrices of a model with
    /// `params`, `dense` on the rest.
    fn route(
        &self,
        params: &[ParamInfo],
        router: &Router,
        dense: DenseOptimizer,
    ) -> Result<ModuleOptimizer>;
}

impl<P: MatrixOptimizer + StateFootprint> Routed for P {
    fn route(
        &self,
        params: &[ParamInfo],
        router: &Router,
        dense: DenseOptimizer,
    ) -> Result<ModuleOptimizer> {
        match dense {
            DenseOptimizer::Burn(adamw) => router.route(params, self.clone(), adamw),
            DenseOptimizer::Quantized(adamw) => router.route(params, self.clone(), adamw),
        }
    }
}

/// An optimizer's table of a recipe, with the readers its config needs.
///
/// ```
/// use lowrank_optim::recipe::Recipe;
///
/// let mut recipe = Recipe::from_toml_str("g", "optimizer = 'galore'\nlr = 0.01\n[galore]\nrank = 64")?;
/// assert_eq!(recipe.table.get("rank").and_then(|v| v.as_integer()), Some(64));
/// recipe.table.set("rank", 32);
/// # Ok::<(), lowrank_optim::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    name: String,
    keys: toml::Table,
}

/// The subspace keys (see the [recipe](super) docs); applied onto a [`SubspaceConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubspaceKeys {
    rank: Option<usize>,
    update_proj_gap: Option<usize>,
    proj_type: Option<String>,
    projection: Option<String>,
    moment_policy: Option<String>,
    oversample: Option<usize>,
    power_iters: Option<usize>,
    seed: Option<u64>,
    dct_norm: Option<String>,
    dct_scoring: Option<String>,
    adaptive_gap: Option<bool>,
    adaptive_gap_threshold: Option<f32>,
    adaptive_gap_window: Option<usize>,
}

/// Adam's keys, shared by every optimizer table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdamKeys {
    beta_1: Option<f32>,
    beta_2: Option<f32>,
    epsilon: Option<f32>,
    weight_decay: Option<f32>,
    moments: Option<String>,
    min_quantized_len: Option<usize>,
}

/// The choices of a `moments` key.
pub(crate) const MOMENTS_EXPECTED: &str = "one of f32, q8, q4";

/// The variant of a Burn `Config` enum that `value` names in snake case (`reverse_std` is
/// `ReverseStd`), or a typed error naming `field` and listing the choices (`expected`).
pub(crate) fn variant<T: DeserializeOwned>(
    field: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<T> {
    let invalid = || Error::InvalidConfig {
        field,
        value: format!("\"{value}\""),
        expected,
    };
    let snake = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if value.is_empty() || !value.chars().all(snake) {
        return Err(invalid());
    }
    let camel: String = (value.split('_'))
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    T::deserialize(toml::Value::String(camel)).map_err(|_| invalid())
}

impl Table {
    /// The table named `name` holding `keys`.
    pub(crate) fn new(name: &str, keys: toml::Table) -> Self {
        Self {
            name: name.to_string(),
            keys,
        }
    }

    /// The value of `key`, if the table sets it.
    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.keys.get(key)
    }

    /// Whether the table sets `key`.
    pub fn has(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Sets `key` (rebuild the config to check it).
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) {
        self.keys.insert(key.to_string(), value.into());
    }

    /// The keys of this table that `T` reads, deserialized (`T` denies unknown fields).
    fn read<T: DeserializeOwned>(&self, keys: impl Fn(&str) -> bool) -> Result<T> {
        let picked: toml::Table = (self.keys.iter())
            .filter(|(k, _)| keys(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        T::deserialize(toml::Value::Table(picked)).map_err(|e| Error::Recipe {
            file: format!("[{}]", self.name),
            reason: e.to_string(),
        })
    }

    /// The optimizer's own keys: every key but the subspace and Adam ones.
    pub(crate) fn own<T: DeserializeOwned>(&self) -> Result<T> {
        let (subspace, adam) = (fields::<SubspaceKeys>(), fields::<AdamKeys>());
        self.read(|k| !subspace.contains(&k) && !adam.contains(&k))
            .map_err(|e| match e {
                Error::Recipe { file, reason } => Error::Recipe {
                    file,
                    reason: format!(
                        "{reason}, or a subspace key ({}), or an Adam key ({})",
                        subspace.join(", "),
                        adam.join(", ")
                    ),
                },
                other => other,
            })
    }

    /// Every key but the Adam ones (for a table without subspace keys).
    pub(crate) fn all_but_adam<T: DeserializeOwned>(&self) -> Result<T> {
        let adam = fields::<AdamKeys>();
        self.read(|k| !adam.contains(&k))
    }

    /// Rejects a `rank` above `min(m, n)` of a routed matrix (the optimizers themselves clamp
    /// it): in a recipe it is a mistake worth naming. A density (`rho`) sets no fixed rank.
    pub(crate) fn check_rank(&self, params: &[ParamInfo], router: &Router) -> Result<()> {
        let Some(rank) = self.get("rank").and_then(|v| v.as_integer()) else {
            return Ok(());
        };
        if self.has("rho") {
            return Ok(());
        }
        for p in params.iter().filter(|p| router.is_projected(p)) {
            let smaller = p.shape[0].min(p.shape[1]);
            if rank as usize > smaller {
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

    /// Applies the Adam keys onto `adam`.
    pub(crate) fn apply_adam(&self, adam: &mut AdamParams) -> Result<()> {
        let names = fields::<AdamKeys>();
        let keys: AdamKeys = self.read(|k| names.contains(&k))?;
        adam.beta_1 = keys.beta_1.unwrap_or(adam.beta_1);
        adam.beta_2 = keys.beta_2.unwrap_or(adam.beta_2);
        adam.epsilon = keys.epsilon.unwrap_or(adam.epsilon);
        adam.weight_decay = keys.weight_decay.unwrap_or(adam.weight_decay);
        adam.min_quantized_len = keys.min_quantized_len.unwrap_or(adam.min_quantized_len);
        if let Some(v) = &keys.moments {
            adam.moments = variant("moments", v, MOMENTS_EXPECTED)?;
        }
        Ok(())
    }

    /// Applies the keys every subspace optimizer shares: the subspace's and Adam's.
    pub(crate) fn apply_shared(
        &self,
        subspace: &mut SubspaceConfig,
        adam: &mut AdamParams,
    ) -> Result<()> {
        self.apply_subspace(subspace)?;
        self.apply_adam(adam)
    }

    /// Applies the subspace keys onto `c`.
    fn apply_subspace(&self, c: &mut SubspaceConfig) -> Result<()> {
        let names = fields::<SubspaceKeys>();
        let k: SubspaceKeys = self.read(|k| names.contains(&k))?;
        c.rank = k.rank.unwrap_or(c.rank);
        c.update_proj_gap = k.update_proj_gap.unwrap_or(c.update_proj_gap);
        if let Some(v) = &k.proj_type {
            let expected = "one of std, reverse_std, left, right, full";
            c.proj_type = variant("proj_type", v, expected)?;
        }
        if let Some(v) = &k.projection {
            let expected = "one of svd, randomized, dct, gaussian, random_orthogonal, \
                            coordinates, block (frugal only)";
            c.projection = variant("projection", v, expected)?;
        }
        if let Some(v) = &k.moment_policy {
            c.moment_policy = variant("moment_policy", v, "one of keep, reset, rotate")?;
        }
        if let Some(v) = &k.dct_norm {
            c.dct_norm = variant("dct_norm", v, "one of l1, l2")?;
        }
        if let Some(v) = &k.dct_scoring {
            c.dct_scoring = variant("dct_scoring", v, "one of auto, fft, matmul")?;
        }
        c.oversample = k.oversample.unwrap_or(c.oversample);
        c.power_iters = k.power_iters.unwrap_or(c.power_iters);
        c.seed = k.seed.unwrap_or(c.seed);
        c.adaptive_gap = k.adaptive_gap.unwrap_or(c.adaptive_gap);
        c.adaptive_gap_threshold = k.adaptive_gap_threshold.unwrap_or(c.adaptive_gap_threshold);
        c.adaptive_gap_window = k.adaptive_gap_window.unwrap_or(c.adaptive_gap_window);
        Ok(())
    }
}

/// The field names of a `#[derive(Deserialize)]` struct, as serde hands them to a
/// deserializer, so key lists are never written twice.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture(&'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl core::fmt::Display for Stop {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("field names captured")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: core::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> de::Deserializer<'de> for &mut Capture {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> core::result::Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> core::result::Result<V::Value, Stop> {
            self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut capture = Capture(&[]);
    let _ = T::deserialize(&mut capture);
    capture.0
}
