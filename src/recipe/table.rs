//! One optimizer table of a [recipe](crate::recipe) (`[galore]`, `[fira]`, ...) and how a
//! config reads it: through the config types' own serde, so a table's keys are the config's
//! fields and those of the configs it nests (`rank` is `subspace.rank`, `beta_1` is
//! `adam.beta_1`), never listed by hand.

use std::collections::BTreeMap;

use burn::optim::ModuleOptimizer;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RecipeOptimizer;
use crate::error::{Error, Result};
use crate::groups::{MatrixOptimizer, ParamInfo, Router};
use crate::memory::StateFootprint;
use crate::optim::DenseOptimizer;

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
    let camel = camel_case(value).ok_or_else(invalid)?;
    T::deserialize(toml::Value::String(camel)).map_err(|_| invalid())
}

/// A variant's name from its snake-case spelling (`reverse_std` is `ReverseStd`, `q8` is `Q8`);
/// `None` unless `value` is snake case.
fn camel_case(value: &str) -> Option<String> {
    let snake = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if value.is_empty() || !value.chars().all(snake) {
        return None;
    }
    let camel = (value.split('_'))
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    Some(camel)
}

/// `message` with every back-quoted variant name in snake case, as a recipe spells it
/// (serde's "expected one of `Svd`, `RandomOrthogonal`" reads "`svd`, `random_orthogonal`").
fn snake_case_names(message: &str) -> String {
    let mut out = String::new();
    for (k, part) in message.split('`').enumerate() {
        if k % 2 == 1 && part.chars().all(|c| c.is_ascii_alphanumeric()) {
            out.push('`');
            for (i, c) in part.char_indices() {
                let after_lower = i > 0 && !part[..i].ends_with(|p: char| p.is_ascii_uppercase());
                if c.is_ascii_uppercase() && after_lower {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out.push('`');
        } else if k % 2 == 1 {
            out.push('`');
            out.push_str(part);
            out.push('`');
        } else {
            out.push_str(part);
        }
    }
    out
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

    /// `config` with this table's keys applied, through the config types' own serde: a key
    /// names a field of the config or of a config it nests (`rank` is `subspace.rank`,
    /// `beta_1` is `adam.beta_1`), and an enum's value is its variant's name in snake case.
    /// `own` are keys the caller reads itself (skipped here, and valid); `fixed` are fields no
    /// recipe sets. Any other key is an error naming it and every valid key; a bad value, an
    /// error naming its key.
    pub(crate) fn apply<C: Serialize + DeserializeOwned>(
        &self,
        config: C,
        own: &[&str],
        fixed: &[&str],
    ) -> Result<C> {
        let error = |reason: String| Error::Recipe {
            file: format!("[{}]", self.name),
            reason,
        };
        let mut fields = match toml::Value::try_from(&config) {
            Ok(toml::Value::Table(fields)) => fields,
            _ => return Err(error("the config has no table form".into())),
        };
        // Each key's path: a field, or a field of a nested config.
        let mut paths: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
        for (name, value) in &fields {
            match value {
                toml::Value::Table(nested) => {
                    for leaf in nested.keys() {
                        paths.insert(leaf.clone(), (name.clone(), Some(leaf.clone())));
                    }
                }
                _ => {
                    paths.insert(name.clone(), (name.clone(), None));
                }
            }
        }
        paths.retain(|key, _| !fixed.contains(&key.as_str()));
        let mut config = config;
        for (key, value) in self.keys.iter().filter(|(k, _)| !own.contains(&k.as_str())) {
            let Some((field, leaf)) = paths.get(key) else {
                let mut valid: Vec<&str> = paths.keys().map(String::as_str).collect();
                valid.extend(own);
                valid.sort_unstable();
                return Err(error(format!(
                    "unknown key `{key}`: the keys of [{}] are {}",
                    self.name,
                    valid.join(", ")
                )));
            };
            let slot = match leaf {
                Some(leaf) => fields
                    .get_mut(field)
                    .and_then(toml::Value::as_table_mut)
                    .and_then(|nested| nested.get_mut(leaf)),
                None => fields.get_mut(field),
            }
            .expect("a path read from the config's own fields");
            *slot = match (&*slot, value) {
                // An enum: its variant, spelled in snake case.
                (toml::Value::String(_), toml::Value::String(v)) => {
                    toml::Value::String(camel_case(v).unwrap_or_else(|| v.clone()))
                }
                _ => value.clone(),
            };
            config = C::deserialize(toml::Value::Table(fields.clone())).map_err(|e| {
                error(format!(
                    "{key} = {value}: {}",
                    snake_case_names(e.message())
                ))
            })?;
        }
        Ok(config)
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
}
