//! Row softmax over the last dimension and its backward (shaders/softmax.wgsl). Attention uses its
//! own fused mask + softmax + dropout kernel (ops/attention.rs); this one is the plain building block.
use super::{check_len, grid_rows};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_off: u32,
    y_off: u32,
    dy_off: u32,
    dx_off: u32,
    _p0: u32,
    _p1: u32,
}
super::uniform_layout!(Params { rows, cols, x_off, y_off, dy_off, dx_off, _p0, _p1 });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];

/// y = softmax(x) over rows of `cols`.
pub fn softmax(gpu: &Gpu, x: &Tensor, y: &Tensor, rows: usize, cols: usize) -> Result<Dispatch> {
    check_len("softmax", "x", x, rows * cols)?;
    check_len("softmax", "y", y, rows * cols)?;
    let p = Params { rows: rows as u32, cols: cols as u32, x_off: x.off(), y_off: y.off(), dy_off: 0, dx_off: 0, _p0: 0, _p1: 0 };
    Ok(Dispatch::new(gpu, &KernelSpec::new("softmax", "softmax_fwd", BINDS), &p, &[x, gpu.dummy_read(), y], grid_rows(rows))?
        .cost(5.0 * (rows * cols) as f64, 8.0 * (rows * cols) as f64))
}

/// dx = y * (dy - sum(y * dy)), y the forward output.
pub fn softmax_backward(gpu: &Gpu, y: &Tensor, dy: &Tensor, dx: &Tensor, rows: usize, cols: usize) -> Result<Dispatch> {
    for (w, t) in [("y", y), ("dy", dy), ("dx", dx)] {
        check_len("softmax_backward", w, t, rows * cols)?;
    }
    let p = Params { rows: rows as u32, cols: cols as u32, x_off: 0, y_off: y.off(), dy_off: dy.off(), dx_off: dx.off(), _p0: 0, _p1: 0 };
    Ok(Dispatch::new(gpu, &KernelSpec::new("softmax", "softmax_bwd", BINDS), &p, &[y, dy, dx], grid_rows(rows))?
        .cost(4.0 * (rows * cols) as f64, 12.0 * (rows * cols) as f64))
}

pub mod cpu {
    pub fn softmax(x: &[f32], cols: usize) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks(cols).zip(y.chunks_mut(cols)) {
            let mx = xr.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let s: f64 = xr.iter().map(|v| (*v as f64 - mx).exp()).sum();
            for (o, v) in yr.iter_mut().zip(xr) {
                *o = ((*v as f64 - mx).exp() / s) as f32;
            }
        }
        y
    }
    pub fn softmax_backward(y: &[f32], dy: &[f32], cols: usize) -> Vec<f32> {
        let mut dx = vec![0f32; y.len()];
        for ((yr, gr), dr) in y.chunks(cols).zip(dy.chunks(cols)).zip(dx.chunks_mut(cols)) {
            let dot: f64 = yr.iter().zip(gr).map(|(a, b)| *a as f64 * *b as f64).sum();
            for ((o, a), b) in dr.iter_mut().zip(yr).zip(gr) {
                *o = (*a as f64 * (*b as f64 - dot)) as f32;
            }
        }
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let mut r = Rng::new(8);
        let (x, w) = (r.vec(3 * 7, 3.0), r.vec(3 * 7, 1.0));
        let n = numeric_grad(&x, 1e-3, |xv| dot(&cpu::softmax(xv, 7), &w));
        assert_close("softmax' fd", &cpu::softmax_backward(&cpu::softmax(&x, 7), &w, 7), &n, 1e-3, 1e-3);
    }

    #[test]
    fn gpu_matches_cpu_including_rows_longer_than_a_workgroup() {
        let g = gpu();
        let mut r = Rng::new(9);
        for &(rows, cols) in &[(1, 1), (3, 7), (5, 257), (2, 1000)] {
            let (x, dy) = (r.vec(rows * cols, 10.0), r.vec(rows * cols, 1.0));
            let xt = g.upload_f32("x", &[rows, cols], &x).unwrap();
            let dyt = g.upload_f32("dy", &[rows, cols], &dy).unwrap();
            let y = g.zeros("y", &[rows, cols], DType::F32).unwrap();
            let dx = g.zeros("dx", &[rows, cols], DType::F32).unwrap();
            g.run([&softmax(g, &xt, &y, rows, cols).unwrap(), &softmax_backward(g, &y, &dyt, &dx, rows, cols).unwrap()]).unwrap();
            let yw = cpu::softmax(&x, cols);
            assert_close("softmax", &g.read_f32(&y).unwrap(), &yw, 1e-6, 1e-5);
            assert_close("softmax_bwd", &g.read_f32(&dx).unwrap(), &cpu::softmax_backward(&yw, &dy, cols), 1e-6, 1e-4);
        }
    }
}
