//! Batched, strided matmul with bias / GELU / tanh epilogues (shaders/matmul.wgsl), and `Linear`,
//! the PyTorch-layout (weight [out, in]) forward and backward built from it.
//! Backward of C = A B: dA = dC B^T, dB = A^T dC — the same kernel with swapped strides.
use super::{check_len, grid_elems};
use crate::ensure_shape;
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

/// Which kernel: `T64` (64x64 tile, 4x4 per thread), `T128` (128x128, 8x8 per thread, for large
/// M and N) or `Small` (8x256, 8x4 per thread, no workgroup memory, for few rows). `Auto` takes
/// Small when its padded work is at most half the 64 tile's (decode steps, masked-row heads:
/// M <= 32), else T128 unless padding to it costs more than 15 % over the 64 tile's padded work:
/// on lavapipe the 128 tile does 1.10-1.21x the 64 tile's FLOP/s on full tiles
/// (docs/performance.md, kernel table). On GPUs the 8x8 tile should gain more;
/// tools/gpu_session.sh measures both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    Auto,
    T64,
    T128,
    Small,
}

impl Tile {
    /// (entry point, tile rows, tile columns)
    fn kernel(self) -> (&'static str, usize, usize) {
        match self {
            Tile::T128 => ("matmul128", 128, 128),
            Tile::Small => ("matmul_small", 8, 256),
            _ => ("matmul", 64, 64),
        }
    }
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
        let p64 = padded(self.m, self.n, 64, 64);
        match self.tile {
            Tile::Auto if 2 * padded(self.m, self.n, 8, 256) <= p64 => Tile::Small,
            Tile::Auto if 100 * padded(self.m, self.n, 128, 128) <= 115 * p64 => Tile::T128,
            Tile::Auto => Tile::T64,
            t => t,
        }
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch[0] * self.batch[1]) as f64
    }
}

fn padded(m: usize, n: usize, tm: usize, tn: usize) -> usize {
    m.div_ceil(tm) * n.div_ceil(tn) * tm * tn
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch2: u32,
    a_off: u32,
    a_rs: u32,
    a_cs: u32,
    a_bs1: u32,
    a_bs2: u32,
    b_off: u32,
    b_rs: u32,
    b_cs: u32,
    b_bs1: u32,
    b_bs2: u32,
    c_off: u32,
    c_rs: u32,
    c_bs1: u32,
    c_bs2: u32,
    bias_off: u32,
    pre_off: u32,
    alpha: f32,
    beta: f32,
    k_chunk: u32,
    splits: u32,
}
super::uniform_layout!(Params {
    m,
    n,
    k,
    batch2,
    a_off,
    a_rs,
    a_cs,
    a_bs1,
    a_bs2,
    b_off,
    b_rs,
    b_cs,
    b_bs1,
    b_bs2,
    c_off,
    c_rs,
    c_bs1,
    c_bs2,
    bias_off,
    pre_off,
    alpha,
    beta,
    k_chunk,
    splits
});

/// uniform, a, b, c, bias, pre, then a and b again (as vec4 arrays for matmul128's A_VEC / B_VEC)
const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite, Access::Read, Access::Read];

/// matmul128's 16-byte loads need the operand contiguous along the loaded dimension (k for A, n
/// for B), every vec4 aligned (offset, row stride and batch strides multiples of 4) and a buffer
/// of at least one vec4; matmul_small loads both operands along k (B = W^T: b_rs = 1). Returns
/// the spec and what to bind at 6 and 7 (a dummy when unused).
fn vec_loads<'t>(gpu: &'t Gpu, spec: KernelSpec, tile: Tile, p: &Params, a: &'t Tensor, b: &'t Tensor) -> (KernelSpec, &'t Tensor, &'t Tensor) {
    let ok = |t: &Tensor, unit: u32, strides: [u32; 4]| unit == 1 && t.buf.size() >= 16 && strides.iter().all(|x| x % 4 == 0);
    let av = matches!(tile, Tile::T128 | Tile::Small) && ok(a, p.a_cs, [p.a_off, p.a_rs, p.a_bs1, p.a_bs2]);
    let (spec, bv) = match tile {
        Tile::T128 => {
            let bv = ok(b, p.b_cs, [p.b_off, p.b_rs, p.b_bs1, p.b_bs2]);
            (spec.constant("A_VEC", av as u32 as f64).constant("B_VEC", bv as u32 as f64), bv)
        }
        Tile::Small => {
            let bv = ok(b, p.b_rs, [p.b_off, p.b_cs, p.b_bs1, p.b_bs2]);
            (spec.constant("A_VEC", av as u32 as f64).constant("BK_VEC", bv as u32 as f64), bv)
        }
        _ => (spec, false),
    };
    (spec, if av { a } else { gpu.dummy_read() }, if bv { b } else { gpu.dummy_read() })
}

