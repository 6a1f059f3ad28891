//! The comparison: combined CSV, markdown table and PNG plot of the validation curves.

use std::path::Path;

use lowrank_optim::memory::format_bytes;
use plotters::prelude::*;

use crate::train::Summary;

/// The markdown table: final validation perplexity, optimizer state, step time, peak memory.
pub fn markdown_table(summaries: &[Summary]) -> String {
    let adamw_ms = summaries
        .iter()
        .find(|s| s.name == "adamw")
        .map(|s| s.mean_step_ms);
    let mut md = String::from(
        "| optimizer | val. perplexity | optimizer state | % of AdamW state | step time | vs AdamW | peak process memory |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let ratio = adamw_ms.map_or("-".to_string(), |a| format!("{:.2}x", s.mean_step_ms / a));
        let rss = s.peak_rss_bytes.map_or("-".to_string(), format_bytes);
        md.push_str(&format!(
            "| {} | {:.2} | {} | {:.1}% | {:.0} ms | {} | {} |\n",
            s.name,
            s.final_perplexity(),
            format_bytes(s.state_bytes),
            100.0 * s.state_bytes as f64 / s.adamw_bytes.max(1) as f64,
            s.mean_step_ms,
            ratio,
            rss
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

const FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSansMono.ttf");

/// Validation perplexity against step, one line per optimizer.
pub fn plot(summaries: &[Summary], path: &Path, title: &str) -> Result<(), String> {
    // Registering twice is harmless; the bundled font keeps the plot free of system fonts.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let points: Vec<(usize, f64)> = summaries
        .iter()
        .flat_map(|s| s.validation.iter().skip(1).copied())
        .collect();
    let max_step = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let ppl: Vec<f64> = points.iter().map(|p| p.1.exp()).collect();
    let (lo, hi) = ppl
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
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
    for (i, s) in summaries.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba().stroke_width(3);
        let series: Vec<(f64, f64)> = s
            .validation
            .iter()
            .skip(1)
            .map(|(x, y)| (*x as f64, y.exp()))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                series
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| err(&e))?;
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
