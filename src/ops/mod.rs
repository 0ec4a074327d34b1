//! One module per kernel family. Each has: shape checks and the launcher (returning prepared
//! `Dispatch`es), the backward launcher next to the forward, a plain-loop CPU reference (`cpu`),
//! and tests at the bottom: GPU vs CPU on awkward shapes, CPU backward vs finite differences.
pub mod attention;
pub mod bce;
pub mod cache;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod matmul_coop;
pub mod optim;
pub mod reduce;
pub mod rows;
pub mod softmax;

#[cfg(test)]
pub(crate) mod testutil;

/// Workgroup count for one thread per element at 256 threads per workgroup, split over x/y.
pub(crate) fn grid_elems(n: usize) -> [u32; 3] {
    crate::gpu::grid((n as u32).div_ceil(256))
}

/// Workgroup count for one workgroup per row, split over x/y.
pub(crate) fn grid_rows(rows: usize) -> [u32; 3] {
    crate::gpu::grid(rows as u32)
}

/// Errors if `t` (from `off`, `n` elements) would be read past its end.
pub(crate) fn check_len(op: &'static str, what: &str, t: &crate::gpu::Tensor, n: usize) -> crate::Result<()> {
    if n > t.numel() {
        return Err(crate::Error::Shape { op, msg: format!("{what} needs {n} elements, tensor {:?} has {}", t.shape, t.numel()) });
    }
    Ok(())
}

/// Dropout probability -> the u32 threshold the kernels compare the RNG against, and 1/(1-p).
pub fn dropout_threshold(p: f32) -> (u32, f32) {
    if p <= 0.0 {
        return (0, 1.0);
    }
    let t = ((p as f64) * 4294967296.0).min(4294967295.0) as u32;
    (t.max(1), 1.0 / (1.0 - p))
}

/// CPU mirror of common.wgsl's counter RNG (bit-exact).
pub mod rng {
    pub fn hash_u32(x: u32) -> u32 {
        let mut v = x;
        v ^= v >> 16;
        v = v.wrapping_mul(0x7feb352d);
        v ^= v >> 15;
        v = v.wrapping_mul(0x846ca68b);
        v ^= v >> 16;
        v
    }
    pub fn rng_u32(seed: u32, stream: u32, idx: u32) -> u32 {
        hash_u32(idx ^ hash_u32(stream ^ hash_u32(seed)))
    }
    pub fn keep(seed: u32, stream: u32, idx: u32, threshold: u32) -> bool {
        threshold == 0 || rng_u32(seed, stream, idx) >= threshold
    }
}

/// CPU GELU (erf form) and its derivative, in f64 for a reference tighter than the kernels.
pub fn gelu_cpu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}
pub fn gelu_grad_cpu(x: f32) -> f32 {
    let x = x as f64;
    let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + x * pdf) as f32
}
