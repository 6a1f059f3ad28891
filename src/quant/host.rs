//! The quantizer of `codes.rs` as plain loops over host memory, for CPU backends: there the
//! tensor version's dozen gathers per value cost 6x an 8-bit GaLore step's own math, and a
//! tensor's data is host memory already. Same arithmetic, same comparisons, so the same codes
//! bit for bit (tested against the tensor version); the nearest code is found from a lookup
//! table indexed by the top 16 bits of the value's order-preserving key, then at most a few
//! comparisons against the table itself.

use std::sync::OnceLock;

use super::maps::{CodeMap, Normalization};

/// A code table's rounding thresholds and, for each of the 65536 buckets of values (by the
/// top 16 bits of their order key), how many thresholds lie below the bucket (at most 255:
/// one byte, so the 64 KiB lookup stays in cache).
struct Lookup {
    /// The table, padded to 256 entries with its last one, so a `u8` code indexes it
    /// without a bounds check.
    table: [f32; 256],
    /// [`CodeMap::midpoints`], padded with `+inf`.
    midpoints: [f32; 256],
    below: Box<[u8; 1 << 16]>,
    /// The code of 0.0 in a map whose codes keep their value's sign.
    zero: Option<usize>,
}

/// `x`'s bits mapped so that unsigned order is float order (negatives reversed).
fn order_key(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The most thresholds one bucket holds (checked when a lookup is built): buckets are 1/128 of
/// a binade wide, the densest map (unsigned 8-bit near 1) steps by 0.7%.
const PER_BUCKET: usize = 2;

impl Lookup {
    fn new(map: CodeMap) -> Self {
        let (values, mids) = (map.table(), map.midpoints());
        // The finite thresholds: at most 255 of them, so a count fits a byte.
        let keys: Vec<u32> = (mids.iter())
            .filter(|m| m.is_finite())
            .map(|&m| order_key(m))
            .collect();
        let mut below = Box::new([0u8; 1 << 16]);
        for (bucket, count) in below.iter_mut().enumerate() {
            *count = keys.partition_point(|&k| k < (bucket as u32) << 16) as u8;
        }
        let crowded = (0..below.len() - 1).map(|b| below[b + 1] - below[b]).max();
        assert!(
            crowded.unwrap_or(0) as usize <= PER_BUCKET,
            "a lookup bucket of {map:?} holds {crowded:?} thresholds"
        );
        let mut table = [*values.last().unwrap(); 256];
        table[..values.len()].copy_from_slice(values);
        let mut midpoints = [f32::INFINITY; 256];
        midpoints[..mids.len()].copy_from_slice(mids);
        let zero = map
            .keeps_sign()
            .then(|| values.iter().position(|&t| t == 0.0))
            .flatten();
        Self {
            table,
            midpoints,
            below,
            zero,
        }
    }

    fn of(map: CodeMap) -> &'static Lookup {
        static LOOKUPS: [OnceLock<Lookup>; 4] = [const { OnceLock::new() }; 4];
        let slot = match map {
            CodeMap::Signed8 => 0,
            CodeMap::Unsigned8 => 1,
            CodeMap::Signed4 => 2,
            CodeMap::Linear4 => 3,
        };
        LOOKUPS[slot].get_or_init(|| Lookup::new(map))
    }

    /// The nearest entry's index, as `codes::nearest` computes it: the number of thresholds
    /// below `x` (those below its bucket, then the bucket's own), and for a map whose codes keep
    /// their sign, a negative `x` that rounded to 0.0 moved one code down. Branch-free: a
    /// mispredicted branch costs more than the lookup.
    #[inline]
    fn nearest(&self, x: f32) -> u8 {
        let mut code = self.below[(order_key(x) >> 16) as usize] as usize;
        // A NaN compares false everywhere: code 0, as on the device.
        code &= usize::from(!x.is_nan()).wrapping_neg();
        for _ in 0..PER_BUCKET {
            code += usize::from(self.midpoints[code & 255] < x);
        }
        if let Some(zero) = self.zero {
            code -= usize::from(x < 0.0 && code == zero);
        }
        code as u8
    }
}

/// A zero scale divides as 1.
fn divisor(scale: f32) -> f32 {
    if scale == 0.0 {
        1.0
    } else {
        scale
    }
}

/// `codes` packed `32 / bits` per `i32` word, the first in the lowest bits (little-endian
/// bytes of 8-bit codes; 4-bit ones two per byte, low nibble first).
fn pack(codes: &[u8], bits: usize) -> Vec<i32> {
    let bytes: Vec<u8> = match bits {
        8 => codes.to_vec(),
        _ => (codes.chunks(2))
            .map(|pair| pair[0] | pair.get(1).map_or(0, |&hi| hi << 4))
            .collect(),
    };
    words_from_bytes(&bytes)
}

/// `i32` words from little-endian bytes, the last one zero-padded: packed codes as the device
/// holds them, from the bytes a checkpoint (or [`pack`]) lays them out in.
pub(super) fn words_from_bytes(bytes: &[u8]) -> Vec<i32> {
    (bytes.chunks(4))
        .map(|word| {
            let mut le = [0u8; 4];
            le[..word.len()].copy_from_slice(word);
            i32::from_le_bytes(le)
        })
        .collect()
}