/// Prepares one matmul dispatch. Offsets in `d` are relative to each tensor's own offset.
pub fn matmul(gpu: &Gpu, d: &MatmulDesc, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>, pre: Option<&Tensor>) -> Result<Dispatch> {
    let coop = d.precision == Precision::F16 && super::matmul_coop::usable(gpu);
    build(gpu, d, a, b, c, bias, pre, coop)
}

/// How many K slices `matmul_split` should use for `d`: enough that the output tiles times the
/// slices make about 128 workgroups (an H200 has 132 SMs; lavapipe needs far fewer but loses little),
/// at least 512 of K per slice, and 1 for batched problems or short K.
pub fn split_count(d: &MatmulDesc) -> usize {
    let (_, tm, tn) = d.chosen_tile().kernel();
    let tiles = d.m.div_ceil(tm) * d.n.div_ceil(tn);
    if d.batch != [1, 1] || tiles >= 64 || d.k < 1024 {
        return 1;
    }
    128usize.div_ceil(tiles).min(d.k / 512).max(1)
}

/// Elements of scratch `matmul_split` needs for `splits` slices.
pub fn split_scratch_len(d: &MatmulDesc, splits: usize) -> usize {
    if splits > 1 {
        splits * d.m * d.n
    } else {
        0
    }
}

/// `matmul` with K cut into `splits` slices computed in parallel into `scratch` [splits, m, n], then
/// summed into C with the epilogue (`splitk_reduce`): for long K and few output tiles, where one
/// workgroup per tile would leave most of the GPU (or all but one CPU core) idle. With
/// `splits <= 1`, or on the cooperative-matrix path, it is the plain `matmul`.
pub fn matmul_split(
    gpu: &Gpu,
    d: &MatmulDesc,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    bias: Option<&Tensor>,
    pre: Option<&Tensor>,
    scratch: &Tensor,
    splits: usize,
) -> Result<Vec<Dispatch>> {
    let coop = d.precision == Precision::F16 && super::matmul_coop::usable(gpu);
    if splits <= 1 || coop {
        return Ok(vec![build(gpu, d, a, b, c, bias, pre, coop)?]);
    }
    const OP: &str = "matmul_split";
    ensure_shape!(OP, d.batch == [1, 1], "split-K is for unbatched matmuls, got batch {:?}", d.batch);
    check_len(OP, "scratch", scratch, splits * d.m * d.n)?;
    check(d, a, b, c, bias, pre)?;
    let chunk = d.k.div_ceil(splits);
    let splits = d.k.div_ceil(chunk);
    let u = |x: usize| x as u32;
    let mut p = full_params(d, a, b, c, bias, pre);
    p.k_chunk = u(chunk);
    p.splits = u(splits);
    p.a_bs1 = 0;
    p.b_bs1 = 0;
    p.c_off = scratch.off();
    p.c_rs = u(d.n);
    p.c_bs1 = u(d.m * d.n);
    p.beta = 0.0;
    let (entry, tm, tn) = d.chosen_tile().kernel();
    let mut spec = KernelSpec::new("matmul", entry, BINDS);
    if d.precision == Precision::F16 {
        spec = spec.constant("ROUND_F16", 1.0);
    }
    let groups = [u(d.n.div_ceil(tn)), u(d.m.div_ceil(tm)), u(splits)];
    let (dr, dw) = (gpu.dummy_read(), gpu.dummy_write());
    let bytes = 4.0 * (d.m * d.k + d.k * d.n + splits * d.m * d.n) as f64;
    let (spec, a4, b4) = vec_loads(gpu, spec, d.chosen_tile(), &p, a, b);
    let partial = Dispatch::new(gpu, &spec, &p, &[a, b, scratch, dr, dw, a4, b4], groups)?.cost(d.flops(), bytes);
    // the reduce: scratch as A, the real C / bias / pre / epilogue
    let mut r = full_params(d, a, b, c, bias, pre);
    r.a_off = scratch.off();
    r.splits = u(splits);
    let rspec = epilogue(KernelSpec::new("matmul", "splitk_reduce", BINDS), d, bias, pre);
    let reduce = Dispatch::new(gpu, &rspec, &r, &[scratch, dr, c, bias.unwrap_or(dr), pre.unwrap_or(dw), dr, dr], grid_elems(d.m * d.n))?
        .cost(0.0, 4.0 * ((splits + 2) * d.m * d.n) as f64);
    Ok(vec![partial, reduce])
}

