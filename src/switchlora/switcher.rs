//! Switching adapter vectors with candidates, and telling the optimizer which counterparts to
//! reset and freeze.
//!
//! A switch of `lora_a`'s column `i` to candidate `c` adds `s (A[:, i] - c) B[i, :]` to the
//! frozen base weight, so `x W + s x A B` is unchanged; the old column goes back to its pool slot.
//! The counterpart row `B[i, :]` then restarts its Adam moments and step counter and is frozen
//! for `freeze_steps` steps. Switches of `lora_b`'s rows are symmetric.

use std::collections::{HashMap, HashSet};

use burn::module::ParamId;
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use super::layers::{find_layers, indices, rows, take, LayerParts, Part, Replacements};
use super::linear::{scaling, Slots};
use super::schedule::SwitchScheduleConfig;
use crate::error::{Error, Result};

/// The channel from the [`Switcher`] to the adapter optimizers: which vectors of which
/// parameter (by dotted path) to reset and freeze at their next step.
#[derive(Clone, Debug, Default)]
pub struct Switchboard {
    inner: Arc<Mutex<Board>>,
}

#[derive(Debug, Default)]
struct Board {
    wired: HashSet<String>,
    pending: HashMap<String, Vec<usize>>,
}

impl Switchboard {
    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an optimizer for the parameter at `path`.
    pub(crate) fn wire(&self, path: &str) {
        self.board().wired.insert(path.to_string());
    }

    /// An error naming the first of `paths` that has no optimizer.
    fn check<'a>(&self, mut paths: impl Iterator<Item = &'a String>) -> Result<()> {
        let board = self.board();
        match paths.find(|p| !board.wired.contains(*p)) {
            Some(path) => Err(Error::NotWired { path: path.clone() }),
            None => Ok(()),
        }
    }

    /// Queues resets of vectors by parameter path: all of them, or none when a path has no
    /// optimizer.
    pub(crate) fn post(&self, resets: Vec<(String, Vec<usize>)>) -> Result<()> {
        self.check(resets.iter().map(|(path, _)| path))?;
        let mut board = self.board();
        for (path, vectors) in resets {
            board.pending.entry(path).or_default().extend(vectors);
        }
        Ok(())
    }

    /// Takes the resets queued for the parameter at `path`.
    pub(crate) fn take(&self, path: &str) -> Vec<usize> {
        self.board().pending.remove(path).unwrap_or_default()
    }

    /// Whether any reset is still queued (none should be after an optimizer step).
    pub fn has_pending(&self) -> bool {
        self.board().pending.values().any(|v| !v.is_empty())
    }
}

/// Switches the adapter vectors of every [`SwitchLoraLinear`](super::SwitchLoraLinear) in a
/// model on the schedule. Built together with the optimizer by
/// [`SwitchLoraConfig::build`](super::SwitchLoraConfig::build); call
/// [`switch`](Self::switch) once per training step, after gradient clipping and before the
/// optimizer step, as the reference does.
#[derive(Clone, Debug)]
pub struct Switcher {
    schedule: SwitchScheduleConfig,
    board: Switchboard,
}

/// What one call of [`Switcher::switch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchCount {
    /// Columns of `lora_a` switched, over all layers.
    pub a: usize,
    /// Rows of `lora_b` switched, over all layers.
    pub b: usize,
}

impl Switcher {
    /// A switcher posting to `board` (which the adapter optimizers read).
    pub(crate) fn new(schedule: SwitchScheduleConfig, board: Switchboard) -> Result<Self> {
        schedule.validate()?;
        Ok(Self { schedule, board })
    }

    /// Whether resets are queued that no optimizer step has applied yet (a checkpoint taken
    /// then would lose them: save after the optimizer step).
    pub fn has_pending(&self) -> bool {
        self.board.has_pending()
    }

    /// The schedule.
    pub fn schedule(&self) -> &SwitchScheduleConfig {
        &self.schedule
    }

