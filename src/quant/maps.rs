//! The code tables of quantized moments: bitsandbytes' dynamic maps (8-bit Adam) and the
//! 4-bit maps of Li et al. (2023) that torchao's `AdamW4bit` uses; and the normalizations
//! that bring values into their range.

use std::sync::OnceLock;

/// How a quantized tensor is normalized before its values are looked up in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// One absmax per run of this many consecutive elements (row-major).
    Blocks(usize),
    /// Rank-1 normalization of a `rows x cols` matrix (Li et al., 2023): entry `(i, j)` is
    /// divided by `min(rowmax_i, colmax_j)`; stores `rows + cols` scales.
    Rank1 {
        /// Rows of the matrix.
        rows: usize,
        /// Columns of the matrix.
        cols: usize,
    },
}

impl Normalization {
    /// Number of `f32` scales stored for `len` elements.
    pub fn scales(self, len: usize) -> usize {
        match self {
            Normalization::Blocks(block) => len.div_ceil(block),
            Normalization::Rank1 { rows, cols } => rows + cols,
        }
    }
}

/// A sorted table of `2^bits` values in `[-1, 1]`; a code is an index into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMap {
    /// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`): Adam's first
    /// moment in 8 bits.
    Signed8,
    /// bitsandbytes' unsigned 8-bit dynamic map (`create_dynamic_map(signed=False)`): the
    /// second moment in 8 bits.
    Unsigned8,
    /// The signed 4-bit dynamic-exponent map (`create_dynamic_map(True, 3, 4)`): the first
    /// moment in 4 bits.
    Signed4,
    /// `k / 16` for `k = 1..=16`: the second moment in 4 bits. It has no zero, so a small `v`
    /// never rounds to 0 and blows the step up (the "zero-point problem").
    Linear4,
}

impl CodeMap {
    /// Bits per code.
    pub fn bits(self) -> u32 {
        match self {
            CodeMap::Signed8 | CodeMap::Unsigned8 => 8,
            CodeMap::Signed4 | CodeMap::Linear4 => 4,
        }
    }

    /// Whether a code must keep its value's sign (bitsandbytes' 8-bit blockwise optimizer
    /// kernel moves a first-moment code one step back across zero when rounding flipped it).
    pub fn keeps_sign(self) -> bool {
        self == CodeMap::Signed8
    }

    /// The table, sorted ascending, `2^bits` entries (built once per process).
    pub fn table(self) -> &'static [f32] {
        &self.cached().0
    }

    /// `(table[i] + table[i + 1]) * 0.5` in `f32` for each entry, `+inf` after the last: a
    /// value rounds up from entry `i` where it exceeds `midpoints[i]`.
    pub(crate) fn midpoints(self) -> &'static [f32] {
        &self.cached().1
    }

    /// The table and its midpoints, computed on first use.
    fn cached(self) -> &'static (Vec<f32>, Vec<f32>) {
        static CACHE: [OnceLock<(Vec<f32>, Vec<f32>)>; 4] = [const { OnceLock::new() }; 4];
        CACHE[self as usize].get_or_init(|| {
            let table = match self {
                CodeMap::Signed8 => dynamic_map(true, 7, 8),
                CodeMap::Unsigned8 => dynamic_map(false, 7, 8),
                CodeMap::Signed4 => dynamic_map(true, 3, 4),
                CodeMap::Linear4 => (1..=16).map(|k| k as f32 / 16.0).collect(),
            };
            let mut midpoints: Vec<f32> = table.windows(2).map(|w| (w[0] + w[1]) * 0.5).collect();
            midpoints.push(f32::INFINITY);
            (table, midpoints)
        })
    }
}

/// `torch.linspace(0.1, 1, steps)` in `f32`, as PyTorch's CPU kernel computes it: from the
/// start for the first half, from the end for the second.
fn linspace(steps: usize) -> Vec<f32> {
    let (start, end) = (0.1f32, 1.0f32);
    let step = (end - start) / (steps - 1) as f32;
    (0..steps)
        .map(|i| {
            if i < steps / 2 {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits, total_bits)`: for each decade
/// `10^(i - max_exponent_bits + 1)`, `2^i` (signed) or `2^(i+1)` (unsigned) evenly spaced
/// fractions in `[0.1, 1]`, mirrored when signed, plus 0 and 1, sorted.
pub fn dynamic_map(signed: bool, max_exponent_bits: u32, total_bits: u32) -> Vec<f32> {
    let non_sign_bits = total_bits - 1;
    let additional = (1usize << (non_sign_bits - max_exponent_bits)) - 1;
    let decade = |i: u32| -> f32 {
        let exponent = i as i32 - (max_exponent_bits as i32 - 1);
        format!("1e{exponent}").parse::<f64>().unwrap() as f32
    };
    let mut data: Vec<f32> = Vec::with_capacity(1 << total_bits);
    let push_means = |items: usize, scale: f32, data: &mut Vec<f32>| {
        let bounds = linspace(items);
        for pair in bounds.windows(2) {
            let mean = (pair[0] + pair[1]) / 2.0;
            data.push(scale * mean);
            if signed {
                data.push(-(scale * mean));
            }
        }
    };
    for i in 0..max_exponent_bits {
        let shift = i + non_sign_bits - max_exponent_bits + u32::from(!signed);
        push_means((1usize << shift) + 1, decade(i), &mut data);
    }
    if additional > 0 {
        push_means(additional + 1, decade(max_exponent_bits - 1), &mut data);
    }
    data.push(0.0);
    data.push(1.0);
    data.resize(1 << total_bits, 0.0);
    data.sort_by(f32::total_cmp);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes, order, the exact 0 and 1, and the span of about seven decades.
    #[test]
    fn maps_are_sorted_tables_of_the_right_size() {
        for map in [
            CodeMap::Signed8,
            CodeMap::Unsigned8,
            CodeMap::Signed4,
            CodeMap::Linear4,
        ] {
            let table = map.table();
            assert_eq!(table.len(), 1 << map.bits(), "{map:?}");
            assert!(
                table.windows(2).all(|w| w[0] < w[1]),
                "{map:?} is not strictly sorted"
            );
            assert_eq!(*table.last().unwrap(), 1.0, "{map:?}");
            assert_eq!(table.contains(&0.0), map != CodeMap::Linear4, "{map:?}");
        }
        let unsigned = CodeMap::Unsigned8.table();
        assert_eq!(unsigned[0], 0.0);
        assert!(unsigned[1] > 1e-7 && unsigned[1] < 1e-6, "{}", unsigned[1]);
        let signed = CodeMap::Signed8.table();
        assert!(signed[0] < -0.99 && signed[0] > -1.0);
    }
}
