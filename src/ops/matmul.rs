//! Batched, strided matmul with bias / GELU / tanh epilogues (shaders/matmul.wgsl), and `Linear`,
//! the PyTorch-layout (weight [out, in]) forward and backward built from it.
//! Backward of C = A B: dA = dC B^T, dB = A^T dC — the same kernel with swapped strides.
use super::check_len;
use crate::ensure_shape;
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

/// Which kernel: `T64` (64x64 tile, 4x4 per thread) or `T128` (128x128, 8x8 per thread, for large
/// M and N). `Auto` takes T128 unless its padded output area is more than twice the 64 tile's: on
/// lavapipe it is 2.5-3x faster per useful FLOP even at Oscar's 120 rows (6 % of a 128-row tile
/// empty), and for the masked-token decoder (80 x 30522 x 64 and its 30522 x 64 weight gradient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    Auto,
    T64,
    T128,
}

/// What the products are computed in. `F16`: A and B rounded to f16, products accumulated in f32
/// (PyTorch autocast's contract); on cooperative matrices where the adapter has them
/// (shaders/matmul_coop.wgsl), else in the fp32 kernels with ROUND_F16. Storage stays f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Gelu,
    Tanh,
}

/// Where a matrix lives inside a buffer: element (r, c) of batch (b1, b2) is at
/// `off + b1*bs[0] + b2*bs[1] + r*rs + c*cs`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
    pub bs: [usize; 2],
}

impl Layout {
    /// Row-major rows x cols, batches packed one after another.
    pub fn rm(rows: usize, cols: usize) -> Layout {
        Layout { off: 0, rs: cols, cs: 1, bs: [rows * cols, 0] }
    }
    /// The transpose of this view (no data moves).
    pub fn t(self) -> Layout {
        Layout { rs: self.cs, cs: self.rs, ..self }
    }
    pub fn at(self, off: usize) -> Layout {
        Layout { off, ..self }
    }
    pub fn batch(self, bs1: usize, bs2: usize) -> Layout {
        Layout { bs: [bs1, bs2], ..self }
    }
    fn last(&self, rows: usize, cols: usize, batch: [usize; 2]) -> usize {
        self.off + (batch[0] - 1) * self.bs[0] + (batch[1] - 1) * self.bs[1] + (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// C(m,n) = alpha * A(m,k) B(k,n) [+ bias(n)] [pre = value] [act] [+ beta * C], over batch[0]*batch[1].
#[derive(Clone, Copy, Debug)]
pub struct MatmulDesc {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: [usize; 2],
    pub a: Layout,
    pub b: Layout,
    pub c: Layout,
    pub bias_off: Option<usize>,
    pub pre_off: Option<usize>,
    pub act: Act,
    pub alpha: f32,
    pub beta: f32,
    pub tile: Tile,
    pub precision: Precision,
}

impl MatmulDesc {
    /// Plain row-major C = A B.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        MatmulDesc {
            m,
            n,
            k,
            batch: [1, 1],
            a: Layout::rm(m, k),
            b: Layout::rm(k, n),
            c: Layout::rm(m, n),
            bias_off: None,
            pre_off: None,
            act: Act::None,
            alpha: 1.0,
            beta: 0.0,
            tile: Tile::Auto,
            precision: Precision::F32,
        }
    }
    /// The kernel `matmul` will use.
    pub fn chosen_tile(&self) -> Tile {
        match self.tile {
            // the 128 tile does 2.5-3x the useful FLOP/s of the 64 tile on lavapipe (README), so it
            // wins while padding to it costs at most twice the padded 64-tile work
            Tile::Auto if padded(self.m, self.n, 128) <= 2 * padded(self.m, self.n, 64) => Tile::T128,
            Tile::Auto => Tile::T64,
            t => t,
        }
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch[0] * self.batch[1]) as f64
    }
}

fn padded(m: usize, n: usize, tile: usize) -> usize {
    m.div_ceil(tile) * n.div_ceil(tile) * tile * tile
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32, n: u32, k: u32, batch2: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs1: u32,
    a_bs2: u32, b_off: u32, b_rs: u32, b_cs: u32,
    b_bs1: u32, b_bs2: u32, c_off: u32, c_rs: u32,
    c_bs1: u32, c_bs2: u32, bias_off: u32, pre_off: u32,
    alpha: f32, beta: f32, _p0: u32, _p1: u32,
}

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite];

