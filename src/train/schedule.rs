//! pytorch_transformers' WarmupLinearSchedule, stepped before the optimizer as Oscar does: the
//! multiplier at optimizer step s (1-based) is s / warmup during warm-up, then decays linearly to 0
//! at `total`.
pub fn lr_at(step: usize, total: usize, warmup: usize, base: f32) -> f32 {
    let (s, t, w) = (step as f64, total.max(1) as f64, warmup as f64);
    let m = if s < w { s / w.max(1.0) } else { ((t - s) / (t - w).max(1.0)).max(0.0) };
    (base as f64 * m) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn warmup_then_linear_decay_to_zero() {
        assert_eq!(lr_at(5, 100, 10, 1.0), 0.5);
        assert_eq!(lr_at(10, 100, 10, 1.0), 1.0);
        assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-6);
        assert_eq!(lr_at(100, 100, 10, 1.0), 0.0);
        assert!((lr_at(1, 4, 0, 1.0) - 0.75).abs() < 1e-6);
    }
}
