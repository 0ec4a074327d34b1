//! LayerNorm over the last dimension, TF style (eps inside the sqrt, BERT's 1e-12), with its
//! backward (shaders/layernorm.wgsl). The forward saves (mean, rstd) per row for the backward.
use super::{check_len, grid_rows};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_off: u32,
    y_off: u32,
    g_off: u32,
    b_off: u32,
    st_off: u32,
    dy_off: u32,
    eps: f32,
    acc: f32,
    _p0: u32,
    _p1: u32,
}
super::uniform_layout!(Params { rows, cols, x_off, y_off, g_off, b_off, st_off, dy_off, eps, acc, _p0, _p1 });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite];

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new("layernorm", entry, BINDS)
}

fn checks(op: &'static str, rows: usize, cols: usize, x: &Tensor, stats: &Tensor) -> Result<()> {
    check_len(op, "x", x, rows * cols)?;
    check_len(op, "stats", stats, 2 * rows)
}

/// y = LN(x) * gamma + beta over rows of `cols`; stats [rows, 2] = (mean, rstd).
pub fn layernorm(gpu: &Gpu, x: &Tensor, gamma: &Tensor, beta: &Tensor, y: &Tensor, stats: &Tensor, rows: usize, cols: usize, eps: f32) -> Result<Dispatch> {
    const OP: &str = "layernorm";
    checks(OP, rows, cols, x, stats)?;
    check_len(OP, "y", y, rows * cols)?;
    check_len(OP, "gamma", gamma, cols)?;
    check_len(OP, "beta", beta, cols)?;
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        x_off: x.off(),
        y_off: y.off(),
        g_off: gamma.off(),
        b_off: beta.off(),
        st_off: stats.off(),
        eps,
        ..Default::default()
    };
    let d = gpu.dummy_read();
    let dw = gpu.dummy_write();
    Ok(Dispatch::new(gpu, &spec("ln_fwd"), &p, &[x, gamma, beta, d, y, stats, dw], grid_rows(rows))?
        .cost(8.0 * (rows * cols) as f64, 12.0 * (rows * cols) as f64))
}

/// [dx (+)= ..., dgamma += ..., dbeta += ...]: the input gradient (accumulated into dx when a
/// residual branch already wrote there) and the parameter gradients (always accumulated).
pub fn layernorm_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    rows: usize,
    cols: usize,
    accumulate_dx: bool,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "layernorm_backward";
    checks(OP, rows, cols, x, stats)?;
    check_len(OP, "dy", dy, rows * cols)?;
    check_len(OP, "dx", dx, rows * cols)?;
    check_len(OP, "dgamma", dgamma, cols)?;
    check_len(OP, "dbeta", dbeta, cols)?;
    let d = gpu.dummy_read();
    let dw = gpu.dummy_write();
    let base = Params { rows: rows as u32, cols: cols as u32, x_off: x.off(), st_off: stats.off(), dy_off: dy.off(), ..Default::default() };
    let p1 = Params { y_off: dx.off(), g_off: gamma.off(), acc: accumulate_dx as u32 as f32, ..base };
    let p2 = Params { y_off: dgamma.off(), b_off: dbeta.off(), acc: 1.0, ..base };
    let n = (rows * cols) as f64;
    Ok(vec![
        Dispatch::new(gpu, &spec("ln_bwd_dx"), &p1, &[x, gamma, d, dy, dx, stats, dw], grid_rows(rows))?.cost(10.0 * n, 16.0 * n),
        Dispatch::new(gpu, &spec("ln_bwd_params"), &p2, &[x, d, d, dy, dgamma, stats, dbeta], [(cols as u32).div_ceil(64), 1, 1])?.cost(5.0 * n, 8.0 * n),
    ])
}

