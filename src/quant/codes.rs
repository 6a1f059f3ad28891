//! Blockwise quantization in Burn tensor ops, on the tensor's own device: normalize by a scale
//! (a block's absmax, or the rank-1 `min(rowmax, colmax)`), round to the nearest entry of a
//! code table by a branchless binary search, pack the codes into `i32` words (WGSL has no 8-bit
//! integers); and back.

use burn::tensor::{DType, Device, Int, IntDType, Tensor, TensorData};

use super::host;
use super::maps::{CodeMap, Normalization};
use crate::matrix::is_host_device;

/// A tensor's values as codes into a [`CodeMap`] and the scales that undo the normalization.
#[derive(Debug, Clone)]
pub struct Codes {
    /// The codes, `32 / bits` per `i32` word, the first in the lowest bits.
    pub words: Tensor<1, Int>,
    /// The normalization scales (`f32`).
    pub scales: Tensor<1>,
    /// Number of values.
    pub len: usize,
}

/// Codes per 32-bit word.
fn per_word(map: CodeMap) -> usize {
    32 / map.bits() as usize
}

/// Bytes a checkpoint stores for the codes of `len` values (one byte holds `8 / bits` codes).
pub(crate) fn code_bytes(map: CodeMap, len: usize) -> usize {
    (len * map.bits() as usize).div_ceil(8)
}