    /// Switches the vectors `step` calls for in every layer of `model` (the `step`-th optimizer
    /// step, counted from 0). The model's outputs are unchanged up to rounding.
    pub fn switch<M: Module>(&self, model: M, step: usize) -> Result<(M, SwitchCount)> {
        let mut switching = Vec::new();
        for (ordinal, layer) in find_layers(&model).into_iter().enumerate() {
            let parts = Complete::from(layer)?;
            let slots = Slots::from_tensor(&parts.slots.value, parts.rank)?;
            let n = self.switches(&parts, &slots, step, ordinal);
            if n > 0 {
                switching.push((parts, slots, n));
            }
        }
        // A switcher wired to another model fails here, before anything changes.
        let paths = switching
            .iter()
            .flat_map(|(p, _, _)| [&p.a_path, &p.b_path]);
        self.board.check(paths)?;
        let mut resets = Vec::new();
        let mut count = SwitchCount::default();
        // The pools the switch writes into, taken out of the model so each has one handle and
        // is written in place (taking the base weight too measured slower: 15.1 vs 8.7 ms).
        let pools: HashSet<ParamId> = switching
            .iter()
            .flat_map(|(p, _, _)| [p.candidates_a.id, p.candidates_b.id])
            .collect();
        let (model, mut taken) = take(model, pools);
        let mut replacements = Replacements::default();
        for (mut parts, mut slots, n) in switching {
            for pool in [&mut parts.candidates_a, &mut parts.candidates_b] {
                if let Some(value) = taken.remove(&pool.id) {
                    pool.value = value; // replaces the other handle
                }
            }
            let switched = parts.switch(&mut slots, n, step as i64);
            // A switch of lora_a's column i resets lora_b's row i, and the other way round.
            resets.push((parts.b_path.clone(), switched.slots_a));
            resets.push((parts.a_path.clone(), switched.slots_b));
            count.a += n;
            count.b += n;
            let slots_tensor = slots.to_tensor(&parts.slots.value.device());
            replacements.ints.insert(parts.slots.id, slots_tensor);
            for (part, value) in [
                (&parts.weight, switched.weight),
                (&parts.lora_a, switched.lora_a),
                (&parts.lora_b, switched.lora_b),
                (&parts.candidates_a, switched.candidates_a),
                (&parts.candidates_b, switched.candidates_b),
            ] {
                replacements.floats.insert(part.id, value);
            }
        }
        let model = replacements.apply(model);
        self.board.post(resets)?;
        Ok((model, count))
    }

    /// How many vectors of each side the layer switches now: the schedule's draw, limited so
    /// that the `lora_a` and `lora_b` windows never reach each other's frozen slots (the
    /// reference's rule) and new candidates never collide with vectors in use.
    fn switches(&self, parts: &Complete, slots: &Slots, step: usize, ordinal: usize) -> usize {
        let rank = parts.rank as i64;
        let spare = parts.pool_size.saturating_sub(parts.rank);
        if spare == 0 {
            return 0;
        }
        let wanted = self.schedule.switches(parts.rank, step, ordinal);
        let freeze = self.schedule.freeze_steps as i64;
        let frozen = |switched: &[i64]| {
            switched
                .iter()
                .filter(|&&at| at >= 0 && (step as i64) - at < freeze)
                .count() as i64
        };
        // lora_a's slots are frozen by switches of lora_b, and the other way round.
        let (frozen_a, frozen_b) = (frozen(&slots.switched_b), frozen(&slots.switched_a));
        let (ca, cb) = (slots.cursor_a as i64, slots.cursor_b as i64);
        let available = (ca - frozen_a - cb)
            .rem_euclid(rank)
            .min((cb - frozen_b - ca).rem_euclid(rank)) as usize;
        wanted.min(available).min(spare)
    }
}

/// A layer with every part present.
struct Complete {
    weight: Part<Tensor<2>>,
    lora_a: Part<Tensor<2>>,
    lora_b: Part<Tensor<2>>,
    candidates_a: Part<Tensor<2>>,
    candidates_b: Part<Tensor<2>>,
    slots: Part<Tensor<1, Int>>,
    a_path: String,
    b_path: String,
    rank: usize,
    pool_size: usize,
}

impl Complete {
    fn from(layer: LayerParts) -> Result<Self> {
        let (a_path, b_path) = (layer.field_path("lora_a"), layer.field_path("lora_b"));
        let path = layer.path;
        let missing = |field: &str| Error::Record(format!("{path} has no `{field}`"));
        let lora_a = layer.lora_a.ok_or_else(|| missing("lora_a"))?;
        let rank = lora_a.value.dims()[1];
        let candidates_a = layer.candidates_a.ok_or_else(|| missing("candidates_a"))?;
        Ok(Self {
            pool_size: candidates_a.value.dims()[0],
            weight: layer.weight.ok_or_else(|| missing("weight"))?,
            lora_b: layer.lora_b.ok_or_else(|| missing("lora_b"))?,
            candidates_b: layer.candidates_b.ok_or_else(|| missing("candidates_b"))?,
            slots: layer.slots.ok_or_else(|| missing("slots"))?,
            lora_a,
            candidates_a,
            a_path,
            b_path,
            rank,
        })
    }
}

/// The new values of a layer after a switch, and the slots switched on each side.
struct Switched {
    weight: Tensor<2>,
    lora_a: Tensor<2>,
    lora_b: Tensor<2>,
    candidates_a: Tensor<2>,
    candidates_b: Tensor<2>,
    slots_a: Vec<usize>,
    slots_b: Vec<usize>,
}

