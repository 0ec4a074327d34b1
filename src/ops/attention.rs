//! Multi-head attention core: S = scale Q K^T, P = softmax(S + mask bias), Pd = dropout(P),
//! ctx = Pd V — and the backward. The products are strided batched matmuls over (batch, head) that
//! read heads straight out of [B, T, H] activations (no transposes, no copies); the row-wise middle
//! is one fused kernel each way (shaders/attention.wgsl). Mask: 1 = attend; bias (1 - m) * -10000.
use super::matmul::{matmul, Layout, MatmulDesc, Precision};
use super::{check_len, dropout_threshold, grid_rows};
use crate::ensure_shape;
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKind {
    None,
    /// [B, tk]: padding mask shared by every query row.
    Padding,
    /// [B, tq, tk]: a full mask per query row (captioning's seq2seq mask).
    Full,
}

/// Shape and settings of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub batch: usize,
    pub tq: usize,
    pub tk: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub mask: MaskKind,
    pub p_drop: f32,
    /// Dropout stream: distinct per layer so layers draw different masks.
    pub stream: u32,
    /// Of the four products (scores, context, and their gradients); softmax stays fp32.
    pub precision: Precision,
}

/// Token rows of a [B, T, *] activation: row t of batch b starts at off + (b*T + t)*rs; head h is
/// the dh columns from h*dh. A fused QKV buffer is three `Seq`s with off 0, H, 2H and rs 3H.
#[derive(Clone, Copy)]
pub struct Seq<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub rs: usize,
}

impl<'a> Seq<'a> {
    pub fn new(t: &'a Tensor, off: usize, rs: usize) -> Self {
        Seq { t, off, rs }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    tq: u32,
    tk: u32,
    heads: u32,
    mask_mode: u32,
    s_off: u32,
    p_off: u32,
    pd_off: u32,
    mask_off: u32,
    threshold: u32,
    stream: u32,
    g_off: u32,
    keep_scale: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}
super::uniform_layout!(Params { rows, tq, tk, heads, mask_mode, s_off, p_off, pd_off, mask_off, threshold, stream, g_off, keep_scale, _p0, _p1, _p2 });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::Read];

impl Attention {
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
    /// Elements of one score/probability buffer: [B, heads, tq, tk].
    pub fn score_len(&self) -> usize {
        self.batch * self.heads * self.tq * self.tk
    }
    fn head(&self, s: &Seq, rows: usize) -> Layout {
        Layout { off: s.off, rs: s.rs, cs: 1, bs: [rows * s.rs, self.head_dim] }
    }
    fn scores(&self) -> Layout {
        Layout { off: 0, rs: self.tk, cs: 1, bs: [self.heads * self.tq * self.tk, self.tq * self.tk] }
    }
    fn desc(&self, m: usize, n: usize, k: usize, a: Layout, b: Layout, c: Layout, alpha: f32) -> MatmulDesc {
        MatmulDesc { batch: [self.batch, self.heads], a, b, c, alpha, precision: self.precision, ..MatmulDesc::new(m, n, k) }
    }
    fn params(&self, mask: Option<&Tensor>) -> Params {
        let (threshold, keep_scale) = dropout_threshold(self.p_drop);
        Params {
            rows: (self.batch * self.heads * self.tq) as u32,
            tq: self.tq as u32,
            tk: self.tk as u32,
            heads: self.heads as u32,
            mask_mode: match self.mask {
                MaskKind::None => 0,
                MaskKind::Padding => 1,
                MaskKind::Full => 2,
            },
            mask_off: mask.map_or(0, |m| m.off()),
            threshold,
            stream: self.stream,
            keep_scale,
            ..Default::default()
        }
    }
    fn check(&self, op: &'static str, seqs: &[(&str, &Seq, usize)], mask: Option<&Tensor>, bufs: &[(&str, &Tensor)]) -> Result<()> {
        ensure_shape!(op, self.batch * self.heads * self.tq * self.tk * self.head_dim > 0, "empty attention {:?}", self);
        for (w, s, rows) in seqs {
            ensure_shape!(op, s.rs >= self.heads * self.head_dim, "{w}: row stride {} < heads*head_dim", s.rs);
            check_len(op, w, s.t, s.off + (self.batch * rows - 1) * s.rs + self.heads * self.head_dim)?;
        }
        match (self.mask, mask) {
            (MaskKind::None, _) => {}
            (MaskKind::Padding, Some(m)) => check_len(op, "mask [B, tk]", m, self.batch * self.tk)?,
            (MaskKind::Full, Some(m)) => check_len(op, "mask [B, tq, tk]", m, self.batch * self.tq * self.tk)?,
            (k, None) => ensure_shape!(op, false, "mask kind {k:?} needs a mask tensor"),
        }
        for (w, t) in bufs {
            check_len(op, w, t, self.score_len())?;
        }
        Ok(())
    }

