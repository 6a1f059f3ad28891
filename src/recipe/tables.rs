//! How each optimizer's config reads its recipe table: the keys it owns besides the shared
//! subspace and Adam keys (read by [`Table`]), each from a struct with `deny_unknown_fields`
//! so a stray key is named in the error.

use serde::Deserialize;

use super::table::{variant, RecipeTable, Routed, Table};
use super::RecipeOptimizer;
use crate::error::check;
use crate::optim::{ApolloConfig, FiraConfig, FrugalConfig, GaLoreConfig, ScaleGranularity};
use crate::switchlora::{Adapter, CandidatePlacement, SwitchLoraConfig, SwitchScheduleConfig};

/// The `[galore]` keys besides the subspace and Adam ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaLoreKeys {
    scale: Option<f32>,
}

impl RecipeTable for GaLoreConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::GaLore;

    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = GaLoreConfig::new();
        table.apply_shared(&mut c.subspace, &mut c.adam)?;
        let own: GaLoreKeys = table.own()?;
        c.scale = own.scale.unwrap_or(c.scale);
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

/// The `[fira]` keys besides the subspace and Adam ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FiraKeys {
    scale: Option<f32>,
    gamma: Option<f32>,
    scaling: Option<String>,
}

impl RecipeTable for FiraConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::Fira;

    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = FiraConfig::new();
        table.apply_shared(&mut c.subspace, &mut c.adam)?;
        let own: FiraKeys = table.own()?;
        c.scale = own.scale.unwrap_or(c.scale);
        c.gamma = own.gamma.unwrap_or(c.gamma);
        if let Some(v) = &own.scaling {
            c.scaling = ScaleGranularity::from_key(v)?;
        }
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

/// The `[frugal]` keys besides the subspace and Adam ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrugalKeys {
    rho: Option<f32>,
    residual: Option<String>,
    proj_lr_scale: Option<f32>,
    inactive_lr_scale: Option<f32>,
}

impl RecipeTable for FrugalConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::Frugal;

    /// A `rank` without `rho` fixes the rank of every matrix instead of the density.
    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = FrugalConfig::new();
        table.apply_shared(&mut c.subspace, &mut c.adam)?;
        let own: FrugalKeys = table.own()?;
        if table.has("rank") {
            c.subspace.density = None;
        }
        if let Some(rho) = own.rho {
            c.subspace.density = Some(rho);
        }
        if let Some(v) = &own.residual {
            c.residual = variant("residual", v, "one of sign_sgd, sgd, none")?;
        }
        c.proj_lr_scale = own.proj_lr_scale.unwrap_or(c.proj_lr_scale);
        c.inactive_lr_scale = own.inactive_lr_scale.unwrap_or(c.inactive_lr_scale);
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

/// The `[apollo]` keys besides the subspace and Adam ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApolloKeys {
    scale: Option<f32>,
    gamma: Option<f32>,
    scaling: Option<String>,
    scale_front: Option<bool>,
    limiter: Option<bool>,
}

impl RecipeTable for ApolloConfig {
    const OPTIMIZER: RecipeOptimizer = RecipeOptimizer::Apollo;

    fn from_table(table: &Table) -> crate::Result<Self> {
        let mut c = ApolloConfig::new();
        table.apply_shared(&mut c.subspace, &mut c.adam)?;
        let own: ApolloKeys = table.own()?;
        c.scale = own.scale.unwrap_or(c.scale);
        c.gamma = own.gamma.unwrap_or(c.gamma);
        if let Some(v) = &own.scaling {
            c.scaling = ScaleGranularity::from_key(v)?;
        }
        c.scale_front = own.scale_front.unwrap_or(c.scale_front);
        c.limiter = own.limiter.unwrap_or(c.limiter);
        Ok(c)
    }

    fn routed(&self) -> crate::Result<Box<dyn Routed>> {
        Ok(Box::new(self.build()?))
    }
}

impl ScaleGranularity {
    /// The value of a recipe's `scaling` key: `channel` (or `column`), `tensor` (or `matrix`).
    pub(crate) fn from_key(value: &str) -> crate::Result<Self> {
        let value = match value {
            "column" => "channel",
            "matrix" => "tensor",
            other => other,
        };
        let expected = "one of channel (column), tensor (matrix)";
        variant("scaling", value, expected)
    }
}

/// The `[switchlora]` keys besides Adam's: SwitchLoRA has no subspace, so of the subspace keys
/// it takes only `rank` (the adapters') and `seed` (the switch draws').
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchLoraKeys {
    rank: Option<usize>,
    seed: Option<u64>,
    interval: Option<usize>,
    descent_fraction: Option<f64>,
    freeze_steps: Option<usize>,
    candidates: Option<String>,
}

impl SwitchLoraConfig {
    /// The config for a run of `total_steps` steps and the adapter the model's routed linears
    /// get, from a recipe's `[switchlora]` table (the adapter rank is the reference's 128 when
    /// the table leaves it out), validated.
    pub fn from_table(table: &Table, total_steps: usize) -> crate::Result<(Self, Adapter)> {
        let keys: SwitchLoraKeys = table.all_but_adam()?;
        let mut schedule = SwitchScheduleConfig::new(total_steps);
        schedule.interval = keys.interval.unwrap_or(schedule.interval);
        schedule.descent_fraction = keys.descent_fraction.unwrap_or(schedule.descent_fraction);
        schedule.freeze_steps = keys.freeze_steps.unwrap_or(schedule.freeze_steps);
        schedule.seed = keys.seed.unwrap_or(schedule.seed);
        let mut c = SwitchLoraConfig::new(schedule);
        table.apply_adam(&mut c.adam)?;
        c.validate()?;
        let rank = keys.rank.unwrap_or(128);
        check::positive_count("rank", rank)?;
        let candidates = match &keys.candidates {
            Some(v) => variant("candidates", v, "one of host, device")?,
            None => CandidatePlacement::Host,
        };
        Ok((c, Adapter { rank, candidates }))
    }
}
