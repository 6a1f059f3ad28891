//! The comparison's report: markdown tables (results, twins, learning-rate search), the combined
//! CSV and the PNG plot of the validation curves.

use std::path::Path;

use lowrank_optim::memory::format_bytes;
use plotters::prelude::*;

use crate::train::Summary;

/// One recipe's runs in a comparison (one per seed), whether its learning rate was tuned, and
/// its PyTorch twin if one was run.
#[derive(Debug, Clone)]
pub struct RecipeResult {
    pub runs: Vec<Summary>,
    pub tuned: bool,
    pub twin: Option<Twin>,
}

impl RecipeResult {
    pub fn name(&self) -> &str {
        &self.runs[0].name
    }

    /// Mean and sample standard deviation of the final validation perplexity over the seeds.
    pub fn perplexity(&self) -> (f64, f64) {
        mean_std(
            &self
                .runs
                .iter()
                .map(|s| s.final_perplexity())
                .collect::<Vec<_>>(),
        )
    }

    /// Per validated step: the step, the mean and the standard deviation of the perplexity.
    fn curve(&self) -> Vec<(f64, f64, f64)> {
        let first = &self.runs[0].validation;
        (0..first.len())
            .skip(1)
            .map(|i| {
                let ppl: Vec<f64> = self
                    .runs
                    .iter()
                    .filter_map(|s| s.validation.get(i))
                    .map(|v| v.1.exp())
                    .collect();
                let (mean, std) = mean_std(&ppl);
                (first[i].0 as f64, mean, std)
            })
            .collect()
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A PyTorch twin run (`benches/peers/twin.py`): its curves and which reference optimizer ran.
#[derive(Debug, Clone)]
pub struct Twin {
    pub optimizer: String,
    pub train_loss: Vec<f64>,
    pub validation: Vec<(usize, f64)>,
}

impl Twin {
    /// Reads `<dir>/history.csv` and `twin_summary.json`; `None` when the twin was not run.
    pub fn read(dir: &Path) -> Result<Option<Twin>, String> {
        let path = dir.join("history.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let bad = |line: usize| format!("{}: line {line} is not a history row", path.display());
        let (mut train_loss, mut validation) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            let step: usize = cells
                .get(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad(i + 1))?;
            let loss: f64 = cells
                .get(2)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad(i + 1))?;
            train_loss.push(loss);
            if let Some(val) = cells.get(3).and_then(|c| c.parse::<f64>().ok()) {
                validation.push((step, val));
            }
        }
        let summary = std::fs::read_to_string(dir.join("twin_summary.json")).unwrap_or_default();
        let optimizer = serde_json::from_str::<serde_json::Value>(&summary)
            .ok()
            .and_then(|v| v["optimizer"].as_str().map(str::to_string))
            .unwrap_or_else(|| "PyTorch".to_string());
        Ok(Some(Twin {
            optimizer,
            train_loss,
            validation,
        }))
    }

    pub fn final_perplexity(&self) -> f64 {
        self.validation.last().map_or(f64::NAN, |v| v.1.exp())
    }
}

/// How far two training-loss curves agree step by step: the number of leading steps within
/// `tolerance` (relative), and the largest relative difference over the first `early` steps.
pub fn agreement(ours: &[f32], twin: &[f64], tolerance: f64, early: usize) -> (usize, f64) {
    let rel: Vec<f64> = ours
        .iter()
        .zip(twin)
        .map(|(&a, &b)| ((a as f64 - b) / b.abs().max(1e-12)).abs())
        .collect();
    let within = rel.iter().take_while(|&&r| r <= tolerance).count();
    let early_max = rel.iter().take(early).fold(0.0f64, |m, &r| m.max(r));
    (within, early_max)
}

/// The markdown table: learning rate, final validation perplexity (mean ± std over seeds),
/// optimizer state, step time, peak memory.
pub fn markdown_table(results: &[RecipeResult]) -> String {
    let adamw_ms = results
        .iter()
        .find(|r| r.name() == "adamw")
        .map(|r| r.runs[0].mean_step_ms);
    let seeds = results.first().map_or(1, |r| r.runs.len());
    let ppl_header = match seeds {
        1 => "val. perplexity".to_string(),
        n => format!("val. perplexity ({n} seeds)"),
    };
    let mut md = format!(
        "| optimizer | lr | {ppl_header} | optimizer state | % of AdamW state | step time | vs AdamW | peak process memory |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in results {
        let s = &r.runs[0];
        let step_ms = mean_std(&r.runs.iter().map(|s| s.mean_step_ms).collect::<Vec<_>>()).0;
        let ratio = adamw_ms.map_or("-".to_string(), |a| format!("{:.2}x", step_ms / a));
        let rss = s.peak_rss_bytes.map_or("-".to_string(), format_bytes);
        let (mean, std) = r.perplexity();
        let ppl = match seeds {
            1 => format!("{mean:.2}"),
            _ => format!("{mean:.2} ± {std:.2}"),
        };
        let lr = format!("{}{}", s.lr, if r.tuned { " (tuned)" } else { "" });
        md.push_str(&format!(
            "| {} | {lr} | {ppl} | {} | {:.1}% | {:.0} ms | {} | {} |\n",
            s.name,
            format_bytes(s.state_bytes),
            100.0 * s.state_bytes as f64 / s.adamw_bytes.max(1) as f64,
            step_ms,
            ratio,
            rss
        ));
    }
    md
}

/// Ours against the PyTorch twins, from the same start: final perplexities, their ratio, and
/// how long the training losses agree.
pub fn twin_table(results: &[RecipeResult]) -> String {
    let mut md = String::from(
        "| optimizer | PyTorch reference | val. perplexity (ours) | (twin) | ours / twin | loss within 1e-4 for | max diff, steps 1-10 |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let Some(twin) = &r.twin else { continue };
        let ours = &r.runs[0];
        let (within, early) = agreement(&ours.train_loss, &twin.train_loss, 1e-4, 10);
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.4} | {within} steps | {:.1e} |\n",
            ours.name,
            twin.optimizer,
            ours.final_perplexity(),
            twin.final_perplexity(),
            ours.final_perplexity() / twin.final_perplexity(),
            early
        ));
    }
    md
}