    /// [S = scale Q K^T -> scores, (probs, pd) = dropout(softmax(S + mask)), ctx = pd V].
    /// `probs` and `pd` are kept for the backward; `scores` is scratch.
    pub fn forward(
        &self,
        gpu: &Gpu,
        q: Seq,
        k: Seq,
        v: Seq,
        ctx: Seq,
        mask: Option<&Tensor>,
        scores: &Tensor,
        probs: &Tensor,
        pd: &Tensor,
        seed: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        self.check(
            "attention",
            &[("q", &q, self.tq), ("k", &k, self.tk), ("v", &v, self.tk), ("ctx", &ctx, self.tq)],
            mask,
            &[("scores", scores), ("probs", probs), ("pd", pd)],
        )?;
        let (tq, tk, dh) = (self.tq, self.tk, self.head_dim);
        let qk = self.desc(tq, tk, dh, self.head(&q, tq), self.head(&k, tk).t(), self.scores(), self.scale());
        let pv = self.desc(tq, dh, tk, self.scores(), self.head(&v, tk), self.head(&ctx, tq), 1.0);
        let mut p = self.params(mask);
        p.s_off = scores.off();
        p.p_off = probs.off();
        p.pd_off = pd.off();
        let spec = KernelSpec::new("attention", "attn_softmax_fwd", BINDS);
        let n = self.score_len() as f64;
        Ok(vec![
            matmul(gpu, &qk, q.t, k.t, scores, None, None)?,
            Dispatch::new(gpu, &spec, &p, &[scores, mask.unwrap_or(gpu.dummy_read()), probs, pd, seed], grid_rows(p.rows as usize))?.cost(6.0 * n, 12.0 * n),
            matmul(gpu, &pv, pd, v.t, ctx.t, None, None)?,
        ])
    }

    /// [dPd = dctx V^T -> dscores, dV = pd^T dctx, dS = softmax/dropout backward (in dscores),
    ///  dQ = scale dS K, dK = scale dS^T Q]. dq/dk/dv are overwritten (they may share one fused buffer).
    pub fn backward(
        &self,
        gpu: &Gpu,
        q: Seq,
        k: Seq,
        v: Seq,
        dctx: Seq,
        dq: Seq,
        dk: Seq,
        dv: Seq,
        probs: &Tensor,
        pd: &Tensor,
        dscores: &Tensor,
        seed: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        let (tq, tk, dh) = (self.tq, self.tk, self.head_dim);
        // the backward never reads the mask: it is baked into the saved probabilities
        Attention { mask: MaskKind::None, ..*self }.check(
            "attention_backward",
            &[("q", &q, tq), ("k", &k, tk), ("v", &v, tk), ("dctx", &dctx, tq), ("dq", &dq, tq), ("dk", &dk, tk), ("dv", &dv, tk)],
            None,
            &[("probs", probs), ("pd", pd), ("dscores", dscores)],
        )?;
        let s = self.scores();
        let dpd = self.desc(tq, tk, dh, self.head(&dctx, tq), self.head(&v, tk).t(), s, 1.0);
        let dvd = self.desc(tk, dh, tq, s.t(), self.head(&dctx, tq), self.head(&dv, tk), 1.0);
        let dqd = self.desc(tq, dh, tk, s, self.head(&k, tk), self.head(&dq, tq), self.scale());
        let dkd = self.desc(tk, dh, tq, s.t(), self.head(&q, tq), self.head(&dk, tk), self.scale());
        let mut p = self.params(None);
        p.mask_mode = 0;
        p.p_off = probs.off();
        p.g_off = dscores.off();
        let spec = KernelSpec::new("attention", "attn_softmax_bwd", BINDS);
        let n = self.score_len() as f64;
        Ok(vec![
            matmul(gpu, &dpd, dctx.t, v.t, dscores, None, None)?,
            matmul(gpu, &dvd, pd, dctx.t, dv.t, None, None)?,
            Dispatch::new(gpu, &spec, &p, &[gpu.dummy_read(), gpu.dummy_read(), probs, dscores, seed], grid_rows(p.rows as usize))?.cost(6.0 * n, 12.0 * n),
            matmul(gpu, &dqd, dscores, k.t, dq.t, None, None)?,
            matmul(gpu, &dkd, dscores, q.t, dk.t, None, None)?,
        ])
    }
}