/// The parameters of `d` as one unsplit dispatch.
/// `matmul`, split over K when `split_count` asks for it and `scratch` has room (it may be None).
pub fn matmul_auto(
    gpu: &Gpu,
    d: &MatmulDesc,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    bias: Option<&Tensor>,
    pre: Option<&Tensor>,
    scratch: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    match scratch {
        Some(s) => matmul_split(gpu, d, a, b, c, bias, pre, s, split_count(d).min(s.numel() / (d.m * d.n))),
        None => Ok(vec![matmul(gpu, d, a, b, c, bias, pre)?]),
    }
}

fn full_params(d: &MatmulDesc, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>, pre: Option<&Tensor>) -> Params {
    let u = |x: usize| x as u32;
    Params {
        m: u(d.m),
        n: u(d.n),
        k: u(d.k),
        batch2: u(d.batch[1]),
        a_off: a.off() + u(d.a.off),
        a_rs: u(d.a.rs),
        a_cs: u(d.a.cs),
        a_bs1: u(d.a.bs[0]),
        a_bs2: u(d.a.bs[1]),
        b_off: b.off() + u(d.b.off),
        b_rs: u(d.b.rs),
        b_cs: u(d.b.cs),
        b_bs1: u(d.b.bs[0]),
        b_bs2: u(d.b.bs[1]),
        c_off: c.off() + u(d.c.off),
        c_rs: u(d.c.rs),
        c_bs1: u(d.c.bs[0]),
        c_bs2: u(d.c.bs[1]),
        bias_off: bias.map_or(0, |t| t.off() + u(d.bias_off.unwrap())),
        pre_off: pre.map_or(0, |t| t.off() + u(d.pre_off.unwrap())),
        alpha: d.alpha,
        beta: d.beta,
        k_chunk: 0,
        splits: 0,
    }
}

/// `matmul` with the kernel choice made: `coop` takes the cooperative-matrix kernel (F16 only).
pub(crate) fn build(
    gpu: &Gpu,
    d: &MatmulDesc,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    bias: Option<&Tensor>,
    pre: Option<&Tensor>,
    coop: bool,
) -> Result<Dispatch> {
    check(d, a, b, c, bias, pre)?;
    let u = |x: usize| x as u32;
    let p = full_params(d, a, b, c, bias, pre);
    let (shader, (entry, tm, tn)) = if coop { ("matmul_coop", ("matmul_coop", 64, 64)) } else { ("matmul", d.chosen_tile().kernel()) };
    let mut spec = epilogue(KernelSpec::new(shader, entry, BINDS), d, bias, pre);
    if d.precision == Precision::F16 && !coop {
        spec = spec.constant("ROUND_F16", 1.0);
    }
    let groups = [u(d.n.div_ceil(tn)), u(d.m.div_ceil(tm)), u(d.batch[0] * d.batch[1])];
    let bias = bias.unwrap_or(gpu.dummy_read());
    let pre = pre.unwrap_or(gpu.dummy_write());
    let bytes = 4.0 * (d.m * d.k + d.k * d.n + d.m * d.n) as f64 * (d.batch[0] * d.batch[1]) as f64;
    let (spec, a4, b4) = if coop { (spec, gpu.dummy_read(), gpu.dummy_read()) } else { vec_loads(gpu, spec, d.chosen_tile(), &p, a, b) };
    Ok(Dispatch::new(gpu, &spec, &p, &[a, b, c, bias, pre, a4, b4], groups)?.cost(d.flops(), bytes))
}

/// The epilogue's override constants: bias, pre-activation store, activation.
fn epilogue(spec: KernelSpec, d: &MatmulDesc, bias: Option<&Tensor>, pre: Option<&Tensor>) -> KernelSpec {
    spec.constant("HAS_BIAS", bias.is_some() as u32 as f64).constant("STORE_PRE", pre.is_some() as u32 as f64).constant(
        "ACT",
        match d.act {
            Act::None => 0.0,
            Act::Gelu => 1.0,
            Act::Tanh => 2.0,
        },
    )
}