/// Prepares one matmul dispatch. Offsets in `d` are relative to each tensor's own offset.
pub fn matmul(gpu: &Gpu, d: &MatmulDesc, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>, pre: Option<&Tensor>) -> Result<Dispatch> {
    let coop = d.precision == Precision::F16 && super::matmul_coop::usable(gpu);
    build(gpu, d, a, b, c, bias, pre, coop)
}

/// `matmul` with the kernel choice made: `coop` takes the cooperative-matrix kernel (F16 only).
pub(crate) fn build(gpu: &Gpu, d: &MatmulDesc, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>, pre: Option<&Tensor>, coop: bool) -> Result<Dispatch> {
    const OP: &str = "matmul";
    ensure_shape!(OP, d.m > 0 && d.n > 0 && d.k > 0 && d.batch[0] > 0 && d.batch[1] > 0, "empty matmul {:?}", (d.m, d.n, d.k, d.batch));
    ensure_shape!(OP, d.c.cs == 1, "C must have unit column stride");
    check_len(OP, "A", a, d.a.last(d.m, d.k, d.batch) + 1)?;
    check_len(OP, "B", b, d.b.last(d.k, d.n, d.batch) + 1)?;
    check_len(OP, "C", c, d.c.last(d.m, d.n, d.batch) + 1)?;
    ensure_shape!(OP, bias.is_some() == d.bias_off.is_some(), "bias tensor and bias_off must come together");
    ensure_shape!(OP, pre.is_some() == d.pre_off.is_some(), "pre tensor and pre_off must come together");
    if let (Some(t), Some(o)) = (bias, d.bias_off) {
        check_len(OP, "bias", t, o + d.n)?;
    }
    if let (Some(t), Some(o)) = (pre, d.pre_off) {
        check_len(OP, "pre", t, o + d.c.last(d.m, d.n, d.batch) - d.c.off + 1)?;
    }
    let u = |x: usize| x as u32;
    let p = Params {
        m: u(d.m), n: u(d.n), k: u(d.k), batch2: u(d.batch[1]),
        a_off: a.off() + u(d.a.off), a_rs: u(d.a.rs), a_cs: u(d.a.cs), a_bs1: u(d.a.bs[0]),
        a_bs2: u(d.a.bs[1]), b_off: b.off() + u(d.b.off), b_rs: u(d.b.rs), b_cs: u(d.b.cs),
        b_bs1: u(d.b.bs[0]), b_bs2: u(d.b.bs[1]), c_off: c.off() + u(d.c.off), c_rs: u(d.c.rs),
        c_bs1: u(d.c.bs[0]), c_bs2: u(d.c.bs[1]),
        bias_off: bias.map_or(0, |t| t.off() + u(d.bias_off.unwrap())),
        pre_off: pre.map_or(0, |t| t.off() + u(d.pre_off.unwrap())),
        alpha: d.alpha, beta: d.beta, _p0: 0, _p1: 0,
    };
    let (shader, entry, tile) = match d.chosen_tile() {
        _ if coop => ("matmul_coop", "matmul_coop", 64),
        Tile::T128 => ("matmul", "matmul128", 128),
        _ => ("matmul", "matmul", 64),
    };
    let mut spec = KernelSpec::new(shader, entry, BINDS)
        .constant("HAS_BIAS", bias.is_some() as u32 as f64)
        .constant("STORE_PRE", pre.is_some() as u32 as f64)
        .constant("ACT", match d.act { Act::None => 0.0, Act::Gelu => 1.0, Act::Tanh => 2.0 });
    if d.precision == Precision::F16 && !coop {
        spec = spec.constant("ROUND_F16", 1.0);
    }
    let groups = [u(d.n.div_ceil(tile)), u(d.m.div_ceil(tile)), u(d.batch[0] * d.batch[1])];
    let bias = bias.unwrap_or(gpu.dummy_read());
    let pre = pre.unwrap_or(gpu.dummy_write());
    let bytes = 4.0 * (d.m * d.k + d.k * d.n + d.m * d.n) as f64 * (d.batch[0] * d.batch[1]) as f64;
    Ok(Dispatch::new(gpu, &spec, &p, &[a, b, c, bias, pre], groups)?.cost(d.flops(), bytes))
}

