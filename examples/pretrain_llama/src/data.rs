//! Text data: a byte-level tokenizer, the train/validation split and the batches.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};

/// Byte-level tokens: no vocabulary to download, every UTF-8 text encodes.
pub const BYTE_VOCAB: usize = 256;

/// A tokenized text split into training and validation parts.
pub struct Corpus {
    pub train: Vec<u32>,
    pub validation: Vec<u32>,
}

impl Corpus {
    /// Reads `path` (UTF-8) and keeps the last `val_fraction` of it for validation.
    ///
    /// Errors name the problem: unreadable or non-UTF-8 file, or too little text for one
    /// `window`-token sequence in each split.
    pub fn load(path: &Path, val_fraction: f64, window: usize) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read data file {}: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| format!("data file {} is not UTF-8 text: {e}", path.display()))?;
        Self::from_text(&text, val_fraction, window)
            .map_err(|e| format!("data file {}: {e}", path.display()))
    }

    /// Tokenizes `text` and splits it; see [`Corpus::load`].
    pub fn from_text(text: &str, val_fraction: f64, window: usize) -> Result<Self, String> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(format!(
                "--val-fraction {val_fraction} must lie strictly between 0 and 1"
            ));
        }
        let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
        let split = ((tokens.len() as f64) * (1.0 - val_fraction)).round() as usize;
        let (train, validation) = tokens.split_at(split);
        for (name, part) in [("training", train), ("validation", validation)] {
            if part.len() < window {
                return Err(format!(
                    "the {name} split holds {} tokens, fewer than one sequence of {window}; \
                     use more text or a shorter --seq-len",
                    part.len()
                ));
            }
        }
        Ok(Self {
            train: train.to_vec(),
            validation: validation.to_vec(),
        })
    }
}

/// A seeded stream of training batches: random windows of `seq_len + 1` tokens.
pub struct Batches {
    state: u64,
    batch: usize,
    window: usize,
}

impl Batches {
    pub fn new(seed: u64, batch: usize, seq_len: usize) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03,
            batch,
            window: seq_len + 1,
        }
    }

    /// Skips `n` batches (resuming reproduces the uninterrupted stream).
    pub fn skip(&mut self, n: usize) {
        for _ in 0..n * self.batch {
            self.next_u64();
        }
    }

    fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.state)
    }

    /// Where the next batch's windows start in a text of `len` tokens.
    pub fn next_starts(&mut self, len: usize) -> Vec<usize> {
        let starts = len - self.window + 1;
        (0..self.batch)
            .map(|_| (self.next_u64() % starts as u64) as usize)
            .collect()
    }

    /// The next batch `[batch, seq_len + 1]` drawn from `tokens`.
    pub fn next(&mut self, tokens: &[u32], device: &Device) -> Tensor<2, Int> {
        let mut values = Vec::with_capacity(self.batch * self.window);
        for start in self.next_starts(tokens.len()) {
            values.extend(tokens[start..start + self.window].iter().map(|&t| t as i64));
        }
        Tensor::from_data(TensorData::new(values, [self.batch, self.window]), device)
    }
}

/// The whole `tokens` as consecutive windows of `seq_len + 1` tokens (overlapping by one so every
/// token after the first is predicted exactly once), grouped into batches of at most `batch`;
/// the shorter tail window, if any, comes last as a batch of its own.
pub fn validation_batches(
    tokens: &[u32],
    seq_len: usize,
    batch: usize,
    device: &Device,
) -> Vec<Tensor<2, Int>> {
    let starts: Vec<usize> = (0..)
        .map(|i| i * seq_len)
        .take_while(|s| s + 1 < tokens.len())
        .collect();
    let window = |start: usize| &tokens[start..(start + seq_len + 1).min(tokens.len())];
    let (full, tail): (Vec<usize>, Vec<usize>) = starts
        .into_iter()
        .partition(|&s| window(s).len() == seq_len + 1);
    let to_tensor = |windows: &[usize]| {
        let len = window(windows[0]).len();
        let values: Vec<i64> = windows
            .iter()
            .flat_map(|&s| window(s).iter().map(|&t| t as i64))
            .collect();
        Tensor::from_data(TensorData::new(values, [windows.len(), len]), device)
    };
    full.chunks(batch)
        .chain(tail.chunks(1))
        .map(to_tensor)
        .collect()
}

/// SplitMix64: the next 64 bits of the stream in `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The non-overlapping `window`-token sequences of `tokens`, in an order shuffled once from
/// `seed` (Fisher–Yates).
pub fn shuffled_windows(tokens: &[u32], window: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut out: Vec<Vec<i64>> = tokens
        .chunks_exact(window)
        .map(|w| w.iter().map(|&t| t as i64).collect())
        .collect();
    let mut state = seed;
    for i in (1..out.len()).rev() {
        out.swap(i, (splitmix64(&mut state) % (i as u64 + 1)) as usize);
    }
    out
}
