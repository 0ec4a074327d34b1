//! Dropout from the counter-based RNG in common.wgsl: element i of a call with stream s is kept when
//! rng(seed, s, i) >= floor(p * 2^32), and scaled by 1/(1-p). The seed lives in a one-word GPU
//! buffer the trainer rewrites each step; the stream tells calls apart within a step. The backward
//! is the same call applied to dy: the mask is regenerated, never stored.
use super::dropout_threshold;
use super::elementwise::{launch, Params};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::Result;

/// z (+)= dropout(x). With p = 0 this is a copy (or an add with `accumulate`).
pub fn dropout(gpu: &Gpu, x: &Tensor, z: &Tensor, seed: &Tensor, p: f32, stream: u32, accumulate: bool) -> Result<Dispatch> {
    let (threshold, keep_scale) = dropout_threshold(p);
    let params = Params { threshold, keep_scale, stream, acc: accumulate as u32 as f32, ..Default::default() };
    launch(gpu, "dropout", x.numel(), x, None, z, Some(seed), params)
}

/// z = dropout(x) + residual: BERT's hidden dropout fused with the residual add. Its backward is
/// `dropout_backward` for the x branch; the residual branch receives dz unchanged.
pub fn dropout_add(gpu: &Gpu, x: &Tensor, residual: &Tensor, z: &Tensor, seed: &Tensor, p: f32, stream: u32) -> Result<Dispatch> {
    let (threshold, keep_scale) = dropout_threshold(p);
    let params = Params { threshold, keep_scale, stream, beta: 1.0, ..Default::default() };
    launch(gpu, "dropout", x.numel(), x, Some(residual), z, Some(seed), params)
}

/// Backward: dx (+)= dropout(dy) with the same seed, p and stream as the forward call.
pub fn dropout_backward(gpu: &Gpu, dy: &Tensor, dx: &Tensor, seed: &Tensor, p: f32, stream: u32, accumulate: bool) -> Result<Dispatch> {
    dropout(gpu, dy, dx, seed, p, stream, accumulate)
}

pub mod cpu {
    use crate::ops::{dropout_threshold, rng};
    pub fn dropout(x: &[f32], seed: u32, p: f32, stream: u32) -> Vec<f32> {
        let (t, s) = dropout_threshold(p);
        x.iter().enumerate().map(|(i, v)| if rng::keep(seed, stream, i as u32, t) { v * s } else { 0.0 }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn gpu_mask_equals_cpu_mask_and_backward_reuses_it() {
        let g = gpu();
        let n = 10_007;
        let mut r = Rng::new(4);
        let x: Vec<f32> = r.vec(n, 1.0).iter().map(|v| v + 2.0).collect(); // nonzero, so zeros = dropped
        let xt = g.upload_f32("x", &[n], &x).unwrap();
        let z = g.zeros("z", &[n], DType::F32).unwrap();
        let seed = g.upload_u32("seed", &[1], &[1234]).unwrap();
        g.run([&dropout(g, &xt, &z, &seed, 0.1, 7, false).unwrap()]).unwrap();
        let got = g.read_f32(&z).unwrap();
        assert_close("dropout", &got, &cpu::dropout(&x, 1234, 0.1, 7), 1e-6, 1e-6);
        let dropped = got.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
        // 10007 Bernoulli(0.1) draws: std 0.003, so 0.08..0.12 is > 6 sigma
        assert!((0.08..0.12).contains(&dropped), "dropped fraction {dropped}");
        // backward on dy = 1 gives exactly the mask * 1/(1-p)
        let ones = g.upload_f32("ones", &[n], &vec![1.0; n]).unwrap();
        let dx = g.zeros("dx", &[n], DType::F32).unwrap();
        g.run([&dropout_backward(g, &ones, &dx, &seed, 0.1, 7, false).unwrap()]).unwrap();
        let dxv = g.read_f32(&dx).unwrap();
        for i in 0..n {
            assert_eq!(dxv[i] == 0.0, got[i] == 0.0, "mask differs at {i}");
        }
        // another stream or seed gives another mask
        g.run([&dropout(g, &xt, &z, &seed, 0.1, 8, false).unwrap()]).unwrap();
        let other = g.read_f32(&z).unwrap();
        assert!(other.iter().zip(&got).any(|(a, b)| (*a == 0.0) != (*b == 0.0)));
        // fused residual: dropout(x) + x
        g.run([&dropout_add(g, &xt, &xt, &z, &seed, 0.1, 7).unwrap()]).unwrap();
        let want: Vec<f32> = got.iter().zip(&x).map(|(d, v)| d + v).collect();
        assert_close("dropout_add", &g.read_f32(&z).unwrap(), &want, 1e-6, 1e-6);
        // p = 0 is the identity
        g.run([&dropout(g, &xt, &z, &seed, 0.0, 7, false).unwrap()]).unwrap();
        assert_close("p=0", &g.read_f32(&z).unwrap(), &x, 0.0, 0.0);
    }
}