/// nn.Linear over `rows` rows: y = x W^T + b with W [out, inp] (PyTorch layout).
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub rows: usize,
    pub inp: usize,
    pub out: usize,
    /// For all three products (forward, dx, dW), as autocast does.
    pub precision: Precision,
}

impl Linear {
    pub fn new(rows: usize, inp: usize, out: usize) -> Linear {
        Linear { rows, inp, out, precision: Precision::F32 }
    }
    pub fn fwd_desc(&self) -> MatmulDesc {
        let mut d = MatmulDesc::new(self.rows, self.out, self.inp);
        d.b = Layout::rm(self.out, self.inp).t();
        d.precision = self.precision;
        d
    }
    /// dx (+)= dy W
    pub fn dx_desc(&self, accumulate: bool) -> MatmulDesc {
        let mut d = MatmulDesc::new(self.rows, self.inp, self.out);
        d.beta = accumulate as u32 as f32;
        d.precision = self.precision;
        d
    }
    /// dW += dy^T x (parameter gradients always accumulate; grads are zeroed per optimizer step)
    pub fn dw_desc(&self) -> MatmulDesc {
        let mut d = MatmulDesc::new(self.out, self.inp, self.rows);
        d.a = Layout::rm(self.rows, self.out).t();
        d.beta = 1.0;
        d.precision = self.precision;
        d
    }
    /// y = act(x W^T + b); with `pre`, the value before the activation is kept for the backward.
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor, act: Act, pre: Option<&Tensor>) -> Result<Dispatch> {
        let mut d = self.fwd_desc();
        d.act = act;
        d.bias_off = b.map(|_| 0);
        d.pre_off = pre.map(|_| 0);
        matmul(gpu, &d, x, w, y, b, pre)
    }
    /// [dx (+)= dy W, dW += dy^T x, db += colsum(dy)] (dx skipped when None: e.g. the first layer).
    pub fn backward(&self, gpu: &Gpu, x: &Tensor, w: &Tensor, dy: &Tensor, dx: Option<&Tensor>, dw: &Tensor, db: Option<&Tensor>, accumulate_dx: bool) -> Result<Vec<Dispatch>> {
        let mut v = Vec::new();
        if let Some(dx) = dx {
            v.push(matmul(gpu, &self.dx_desc(accumulate_dx), dy, w, dx, None, None)?);
        }
        v.push(matmul(gpu, &self.dw_desc(), dy, x, dw, None, None)?);
        if let Some(db) = db {
            v.push(super::reduce::colsum(gpu, dy, db, self.rows, self.out, true)?);
        }
        Ok(v)
    }
}

/// Plain loops, f64 accumulation.
pub mod cpu {
    use super::*;

