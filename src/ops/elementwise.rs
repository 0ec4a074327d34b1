//! Elementwise kernels (shaders/elementwise.wgsl): GELU and tanh with their backwards, residual add
//! (`axpby`), gradient accumulation (`acc_into`). Dropout lives in ops/dropout.rs on the same shader.
use super::{check_len, grid_elems};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub z_off: u32,
    pub alpha: f32,
    pub beta: f32,
    pub acc: f32,
    pub keep_scale: f32,
    pub threshold: u32,
    pub stream: u32,
    pub _p0: u32,
    pub _p1: u32,
}
super::uniform_layout!(Params { n, x_off, y_off, z_off, alpha, beta, acc, keep_scale, threshold, stream, _p0, _p1 });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::Read];

/// One elementwise dispatch over n elements: x, y read (None = unused), z written, seed for dropout.
pub(crate) fn launch(
    gpu: &Gpu,
    entry: &'static str,
    n: usize,
    x: &Tensor,
    y: Option<&Tensor>,
    z: &Tensor,
    seed: Option<&Tensor>,
    mut p: Params,
) -> Result<Dispatch> {
    if entry != "fill" && entry != "fill_normal" {
        check_len(entry, "x", x, n)?;
    }
    check_len(entry, "z", z, n)?;
    if let Some(y) = y {
        check_len(entry, "y", y, n)?;
    }
    p.n = n as u32;
    p.x_off = x.off();
    p.y_off = y.map_or(0, |t| t.off());
    p.z_off = z.off();
    let dummy = gpu.dummy_read();
    let spec = KernelSpec::new("elementwise", entry, BINDS);
    let reads = 1 + y.is_some() as usize + (p.acc != 0.0) as usize;
    Ok(Dispatch::new(gpu, &spec, &p, &[x, y.unwrap_or(dummy), z, seed.unwrap_or(dummy)], grid_elems(n))?.cost(n as f64, 4.0 * (reads + 1) as f64 * n as f64))
}

fn acc(accumulate: bool) -> f32 {
    accumulate as u32 as f32
}

/// z = gelu(x)
pub fn gelu(gpu: &Gpu, x: &Tensor, z: &Tensor) -> Result<Dispatch> {
    launch(gpu, "gelu_fwd", x.numel(), x, None, z, None, Params::default())
}

/// dx (+)= dy * gelu'(x), x the GELU input.
pub fn gelu_backward(gpu: &Gpu, x: &Tensor, dy: &Tensor, dx: &Tensor, accumulate: bool) -> Result<Dispatch> {
    launch(gpu, "gelu_bwd", x.numel(), x, Some(dy), dx, None, Params { acc: acc(accumulate), ..Default::default() })
}

/// z = tanh(x)
pub fn tanh(gpu: &Gpu, x: &Tensor, z: &Tensor) -> Result<Dispatch> {
    launch(gpu, "tanh_fwd", x.numel(), x, None, z, None, Params::default())
}

/// dx (+)= dy * (1 - y^2), y the tanh output.
pub fn tanh_backward(gpu: &Gpu, y: &Tensor, dy: &Tensor, dx: &Tensor, accumulate: bool) -> Result<Dispatch> {
    launch(gpu, "tanh_bwd", y.numel(), y, Some(dy), dx, None, Params { acc: acc(accumulate), ..Default::default() })
}

/// z = relu(x)
pub fn relu(gpu: &Gpu, x: &Tensor, z: &Tensor) -> Result<Dispatch> {
    launch(gpu, "relu_fwd", x.numel(), x, None, z, None, Params::default())
}

/// dx (+)= dy * (x > 0), x the ReLU input.
pub fn relu_backward(gpu: &Gpu, x: &Tensor, dy: &Tensor, dx: &Tensor, accumulate: bool) -> Result<Dispatch> {
    launch(gpu, "relu_bwd", x.numel(), x, Some(dy), dx, None, Params { acc: acc(accumulate), ..Default::default() })
}

