//! The crate's error type.

/// Errors raised when building an optimizer, a routing rule or a memory report.
///
/// Every variant names what was wrong, so a user can fix the config without reading our code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A config field holds a value outside its valid range.
    #[error("invalid `{field}` = {value}: {expected}")]
    InvalidConfig {
        /// The name of the offending field, as in the config's `with_*` setter.
        field: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A parameter-path pattern is not a valid regular expression.
    #[error("invalid parameter pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The rejected pattern.
        pattern: String,
        /// Why the regex engine rejected it.
        reason: String,
    },
    /// An optimizer recipe could not be read, parsed or validated.
    #[error("recipe {file}: {reason}")]
    Recipe {
        /// The recipe's file path (or name, when parsed from a string).
        file: String,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A serialized optimizer or module record could not be read.
    #[error("unreadable record: {0}")]
    Record(String),
    /// A SwitchLoRA layer was merged a second time (or was never wrapped).
    #[error("this linear holds no SwitchLoRA adapter: it was merged already, or never wrapped")]
    AlreadyMerged,
    /// A module record's SwitchLoRA adapter has another rank than the model's.
    #[error(
        "the record's SwitchLoRA layer `{path}` has rank {record}, the model's has rank {model}"
    )]
    RankMismatch {
        /// Dotted path of the layer.
        path: String,
        /// The model's rank.
        model: usize,
        /// The record's rank.
        record: usize,
    },
    /// A SwitchLoRA adapter has no optimizer wired to its switcher.
    #[error("the SwitchLoRA adapter `{path}` has no optimizer: build the optimizer and the switcher together from this model (SwitchLoraConfig::build)")]
    NotWired {
        /// Dotted path of the adapter parameter.
        path: String,
    },
}

/// Shorthand for `Result<T, lowrank_optim::Error>`.
pub type Result<T> = core::result::Result<T, Error>;

/// Helpers that turn a range check into an [`Error::InvalidConfig`].
pub(crate) mod check {
    use super::{Error, Result};

    fn invalid(
        field: &'static str,
        value: impl core::fmt::Display,
        expected: &'static str,
    ) -> Error {
        Error::InvalidConfig {
            field,
            value: value.to_string(),
            expected,
        }
    }

    /// `value >= 1`.
    pub(crate) fn positive_count(field: &'static str, value: usize) -> Result<()> {
        if value == 0 {
            return Err(invalid(field, value, "must be at least 1"));
        }
        Ok(())
    }

    /// A finite `value > 0`.
    pub(crate) fn positive(field: &'static str, value: f64) -> Result<()> {
        if !(value.is_finite() && value > 0.0) {
            return Err(invalid(field, value, "must be a finite number > 0"));
        }
        Ok(())
    }

    /// A finite `value >= 0`.
    pub(crate) fn non_negative(field: &'static str, value: f64) -> Result<()> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(invalid(field, value, "must be a finite number >= 0"));
        }
        Ok(())
    }

    /// `0 <= value < 1` (Adam betas).
    pub(crate) fn unit_interval(field: &'static str, value: f64) -> Result<()> {
        if !(0.0..1.0).contains(&value) {
            return Err(invalid(field, value, "must lie in [0, 1)"));
        }
        Ok(())
    }

    /// `0 < value <= 1` (densities such as FRUGAL's `rho`).
    pub(crate) fn density(field: &'static str, value: f64) -> Result<()> {
        if !(value > 0.0 && value <= 1.0) {
            return Err(invalid(field, value, "must lie in (0, 1]"));
        }
        Ok(())
    }

    /// `0 <= value <= 1` (cosine thresholds).
    pub(crate) fn closed_unit(field: &'static str, value: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&value) {
            return Err(invalid(field, value, "must lie in [0, 1]"));
        }
        Ok(())
    }

    /// `value >= 1` (growth limits such as Fira's `gamma`).
    pub(crate) fn at_least_one(field: &'static str, value: f64) -> Result<()> {
        if !(value >= 1.0 && value.is_finite()) {
            return Err(invalid(field, value, "must be at least 1"));
        }
        Ok(())
    }

    /// Adam's shared fields: betas in `[0, 1)`, non-negative `epsilon` and `weight_decay`.
    pub(crate) fn adam(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Result<()> {
        unit_interval("beta_1", beta_1 as f64)?;
        unit_interval("beta_2", beta_2 as f64)?;
        non_negative("epsilon", epsilon as f64)?;
        non_negative("weight_decay", weight_decay as f64)
    }
}