    pub fn matmul(d: &MatmulDesc, a: &[f32], b: &[f32], c: &mut [f32], bias: Option<&[f32]>, mut pre: Option<&mut [f32]>) {
        for b1 in 0..d.batch[0] {
            for b2 in 0..d.batch[1] {
                let ao = d.a.off + b1 * d.a.bs[0] + b2 * d.a.bs[1];
                let bo = d.b.off + b1 * d.b.bs[0] + b2 * d.b.bs[1];
                let co = b1 * d.c.bs[0] + b2 * d.c.bs[1];
                for i in 0..d.m {
                    for j in 0..d.n {
                        let mut s = 0f64;
                        for kk in 0..d.k {
                            s += a[ao + i * d.a.rs + kk * d.a.cs] as f64 * b[bo + kk * d.b.rs + j * d.b.cs] as f64;
                        }
                        let ci = co + i * d.c.rs + j;
                        let mut v = d.alpha as f64 * s;
                        if let (Some(bb), Some(o)) = (bias, d.bias_off) {
                            v += bb[o + j] as f64;
                        }
                        if let (Some(p), Some(o)) = (pre.as_deref_mut(), d.pre_off) {
                            p[o + ci] = v as f32;
                        }
                        let mut v = v as f32;
                        v = match d.act {
                            Act::None => v,
                            Act::Gelu => crate::ops::gelu_cpu(v),
                            Act::Tanh => v.tanh(),
                        };
                        if d.beta != 0.0 {
                            v += d.beta * c[d.c.off + ci];
                        }
                        c[d.c.off + ci] = v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    fn run_case(d: &MatmulDesc, alen: usize, blen: usize, clen: usize, bias: bool, pre: bool, seed: u64) {
        // every case on both kernels: the 64x64 one is the oracle the 128x128 one must match
        for tile in [Tile::T64, Tile::T128] {
            run_tile(gpu(), &MatmulDesc { tile, ..*d }, alen, blen, clen, bias, pre, seed);
        }
    }

    fn run_tile(g: &Gpu, d: &MatmulDesc, alen: usize, blen: usize, clen: usize, bias: bool, pre: bool, seed: u64) {
        let mut r = Rng::new(seed);
        let (av, bv, c0) = (r.vec(alen, 1.0), r.vec(blen, 1.0), r.vec(clen, 1.0));
        let biasv = r.vec(d.n + 3, 1.0);
        let mut d = *d;
        d.bias_off = bias.then_some(3);
        d.pre_off = pre.then_some(0);
        let at = g.upload_f32("a", &[alen], &av).unwrap();
        let bt = g.upload_f32("b", &[blen], &bv).unwrap();
        let ct = g.upload_f32("c", &[clen], &c0).unwrap();
        let biast = g.upload_f32("bias", &[d.n + 3], &biasv).unwrap();
        let pret = g.zeros("pre", &[clen], crate::gpu::DType::F32).unwrap();
        let disp = matmul(g, &d, &at, &bt, &ct, bias.then_some(&biast), pre.then_some(&pret)).unwrap();
        g.run([&disp]).unwrap();
        let mut want = c0.clone();
        let mut want_pre = vec![0f32; clen];
        cpu::matmul(&d, &av, &bv, &mut want, bias.then_some(&biasv[..]), pre.then_some(&mut want_pre[..]));
        // fp32 accumulation over k terms of size <= 1: error grows ~ sqrt(k) * 6e-8 * k; 1e-4 rel is ample.
        assert_close(&format!("matmul C {:?}", d.tile), &g.read_f32(&ct).unwrap(), &want, 1e-4 * (d.k as f32).sqrt(), 1e-4);
        if pre {
            assert_close("matmul pre", &g.read_f32(&pret).unwrap(), &want_pre, 1e-4 * (d.k as f32).sqrt(), 1e-4);
        }
    }

    #[test]
    fn gpu_matches_cpu_awkward_shapes_nn_nt_tn() {
        // sizes not multiples of the 64x64x16 tile, size 1, k longer than a tile
        for (i, &(m, n, k)) in [(1, 1, 1), (7, 33, 129), (65, 1, 17), (33, 70, 5), (129, 65, 64), (130, 257, 9)].iter().enumerate() {
            let mut d = MatmulDesc::new(m, n, k);
            run_case(&d, m * k, k * n, m * n, false, false, i as u64);
            // NT: B given as [n, k]
            d.b = Layout::rm(n, k).t();
            run_case(&d, m * k, k * n, m * n, true, false, 10 + i as u64);
            // TN: A given as [k, m], with GELU epilogue, pre-activation saved and beta accumulate
            let mut d = MatmulDesc::new(m, n, k);
            d.a = Layout::rm(k, m).t();
            d.act = Act::Gelu;
            d.beta = 1.0;
            run_case(&d, m * k, k * n, m * n, true, true, 20 + i as u64);
        }
    }

    #[test]
    fn trusted_modules_match_cpu() {
        // release builds drop wgpu's bounds checks: edge tiles must still stay inside the buffers
        // (each operand is allocated exactly, so a stray read or write would show as a mismatch)
        let g = gpu_trusted();
        assert!(!g.shader_checks);
        for (i, &(m, n, k)) in [(7, 33, 129), (130, 257, 9)].iter().enumerate() {
            for tile in [Tile::T64, Tile::T128] {
                let mut d = MatmulDesc { tile, ..MatmulDesc::new(m, n, k) };
                d.b = Layout::rm(n, k).t();
                d.act = Act::Gelu;
                run_tile(g, &d, m * k, k * n, m * n, true, true, 40 + i as u64);
            }
        }
    }

    #[test]
    fn f16_precision_rounds_operands_to_f16() {
        // The f16 path must equal fp32 math on f16-rounded operands (the rounding is where it
        // differs from fp32), so the reference rounds A and B and the exact fp32 result must be
        // measurably farther away. On adapters with cooperative matrices this runs that kernel.
        let g = gpu();
        let (m, n, k) = (130, 70, 200);
        let mut r = Rng::new(77);
        let (av, bv) = (r.vec(m * k, 1.0), r.vec(k * n, 1.0));
        let round = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect::<Vec<_>>();
        for tile in [Tile::T64, Tile::T128] {
            let d = MatmulDesc { b: Layout::rm(n, k).t(), tile, precision: Precision::F16, ..MatmulDesc::new(m, n, k) };
            let (at, bt) = (g.upload_f32("a", &[m * k], &av).unwrap(), g.upload_f32("b", &[k * n], &bv).unwrap());
            let ct = g.zeros("c", &[m * n], crate::gpu::DType::F32).unwrap();
            g.run([&matmul(g, &d, &at, &bt, &ct, None, None).unwrap()]).unwrap();
            let got = g.read_f32(&ct).unwrap();
            let (mut rounded, mut exact) = (vec![0f32; m * n], vec![0f32; m * n]);
            cpu::matmul(&d, &round(&av), &round(&bv), &mut rounded, None, None);
            cpu::matmul(&d, &av, &bv, &mut exact, None, None);
            assert_close("f16 matmul vs rounded operands", &got, &rounded, 1e-4 * (k as f32).sqrt(), 1e-4);
            let worst = |w: &[f32]| got.iter().zip(w).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let (to_rounded, to_exact) = (worst(&rounded), worst(&exact));
            assert!(to_exact > 10.0 * to_rounded, "f16 result {to_exact} from exact fp32 but {to_rounded} from the rounded reference: operands were not rounded");
        }
        // the rounding itself, exactly as a real f32 -> f16 conversion: C = A x 1 with k = 1 returns
        // each rounded operand (normal and subnormal f16 range, ties, the overflow edge, signs)
        let mut xs: Vec<f32> = vec![0.0, 1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 65504.0, 65519.0, 65520.0, 70000.0, 6.1e-5, 3.0e-8, 2.9e-8, 1e-9];
        for i in 0..400 {
            let e = (i % 48) as i32 - 30; // 2^-30 .. 2^17
            xs.push((1.0 + r.uniform()) * (2f32).powi(e) * if i % 3 == 0 { -1.0 } else { 1.0 });
        }
        let d = MatmulDesc { precision: Precision::F16, ..MatmulDesc::new(xs.len(), 1, 1) };
        let (at, bt) = (g.upload_f32("a", &[xs.len()], &xs).unwrap(), g.upload_f32("b", &[1], &[1.0]).unwrap());
        let ct = g.zeros("c", &[xs.len()], crate::gpu::DType::F32).unwrap();
        g.run([&matmul(g, &d, &at, &bt, &ct, None, None).unwrap()]).unwrap();
        for (x, got) in xs.iter().zip(g.read_f32(&ct).unwrap()) {
            let want = half::f16::from_f32(*x).to_f32();
            assert!(got == want || (got == 0.0 && want == 0.0), "f16 rounding of {x:e}: {got:e}, want {want:e}");
        }
    }

    #[test]
    fn gpu_matches_cpu_batched_strided_heads() {
        // [B=2, T=7, H=3*5] activations viewed as B x heads(3) matrices of 7 x 5, as attention does:
        // S = alpha Q_h K_h^T over (b, h), written to [B, 3, 7, 7], tanh epilogue for coverage.
        let (b, t, nh, dh) = (2, 7, 3, 5);
        let h = nh * dh;
        let mut d = MatmulDesc::new(t, t, dh);
        d.batch = [b, nh];
        d.a = Layout { off: 0, rs: h, cs: 1, bs: [t * h, dh] };
        d.b = Layout { off: 0, rs: 1, cs: h, bs: [t * h, dh] };
        d.c = Layout { off: 0, rs: t, cs: 1, bs: [nh * t * t, t * t] };
        d.alpha = 0.5;
        d.act = Act::Tanh;
        run_case(&d, b * t * h, b * t * h, b * nh * t * t, false, false, 99);
    }

    #[test]
    fn linear_backward_matches_cpu_and_finite_differences() {
        let g = gpu();
        let lin = Linear::new(9, 13, 6);
        let mut r = Rng::new(5);
        let (x, w, b, dy) = (r.vec(9 * 13, 1.0), r.vec(6 * 13, 0.5), r.vec(6, 0.5), r.vec(9 * 6, 1.0));
        // CPU reference of the three gradients
        let fwd = |x: &[f32], w: &[f32]| {
            let mut y = vec![0f32; 9 * 6];
            let mut d = lin.fwd_desc();
            d.bias_off = Some(0);
            cpu::matmul(&d, x, w, &mut y, Some(&b), None);
            y
        };
        let mut dx = vec![0f32; 9 * 13];
        cpu::matmul(&lin.dx_desc(false), &dy, &w, &mut dx, None, None);
        let mut dw = vec![0f32; 6 * 13];
        cpu::matmul(&lin.dw_desc(), &dy, &x, &mut dw, None, None);
        // finite differences of L = sum(dy * y)
        let ndx = numeric_grad(&x, 1e-2, |xv| dot(&fwd(xv, &w), &dy));
        let ndw = numeric_grad(&w, 1e-2, |wv| dot(&fwd(&x, wv), &dy));
        assert_close("cpu dx vs fd", &dx, &ndx, 1e-3, 1e-3);
        assert_close("cpu dw vs fd", &dw, &ndw, 1e-3, 1e-3);
        // GPU
        let xt = g.upload_f32("x", &[9, 13], &x).unwrap();
        let wt = g.upload_f32("w", &[6, 13], &w).unwrap();
        let dyt = g.upload_f32("dy", &[9, 6], &dy).unwrap();
        let dxt = g.zeros("dx", &[9, 13], crate::gpu::DType::F32).unwrap();
        let dwt = g.zeros("dw", &[6, 13], crate::gpu::DType::F32).unwrap();
        let dbt = g.zeros("db", &[6], crate::gpu::DType::F32).unwrap();
        let list = lin.backward(g, &xt, &wt, &dyt, Some(&dxt), &dwt, Some(&dbt), false).unwrap();
        g.run(&list).unwrap();
        assert_close("gpu dx", &g.read_f32(&dxt).unwrap(), &dx, 1e-5, 1e-4);
        assert_close("gpu dw", &g.read_f32(&dwt).unwrap(), &dw, 1e-5, 1e-4);
        let db: Vec<f32> = (0..6).map(|j| (0..9).map(|i| dy[i * 6 + j]).sum()).collect();
        assert_close("gpu db", &g.read_f32(&dbt).unwrap(), &db, 1e-5, 1e-4);
        // parameter gradients accumulate: running again doubles them
        g.run(&list).unwrap();
        let dw2: Vec<f32> = dw.iter().map(|v| 2.0 * v).collect();
        assert_close("gpu dw accumulated", &g.read_f32(&dwt).unwrap(), &dw2, 1e-5, 1e-4);
    }

    #[test]
    fn out_of_bounds_operand_is_an_error() {
        let g = gpu();
        let a = g.zeros("a", &[10], crate::gpu::DType::F32).unwrap();
        let d = MatmulDesc::new(4, 4, 4);
        let e = matmul(g, &d, &a, &a, &a, None, None).err().expect("must fail");
        assert!(e.to_string().contains("needs 16 elements"), "{e}");
    }
}