/// Shapes, strides and lengths of every operand against `d`.
fn check(d: &MatmulDesc, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>, pre: Option<&Tensor>) -> Result<()> {
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
    Ok(())
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
    /// Scratch elements `backward_split` can use (0 when neither product is worth splitting).
    pub fn split_scratch(&self) -> usize {
        [self.dx_desc(false), self.dw_desc()].iter().map(|d| split_scratch_len(d, split_count(d))).max().unwrap()
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
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        dx: Option<&Tensor>,
        dw: &Tensor,
        db: Option<&Tensor>,
        accumulate_dx: bool,
    ) -> Result<Vec<Dispatch>> {
        self.backward_split(gpu, x, w, dy, dx, dw, db, accumulate_dx, None)
    }
    /// `backward`, with the two products split over K where that pays and `scratch` allows
    /// (see `split_scratch_len`): dW's K is the row count, dx's is the output width.
    pub fn backward_split(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        dx: Option<&Tensor>,
        dw: &Tensor,
        db: Option<&Tensor>,
        accumulate_dx: bool,
        scratch: Option<&Tensor>,
    ) -> Result<Vec<Dispatch>> {
        let mut v = Vec::new();
        if let Some(dx) = dx {
            v.extend(matmul_auto(gpu, &self.dx_desc(accumulate_dx), dy, w, dx, None, None, scratch)?);
        }
        v.extend(matmul_auto(gpu, &self.dw_desc(), dy, x, dw, None, None, scratch)?);
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
        // every case on every kernel: the 64x64 one is the oracle the others must match
        for tile in [Tile::T64, Tile::T128, Tile::Small] {
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
    fn split_k_matches_cpu() {
        // K cut into slices that do not divide it, edges in M and N, both tiles, NT and TN
        // operands, and the full epilogue (bias, pre, GELU, beta) applied once, in the reduce
        let g = gpu();
        let mut r = Rng::new(91);
        for (i, &(m, n, k, splits, tile)) in [
            (80, 64, 3001, 7, Tile::T128),
            (7, 33, 1030, 3, Tile::T64),
            (130, 65, 700, 5, Tile::T128),
            (1, 1, 64, 2, Tile::T64),
            (10, 300, 2000, 4, Tile::Small),
        ]
        .iter()
        .enumerate()
        {
            let mut d = MatmulDesc { tile, act: Act::Gelu, beta: 1.0, bias_off: Some(2), pre_off: Some(0), ..MatmulDesc::new(m, n, k) };
            if i % 2 == 0 {
                d.b = Layout::rm(n, k).t();
            } else {
                d.a = Layout::rm(k, m).t();
            }
            let (av, bv, c0, biasv) = (r.vec(m * k, 1.0), r.vec(k * n, 1.0), r.vec(m * n, 1.0), r.vec(n + 2, 1.0));
            let up = |name, v: &[f32]| g.upload_f32(name, &[v.len()], v).unwrap();
            let (at, bt, ct, biast) = (up("a", &av), up("b", &bv), up("c", &c0), up("bias", &biasv));
            let pret = g.zeros("pre", &[m * n], crate::gpu::DType::F32).unwrap();
            let scratch = g.zeros("scratch", &[split_scratch_len(&d, splits)], crate::gpu::DType::F32).unwrap();
            let list = matmul_split(g, &d, &at, &bt, &ct, Some(&biast), Some(&pret), &scratch, splits).unwrap();
            assert_eq!(list.len(), 2);
            g.run(&list).unwrap();
            let (mut want, mut want_pre) = (c0.clone(), vec![0f32; m * n]);
            cpu::matmul(&d, &av, &bv, &mut want, Some(&biasv), Some(&mut want_pre));
            assert_close(&format!("split-K C {m}x{n}x{k}/{splits}"), &g.read_f32(&ct).unwrap(), &want, 1e-4 * (k as f32).sqrt(), 1e-4);
            assert_close("split-K pre", &g.read_f32(&pret).unwrap(), &want_pre, 1e-4 * (k as f32).sqrt(), 1e-4);
        }
        // Linear's backward through the split path (dW: 64 x 48 over K = 2100 rows) equals the plain one
        let lin = Linear::new(2100, 48, 64);
        assert!(lin.split_scratch() > 0);
        let (x, w, dy) = (r.vec(2100 * 48, 1.0), r.vec(64 * 48, 1.0), r.vec(2100 * 64, 1.0));
        let up = |name, v: &[f32]| g.upload_f32(name, &[v.len()], v).unwrap();
        let (xt, wt, dyt) = (up("x", &x), up("w", &w), up("dy", &dy));
        let scratch = g.zeros("scratch", &[lin.split_scratch()], crate::gpu::DType::F32).unwrap();
        let mut out = Vec::new();
        for s in [None, Some(&scratch)] {
            let (dx, dw, db) = (
                g.zeros("dx", &[2100 * 48], crate::gpu::DType::F32).unwrap(),
                g.zeros("dw", &[64 * 48], crate::gpu::DType::F32).unwrap(),
                g.zeros("db", &[64], crate::gpu::DType::F32).unwrap(),
            );
            let list = lin.backward_split(g, &xt, &wt, &dyt, Some(&dx), &dw, Some(&db), false, s).unwrap();
            assert_eq!(list.len(), if s.is_some() { 4 } else { 3 }, "dW split, dx not");
            g.run(&list).unwrap();
            out.push((g.read_f32(&dx).unwrap(), g.read_f32(&dw).unwrap()));
        }
        assert_eq!(out[0].0, out[1].0);
        assert_close("dW split vs plain", &out[1].1, &out[0].1, 1e-3, 1e-4);
        // the heuristic: one 128 tile with K = 30522 (the tiny decoder's dx) is split; batched or short K is not
        assert!(split_count(&MatmulDesc::new(80, 64, 30522)) > 8);
        assert_eq!(split_count(&MatmulDesc::new(1280, 768, 512)), 1);
        assert_eq!(split_count(&MatmulDesc { batch: [2, 1], ..MatmulDesc::new(80, 64, 30522) }), 1);
    }

    #[test]
    fn auto_picks_the_small_tile_for_few_rows_only() {
        // the decode step (2 rows per sequence) and the masked rows' vocabulary projection take the
        // 8x256 tile; a training step's rows do not
        let pick = |m, n, k| MatmulDesc::new(m, n, k).chosen_tile();
        assert_eq!(pick(10, 30522, 64), Tile::Small);
        assert_eq!(pick(32, 768, 768), Tile::Small);
        assert_ne!(pick(80, 30522, 64), Tile::Small);
        assert_eq!(pick(1280, 768, 768), Tile::T128);
        // a split-K count is computed over the small tile's 8-row tiles
        assert!(split_count(&MatmulDesc::new(10, 64, 30522)) > 1);
    }

    #[test]
    fn vec4_loads_match_cpu() {
        // matmul128 reads A (k-contiguous) and B (n-contiguous) as vec4s when offsets and strides
        // are multiples of 4: full tiles, ragged edges in m/n, k not a multiple of 4 inside a row
        // stride that is (A a column slice of a wider matrix), offsets into a bigger buffer, f16
        for (i, &(m, n, k, a_rs, f16)) in
            [(128, 128, 64, 64, false), (132, 260, 36, 36, false), (70, 44, 6, 8, false), (130, 132, 40, 40, true)].iter().enumerate()
        {
            let d = MatmulDesc {
                a: Layout { off: 4, rs: a_rs, cs: 1, bs: [0, 0] },
                b: Layout { off: 8, rs: n, cs: 1, bs: [0, 0] },
                tile: Tile::T128,
                precision: if f16 { Precision::F16 } else { Precision::F32 },
                act: Act::Gelu,
                ..MatmulDesc::new(m, n, k)
            };
            let g = gpu();
            let mut r = Rng::new(300 + i as u64);
            let (alen, blen) = (4 + m * a_rs, 8 + k * n);
            let (av, bv) = (r.vec(alen, 1.0), r.vec(blen, 1.0));
            let (at, bt) = (g.upload_f32("a", &[alen], &av).unwrap(), g.upload_f32("b", &[blen], &bv).unwrap());
            let ct = g.zeros("c", &[m * n], crate::gpu::DType::F32).unwrap();
            let disp = matmul(g, &d, &at, &bt, &ct, None, None).unwrap();
            g.run([&disp]).unwrap();
            let round = |v: &[f32]| v.iter().map(|&x| if f16 { half::f16::from_f32(x).to_f32() } else { x }).collect::<Vec<_>>();
            let mut want = vec![0f32; m * n];
            cpu::matmul(&d, &round(&av), &round(&bv), &mut want, None, None);
            assert_close(&format!("vec4 loads {m}x{n}x{k} a_rs {a_rs}"), &g.read_f32(&ct).unwrap(), &want, 1e-4 * (k as f32).sqrt(), 1e-4);
        }
    }

    #[test]
    fn trusted_modules_match_cpu() {
        // release builds drop wgpu's bounds checks: edge tiles must still stay inside the buffers
        // (each operand is allocated exactly, so a stray read or write would show as a mismatch)
        let g = gpu_trusted();
        assert!(!g.shader_checks);
        for (i, &(m, n, k)) in [(7, 33, 129), (130, 257, 9)].iter().enumerate() {
            for tile in [Tile::T64, Tile::T128, Tile::Small] {
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
        for tile in [Tile::T64, Tile::T128, Tile::Small] {
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
            assert!(
                to_exact > 10.0 * to_rounded,
                "f16 result {to_exact} from exact fp32 but {to_rounded} from the rounded reference: operands were not rounded"
            );
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