/// Plain loops over contiguous [B, T, heads*dh] q, k, v (row stride heads*dh).
pub mod cpu {
    use super::*;
    use crate::ops::rng;

    fn bias(a: &Attention, mask: Option<&[f32]>, b: usize, i: usize, j: usize) -> f64 {
        let m = match (a.mask, mask) {
            (MaskKind::Padding, Some(m)) => m[b * a.tk + j],
            (MaskKind::Full, Some(m)) => m[(b * a.tq + i) * a.tk + j],
            _ => 1.0,
        };
        (1.0 - m as f64) * -10000.0
    }

    /// Returns (ctx, probs, pd).
    pub fn forward(a: &Attention, q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, seed: u32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (h, dh) = (a.heads * a.head_dim, a.head_dim);
        let (thr, ks) = dropout_threshold(a.p_drop);
        let mut probs = vec![0f32; a.score_len()];
        let mut pd = vec![0f32; a.score_len()];
        let mut ctx = vec![0f32; a.batch * a.tq * h];
        for b in 0..a.batch {
            for hd in 0..a.heads {
                for i in 0..a.tq {
                    let row = (b * a.heads + hd) * a.tq + i;
                    let s: Vec<f64> = (0..a.tk)
                        .map(|j| {
                            let d: f64 = (0..dh).map(|c| q[(b * a.tq + i) * h + hd * dh + c] as f64 * k[(b * a.tk + j) * h + hd * dh + c] as f64).sum();
                            d * a.scale() as f64 + bias(a, mask, b, i, j)
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                    for j in 0..a.tk {
                        let idx = row * a.tk + j;
                        probs[idx] = ((s[j] - mx).exp() / z) as f32;
                        pd[idx] = if rng::keep(seed, a.stream, idx as u32, thr) { probs[idx] * ks } else { 0.0 };
                    }
                    for c in 0..dh {
                        let acc: f64 = (0..a.tk).map(|j| pd[row * a.tk + j] as f64 * v[(b * a.tk + j) * h + hd * dh + c] as f64).sum();
                        ctx[(b * a.tq + i) * h + hd * dh + c] = acc as f32;
                    }
                }
            }
        }
        (ctx, probs, pd)
    }

    /// Returns (dq, dk, dv).
    pub fn backward(a: &Attention, q: &[f32], k: &[f32], v: &[f32], probs: &[f32], dctx: &[f32], seed: u32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (h, dh) = (a.heads * a.head_dim, a.head_dim);
        let (thr, ks) = dropout_threshold(a.p_drop);
        let (mut dq, mut dk, mut dv) = (vec![0f64; q.len()], vec![0f64; k.len()], vec![0f64; v.len()]);
        for b in 0..a.batch {
            for hd in 0..a.heads {
                for i in 0..a.tq {
                    let row = (b * a.heads + hd) * a.tq + i;
                    let keep: Vec<f64> = (0..a.tk).map(|j| if rng::keep(seed, a.stream, (row * a.tk + j) as u32, thr) { ks as f64 } else { 0.0 }).collect();
                    let dctx_row = |c: usize| dctx[(b * a.tq + i) * h + hd * dh + c] as f64;
                    // dPd and dV
                    let dpd: Vec<f64> = (0..a.tk).map(|j| (0..dh).map(|c| dctx_row(c) * v[(b * a.tk + j) * h + hd * dh + c] as f64).sum()).collect();
                    for j in 0..a.tk {
                        let pdj = probs[row * a.tk + j] as f64 * keep[j];
                        for c in 0..dh {
                            dv[(b * a.tk + j) * h + hd * dh + c] += pdj * dctx_row(c);
                        }
                    }
                    let dp: Vec<f64> = (0..a.tk).map(|j| dpd[j] * keep[j]).collect();
                    let dot: f64 = (0..a.tk).map(|j| dp[j] * probs[row * a.tk + j] as f64).sum();
                    for j in 0..a.tk {
                        let ds = probs[row * a.tk + j] as f64 * (dp[j] - dot) * a.scale() as f64;
                        for c in 0..dh {
                            dq[(b * a.tq + i) * h + hd * dh + c] += ds * k[(b * a.tk + j) * h + hd * dh + c] as f64;
                            dk[(b * a.tk + j) * h + hd * dh + c] += ds * q[(b * a.tq + i) * h + hd * dh + c] as f64;
                        }
                    }
                }
            }
        }
        let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
        (f(dq), f(dk), f(dv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    fn masks(a: &Attention, r: &mut Rng) -> Option<Vec<f32>> {
        match a.mask {
            MaskKind::None => None,
            // padding: the last positions of batch 1 masked out; position 0 always attended
            MaskKind::Padding => Some((0..a.batch * a.tk).map(|i| if i % a.tk == 0 || r.uniform() > 0.3 { 1.0 } else { 0.0 }).collect()),
            // seq2seq-style: causal within the first tq, all of the rest visible
            MaskKind::Full => Some(
                (0..a.batch * a.tq * a.tk)
                    .map(|i| {
                        let (qi, j) = ((i / a.tk) % a.tq, i % a.tk);
                        if j <= qi || j >= a.tq {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn cpu_backward_matches_finite_differences_with_dropout_and_3d_mask() {
        // dropout masks do not depend on the inputs, so finite differences see the same mask
        let a = Attention { batch: 2, tq: 4, tk: 5, heads: 2, head_dim: 3, mask: MaskKind::Full, p_drop: 0.2, stream: 3, precision: Precision::F32 };
        let mut r = Rng::new(21);
        let h = a.heads * a.head_dim;
        let (q, k, v) = (r.vec(a.batch * a.tq * h, 1.0), r.vec(a.batch * a.tk * h, 1.0), r.vec(a.batch * a.tk * h, 1.0));
        let w = r.vec(a.batch * a.tq * h, 1.0);
        let mask = masks(&a, &mut r);
        let m = mask.as_deref();
        let (_, probs, _) = cpu::forward(&a, &q, &k, &v, m, 77);
        let (dq, dk, dv) = cpu::backward(&a, &q, &k, &v, &probs, &w, 77);
        let f = |q: &[f32], k: &[f32], v: &[f32]| dot(&cpu::forward(&a, q, k, v, m, 77).0, &w);
        assert_close("dq fd", &dq, &numeric_grad(&q, 1e-3, |x| f(x, &k, &v)), 1e-3, 2e-3);
        assert_close("dk fd", &dk, &numeric_grad(&k, 1e-3, |x| f(&q, x, &v)), 1e-3, 2e-3);
        assert_close("dv fd", &dv, &numeric_grad(&v, 1e-3, |x| f(&q, &k, x)), 1e-3, 2e-3);
    }

    #[test]
    fn gpu_matches_cpu_forward_and_backward() {
        let g = gpu();
        let cases = [
            Attention { batch: 1, tq: 1, tk: 1, heads: 1, head_dim: 1, mask: MaskKind::None, p_drop: 0.0, stream: 0, precision: Precision::F32 },
            Attention { batch: 2, tq: 7, tk: 7, heads: 3, head_dim: 5, mask: MaskKind::Padding, p_drop: 0.1, stream: 1, precision: Precision::F32 },
            // rows longer than the 64-thread workgroup, 3-D mask, cross lengths (tq != tk)
            Attention { batch: 2, tq: 9, tk: 70, heads: 2, head_dim: 8, mask: MaskKind::Full, p_drop: 0.0, stream: 2, precision: Precision::F32 },
            Attention { batch: 1, tq: 33, tk: 33, heads: 4, head_dim: 16, mask: MaskKind::Padding, p_drop: 0.3, stream: 5, precision: Precision::F32 },
        ];
        for (ci, a) in cases.iter().enumerate() {
            let mut r = Rng::new(30 + ci as u64);
            let h = a.heads * a.head_dim;
            // Q is packed as a fused QKV-like buffer (row stride 3h) to exercise strided heads.
            let qkv = r.vec(a.batch * a.tq * 3 * h, 1.0);
            let q: Vec<f32> = (0..a.batch * a.tq).flat_map(|t| qkv[t * 3 * h..t * 3 * h + h].to_vec()).collect();
            let (k, v) = (r.vec(a.batch * a.tk * h, 1.0), r.vec(a.batch * a.tk * h, 1.0));
            let dctx = r.vec(a.batch * a.tq * h, 1.0);
            let mask = masks(a, &mut r);
            let seed = 99u32;
            let (ctx_w, probs_w, _) = cpu::forward(a, &q, &k, &v, mask.as_deref(), seed);
            let (dq_w, dk_w, dv_w) = cpu::backward(a, &q, &k, &v, &probs_w, &dctx, seed);

            let up = |n: &str, x: &[f32]| g.upload_f32(n, &[x.len()], x).unwrap();
            let (qt, kt, vt, dct) = (up("qkv", &qkv), up("k", &k), up("v", &v), up("dctx", &dctx));
            let mt = mask.as_ref().map(|m| up("mask", m));
            let sd = g.upload_u32("seed", &[1], &[seed]).unwrap();
            let z = |n: &str, len: usize| g.zeros(n, &[len], DType::F32).unwrap();
            let (sc, pr, pd) = (z("s", a.score_len()), z("p", a.score_len()), z("pd", a.score_len()));
            let ctx = z("ctx", a.batch * a.tq * h);
            let (dq, dk, dv) = (z("dq", a.batch * a.tq * h), z("dk", a.batch * a.tk * h), z("dv", a.batch * a.tk * h));
            let qs = Seq::new(&qt, 0, 3 * h);
            let mut list = a.forward(g, qs, Seq::new(&kt, 0, h), Seq::new(&vt, 0, h), Seq::new(&ctx, 0, h), mt.as_ref(), &sc, &pr, &pd, &sd).unwrap();
            list.extend(
                a.backward(
                    g,
                    qs,
                    Seq::new(&kt, 0, h),
                    Seq::new(&vt, 0, h),
                    Seq::new(&dct, 0, h),
                    Seq::new(&dq, 0, h),
                    Seq::new(&dk, 0, h),
                    Seq::new(&dv, 0, h),
                    &pr,
                    &pd,
                    &sc,
                    &sd,
                )
                .unwrap(),
            );
            g.run(&list).unwrap();
            let what = |s: &str| format!("case {ci} {s}");
            assert_close(&what("probs"), &g.read_f32(&pr).unwrap(), &probs_w, 1e-5, 1e-4);
            assert_close(&what("ctx"), &g.read_f32(&ctx).unwrap(), &ctx_w, 1e-5, 1e-4);
            assert_close(&what("dq"), &g.read_f32(&dq).unwrap(), &dq_w, 1e-5, 1e-4);
            assert_close(&what("dk"), &g.read_f32(&dk).unwrap(), &dk_w, 1e-5, 1e-4);
            assert_close(&what("dv"), &g.read_f32(&dv).unwrap(), &dv_w, 1e-5, 1e-4);
        }
    }
}