/// The little-endian bytes of `words`.
pub(super) fn bytes_of_words(words: &[i32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The codes of `words`, `len` of them.
fn unpack(words: &[i32], bits: usize, len: usize) -> Vec<u8> {
    let bytes = bytes_of_words(words);
    let mut codes = match bits {
        8 => bytes,
        _ => bytes.iter().flat_map(|&b| [b & 15, b >> 4]).collect(),
    };
    codes.truncate(len);
    codes
}

/// Codes packed `32 / bits` per `i32` word, and the scales, of `values` (row-major). One
/// thread: on this crate's 2-core reference machine splitting the loop over rayon was slower.
pub(super) fn quantize(values: &[f32], map: CodeMap, norm: Normalization) -> (Vec<i32>, Vec<f32>) {
    let lookup = Lookup::of(map);
    let mut codes = vec![0u8; values.len()];
    let scales = match norm {
        Normalization::Blocks(block) => {
            let mut scales = Vec::with_capacity(values.len().div_ceil(block));
            for (codes, values) in codes.chunks_mut(block).zip(values.chunks(block)) {
                let absmax = values.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let d = divisor(absmax);
                for (c, &x) in codes.iter_mut().zip(values) {
                    *c = lookup.nearest(x / d);
                }
                scales.push(absmax);
            }
            scales
        }
        Normalization::Rank1 { rows, cols } => {
            let mut row = vec![0.0f32; rows];
            let mut col = vec![0.0f32; cols];
            for (rowmax, line) in row.iter_mut().zip(values.chunks(cols)) {
                for (colmax, &x) in col.iter_mut().zip(line) {
                    *rowmax = rowmax.max(x.abs());
                    *colmax = colmax.max(x.abs());
                }
            }
            let lines = codes.chunks_mut(cols).zip(values.chunks(cols));
            for ((codes, values), &rowmax) in lines.zip(&row) {
                for ((c, &x), &colmax) in codes.iter_mut().zip(values).zip(&col) {
                    *c = lookup.nearest(x.abs() / divisor(rowmax.min(colmax)));
                }
            }
            row.extend(col);
            row
        }
    };
    (pack(&codes, map.bits() as usize), scales)
}

/// The values `words` and `scales` stand for (`len` of them, row-major).
pub(super) fn dequantize(
    words: &[i32],
    scales: &[f32],
    len: usize,
    map: CodeMap,
    norm: Normalization,
) -> Vec<f32> {
    let table = &Lookup::of(map).table;
    let codes = unpack(words, map.bits() as usize, len);
    let mut out = vec![0.0f32; len];
    match norm {
        Normalization::Blocks(block) => {
            let blocks = out.chunks_mut(block).zip(codes.chunks(block));
            for ((out, codes), &scale) in blocks.zip(scales) {
                for (y, &c) in out.iter_mut().zip(codes) {
                    *y = table[c as usize] * scale;
                }
            }
        }
        Normalization::Rank1 { rows, cols } => {
            let (row, col) = scales.split_at(rows);
            let lines = out.chunks_mut(cols).zip(codes.chunks(cols));
            for ((out, codes), &rowmax) in lines.zip(row) {
                for ((y, &c), &colmax) in out.iter_mut().zip(codes).zip(col) {
                    *y = table[c as usize] * rowmax.min(colmax);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::super::codes::{dequantize_on_device, quantize, quantize_on_device};
    use super::*;

    /// Host loops and tensor ops give the same codes, scales and values, on every map and
    /// normalization, with zero blocks, ties at exact table entries and a partial block.
    #[test]
    fn host_and_tensor_quantizers_agree_bit_for_bit() {
        let device = Device::default();
        let (rows, cols) = (37, 113);
        let len = rows * cols;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut values: Vec<f32> = (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                u * 10f32.powi((i / 300 % 8) as i32 - 5)
            })
            .collect();
        values[..256].iter_mut().for_each(|x| *x = 0.0);
        values[300] = 1.0;
        values[301] = -1.0;
        let magnitudes: Vec<f32> = values.iter().map(|x| x * x).collect();
        let cases = [
            (CodeMap::Signed8, Normalization::Blocks(256), &values),
            (CodeMap::Unsigned8, Normalization::Blocks(256), &magnitudes),
            (CodeMap::Signed4, Normalization::Blocks(128), &values),
            (
                CodeMap::Linear4,
                Normalization::Rank1 { rows, cols },
                &magnitudes,
            ),
            (CodeMap::Linear4, Normalization::Blocks(128), &magnitudes),
        ];
        for (map, norm, input) in cases {
            let tensor =
                || Tensor::<2>::from_data(TensorData::new(input.clone(), [rows, cols]), &device);
            let ours = quantize(tensor(), map, norm);
            let theirs = quantize_on_device(tensor(), map, norm);
            let words = |c: &super::super::Codes| {
                c.words
                    .to_data()
                    .convert::<i32>()
                    .try_to_vec::<i32>()
                    .unwrap()
            };
            let floats = |t: Tensor<1>| t.to_data().try_to_vec::<f32>().unwrap();
            assert_eq!(words(&ours), words(&theirs), "{map:?} {norm:?}: codes");
            assert_eq!(
                floats(ours.scales.clone()),
                floats(theirs.scales.clone()),
                "{map:?}: scales"
            );
            let (host_words, host_scales) = (words(&ours), floats(ours.scales.clone()));
            let back = dequantize(&host_words, &host_scales, len, map, norm);
            let on_device = dequantize_on_device(&theirs, map, norm, [len]);
            assert_eq!(back, floats(on_device), "{map:?} {norm:?}: values");
        }
    }
}