impl Complete {
    /// Switches `n` slots of each side, starting at the cursors, to the pool vectors that follow
    /// the current ones (the reference's continuous order), and updates `slots`.
    fn switch(&mut self, slots: &mut Slots, n: usize, step: i64) -> Switched {
        let (rank, pool) = (self.rank, self.pool_size);
        let plan = |cursor: usize, selected: &[usize]| {
            let slots: Vec<usize> = (0..n).map(|k| (cursor + k) % rank).collect();
            let first = selected[(slots[0] + rank - 1) % rank] + 1;
            let fresh: Vec<usize> = (0..n).map(|k| (first + k) % pool).collect();
            (slots, fresh)
        };
        let (slots_a, fresh_a) = plan(slots.cursor_a, &slots.selected_a);
        let (slots_b, fresh_b) = plan(slots.cursor_b, &slots.selected_b);
        // Computed where the frozen weight lives: `OptimSharded` leaves each adapter on the
        // device that updated it, so `lora_a` and `lora_b` may sit on two backends.
        let device = self.weight.value.device();
        let (device_a, device_b) = (self.lora_a.value.device(), self.lora_b.value.device());
        let weight = self.weight.value.clone().detach();
        let a = to_device(self.lora_a.value.clone().detach(), &device);
        let b = to_device(self.lora_b.value.clone().detach(), &device);

        // lora_a's columns S: W += s (A[:, S] - C_a^T) B[S, :]; lora_b's rows T (disjoint from
        // S): W += s A[:, T] (B[T, :] - C_b). Both as one [d_in, 2n] x [2n, d_out] product.
        let old_a = a.clone().select(1, indices(&slots_a, &device)); // [in, n]
        let new_a = to_device(rows(&self.candidates_a.value, &fresh_a), &device).transpose();
        let old_b = b.clone().select(0, indices(&slots_b, &device)); // [n, out]
        let new_b = to_device(rows(&self.candidates_b.value, &fresh_b), &device);
        let left = Tensor::cat(
            vec![
                old_a.clone().sub(new_a.clone()),
                a.clone().select(1, indices(&slots_b, &device)),
            ],
            1,
        );
        let right = Tensor::cat(
            vec![
                b.clone().select(0, indices(&slots_a, &device)),
                old_b.clone().sub(new_b.clone()),
            ],
            0,
        );
        let weight = weight.add(left.mul_scalar(scaling(self.rank)).matmul(right));

        // The old vectors go back to their pool slots; the new ones into the adapters.
        let returned = |slots_: &[usize], selected: &[usize]| -> Vec<usize> {
            slots_.iter().map(|&i| selected[i]).collect()
        };
        let candidates_a = assign(
            take_value(&mut self.candidates_a),
            0,
            &returned(&slots_a, &slots.selected_a),
            old_a.transpose(),
        );
        let candidates_b = assign(
            take_value(&mut self.candidates_b),
            0,
            &returned(&slots_b, &slots.selected_b),
            old_b,
        );
        let a = to_device(assign(a, 1, &slots_a, new_a), &device_a);
        let b = to_device(assign(b, 0, &slots_b, new_b), &device_b);

        for (k, &slot) in slots_a.iter().enumerate() {
            slots.selected_a[slot] = fresh_a[k];
            slots.switched_a[slot] = step;
        }
        for (k, &slot) in slots_b.iter().enumerate() {
            slots.selected_b[slot] = fresh_b[k];
            slots.switched_b[slot] = step;
        }
        slots.cursor_a = (slots.cursor_a + n) % rank;
        slots.cursor_b = (slots.cursor_b + n) % rank;
        Switched {
            weight,
            lora_a: a,
            lora_b: b,
            candidates_a,
            candidates_b,
            slots_a,
            slots_b,
        }
    }
}

/// The part's tensor, leaving an empty one behind: without other handles a backend can then
/// write into it in place.
fn take_value(part: &mut Part<Tensor<2>>) -> Tensor<2> {
    let device = part.value.device();
    std::mem::replace(&mut part.value, Tensor::zeros([0, 0], &device))
}

/// `t` on `device` (through host data when the devices differ: pools and adapters may live on
/// different backends).
fn to_device(t: Tensor<2>, device: &Device) -> Tensor<2> {
    if &t.device() == device {
        t
    } else {
        Tensor::from_data(crate::readback::data(t), device)
    }
}

/// `t` with its slices `indices` along `dim` (0: rows, 1: columns) replaced by the slices of
/// `values`, in order; contiguous runs are written with one `slice_assign` each, so the values
/// are copied exactly.
fn assign(t: Tensor<2>, dim: usize, indices: &[usize], values: Tensor<2>) -> Tensor<2> {
    let values = to_device(values, &t.device());
    let mut t = t;
    let mut k = 0;
    while k < indices.len() {
        let mut len = 1;
        while k + len < indices.len() && indices[k + len] == indices[k] + len {
            len += 1;
        }
        let [rows, cols] = t.dims();
        let (start, piece) = (indices[k], values.clone().narrow(dim, k, len));
        t = if dim == 0 {
            t.slice_assign([start..start + len, 0..cols], piece)
        } else {
            t.slice_assign([0..rows, start..start + len], piece)
        };
        k += len;
    }
    t
}