/// z = alpha x + beta y. The residual add is alpha = beta = 1; its backward passes dz to both
/// inputs unchanged (so it needs no kernel of its own: the gradient buffer is shared or accumulated).
pub fn axpby(gpu: &Gpu, alpha: f32, x: &Tensor, beta: f32, y: &Tensor, z: &Tensor) -> Result<Dispatch> {
    launch(gpu, "axpby", x.numel(), x, Some(y), z, None, Params { alpha, beta, ..Default::default() })
}

/// z = beta z + alpha x (x and z distinct buffers).
pub fn acc_into(gpu: &Gpu, alpha: f32, x: &Tensor, beta: f32, z: &Tensor) -> Result<Dispatch> {
    launch(gpu, "acc_into", x.numel(), x, None, z, None, Params { alpha, beta, ..Default::default() })
}

/// z = value (zeroes gradient buffers inside the step's compute pass).
pub fn fill(gpu: &Gpu, z: &Tensor, value: f32) -> Result<Dispatch> {
    launch(gpu, "fill", z.numel(), gpu.dummy_read(), None, z, None, Params { alpha: value, ..Default::default() })
}

/// z = std * N(0, 1), a function of (seed, stream, element): the same on every run and adapter up
/// to the last bits of log/cos.
pub fn fill_normal(gpu: &Gpu, z: &Tensor, std: f32, seed: u32, stream: u32) -> Result<Dispatch> {
    launch(gpu, "fill_normal", z.numel(), gpu.dummy_read(), None, z, None, Params { alpha: std, stream, _p0: seed, ..Default::default() })
}