/// The learning-rate search: each candidate's final validation perplexity and the choice.
pub fn tuning_table(tunings: &[crate::compare::Tuning]) -> String {
    let mut md =
        String::from("| optimizer | lr tried: val. perplexity | chosen |\n|---|---|---:|\n");
    for t in tunings {
        let tried: Vec<String> = t
            .tried
            .iter()
            .map(|(lr, loss)| match loss {
                Some(l) => format!("{lr}: {:.2}", l.exp()),
                None => format!("{lr}: diverged"),
            })
            .collect();
        let edge = if t.on_edge { " (edge)" } else { "" };
        md.push_str(&format!(
            "| {} | {} | {}{edge} |\n",
            t.name,
            tried.join(", "),
            t.best
        ));
    }
    md
}

/// One CSV of the given runs: `optimizer,step,train_loss,validation_loss,validation_perplexity`
/// (validation columns filled at the steps that were validated).
pub fn combined_csv(summaries: &[Summary]) -> String {
    let mut csv = String::from("optimizer,step,train_loss,validation_loss,validation_perplexity\n");
    for s in summaries {
        for (i, loss) in s.train_loss.iter().enumerate() {
            let step = i + 1;
            let val = s
                .validation
                .iter()
                .find(|(v, _)| *v == step)
                .map(|(_, v)| *v);
            let (v, p) = val.map_or((String::new(), String::new()), |v| {
                (format!("{v:.5}"), format!("{:.3}", v.exp()))
            });
            csv.push_str(&format!("{},{step},{loss:.5},{v},{p}\n", s.name));
        }
    }
    csv
}

const FONT: &[u8] = include_bytes!("../../../data/fonts/DejaVuSansMono.ttf");

/// Validation perplexity against step, one line per optimizer (the mean over seeds, with a
/// band of ± one standard deviation), and each PyTorch twin dashed in its optimizer's colour.
pub fn plot(results: &[RecipeResult], path: &Path, title: &str) -> Result<(), String> {
    // Registering twice is harmless; the bundled font keeps the plot free of system fonts.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let curves: Vec<Vec<(f64, f64, f64)>> = results.iter().map(|r| r.curve()).collect();
    let twins: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|r| {
            r.twin
                .iter()
                .flat_map(|t| t.validation.iter().map(|(x, y)| (*x as f64, y.exp())))
                .collect()
        })
        .collect();
    let values = curves
        .iter()
        .flatten()
        .flat_map(|&(x, m, s)| [(x, m - s), (x, m + s)])
        .chain(twins.iter().flatten().copied());
    let (max_step, lo, hi) = values.fold((1.0f64, f64::MAX, f64::MIN), |(x0, lo, hi), (x, y)| {
        (x0.max(x), lo.min(y), hi.max(y))
    });
    let (lo, hi) = if lo < hi {
        (lo * 0.95, hi * 1.05)
    } else {
        (0.0, 1.0)
    };

    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_step, lo..hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("validation perplexity")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if hi - lo > 5.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (r, curve)) in results.iter().zip(&curves).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if r.runs.len() > 1 {
            let band: Vec<(f64, f64)> = (curve.iter().map(|&(x, m, s)| (x, m + s)))
                .chain(curve.iter().rev().map(|&(x, m, s)| (x, m - s)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(band, color.mix(0.2).filled())))
                .map_err(|e| err(&e))?;
        }
        let line = color.stroke_width(3);
        let series: Vec<(f64, f64)> = curve.iter().map(|&(x, m, _)| (x, m)).collect();
        chart
            .draw_series(LineSeries::new(series.clone(), line))
            .map_err(|e| err(&e))?
            .label(r.name().to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], line));
        chart
            .draw_series(series.into_iter().map(|p| Circle::new(p, 4, line.filled())))
            .map_err(|e| err(&e))?;
        if !twins[i].is_empty() {
            let dashed = color.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(twins[i].clone(), 8, 6, dashed))
                .map_err(|e| err(&e))?
                .label(format!("{} (PyTorch twin)", r.name()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], dashed));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
