//! Adam moments as an optimizer keeps them between steps: `f32`, or codes of the
//! [`quant`](crate::quant) codec, and their checkpoint layout.

use burn::tensor::{Device, Tensor, TensorData};

use super::Moments;
use crate::guard::{Finite, Select, Withdraw};
use crate::quant::{
    dequantize, from_bytes, quantize, to_bytes, CodeMap, Codes, MomentFormat, MomentPrecision,
    Normalization, Scheme,
};
use crate::{join_path, RecordState, StateSink, StateSource};

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
/// use lowrank_optim::adam::StoredMoments;
/// use lowrank_optim::quant::MomentFormat;
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
    /// `moments` in `format` (without [`Moments::skipped`], which the guard keeps).
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
    pub(crate) fn uncounted(self, count: usize) -> Self {
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
            StoredMoments::F32(m) => StoredMoments::F32(m.cast_rank()),
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

/// Codes and scales alike; the step count stays new (the guard withdraws skipped ones).
impl<const D: usize> Select for StoredMoments<D> {
    fn choose(self, old: Self, finite: &Finite) -> Self {
        match (self, old) {
            (StoredMoments::F32(new), StoredMoments::F32(old)) => StoredMoments::F32(Moments {
                first: new.first.choose(old.first, finite),
                second: new.second.choose(old.second, finite),
                ..new
            }),
            (StoredMoments::Quantized(mut new), StoredMoments::Quantized(old)) => {
                for (new, old) in [(&mut new.first, old.first), (&mut new.second, old.second)] {
                    new.words = new.words.clone().choose(old.words, finite);
                    new.scales = new.scales.clone().choose(old.scales, finite);
                }
                StoredMoments::Quantized(new)
            }
            (new, _) => new,
        }
    }
}

impl<const D: usize> Withdraw for StoredMoments<D> {
    fn withdraw(self, skipped: &[usize]) -> Self {
        self.uncounted(skipped[0])
    }
}

impl<const D: usize> QuantizedMoments<D> {
    fn scheme(&self) -> Scheme {
        self.precision
            .scheme(&self.dims)
            .expect("quantized moments have a quantized scheme")
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
                words: from_bytes(&bytes, map, len, device)?,
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
