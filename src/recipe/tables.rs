//! How each optimizer's config reads its recipe table: [`Table::apply`] reads every key that is
//! a config field; what a table spells otherwise (FRUGAL's `rho`, the `scaling` aliases,
//! SwitchLoRA's adapter keys) is read here.

use super::table::{variant, RecipeTable, Routed, Table};
use super::RecipeOptimizer;
use crate::error::{check, Error};
use crate::optim::{ApolloConfig, FiraConfig, FrugalConfig, GaLoreConfig, ScaleGranularity};
use crate::switchlora::{Adapter, CandidatePlacement, SwitchLoraConfig, SwitchScheduleConfig};

impl RecipeTable for GaLoreConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::GaLore;

    fn from_table(table: &Table) -> crate::Result<Self> {
        table.apply(GaLoreConfig::new(), &[], &[])
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

impl RecipeTable for FiraConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::Fira;

    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = table.apply(FiraConfig::new(), &["scaling"], &[])?;
        if let Some(v) = table.get("scaling") {
            c.scaling = ScaleGranularity::from_key(v)?;
        }
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

impl RecipeTable for FrugalConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::Frugal;

    /// `rho` is the density of the state-full subspace (`subspace.density`); a `rank` without
    /// it fixes the rank of every matrix instead.
    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = table.apply(FrugalConfig::new(), &["rho"], &[])?;
        if table.has("rank") && !table.has("density") {
            c.subspace.density = None;
        }
        if let Some(value) = table.get("rho") {
            let rho = (value.as_float()).or(value.as_integer().map(|r| r as f64));
            let rho = rho.ok_or_else(|| Error::InvalidConfig {
                field: "rho",
                value: value.to_string(),
                expected: "a number in (0, 1]",
            })?;
            c.subspace.density = Some(rho as f32);
        }
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

impl RecipeTable for ApolloConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::Apollo;

    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = table.apply(ApolloConfig::new(), &["scaling"], &[])?;
        if let Some(v) = table.get("scaling") {
            c.scaling = ScaleGranularity::from_key(v)?;
        }
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

impl ScaleGranularity {
    /// The value of a recipe's `scaling` key: `channel` (or `column`), `tensor` (or `matrix`).
    pub(crate) fn from_key(value: &toml::Value) -> crate::Result<Self> {
        let expected = "one of channel (column), tensor (matrix)";
        let written = spelled(value);
        let name = match written.as_str() {
            "column" => "channel",
            "matrix" => "tensor",
            other => other,
        };
        variant("scaling", name, expected)
    }
}

/// A key's value as the recipe wrote it: a string's text, anything else in TOML (so an error
/// names `3`, not an empty string).
fn spelled(value: &toml::Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

impl SwitchLoraConfig {
    /// The config for a run of `total_steps` steps and the adapter the model's routed linears
    /// get, from a recipe's `[switchlora]` table (the adapter rank is the reference's 128 when
    /// the table leaves it out), validated. The keys are the config's fields (the schedule's
    /// and Adam's; `total_steps` is the run's), the adapter's `rank` and `candidates`.
    pub fn from_table(table: &Table, total_steps: usize) -> crate::Result<(Self, Adapter)> {
        let defaults = SwitchLoraConfig::new(SwitchScheduleConfig::new(total_steps));
        let c = table.apply(defaults, &["rank", "candidates"], &["total_steps"])?;
        c.validate()?;
        let rank = match table.get("rank") {
            None => 128,
            Some(v) => (v.as_integer())
                .and_then(|r| usize::try_from(r).ok())
                .ok_or(Error::InvalidConfig {
                    field: "rank",
                    value: v.to_string(),
                    expected: "a positive integer",
                })?,
        };
        check::positive_count("rank", rank)?;
        let candidates = match table.get("candidates").map(spelled) {
            Some(v) => variant("candidates", &v, "one of host, device")?,
            None => CandidatePlacement::Host,
        };
        Ok((c, Adapter { rank, candidates }))
    }
}