/// `values` (a table or its midpoints) as a device tensor.
fn upload(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// `flat` cut or zero-padded to `len` elements.
fn fit(flat: Tensor<1>, len: usize) -> Tensor<1> {
    let have = flat.dims()[0];
    if have >= len {
        return flat.narrow(0, 0, len);
    }
    let pad = Tensor::zeros([len - have], &flat.device());
    Tensor::cat(vec![flat, pad], 0)
}

/// The nearest table entry's index for every value of `x` (already in the table's range):
/// the largest `i` with `table[i] <= x` by a branchless binary search, then one step up where
/// `x` lies above [`CodeMap::midpoints`]`[i]`, as bitsandbytes' CUDA kernel rounds (ties go down). Equivalently, the number of midpoints below `x`.
fn nearest(x: Tensor<1>, map: CodeMap, table: &Tensor<1>) -> Tensor<1, Int> {
    let size = table.dims()[0];
    let mut half = size / 2;
    let middle = map.table()[half];
    let mut codes = x
        .clone()
        .greater_equal_elem(middle)
        .int()
        .mul_scalar(half as i64);
    while half > 1 {
        half /= 2;
        let probe = table
            .clone()
            .select(0, codes.clone().add_scalar(half as i64));
        let up = x.clone().greater_equal(probe).int().mul_scalar(half as i64);
        codes = codes.add(up);
    }
    let midpoints = upload(map.midpoints(), &x.device());
    let above = x.clone().greater(midpoints.select(0, codes.clone()));
    let codes = codes.add(above.int());
    if !map.keeps_sign() {
        return codes;
    }
    // A first moment's code keeps the value's sign: one step back across zero where rounding
    // flipped it (a value just below 0 that rounded to 0.0, say).
    let code_negative = table.clone().select(0, codes.clone()).lower_elem(0.0);
    let negative = x.clone().lower_elem(0.0);
    let flipped = code_negative.not_equal(negative.clone());
    let step_up = flipped.clone().bool_and(x.greater_elem(0.0)).int();
    let step_down = flipped.bool_and(negative).int();
    codes.add(step_up).sub(step_down)
}

/// Packs the first `len` codes (each `< 2^bits`) into `i32` words, the last one zero-padded.
fn pack(codes: Tensor<1, Int>, map: CodeMap, len: usize) -> Tensor<1, Int> {
    let per = per_word(map);
    let words = len.div_ceil(per);
    let codes = fit_int(codes.cast(IntDType::I32), len);
    let codes = fit_int(codes, words * per).reshape([words, per]);
    let mut packed = codes.clone().slice([0..words, 0..1]);
    for k in 1..per {
        let part = codes.clone().slice([0..words, k..k + 1]);
        packed = packed.bitwise_or(part.bitwise_left_shift_scalar((k as u32 * map.bits()) as i64));
    }
    packed.reshape([words])
}

/// `codes` cut or zero-padded to `len`.
fn fit_int(codes: Tensor<1, Int>, len: usize) -> Tensor<1, Int> {
    let have = codes.dims()[0];
    if have >= len {
        return codes.narrow(0, 0, len);
    }
    let pad = codes
        .clone()
        .narrow(0, 0, 1)
        .mul_scalar(0)
        .expand([len - have]);
    Tensor::cat(vec![codes, pad], 0)
}

/// The codes of `words` (a multiple of `32 / bits` of them).
fn unpack(words: &Tensor<1, Int>, map: CodeMap) -> Tensor<1, Int> {
    let per = per_word(map);
    let count = words.dims()[0];
    let shifts: Vec<i32> = (0..per).map(|k| k as i32 * map.bits() as i32).collect();
    let shifts = Tensor::<1, Int>::from_data(
        TensorData::new(shifts, [per]),
        (&words.device(), DType::I32),
    );
    let mask = (1i64 << map.bits()) - 1;
    let spread = words.clone().unsqueeze_dim::<2>(1).expand([count, per]);
    let shifts = shifts.unsqueeze_dim::<2>(0).expand([count, per]);
    spread
        .bitwise_right_shift(shifts)
        .bitwise_and_scalar(mask)
        .reshape([count * per])
}

/// A zero scale divides as 1: a block of zeros maps to the table's entry nearest 0.
fn safe_divisor<const D: usize>(scale: Tensor<D>) -> Tensor<D> {
    let zero = scale.clone().equal_elem(0.0);
    scale.mask_fill(zero, 1.0)
}

/// The per-element divisor of a rank-1 normalization from its `rows + cols` scales.
fn rank1_scale(scales: Tensor<1>, rows: usize, cols: usize) -> Tensor<2> {
    let row = scales
        .clone()
        .narrow(0, 0, rows)
        .unsqueeze_dim::<2>(1)
        .expand([rows, cols]);
    let col = scales
        .narrow(0, rows, cols)
        .unsqueeze_dim::<2>(0)
        .expand([rows, cols]);
    row.min_pair(col)
}

/// Quantizes `values` (any shape, flattened row-major) onto `map` under `norm`: in tensor ops
/// on a GPU backend, in host loops on a CPU backend (the same codes).
///
/// # Panics
/// If a [`Normalization::Rank1`] does not describe `values`' element count.
pub fn quantize<const D: usize>(values: Tensor<D>, map: CodeMap, norm: Normalization) -> Codes {
    let len: usize = values.dims().iter().product();
    if let Normalization::Rank1 { rows, cols } = norm {
        assert_eq!(
            rows * cols,
            len,
            "rank-1 normalization of {len} values as {rows}x{cols}"
        );
    }
    let device = values.device();
    if !is_host_device(&device) {
        return quantize_on_device(values, map, norm);
    }
    let values = host_values(crate::readback::data(values));
    let (words, scales) = host::quantize(&values, map, norm);
    Codes {
        words: words_tensor(words, &device),
        scales: upload(&scales, &device),
        len,
    }
}

/// Packed codes as an `i32` device tensor.
fn words_tensor(words: Vec<i32>, device: &Device) -> Tensor<1, Int> {
    let count = words.len();
    Tensor::from_data(TensorData::new(words, [count]), (device, DType::I32))
}

/// A float tensor's values on the host.
fn host_values(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

/// [`quantize`] in tensor ops on `values`' device.
pub(super) fn quantize_on_device<const D: usize>(
    values: Tensor<D>,
    map: CodeMap,
    norm: Normalization,
) -> Codes {
    let len: usize = values.dims().iter().product();
    let device = values.device();
    let table = upload(map.table(), &device);
    let flat = values.reshape([len]);
    let (normed, scales) = match norm {
        Normalization::Blocks(block) => {
            let blocks = len.div_ceil(block);
            let grid = fit(flat, blocks * block).reshape([blocks, block]);
            let absmax = grid.clone().abs().max_dim(1);
            let normed = grid.div(safe_divisor(absmax.clone()));
            (normed.reshape([blocks * block]), absmax.reshape([blocks]))
        }
        Normalization::Rank1 { rows, cols } => {
            let grid = flat.reshape([rows, cols]).abs();
            let row = grid.clone().max_dim(1).reshape([rows]);
            let col = grid.clone().max_dim(0).reshape([cols]);
            let scales = Tensor::cat(vec![row, col], 0);
            let divisor = safe_divisor(rank1_scale(scales.clone(), rows, cols));
            (grid.div(divisor).reshape([len]), scales)
        }
    };
    let codes = nearest(normed, map, &table);
    Codes {
        words: pack(codes, map, len),
        scales,
        len,
    }
}

/// The values `codes` stand for, shaped `dims`.
pub fn dequantize<const D: usize>(
    codes: &Codes,
    map: CodeMap,
    norm: Normalization,
    dims: [usize; D],
) -> Tensor<D> {
    let device = codes.scales.device();
    if !is_host_device(&device) {
        return dequantize_on_device(codes, map, norm, dims);
    }
    let words = crate::readback::data(codes.words.clone()).convert::<i32>();
    let words = words.as_slice::<i32>().expect("codes are i32");
    let scales = host_values(crate::readback::data(codes.scales.clone()));
    let values = host::dequantize(words, &scales, codes.len, map, norm);
    Tensor::from_data(TensorData::new(values, dims), &device)
}

/// [`dequantize`] in tensor ops on the codes' device.
pub(super) fn dequantize_on_device<const D: usize>(
    codes: &Codes,
    map: CodeMap,
    norm: Normalization,
    dims: [usize; D],
) -> Tensor<D> {
    let len = codes.len;
    let table = upload(map.table(), &codes.scales.device());
    let values = table.select(0, unpack(&codes.words, map));
    let values = match norm {
        Normalization::Blocks(block) => {
            let blocks = len.div_ceil(block);
            let grid = fit(values, blocks * block).reshape([blocks, block]);
            let scaled = grid.mul(codes.scales.clone().unsqueeze_dim::<2>(1));
            scaled.reshape([blocks * block]).narrow(0, 0, len)
        }
        Normalization::Rank1 { rows, cols } => {
            let grid = fit(values, len).reshape([rows, cols]);
            grid.mul(rank1_scale(codes.scales.clone(), rows, cols))
                .reshape([len])
        }
    };
    values.reshape(dims)
}

/// The codes as one byte per code (8 bits) or two codes per byte (4 bits, the first in the low
/// nibble), for a checkpoint; one read of the device words.
pub fn to_bytes(codes: &Codes, map: CodeMap) -> Vec<u8> {
    let data = crate::readback::data(codes.words.clone()).convert::<i32>();
    let words = data.as_slice::<i32>().expect("codes are i32");
    let mut bytes = host::bytes_of_words(words);
    bytes.truncate(code_bytes(map, codes.len));
    bytes
}

/// The device words of codes stored by [`to_bytes`].
pub fn from_bytes(
    bytes: &[u8],
    map: CodeMap,
    len: usize,
    device: &Device,
) -> Option<Tensor<1, Int>> {
    if bytes.len() != code_bytes(map, len) {
        return None;
    }
    Some(words_tensor(host::words_from_bytes(bytes), device))
}
