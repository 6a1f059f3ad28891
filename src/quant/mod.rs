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
use burn::tensor::{Device, Tensor, TensorData};

pub use codes::{code_bytes, dequantize, quantize, to_bytes, Codes, Normalization};
pub use maps::{dynamic_map, CodeMap};

use crate::adam::Moments;
use crate::memory::F32_BYTES;
use crate::{join_path, RecordState, StateSink, StateSource};

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
    fn scheme(self, dims: &[usize]) -> Option<Scheme> {
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
struct Scheme {
    first: (CodeMap, Normalization),
    second: (CodeMap, Normalization),
}

impl MomentPrecision {
    /// The scheme for moments shaped `dims` (`None` at `F32`).
    fn scheme(self, dims: &[usize]) -> Option<Scheme> {
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

    fn bits(self) -> u32 {
        match self {
            MomentPrecision::F32 => 32,
            MomentPrecision::Q8 => 8,
            MomentPrecision::Q4 => 4,
        }
    }

    fn from_bits(bits: u32) -> Option<Self> {
        [MomentPrecision::Q8, MomentPrecision::Q4]
            .into_iter()
            .find(|p| p.bits() == bits)
    }
}

/// Both moments quantized, with their shape and step count.
#[derive(Debug, Clone)]
pub struct QuantizedMoments<const D: usize> {
    /// The precision they were stored at.
    pub precision: MomentPrecision,
    /// Codes of the first moment.
    pub first: Codes,
    /// Codes of the second moment.
    pub second: Codes,
    /// The moments' shape.
    pub dims: [usize; D],
    /// Number of updates folded into the averages.
    pub step: usize,
}

/// Adam moments as an optimizer keeps them between steps: `f32`, or quantized.
///
/// A checkpoint of `F32` moments is laid out as [`Moments`] (`first`, `second`, `step`);
/// quantized ones store their precision, shape, step, codes (one byte per 8-bit code, two 4-bit
/// codes per byte) and `f32` scales.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use lowrank_optim::adam::Moments;
/// use lowrank_optim::quant::{MomentFormat, StoredMoments};
/// use lowrank_optim::MomentPrecision;
///
/// let device = Device::default();
/// let moments = Moments { first: Tensor::<2>::ones([64, 128], &device),
///                         second: Tensor::<2>::ones([64, 128], &device), step: 3, skipped: None };
/// let q8 = MomentFormat { precision: MomentPrecision::Q8, min_quantized_len: 4096 };
/// let stored = StoredMoments::store(moments, q8);
/// assert!(matches!(stored, StoredMoments::Quantized(_)));
/// let back = stored.load();
/// // 1.0 is in both maps: exact.
/// assert_eq!(back.first.sum().into_scalar::<f32>(), 64.0 * 128.0);
/// assert_eq!(back.step, 3);
/// ```
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // both variants are tensor handles, moved, never boxed
pub enum StoredMoments<const D: usize> {
    /// Full precision.
    F32(Moments<D>),
    /// Codes and scales.
    Quantized(QuantizedMoments<D>),
}

impl<const D: usize> StoredMoments<D> {
    /// `moments` in `format` (without [`Moments::skipped`], which the optimizer's state keeps).
    pub fn store(moments: Moments<D>, format: MomentFormat) -> Self {
        let dims = moments.dims();
        let Some(scheme) = format.scheme(&dims) else {
            return StoredMoments::F32(Moments {
                skipped: None,
                ..moments
            });
        };
        StoredMoments::Quantized(QuantizedMoments {
            precision: format.precision,
            first: quantize(moments.first, scheme.first.0, scheme.first.1),
            second: quantize(moments.second, scheme.second.0, scheme.second.1),
            dims,
            step: moments.step,
        })
    }

    /// The moments in `f32`.
    pub fn load(self) -> Moments<D> {
        match self {
            StoredMoments::F32(moments) => moments,
            StoredMoments::Quantized(q) => {
                let scheme = q.scheme();
                Moments {
                    first: dequantize(&q.first, scheme.first.0, scheme.first.1, q.dims),
                    second: dequantize(&q.second, scheme.second.0, scheme.second.1, q.dims),
                    step: q.step,
                    skipped: None,
                }
            }
        }
    }

    /// The moments' shape.
    pub fn dims(&self) -> [usize; D] {
        match self {
            StoredMoments::F32(m) => m.dims(),
            StoredMoments::Quantized(q) => q.dims,
        }
    }

    /// Number of updates folded into the averages.
    pub fn step(&self) -> usize {
        match self {
            StoredMoments::F32(m) => m.step,
            StoredMoments::Quantized(q) => q.step,
        }
    }

    /// The same moments with `count` fewer updates counted (skipped ones read back).
    pub(crate) fn withdraw(self, count: usize) -> Self {
        match self {
            StoredMoments::F32(m) => StoredMoments::F32(Moments {
                step: m.step - count,
                ..m
            }),
            StoredMoments::Quantized(q) => StoredMoments::Quantized(QuantizedMoments {
                step: q.step - count,
                ..q
            }),
        }
    }

    /// The device of every tensor held (to check where a state lives).
    pub fn devices(&self) -> Vec<Device> {
        match self {
            StoredMoments::F32(m) => vec![m.first.device(), m.second.device()],
            StoredMoments::Quantized(q) => [&q.first, &q.second]
                .iter()
                .flat_map(|c| [c.words.device(), c.scales.device()])
                .collect(),
        }
    }

    /// Moves every tensor to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        match self {
            StoredMoments::F32(m) => StoredMoments::F32(m.to_device(device)),
            StoredMoments::Quantized(q) => StoredMoments::Quantized(QuantizedMoments {
                first: q.first.moved_to(device),
                second: q.second.moved_to(device),
                ..q
            }),
        }
    }

    /// The same moments viewed at rank `E` (inside a `D == E` branch).
    pub(crate) fn cast<const E: usize>(self) -> StoredMoments<E> {
        match self {
            StoredMoments::F32(m) => StoredMoments::F32(crate::matrix::cast_moments(m)),
            StoredMoments::Quantized(q) => {
                assert_eq!(D, E, "cast between different ranks");
                let mut dims = [0usize; E];
                dims.copy_from_slice(&q.dims);
                StoredMoments::Quantized(QuantizedMoments {
                    precision: q.precision,
                    first: q.first,
                    second: q.second,
                    dims,
                    step: q.step,
                })
            }
        }
    }
}

