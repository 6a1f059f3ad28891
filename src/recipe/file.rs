//! A recipe file's layout: the top-level keys, the one optimizer table named like `optimizer`,
//! and the `[dense]` table; every other key or table is an error naming it.

use burn::optim::AdamWConfig;
use serde::Deserialize;

use super::table::{variant, Table, MOMENTS_EXPECTED};
use super::{Recipe, RecipeOptimizer};
use crate::error::{check, Error, Result};
use crate::optim::{DenseAdamWConfig, DenseOptimizer};
use crate::quant::MomentPrecision;

/// The `[dense]` table: AdamW hyperparameters for the parameters the router keeps dense.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DenseSection {
    pub beta_1: Option<f32>,
    pub beta_2: Option<f32>,
    pub epsilon: Option<f32>,
    pub weight_decay: Option<f32>,
    /// `"f32"`, `"q8"` or `"q4"`; the recipe's top-level `moments` when unset.
    pub moments: Option<String>,
}

impl DenseSection {
    /// Burn's AdamW config with the values this table sets.
    pub(crate) fn adamw(&self) -> AdamWConfig {
        let c = AdamWConfig::new();
        let c = self.beta_1.map_or(c.clone(), |v| c.with_beta_1(v));
        let c = self.beta_2.map_or(c.clone(), |v| c.with_beta_2(v));
        let c = self.epsilon.map_or(c.clone(), |v| c.with_epsilon(v));
        self.weight_decay
            .map_or(c.clone(), |v| c.with_weight_decay(v))
    }

    /// The moments' precision this table sets (`f32` by default).
    pub(crate) fn precision(&self) -> Result<MomentPrecision> {
        match &self.moments {
            Some(v) => variant("dense.moments", v, MOMENTS_EXPECTED),
            None => Ok(MomentPrecision::F32),
        }
    }

    /// The dense optimizer: Burn's AdamW at `f32`, [`DenseAdamW`] with the same
    /// hyperparameters when the moments are quantized.
    pub(crate) fn optimizer(&self) -> Result<DenseOptimizer> {
        let precision = self.precision()?;
        if precision == MomentPrecision::F32 {
            return Ok(DenseOptimizer::Burn(self.adamw().build()));
        }
        // Burn's AdamW defaults, overridden as in `adamw()`.
        let mut c = DenseAdamWConfig::new().with_moments(precision);
        c.adam.beta_1 = self.beta_1.unwrap_or(c.adam.beta_1);
        c.adam.beta_2 = self.beta_2.unwrap_or(c.adam.beta_2);
        c.adam.epsilon = self.epsilon.unwrap_or(c.adam.epsilon);
        c.adam.weight_decay = self.weight_decay.unwrap_or(c.adam.weight_decay);
        Ok(DenseOptimizer::Quantized(c.build()?))
    }

    /// Checks every value set, naming it `dense.<key>`.
    pub(crate) fn validate(&self) -> Result<()> {
        self.precision()?;
        for (field, beta) in [("dense.beta_1", self.beta_1), ("dense.beta_2", self.beta_2)] {
            beta.map_or(Ok(()), |v| check::unit_interval(field, v as f64))?;
        }
        let rest = [
            ("dense.epsilon", self.epsilon),
            ("dense.weight_decay", self.weight_decay),
        ];
        for (field, value) in rest {
            value.map_or(Ok(()), |v| check::non_negative(field, v as f64))?;
        }
        Ok(())
    }
}

/// Checks the schedule hints of the top level.
pub(crate) fn check_schedule(
    lr: f64,
    warmup_fraction: Option<f64>,
    min_lr_fraction: Option<f64>,
    grad_clip: Option<f64>,
) -> Result<()> {
    check::positive("lr", lr)?;
    warmup_fraction.map_or(Ok(()), |w| check::unit_interval("warmup_fraction", w))?;
    min_lr_fraction.map_or(Ok(()), |f| check::non_negative("min_lr_fraction", f))?;
    grad_clip.map_or(Ok(()), |c| check::positive("grad_clip", c))
}

/// Reads a recipe's top level, its optimizer's table and its `[dense]` table.
pub(crate) fn split(text: &str) -> Result<Recipe> {
    let syntax = |e: toml::de::Error| Error::Recipe {
        file: "the recipe".into(),
        reason: e.message().to_string(),
    };
    let mut top: toml::Table = toml::from_str(text).map_err(syntax)?;
    let mut dense: DenseSection = match top.remove("dense") {
        Some(v) => v.try_into().map_err(syntax)?,
        None => DenseSection::default(),
    };
    let moments = match top.remove("moments") {
        Some(toml::Value::String(v)) => Some(v),
        Some(other) => {
            return Err(Error::InvalidConfig {
                field: "moments",
                value: other.to_string(),
                expected: MOMENTS_EXPECTED,
            })
        }
        None => None,
    };
    let tables: Vec<(&str, toml::Value)> = (RecipeOptimizer::ALL.iter())
        .filter_map(|o| top.remove(o.name()).map(|v| (o.name(), v)))
        .collect();
    let mut recipe: Recipe = toml::Value::Table(top).try_into().map_err(syntax)?;
    if let Some(v) = &moments {
        variant::<MomentPrecision>("moments", v, MOMENTS_EXPECTED)?;
        dense.moments.get_or_insert_with(|| v.clone());
    }
    recipe.table = Table::new(recipe.optimizer.name(), toml::Table::new());
    recipe.dense = dense;
    for (name, value) in tables {
        match value {
            toml::Value::Table(keys) if name == recipe.optimizer.name() => {
                recipe.table = Table::new(name, keys)
            }
            _ => {
                return Err(Error::InvalidConfig {
                    field: "optimizer",
                    value: format!("a [{name}] table with optimizer = \"{}\"", recipe.optimizer),
                    expected: "only the table named like `optimizer`",
                })
            }
        }
    }
    if let Some(v) = moments {
        if !recipe.table.has("moments") && recipe.optimizer != RecipeOptimizer::AdamW {
            recipe.table.set("moments", v);
        }
    }
    Ok(recipe)
}