pub mod cpu {
    /// `fill_normal` in f64.
    pub fn normal(n: usize, std: f32, seed: u32, stream: u32) -> Vec<f32> {
        use crate::ops::rng::rng_u32;
        (0..n as u32)
            .map(|i| {
                let u1 = ((rng_u32(seed, stream, 2 * i) >> 8) as f64 + 1.0) / 16777216.0;
                let u2 = (rng_u32(seed, stream, 2 * i + 1) >> 8) as f64 / 16777216.0;
                (std as f64 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    }
    pub fn gelu(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&v| crate::ops::gelu_cpu(v)).collect()
    }
    pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
        x.iter().zip(dy).map(|(&v, &g)| g * crate::ops::gelu_grad_cpu(v)).collect()
    }
    pub fn relu(x: &[f32]) -> Vec<f32> {
        x.iter().map(|v| v.max(0.0)).collect()
    }
    pub fn relu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
        x.iter().zip(dy).map(|(&v, &g)| if v > 0.0 { g } else { 0.0 }).collect()
    }
    pub fn tanh(x: &[f32]) -> Vec<f32> {
        x.iter().map(|v| v.tanh()).collect()
    }
    pub fn tanh_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
        y.iter().zip(dy).map(|(&t, &g)| g * (1.0 - t * t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn cpu_backwards_match_finite_differences() {
        let mut r = Rng::new(1);
        let x = r.vec(40, 4.0);
        let w = r.vec(40, 1.0);
        let n = numeric_grad(&x, 1e-3, |xv| dot(&cpu::gelu(xv), &w));
        assert_close("gelu' fd", &cpu::gelu_backward(&x, &w), &n, 2e-3, 2e-3);
        // x in [-4, 4] stays > 1e-3 away from relu's kink except with negligible probability
        let n = numeric_grad(&x, 1e-4, |xv| dot(&cpu::relu(xv), &w));
        assert_close("relu' fd", &cpu::relu_backward(&x, &w), &n, 2e-3, 2e-3);
        let n = numeric_grad(&x, 1e-3, |xv| dot(&cpu::tanh(xv), &w));
        assert_close("tanh' fd", &cpu::tanh_backward(&cpu::tanh(&x), &w), &n, 2e-3, 2e-3);
    }

    #[test]
    fn gpu_matches_cpu() {
        let g = gpu();
        let mut r = Rng::new(2);
        // 70000 elements: more than 256 * 256, so the grid spans several rows of workgroups
        for &n in &[1usize, 7, 257, 70_000] {
            let x = r.vec(n, 5.0);
            let dy = r.vec(n, 1.0);
            let base = r.vec(n, 1.0);
            let xt = g.upload_f32("x", &[n], &x).unwrap();
            let dyt = g.upload_f32("dy", &[n], &dy).unwrap();
            let z = g.zeros("z", &[n], crate::gpu::DType::F32).unwrap();
            let acc = g.upload_f32("acc", &[n], &base).unwrap();
            // A&S erf: 1.5e-7 absolute in erf, times |x| <= 5 -> < 1e-6 in GELU
            g.run([&gelu(g, &xt, &z).unwrap()]).unwrap();
            assert_close("gelu", &g.read_f32(&z).unwrap(), &cpu::gelu(&x), 2e-6, 1e-5);
            g.run([&gelu_backward(g, &xt, &dyt, &acc, true).unwrap()]).unwrap();
            let want: Vec<f32> = cpu::gelu_backward(&x, &dy).iter().zip(&base).map(|(a, b)| a + b).collect();
            assert_close("gelu_bwd acc", &g.read_f32(&acc).unwrap(), &want, 2e-6, 1e-5);
            g.run([&tanh(g, &xt, &z).unwrap()]).unwrap();
            let t = cpu::tanh(&x);
            assert_close("tanh", &g.read_f32(&z).unwrap(), &t, 1e-6, 1e-5);
            let tt = g.upload_f32("t", &[n], &t).unwrap();
            g.run([&tanh_backward(g, &tt, &dyt, &z, false).unwrap()]).unwrap();
            assert_close("tanh_bwd", &g.read_f32(&z).unwrap(), &cpu::tanh_backward(&t, &dy), 1e-6, 1e-5);
            g.run([&relu(g, &xt, &z).unwrap()]).unwrap();
            assert_close("relu", &g.read_f32(&z).unwrap(), &cpu::relu(&x), 0.0, 0.0);
            g.run([&relu_backward(g, &xt, &dyt, &z, false).unwrap()]).unwrap();
            assert_close("relu_bwd", &g.read_f32(&z).unwrap(), &cpu::relu_backward(&x, &dy), 0.0, 0.0);
            g.run([&axpby(g, 2.0, &xt, -1.0, &dyt, &z).unwrap()]).unwrap();
            let want: Vec<f32> = x.iter().zip(&dy).map(|(a, b)| 2.0 * a - b).collect();
            assert_close("axpby", &g.read_f32(&z).unwrap(), &want, 1e-6, 1e-6);
            g.run([&acc_into(g, 0.5, &dyt, 1.0, &z).unwrap()]).unwrap();
            let want: Vec<f32> = want.iter().zip(&dy).map(|(a, b)| a + 0.5 * b).collect();
            assert_close("acc_into", &g.read_f32(&z).unwrap(), &want, 1e-6, 1e-6);
            g.run([&fill(g, &z, 0.25).unwrap()]).unwrap();
            assert!(g.read_f32(&z).unwrap().iter().all(|v| *v == 0.25));
        }
    }

    #[test]
    fn same_buffer_read_and_write_is_a_clear_error() {
        let g = gpu();
        let x = g.zeros("x", &[8], crate::gpu::DType::F32).unwrap();
        let e = gelu(g, &x, &x).err().expect("must fail");
        assert!(e.to_string().contains("bound both read-only"), "{e}");
    }

    #[test]
    fn fill_normal_matches_cpu_and_is_standard_normal() {
        let g = gpu();
        let n = 200_001;
        let z = g.zeros("z", &[n + 5], crate::gpu::DType::F32).unwrap();
        let view = z.view(5, &[n]).unwrap();
        g.run([&fill_normal(g, &view, 0.02, 42, 7).unwrap()]).unwrap();
        let all = g.read_f32(&z).unwrap();
        assert!(all[..5].iter().all(|v| *v == 0.0), "wrote before the view");
        let got = &all[5..];
        // GPU log/cos differ from f64 in the last bits only
        assert_close("fill_normal", got, &cpu::normal(n, 0.02, 42, 7), 1e-7, 1e-4);
        let mean = got.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        let sd = (got.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!(mean.abs() < 0.02 * 0.01 && (sd / 0.02 - 1.0).abs() < 0.01, "mean {mean}, std {sd}");
        // another stream is another draw
        g.run([&fill_normal(g, &view, 0.02, 42, 8).unwrap()]).unwrap();
        assert_ne!(&g.read_f32(&z).unwrap()[5..15], &got[..10]);
    }
}