impl<const D: usize> QuantizedMoments<D> {
    fn scheme(&self) -> Scheme {
        self.precision
            .scheme(&self.dims)
            .expect("quantized moments have a quantized scheme")
    }
}

impl Codes {
    fn moved_to(self, device: &Device) -> Self {
        Codes {
            words: self.words.to_device(device),
            scales: self.scales.to_device(device),
            len: self.len,
        }
    }
}

/// Leaf names of the quantized layout.
const BITS: &str = "bits";

impl<const D: usize> RecordState for StoredMoments<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        let q = match self {
            StoredMoments::F32(moments) => return moments.state_flatten(prefix, out),
            StoredMoments::Quantized(q) => q,
        };
        let scheme = q.scheme();
        out.push_scalar(
            prefix,
            BITS,
            burn_pack::Scalar::from(q.precision.bits() as usize),
        );
        out.push_scalar(prefix, "step", burn_pack::Scalar::from(q.step));
        for (k, d) in q.dims.iter().enumerate() {
            out.push_scalar(prefix, &format!("dim_{k}"), burn_pack::Scalar::from(*d));
        }
        for (name, codes, (map, _)) in [
            ("first", &q.first, scheme.first),
            ("second", &q.second, scheme.second),
        ] {
            let prefix = join_path(prefix, name);
            let bytes = to_bytes(codes, map);
            let len = bytes.len();
            out.push_tensor(&prefix, "codes", TensorData::new(bytes, [len]));
            out.push_tensor(
                &prefix,
                "scales",
                crate::readback::data(codes.scales.clone()),
            );
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let Some(bits) = src.take_scalar(prefix, BITS) else {
            return Moments::state_unflatten(prefix, src, device).map(StoredMoments::F32);
        };
        let precision = MomentPrecision::from_bits(usize::try_from(bits).ok()? as u32)?;
        let step = usize::try_from(src.take_scalar(prefix, "step")?).ok()?;
        let mut dims = [0usize; D];
        for (k, d) in dims.iter_mut().enumerate() {
            *d = usize::try_from(src.take_scalar(prefix, &format!("dim_{k}"))?).ok()?;
        }
        let scheme = precision.scheme(&dims)?;
        let len: usize = dims.iter().product();
        let mut read = |name: &str, (map, norm): (CodeMap, Normalization)| -> Option<Codes> {
            let prefix = join_path(prefix, name);
            let bytes = src
                .take_tensor(&prefix, "codes")?
                .convert::<u8>()
                .try_to_vec::<u8>()
                .ok()?;
            let scales = src.take_tensor(&prefix, "scales")?;
            if scales.shape().iter().product::<usize>() != norm.scales(len) {
                return None;
            }
            Some(Codes {
                words: codes::from_bytes(&bytes, map, len, device)?,
                scales: Tensor::from_data(scales.convert::<f32>(), device),
                len,
            })
        };
        let first = read("first", scheme.first)?;
        let second = read("second", scheme.second)?;
        Some(StoredMoments::Quantized(QuantizedMoments {
            precision,
            first,
            second,
            dims,
            step,
        }))
    }
}