pub mod cpu {
    /// Returns (y, stats) with stats = [mean, rstd] per row.
    pub fn layernorm(x: &[f32], g: &[f32], b: &[f32], cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
        let mut y = vec![0f32; x.len()];
        let mut st = Vec::new();
        for (xr, yr) in x.chunks(cols).zip(y.chunks_mut(cols)) {
            let mean = xr.iter().map(|v| *v as f64).sum::<f64>() / cols as f64;
            let var = xr.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for j in 0..cols {
                yr[j] = ((xr[j] as f64 - mean) * rstd * g[j] as f64 + b[j] as f64) as f32;
            }
            st.extend([mean as f32, rstd as f32]);
        }
        (y, st)
    }
    /// Returns (dx, dgamma, dbeta).
    pub fn layernorm_backward(x: &[f32], g: &[f32], dy: &[f32], cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut dx = vec![0f32; x.len()];
        let mut dg = vec![0f64; cols];
        let mut db = vec![0f64; cols];
        for ((xr, gr), dr) in x.chunks(cols).zip(dy.chunks(cols)).zip(dx.chunks_mut(cols)) {
            let mean = xr.iter().map(|v| *v as f64).sum::<f64>() / cols as f64;
            let var = xr.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            let xh: Vec<f64> = xr.iter().map(|v| (*v as f64 - mean) * rstd).collect();
            let dxh: Vec<f64> = (0..cols).map(|j| gr[j] as f64 * g[j] as f64).collect();
            let m1 = dxh.iter().sum::<f64>() / cols as f64;
            let m2 = dxh.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
            for j in 0..cols {
                dr[j] = (rstd * (dxh[j] - m1 - xh[j] * m2)) as f32;
                dg[j] += gr[j] as f64 * xh[j];
                db[j] += gr[j] as f64;
            }
        }
        (dx, dg.iter().map(|v| *v as f32).collect(), db.iter().map(|v| *v as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let (rows, cols, eps) = (3, 6, 1e-5);
        let mut r = Rng::new(11);
        let (x, g, b, w) = (r.vec(rows * cols, 2.0), r.vec(cols, 1.0), r.vec(cols, 1.0), r.vec(rows * cols, 1.0));
        let (dx, dg, db) = cpu::layernorm_backward(&x, &g, &w, cols, eps);
        let loss = |x: &[f32], g: &[f32], b: &[f32]| dot(&cpu::layernorm(x, g, b, cols, eps).0, &w);
        assert_close("ln dx fd", &dx, &numeric_grad(&x, 1e-3, |v| loss(v, &g, &b)), 2e-3, 2e-3);
        assert_close("ln dgamma fd", &dg, &numeric_grad(&g, 1e-3, |v| loss(&x, v, &b)), 2e-3, 2e-3);
        assert_close("ln dbeta fd", &db, &numeric_grad(&b, 1e-3, |v| loss(&x, &g, v)), 2e-3, 2e-3);
    }

    #[test]
    fn gpu_matches_cpu() {
        let gp = gpu();
        let mut r = Rng::new(12);
        // BERT's eps 1e-12; widths below, at and above the 256-thread workgroup
        for &(rows, cols) in &[(1, 1), (7, 33), (5, 300), (130, 64)] {
            let eps = 1e-12;
            let (x, g, b, dy) = (r.vec(rows * cols, 3.0), r.vec(cols, 1.0), r.vec(cols, 1.0), r.vec(rows * cols, 1.0));
            let up = |n: &str, s: &[usize], v: &[f32]| gp.upload_f32(n, s, v).unwrap();
            let (xt, gt, bt, dyt) = (up("x", &[rows, cols], &x), up("g", &[cols], &g), up("b", &[cols], &b), up("dy", &[rows, cols], &dy));
            let y = gp.zeros("y", &[rows, cols], DType::F32).unwrap();
            let st = gp.zeros("st", &[rows, 2], DType::F32).unwrap();
            let dx0 = r.vec(rows * cols, 1.0);
            let dx = up("dx", &[rows, cols], &dx0);
            let dg = gp.zeros("dg", &[cols], DType::F32).unwrap();
            let db = gp.zeros("db", &[cols], DType::F32).unwrap();
            let mut list = vec![layernorm(gp, &xt, &gt, &bt, &y, &st, rows, cols, eps).unwrap()];
            list.extend(layernorm_backward(gp, &xt, &gt, &st, &dyt, &dx, &dg, &db, rows, cols, true).unwrap());
            gp.run(&list).unwrap();
            let (yw, _) = cpu::layernorm(&x, &g, &b, cols, eps);
            // cols = 1: x - mean = 0 exactly, y = beta; stats in f32 limit accuracy to ~1e-5 relative
            assert_close("ln y", &gp.read_f32(&y).unwrap(), &yw, 2e-5, 1e-4);
            let (dxw, dgw, dbw) = cpu::layernorm_backward(&x, &g, &dy, cols, eps);
            let dxw: Vec<f32> = dxw.iter().zip(&dx0).map(|(a, b)| a + b).collect();
            assert_close("ln dx (accumulated)", &gp.read_f32(&dx).unwrap(), &dxw, 5e-5, 1e-4);
            assert_close("ln dgamma", &gp.read_f32(&dg).unwrap(), &dgw, 1e-4, 1e-4);
            assert_close("ln dbeta", &gp.read_f32(&db).unwrap(), &dbw, 1e-4, 1e-4);
        }
    }
}
