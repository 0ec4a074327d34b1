//! Shared by the op tests: one device per test process, seeded data, tolerances, finite differences.
use crate::gpu::Gpu;
use std::sync::OnceLock;

pub fn gpu() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        let g = Gpu::default_device().expect("tests need a GPU adapter (CI uses lavapipe: apt-get install mesa-vulkan-drivers)");
        eprintln!("test device: {}", g.summary());
        g
    })
}

/// A second device whose shader modules are trusted (no wgpu runtime bounds checks), as release
/// builds run them; tests run in debug, where `gpu()` keeps the checks.
pub fn gpu_trusted() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| Gpu::new(&crate::gpu::GpuOptions { shader_checks: Some(false), ..Default::default() }).expect("tests need a GPU adapter"))
}

/// Says on the terminal, past the test harness's output capture, that a test did not run.
pub fn skipped_loudly(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why}\n");
}

/// The crate's one generator (util::Rng), plus the uniform vectors the op tests draw.
pub use crate::util::Rng;

pub trait UniformVec {
    /// Uniform in [-a, a].
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32>;
}

impl UniformVec for Rng {
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| (self.uniform() * 2.0 - 1.0) * a).collect()
    }
}

/// |got - want| <= atol + rtol * |want| everywhere; reports the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(g.is_finite() == w.is_finite(), "{what}[{i}]: got {g}, want {w}");
        let excess = err - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let i = worst.0;
    assert!(worst.1 <= 0.0, "{what}[{i}]: got {}, want {} (atol {atol}, rtol {rtol})", got[i], want[i]);
}

/// Central finite differences of a scalar function f at x, for every coordinate.
pub fn numeric_grad(x: &[f32], eps: f64, mut f: impl FnMut(&[f32]) -> f64) -> Vec<f32> {
    let mut xv = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xv[i];
            let hi = (orig as f64 + eps) as f32;
            let lo = (orig as f64 - eps) as f32;
            xv[i] = hi;
            let fp = f(&xv);
            xv[i] = lo;
            let fm = f(&xv);
            xv[i] = orig;
            // divide by the step actually taken in f32
            ((fp - fm) / (hi as f64 - lo as f64)) as f32
        })
        .collect()
}

/// Random projection weights: loss = sum(w * y) turns any output y into a scalar whose gradient
/// w.r.t. y is w, so backward passes are checked against finite differences of that scalar.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}
