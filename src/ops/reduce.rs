//! Deterministic reductions (shaders/reduce.wgsl): column sums (bias gradients), a scalar sum
//! (losses), and per-chunk sums of squares (the first half of the global gradient norm).
use super::check_len;
use crate::gpu::{grid, Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_off: u32,
    o_off: u32,
    alpha: f32,
    acc: f32,
    chunk: u32,
    rs: u32,
}
super::uniform_layout!(Params { rows, cols, x_off, o_off, alpha, acc, chunk, rs });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::ReadWrite];

/// out[c] = (accumulate ? out[c] : 0) + sum_r x[r, c].
pub fn colsum(gpu: &Gpu, x: &Tensor, out: &Tensor, rows: usize, cols: usize, accumulate: bool) -> Result<Dispatch> {
    colsum_strided(gpu, x, 0, cols, out, rows, cols, accumulate)
}

/// out[c] (+)= sum_r x[off + r * rs + c] for c < cols: column sums of a block of a wider buffer.
pub fn colsum_strided(gpu: &Gpu, x: &Tensor, off: usize, rs: usize, out: &Tensor, rows: usize, cols: usize, accumulate: bool) -> Result<Dispatch> {
    crate::ensure_shape!("colsum", rs >= cols && rows > 0, "row stride {rs} < cols {cols} or no rows");
    check_len("colsum", "x", x, off + (rows - 1) * rs + cols)?;
    check_len("colsum", "out", out, cols)?;
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        x_off: x.off() + off as u32,
        o_off: out.off(),
        alpha: 1.0,
        acc: accumulate as u32 as f32,
        chunk: 0,
        rs: rs as u32,
    };
    let spec = KernelSpec::new("reduce", "colsum", BINDS);
    Ok(Dispatch::new(gpu, &spec, &p, &[x, out], [(cols as u32).div_ceil(64), 1, 1])?.cost(0.0, 4.0 * (rows * cols) as f64))
}

/// out[0] = alpha * sum(x[..n]). One workgroup: for losses and other short vectors.
pub fn sum(gpu: &Gpu, x: &Tensor, n: usize, out: &Tensor, out_off: usize, alpha: f32) -> Result<Dispatch> {
    check_len("sum", "x", x, n)?;
    check_len("sum", "out", out, out_off + 1)?;
    let p = Params { rows: n as u32, cols: 1, x_off: x.off(), o_off: out.off() + out_off as u32, alpha, acc: 0.0, chunk: 0, rs: 0 };
    Dispatch::new(gpu, &KernelSpec::new("reduce", "sum", BINDS), &p, &[x, out], [1, 1, 1])
}

/// Elements per workgroup in `sumsq_partial`.
pub const SUMSQ_CHUNK: usize = 8192;

/// Number of partial sums `sumsq_partial` writes for n elements.
pub fn sumsq_parts(n: usize) -> usize {
    n.div_ceil(SUMSQ_CHUNK).max(1)
}

/// part[part_off + w] = sum of x^2 over chunk w of x (w < sumsq_parts(n)).
pub fn sumsq_partial(gpu: &Gpu, x: &Tensor, part: &Tensor, part_off: usize) -> Result<Dispatch> {
    let n = x.numel();
    check_len("sumsq", "partials", part, part_off + sumsq_parts(n))?;
    let p = Params { rows: n as u32, cols: 1, x_off: x.off(), o_off: part.off() + part_off as u32, alpha: 1.0, acc: 0.0, chunk: SUMSQ_CHUNK as u32, rs: 0 };
    Ok(Dispatch::new(gpu, &KernelSpec::new("reduce", "sumsq_partial", BINDS), &p, &[x, part], grid(sumsq_parts(n) as u32))?
        .cost(2.0 * n as f64, 4.0 * n as f64))
}

pub mod cpu {
    pub fn colsum(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols).map(|c| (0..rows).map(|r| x[r * cols + c] as f64).sum::<f64>() as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn colsum_sum_and_sumsq_match_cpu() {
        let g = gpu();
        let mut r = Rng::new(3);
        for &(rows, cols) in &[(1, 1), (7, 33), (129, 65), (300, 3)] {
            let x = r.vec(rows * cols, 1.0);
            let xt = g.upload_f32("x", &[rows, cols], &x).unwrap();
            let init = r.vec(cols, 1.0);
            let out = g.upload_f32("o", &[cols], &init).unwrap();
            g.run([&colsum(g, &xt, &out, rows, cols, true).unwrap()]).unwrap();
            let want: Vec<f32> = cpu::colsum(&x, rows, cols).iter().zip(&init).map(|(a, b)| a + b).collect();
            // summation over <= 300 terms of size 1: 1e-5 * rows absolute
            assert_close("colsum", &g.read_f32(&out).unwrap(), &want, 1e-5 * rows as f32, 1e-5);
        }
        // a column block of a wider buffer: columns 5..9 of a [11, 17] matrix
        let x = r.vec(11 * 17, 1.0);
        let xt = g.upload_f32("x", &[11, 17], &x).unwrap();
        let out = g.zeros("o", &[4], DType::F32).unwrap();
        g.run([&colsum_strided(g, &xt, 5, 17, &out, 11, 4, false).unwrap()]).unwrap();
        let want: Vec<f32> = (0..4).map(|c| (0..11).map(|rr| x[rr * 17 + 5 + c]).sum()).collect();
        assert_close("colsum strided", &g.read_f32(&out).unwrap(), &want, 1e-5, 1e-5);
        // sum and sum of squares over a vector longer than one chunk
        let n = SUMSQ_CHUNK * 2 + 77;
        let x = r.vec(n, 1.0);
        let xt = g.upload_f32("x", &[n], &x).unwrap();
        let s = g.zeros("s", &[2], DType::F32).unwrap();
        let parts = g.zeros("p", &[sumsq_parts(n)], DType::F32).unwrap();
        g.run([&sum(g, &xt, n, &s, 1, 0.5).unwrap(), &sumsq_partial(g, &xt, &parts, 0).unwrap()]).unwrap();
        let want_sum = 0.5 * x.iter().map(|v| *v as f64).sum::<f64>();
        let got = g.read_f32(&s).unwrap();
        assert!((got[1] as f64 - want_sum).abs() < 1e-3, "sum {} vs {}", got[1], want_sum);
        let want_sq: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
        let got_sq: f64 = g.read_f32(&parts).unwrap().iter().map(|v| *v as f64).sum();
        assert!((got_sq - want_sq).abs() < 1e-4 * want_sq, "sumsq {got_sq} vs {want_sq}");
    }
}
