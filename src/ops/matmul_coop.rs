//! The cooperative-matrix matmul (shaders/matmul_coop.wgsl): f16 products, f32 accumulation, for
//! `Precision::F16` on adapters with 16x16x16 f16 matrices (`Gpu::coop16`). `ops::matmul::matmul`
//! dispatches to it; this module decides whether it may.
//!
//! wgpu marks cooperative matrices experimental, and this kernel cannot run on lavapipe (CI), so
//! it is never trusted blind: before its first use on a device it runs one awkward problem (edges
//! in every dimension, B transposed, bias + GELU + pre-activation) next to the fp32 kernel with
//! ROUND_F16, which computes the same f16 products in f32. If they disagree, a warning names the
//! error and the f16 path falls back to that fp32 kernel.
use super::matmul::{build, Act, Layout, MatmulDesc, Precision};
use crate::gpu::{DType, Gpu};
use crate::Result;

/// Whether F16 matmuls on this device go to the cooperative-matrix kernel (verified once).
pub fn usable(gpu: &Gpu) -> bool {
    gpu.coop16
        && *gpu.coop_verified.get_or_init(|| match self_check(gpu) {
            Ok(err) if err <= TOL => true,
            Ok(err) => {
                eprintln!(
                    "warning: cooperative-matrix matmul differs from the fp32 kernel by {err:.3e} (> {TOL:e}) on {}; f16 matmuls use the fp32 kernels",
                    gpu.summary()
                );
                false
            }
            Err(e) => {
                eprintln!("warning: cooperative-matrix matmul failed on {} ({e}); f16 matmuls use the fp32 kernels", gpu.summary());
                false
            }
        })
}

/// Same f16 products, different summation order: differences stay near f32 rounding.
const TOL: f32 = 1e-3;

/// Worst |coop - fp32/ROUND_F16| / (1 + |fp32|) over one problem with ragged edges.
pub fn self_check(gpu: &Gpu) -> Result<f32> {
    let (m, n, k) = (100, 72, 150);
    let d = MatmulDesc { b: Layout::rm(n, k).t(), bias_off: Some(0), pre_off: Some(0), act: Act::Gelu, precision: Precision::F16, ..MatmulDesc::new(m, n, k) };
    let gen = |len: usize, s: u32| -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_mul(2654435761).wrapping_add(s) >> 8) % 2001) as f32 / 1000.0 - 1.0).collect()
    };
    let a = gpu.upload_f32("coop-check-a", &[m * k], &gen(m * k, 1))?;
    let b = gpu.upload_f32("coop-check-b", &[n * k], &gen(n * k, 2))?;
    let bias = gpu.upload_f32("coop-check-bias", &[n], &gen(n, 3))?;
    let mut out = Vec::new();
    for coop in [true, false] {
        let c = gpu.zeros("coop-check-c", &[m * n], DType::F32)?;
        let pre = gpu.zeros("coop-check-pre", &[m * n], DType::F32)?;
        let disp = build(gpu, &d, &a, &b, &c, Some(&bias), Some(&pre), coop)?;
        gpu.run([&disp])?;
        out.push((gpu.read_f32(&c)?, gpu.read_f32(&pre)?));
    }
    let worst =
        |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| if p.is_finite() { (p - q).abs() / (1.0 + q.abs()) } else { f32::INFINITY }).fold(0f32, f32::max);
    Ok(worst(&out[0].0, &out[1].0).max(worst(&out[0].1, &out[1].1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn coop_matches_fp32_with_f16_rounding() {
        let g = gpu();
        if !g.coop16 {
            let why = format!(
                "{} has no 16x16x16 f16 cooperative matrices in subgroups of 32; run `cargo test coop` on a GPU that has them (NVIDIA over Vulkan)",
                g.summary()
            );
            skipped_loudly("ops::matmul_coop::coop_matches_fp32_with_f16_rounding", &why);
            return;
        }
        let err = self_check(g).unwrap();
        assert!(err <= TOL, "cooperative-matrix matmul differs from fp32+ROUND_F16 by {err}");
        assert!(usable(g));
    }
}
