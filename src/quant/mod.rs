//! Adam moments stored in 8 or 4 bits: the precision an optimizer's config selects, and the
//! moments as a checkpoint and the device hold them.
//!
//! Quantization is storage only. Each step dequantizes a parameter's moments, lets the
//! optimizer update them and compute its update in `f32` exactly as at full precision, then
//! quantizes the new moments (bitsandbytes' 8-bit blockwise optimizers; torchao's `AdamW4bit`).
//! So every optimizer, refresh policy and moment transport works unchanged on quantized state.
//!
//! | precision | first moment | second moment | tensors below 4096 entries |
//! |-----------|--------------|---------------|----------------------------|
//! | `Q8` | signed dynamic map, absmax per 256 | unsigned dynamic map, absmax per 256 | `f32` |
//! | `Q4` | signed 4-bit dynamic map, absmax per 128 | linear map without zero, rank-1 normalization (matrices; absmax per 128 otherwise) | `f32` |

mod codes;
mod host;
mod maps;

use burn::config::Config;
use burn::tensor::Device;

pub(crate) use codes::code_bytes;
pub(crate) use codes::from_bytes;
pub use codes::{dequantize, quantize, to_bytes, Codes};
pub use maps::{dynamic_map, CodeMap, Normalization};

/// Bytes of one `f32` (a scale, or a moment kept at full precision).
const F32_BYTES: usize = size_of::<f32>();

/// The default of [`AdamParams::min_quantized_len`](crate::adam::AdamParams::min_quantized_len):
/// tensors with fewer entries keep `f32` moments (bitsandbytes' `min_8bit_size`, torchao's
/// threshold); their state is small and their statistics the least regular.
pub const MIN_QUANTIZED_LEN: usize = 4096;

/// How an optimizer stores moments: the precision, and the size below which they stay `f32`.
///
/// ```
/// use lowrank_optim::quant::MomentFormat;
/// use lowrank_optim::MomentPrecision;
///
/// let q8 = MomentFormat { precision: MomentPrecision::Q8, min_quantized_len: 4096 };
/// // Per moment of a 1376 x 128 projected state: 1 byte per entry and one f32 per 256.
/// assert_eq!(q8.pair_bytes(&[1376, 128]), 2 * (1376 * 128 + 4 * 688));
/// // Below 4096 entries: two f32 moments.
/// assert_eq!(q8.pair_bytes(&[64]), 2 * 4 * 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MomentFormat {
    /// The precision of tensors with at least `min_quantized_len` entries.
    pub precision: MomentPrecision,
    /// Tensors with fewer entries keep `f32` moments.
    pub min_quantized_len: usize,
}

impl MomentFormat {
    /// The scheme for moments shaped `dims`, or `None` where they stay `f32`.
    pub(crate) fn scheme(self, dims: &[usize]) -> Option<Scheme> {
        let len: usize = dims.iter().product();
        if len < self.min_quantized_len.max(1) {
            return None;
        }
        self.precision.scheme(dims)
    }

    /// Bytes a checkpoint holds for both moments of shape `dims`: codes and scales, or two
    /// `f32` tensors.
    pub fn pair_bytes(self, dims: &[usize]) -> usize {
        let len: usize = dims.iter().product();
        match self.scheme(dims) {
            None => 2 * F32_BYTES * len,
            Some(scheme) => [scheme.first, scheme.second]
                .iter()
                .map(|(map, norm)| code_bytes(*map, len) + F32_BYTES * norm.scales(len))
                .sum(),
        }
    }
}

/// How an optimizer stores its Adam moments (for tensors of at least
/// [`min_quantized_len`](crate::adam::AdamParams::min_quantized_len) entries).
///
/// ```
/// use lowrank_optim::{GaLoreConfig, MomentPrecision};
/// let config = GaLoreConfig::new().with_moments(MomentPrecision::Q8);
/// assert_eq!(config.adam.moments, MomentPrecision::Q8);
/// ```
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MomentPrecision {
    /// 32-bit floats (the default; bit-identical to an optimizer without this option).
    F32,
    /// 8-bit codes on bitsandbytes' dynamic maps, one `f32` absmax per block of 256.
    Q8,
    /// 4-bit codes (Li et al., 2023): first moment per block of 128, second moment on a linear
    /// map without zero under rank-1 normalization.
    Q4,
}

/// The two moments' code maps and normalizations for one shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scheme {
    pub(crate) first: (CodeMap, Normalization),
    pub(crate) second: (CodeMap, Normalization),
}

impl MomentPrecision {
    /// The scheme for moments shaped `dims` (`None` at `F32`).
    pub(crate) fn scheme(self, dims: &[usize]) -> Option<Scheme> {
        match self {
            MomentPrecision::F32 => None,
            MomentPrecision::Q8 => Some(Scheme {
                first: (CodeMap::Signed8, Normalization::Blocks(256)),
                second: (CodeMap::Unsigned8, Normalization::Blocks(256)),
            }),
            MomentPrecision::Q4 => {
                let second = match dims {
                    [rows, cols] => Normalization::Rank1 {
                        rows: *rows,
                        cols: *cols,
                    },
                    _ => Normalization::Blocks(128),
                };
                Some(Scheme {
                    first: (CodeMap::Signed4, Normalization::Blocks(128)),
                    second: (CodeMap::Linear4, second),
                })
            }
        }
    }

    /// The name a recipe uses (`"f32"`, `"q8"`, `"q4"`).
    pub fn name(self) -> &'static str {
        match self {
            MomentPrecision::F32 => "f32",
            MomentPrecision::Q8 => "q8",
            MomentPrecision::Q4 => "q4",
        }
    }

    /// Bits per code (32 for `F32`), as a checkpoint records the precision.
    pub(crate) fn bits(self) -> u32 {
        match self {
            MomentPrecision::F32 => 32,
            MomentPrecision::Q8 => 8,
            MomentPrecision::Q4 => 4,
        }
    }

    /// The quantized precision of `bits` bits.
    pub(crate) fn from_bits(bits: u32) -> Option<Self> {
        [MomentPrecision::Q8, MomentPrecision::Q4]
            .into_iter()
            .find(|p| p.bits() == bits)
    }
}

impl Codes {
    /// The same codes on `device`.
    pub(crate) fn moved_to(self, device: &Device) -> Self {
        Codes {
            words: self.words.to_device(device),
            scales: self.scales.to_device(device),
            len: self.len,
        }
    }
}
