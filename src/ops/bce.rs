//! Binary cross-entropy with logits (shaders/bce.wgsl): elementwise loss, summed with a scale by
//! reduce::sum — mean (scale 1/n) or VQA's sum over answers averaged over questions (scale 1/rows).
use super::{check_len, grid_elems};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    x_off: u32,
    y_off: u32,
    o_off: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}
super::uniform_layout!(Params { n, x_off, y_off, o_off, scale, _p0, _p1, _p2 });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];

/// [elementwise losses into `scratch`, out[out_off] = scale * sum].
pub fn forward(gpu: &Gpu, logits: &Tensor, targets: &Tensor, scratch: &Tensor, out: &Tensor, out_off: usize, scale: f32) -> Result<Vec<Dispatch>> {
    let n = logits.numel();
    check_len("bce", "targets", targets, n)?;
    check_len("bce", "scratch", scratch, n)?;
    let p = Params { n: n as u32, x_off: logits.off(), y_off: targets.off(), o_off: scratch.off(), scale, _p0: 0, _p1: 0, _p2: 0 };
    Ok(vec![
        Dispatch::new(gpu, &KernelSpec::new("bce", "bce_fwd", BINDS), &p, &[logits, targets, scratch], grid_elems(n))?,
        super::reduce::sum(gpu, scratch, n, out, out_off, scale)?,
    ])
}

/// dlogits = (sigmoid(x) - y) * scale.
pub fn backward(gpu: &Gpu, logits: &Tensor, targets: &Tensor, dlogits: &Tensor, scale: f32) -> Result<Dispatch> {
    let n = logits.numel();
    check_len("bce_backward", "targets", targets, n)?;
    check_len("bce_backward", "dlogits", dlogits, n)?;
    let p = Params { n: n as u32, x_off: logits.off(), y_off: targets.off(), o_off: dlogits.off(), scale, _p0: 0, _p1: 0, _p2: 0 };
    Dispatch::new(gpu, &KernelSpec::new("bce", "bce_bwd", BINDS), &p, &[logits, targets, dlogits], grid_elems(n))
}

/// Rewrites the gradient scale of a prepared `backward` dispatch (a changing loss scale).
pub fn set_scale(gpu: &Gpu, backward: &Dispatch, scale: f32) {
    gpu.queue.write_buffer(&backward.params, std::mem::offset_of!(Params, scale) as u64, bytemuck::bytes_of(&scale));
}

pub mod cpu {
    pub fn forward(x: &[f32], y: &[f32], scale: f32) -> f64 {
        x.iter()
            .zip(y)
            .map(|(&v, &t)| {
                let v = v as f64;
                v.max(0.0) - v * t as f64 + (-v.abs()).exp().ln_1p()
            })
            .sum::<f64>()
            * scale as f64
    }
    pub fn backward(x: &[f32], y: &[f32], scale: f32) -> Vec<f32> {
        x.iter().zip(y).map(|(&v, &t)| ((1.0 / (1.0 + (-(v as f64)).exp()) - t as f64) * scale as f64) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let mut r = Rng::new(60);
        let x = r.vec(12, 5.0);
        let y: Vec<f32> = (0..12).map(|_| r.uniform()).collect(); // soft targets, as VQA's scores
        let n = numeric_grad(&x, 1e-3, |v| cpu::forward(v, &y, 0.25));
        assert_close("bce fd", &cpu::backward(&x, &y, 0.25), &n, 1e-4, 1e-3);
    }

    #[test]
    fn gpu_matches_cpu_with_extreme_logits() {
        let g = gpu();
        let mut r = Rng::new(61);
        let n = 777;
        let mut x = r.vec(n, 10.0);
        x[0] = 100.0; // exp overflow territory for a naive formula
        x[1] = -100.0;
        let y: Vec<f32> = (0..n).map(|_| r.uniform()).collect();
        let scale = 1.0 / 7.0;
        let (xt, yt) = (g.upload_f32("x", &[n], &x).unwrap(), g.upload_f32("y", &[n], &y).unwrap());
        let (sc, out, dx) = (g.zeros("s", &[n], DType::F32).unwrap(), g.zeros("o", &[1], DType::F32).unwrap(), g.zeros("dx", &[n], DType::F32).unwrap());
        let mut list = forward(g, &xt, &yt, &sc, &out, 0, scale).unwrap();
        list.push(backward(g, &xt, &yt, &dx, scale).unwrap());
        g.run(&list).unwrap();
        let want = cpu::forward(&x, &y, scale);
        let got = g.read_f32(&out).unwrap()[0] as f64;
        assert!((got - want).abs() < 1e-4 * want.abs(), "bce {got} vs {want}");
        assert_close("bce dx", &g.read_f32(&dx).unwrap(), &cpu::backward(&x, &y, scale), 1e-6, 1e-5);
    }
}
