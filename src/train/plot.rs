//! The loss curve as a PNG (plotters). Text needs a TrueType font; we look for DejaVu Sans (or
//! another common sans font) on the system and draw the curves without labels if there is none.
use plotters::prelude::*;
use std::path::Path;

fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ];
        for c in candidates {
            if let Ok(bytes) = std::fs::read(c) {
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws named series of (step, value) into `path`.
pub fn loss_curve(path: &Path, title: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<(), String> {
    let labels = register_font();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let pts = series.iter().flat_map(|(_, v)| v.iter());
    let (mut x1, mut y0, mut y1) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        if y.is_finite() {
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !y0.is_finite() {
        return Err("no finite values to plot".into());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let mut b = ChartBuilder::on(&root);
    b.margin(15).x_label_area_size(if labels { 35 } else { 5 }).y_label_area_size(if labels { 50 } else { 5 });
    if labels {
        b.caption(title, ("sans-serif", 22));
    }
    let mut chart = b.build_cartesian_2d(0f64..x1, (y0 - pad).max(0.0)..y1 + pad).map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("step").y_desc("loss");
    } else {
        mesh.disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK];
    for (i, (name, v)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let s = chart.draw_series(LineSeries::new(v.iter().copied().filter(|p| p.1.is_finite()), c.stroke_width(2))).map_err(|e| e.to_string())?;
        if labels {
            s.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
    }
    if labels {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
