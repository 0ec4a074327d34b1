//! Oscar's forward and backward as lists of prepared dispatches over planned buffers
//! (oscar.md §1–2): text embeddings (word + position + type → LayerNorm → dropout) and the region
//! projection (Linear → optional LayerNorm → dropout) placed into one [B, T+R, H] sequence, post-LN
//! BERT layers, the tanh pooler, the contrastive head on pooled [CLS], and the masked-token head
//! (transform → GELU → LayerNorm → decoder tied to the word embeddings) at labelled positions only.
//! Each part's backward is written right after its forward, in reverse order of use.
use super::batch::{Inputs, Shape};
use super::config::Config;
use super::params::{layer_prefix, ParamSet, EMB};
use super::plan::{Acts, DActs, LayerActs};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::ops::attention::{Attention, MaskKind, Seq};
use crate::ops::cross_entropy::CrossEntropy;
use crate::ops::matmul::{matmul, matmul_auto, Act, Layout, Linear, Precision};
use crate::ops::rows::{place, take, Segment};
use crate::ops::{dropout, elementwise, embedding, layernorm, reduce};
use crate::Result;

/// Dropout streams: distinct per call site so no two sites share a mask.
fn stream(layer: usize, site: u32) -> u32 {
    16 + 8 * layer as u32 + site
}
const S_EMB_TEXT: u32 = 1;
const S_EMB_IMG: u32 = 2;
const S_ATTN: u32 = 0;
const S_ATTN_OUT: u32 = 1;
const S_FFN_OUT: u32 = 2;

/// Everything one shape needs: inputs, activations, and the dispatch lists.
pub struct Step {
    pub shape: Shape,
    pub inputs: Inputs,
    pub acts: Acts,
    pub dacts: Option<DActs>,
    pub forward: Vec<Dispatch>,
    pub backward: Vec<Dispatch>,
    pub act_bytes: u64,
    pub grad_act_bytes: u64,
    /// Indices in `backward` of the two loss-gradient dispatches (masked-token, contrastive).
    loss_grads: Vec<usize>,
}

impl Step {
    /// Last hidden states [B*S, H].
    pub fn hidden(&self) -> &Tensor {
        self.acts.layers.last().map(|l| &l.out).unwrap_or(&self.acts.x0)
    }
    /// Sets the factor on the loss gradients (what `plan` took as `loss_scale`) for later steps.
    pub fn set_loss_scale(&self, gpu: &Gpu, scale: f32) {
        for &i in &self.loss_grads {
            crate::ops::cross_entropy::set_dscale(gpu, &self.backward[i], scale);
        }
    }
}

struct Ctx<'a> {
    gpu: &'a Gpu,
    c: &'a Config,
    s: Shape,
    p: &'a ParamSet,
    inp: &'a Inputs,
    a: &'a Acts,
    ph: f32,
    pa: f32,
    prec: Precision,
    /// Split-K scratch for the backward matmuls.
    split: Option<&'a Tensor>,
}

impl<'a> Ctx<'a> {
    fn w(&self, name: &str) -> Result<Tensor> {
        self.p.get(name)
    }
    fn lin(&self, rows: usize, inp: usize, out: usize) -> Linear {
        Linear { precision: self.prec, ..Linear::new(rows, inp, out) }
    }
    fn rows(&self) -> usize {
        self.s.rows()
    }
    fn h(&self) -> usize {
        self.c.hidden_size
    }
    fn attention(&self, l: usize) -> Attention {
        let c = self.c;
        Attention {
            batch: self.s.batch,
            tq: self.s.seq(),
            tk: self.s.seq(),
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            mask: if self.s.mask3d { MaskKind::Full } else { MaskKind::Padding },
            p_drop: self.pa,
            stream: stream(l, S_ATTN),
            precision: self.prec,
        }
    }
    fn text_seg(&self) -> Segment {
        Segment { batch: self.s.batch, seg: self.s.text, stride: self.s.seq(), at: 0, cols: self.h() }
    }
    fn img_seg(&self) -> Segment {
        Segment { batch: self.s.batch, seg: self.s.regions, stride: self.s.seq(), at: self.s.text, cols: self.h() }
    }
    /// The [CLS] row of every sequence in `t` [B*S, H], as a matmul operand.
    fn cls_rows(&self) -> Layout {
        Layout { off: 0, rs: self.s.seq() * self.h(), cs: 1, bs: [0, 0] }
    }
    fn qkv_col(&self, j: usize) -> Layout {
        let h = self.h();
        Layout { off: j * h, rs: 3 * h, cs: 1, bs: [0, 0] }
    }
}

const QKV: [&str; 3] = ["attention.self.query", "attention.self.key", "attention.self.value"];

// ---------------------------------------------------------------- embeddings
fn embeddings_forward(x: &Ctx, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (bt, h) = (x.s.batch * x.s.text, x.h());
    if bt > 0 {
        v.push(embedding::gather(g, &i.input_ids, &x.w(&format!("{EMB}word_embeddings.weight"))?, &a.et, bt, c.vocab_size, h, false)?);
        v.push(embedding::gather(g, &i.pos_ids, &x.w(&format!("{EMB}position_embeddings.weight"))?, &a.et, bt, c.max_position_embeddings, h, true)?);
        v.push(embedding::gather(g, &i.type_ids, &x.w(&format!("{EMB}token_type_embeddings.weight"))?, &a.et, bt, c.type_vocab_size, h, true)?);
        let (lw, lb) = (x.w(&format!("{EMB}LayerNorm.weight"))?, x.w(&format!("{EMB}LayerNorm.bias"))?);
        v.push(layernorm::layernorm(g, &a.et, &lw, &lb, &a.et_ln, &a.st_e, bt, h, c.layer_norm_eps)?);
        v.push(place(g, &x.text_seg(), &a.et_ln, &a.x0, &i.seed, x.ph, S_EMB_TEXT)?);
    }
    let br = x.s.batch * x.s.regions;
    if br > 0 {
        let lin = x.lin(br, c.img_feature_dim, h);
        v.push(lin.forward(g, &i.img, &x.w("bert.img_embedding.weight")?, Some(&x.w("bert.img_embedding.bias")?), &a.ei, Act::None, None)?);
        let placed = match &a.ei_ln {
            Some((y, st)) => {
                v.push(layernorm::layernorm(g, &a.ei, &x.w("bert.LayerNorm.weight")?, &x.w("bert.LayerNorm.bias")?, y, st, br, h, c.img_layer_norm_eps)?);
                y
            }
            None => &a.ei,
        };
        v.push(place(g, &x.img_seg(), placed, &a.x0, &i.seed, x.ph, S_EMB_IMG)?);
    }
    Ok(())
}

fn embeddings_backward(x: &Ctx, d: &DActs, gr: &ParamSet, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (bt, h) = (x.s.batch * x.s.text, x.h());
    let dx0 = &d.dh[0];
    if bt > 0 {
        v.push(take(g, &x.text_seg(), dx0, &d.det, &i.seed, x.ph, S_EMB_TEXT, false)?);
        let n = |s: &str| format!("{EMB}{s}");
        v.extend(layernorm::layernorm_backward(g, &a.et, &x.w(&n("LayerNorm.weight"))?, &a.st_e, &d.det, &d.de, &gr.get(&n("LayerNorm.weight"))?, &gr.get(&n("LayerNorm.bias"))?, bt, h, false)?);
        v.push(embedding::scatter_add(g, &i.word_index, &d.de, &gr.get(&n("word_embeddings.weight"))?, bt, c.vocab_size, h)?);
        v.push(embedding::scatter_add(g, &i.pos_index, &d.de, &gr.get(&n("position_embeddings.weight"))?, bt, c.max_position_embeddings, h)?);
        v.push(embedding::scatter_add(g, &i.type_index, &d.de, &gr.get(&n("token_type_embeddings.weight"))?, bt, c.type_vocab_size, h)?);
    }
    let br = x.s.batch * x.s.regions;
    if br > 0 {
        v.push(take(g, &x.img_seg(), dx0, &d.dei, &i.seed, x.ph, S_EMB_IMG, false)?);
        let dy = match &a.ei_ln {
            Some((_, st)) => {
                v.extend(layernorm::layernorm_backward(g, &a.ei, &x.w("bert.LayerNorm.weight")?, st, &d.dei, &d.dei_pre, &gr.get("bert.LayerNorm.weight")?, &gr.get("bert.LayerNorm.bias")?, br, h, false)?);
                &d.dei_pre
            }
            None => &d.dei,
        };
        let lin = x.lin(br, c.img_feature_dim, h);
        v.extend(lin.backward_split(g, &i.img, &x.w("bert.img_embedding.weight")?, dy, None, &gr.get("bert.img_embedding.weight")?, Some(&gr.get("bert.img_embedding.bias")?), false, x.split)?);
    }
    Ok(())
}

// ---------------------------------------------------------------- encoder layer
fn layer_forward(x: &Ctx, l: usize, input: &Tensor, la: &LayerActs, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (rows, h, f) = (x.rows(), x.h(), c.intermediate_size);
    let p = layer_prefix(l);
    let w = |n: &str| x.w(&format!("{p}{n}"));
    let lin = x.lin(rows, h, h);
    for (j, n) in QKV.iter().enumerate() {
        let mut d = lin.fwd_desc();
        d.c = x.qkv_col(j);
        d.bias_off = Some(0);
        v.push(matmul(g, &d, input, &w(&format!("{n}.weight"))?, &la.qkv, Some(&w(&format!("{n}.bias"))?), None)?);
    }
    let (q, k, vv) = (Seq::new(&la.qkv, 0, 3 * h), Seq::new(&la.qkv, h, 3 * h), Seq::new(&la.qkv, 2 * h, 3 * h));
    v.extend(x.attention(l).forward(g, q, k, vv, Seq::new(&la.ctx, 0, h), Some(&i.mask), &a.scores, &la.probs, &la.pd, &i.seed)?);
    v.push(lin.forward(g, &la.ctx, &w("attention.output.dense.weight")?, Some(&w("attention.output.dense.bias")?), &a.t1, Act::None, None)?);
    v.push(dropout::dropout_add(g, &a.t1, input, &la.y1, &i.seed, x.ph, stream(l, S_ATTN_OUT))?);
    let eps = c.layer_norm_eps;
    v.push(layernorm::layernorm(g, &la.y1, &w("attention.output.LayerNorm.weight")?, &w("attention.output.LayerNorm.bias")?, &la.a, &la.st1, rows, h, eps)?);
    let up = x.lin(rows, h, f);
    v.push(up.forward(g, &la.a, &w("intermediate.dense.weight")?, Some(&w("intermediate.dense.bias")?), &la.u, Act::Gelu, Some(&la.upre))?);
    let down = x.lin(rows, f, h);
    v.push(down.forward(g, &la.u, &w("output.dense.weight")?, Some(&w("output.dense.bias")?), &a.t1, Act::None, None)?);
    v.push(dropout::dropout_add(g, &a.t1, &la.a, &la.y2, &i.seed, x.ph, stream(l, S_FFN_OUT))?);
    v.push(layernorm::layernorm(g, &la.y2, &w("output.LayerNorm.weight")?, &w("output.LayerNorm.bias")?, &la.out, &la.st2, rows, h, eps)?);
    Ok(())
}

/// Given dout (gradient of the layer's output), writes din (gradient of its input).
fn layer_backward(x: &Ctx, l: usize, input: &Tensor, la: &LayerActs, d: &DActs, gr: &ParamSet, dout: &Tensor, din: &Tensor, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (rows, h, f) = (x.rows(), x.h(), c.intermediate_size);
    let p = layer_prefix(l);
    let w = |n: &str| x.w(&format!("{p}{n}"));
    let dw = |n: &str| gr.get(&format!("{p}{n}"));
    // output LayerNorm, FFN dropout, FFN down, GELU, FFN up (+ residual), attention LayerNorm
    v.extend(layernorm::layernorm_backward(g, &la.y2, &w("output.LayerNorm.weight")?, &la.st2, dout, &d.dy2, &dw("output.LayerNorm.weight")?, &dw("output.LayerNorm.bias")?, rows, h, false)?);
    v.push(dropout::dropout_backward(g, &d.dy2, &d.dt, &i.seed, x.ph, stream(l, S_FFN_OUT), false)?);
    let down = x.lin(rows, f, h);
    v.extend(down.backward_split(g, &la.u, &w("output.dense.weight")?, &d.dt, Some(&d.dffn), &dw("output.dense.weight")?, Some(&dw("output.dense.bias")?), false, x.split)?);
    v.push(elementwise::gelu_backward(g, &la.upre, &d.dffn, &la.u, false)?); // u now holds dU_pre
    let up = x.lin(rows, h, f);
    v.extend(up.backward_split(g, &la.a, &w("intermediate.dense.weight")?, &la.u, Some(&d.dy2), &dw("intermediate.dense.weight")?, Some(&dw("intermediate.dense.bias")?), true, x.split)?);
    v.extend(layernorm::layernorm_backward(g, &la.y1, &w("attention.output.LayerNorm.weight")?, &la.st1, &d.dy2, din, &dw("attention.output.LayerNorm.weight")?, &dw("attention.output.LayerNorm.bias")?, rows, h, false)?);
    // attention output projection and its dropout; din already holds the residual gradient
    v.push(dropout::dropout_backward(g, din, &d.dt, &i.seed, x.ph, stream(l, S_ATTN_OUT), false)?);
    let lin = x.lin(rows, h, h);
    v.extend(lin.backward_split(g, &la.ctx, &w("attention.output.dense.weight")?, &d.dt, Some(&d.dctx), &dw("attention.output.dense.weight")?, Some(&dw("attention.output.dense.bias")?), false, x.split)?);
    let (q, k, vv) = (Seq::new(&la.qkv, 0, 3 * h), Seq::new(&la.qkv, h, 3 * h), Seq::new(&la.qkv, 2 * h, 3 * h));
    let (dq, dk, dv) = (Seq::new(&d.dqkv, 0, 3 * h), Seq::new(&d.dqkv, h, 3 * h), Seq::new(&d.dqkv, 2 * h, 3 * h));
    v.extend(x.attention(l).backward(g, q, k, vv, Seq::new(&d.dctx, 0, h), dq, dk, dv, &la.probs, &la.pd, &a.scores, &i.seed)?);
    for (j, n) in QKV.iter().enumerate() {
        let mut dxd = lin.dx_desc(true);
        dxd.a = x.qkv_col(j);
        v.extend(matmul_auto(g, &dxd, &d.dqkv, &w(&format!("{n}.weight"))?, din, None, None, x.split)?);
        let mut dwd = lin.dw_desc();
        dwd.a = x.qkv_col(j).t();
        v.extend(matmul_auto(g, &dwd, &d.dqkv, input, &dw(&format!("{n}.weight"))?, None, None, x.split)?);
        v.push(reduce::colsum_strided(g, &d.dqkv, j * h, 3 * h, &dw(&format!("{n}.bias"))?, rows, h, true)?);
    }
    Ok(())
}

// ---------------------------------------------------------------- heads
fn heads_forward(x: &Ctx, v: &mut Vec<Dispatch>, hid: &Tensor) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (b, h, m) = (x.s.batch, x.h(), x.s.masked);
    let pool = x.lin(b, h, h);
    let mut d = pool.fwd_desc();
    d.a = x.cls_rows();
    d.bias_off = Some(0);
    d.act = Act::Tanh;
    v.push(matmul(g, &d, hid, &x.w("bert.pooler.dense.weight")?, &a.pooled, Some(&x.w("bert.pooler.dense.bias")?), None)?);
    let cls = x.lin(b, h, c.num_contrast_classes);
    v.push(cls.forward(g, &a.pooled, &x.w("cls.seq_relationship.weight")?, Some(&x.w("cls.seq_relationship.bias")?), &a.clog, Act::None, None)?);
    let ce = CrossEntropy { rows: b, vocab: c.num_contrast_classes, ignore_index: -1 };
    v.extend(ce.forward(g, &a.clog, &i.con_labels, &a.ce_con, &a.losses.view(4, &[3])?)?);
    // masked-token head at the labelled positions only
    v.push(embedding::gather(g, &i.mlm_pos, hid, &a.hm, m, x.rows(), h, false)?);
    let tr = x.lin(m, h, h);
    v.push(tr.forward(g, &a.hm, &x.w("cls.predictions.transform.dense.weight")?, Some(&x.w("cls.predictions.transform.dense.bias")?), &a.tg, Act::Gelu, Some(&a.tpre))?);
    v.push(layernorm::layernorm(g, &a.tg, &x.w("cls.predictions.transform.LayerNorm.weight")?, &x.w("cls.predictions.transform.LayerNorm.bias")?, &a.tl, &a.st_t, m, h, c.layer_norm_eps)?);
    let dec = x.lin(m, h, c.vocab_size);
    v.push(dec.forward(g, &a.tl, &x.w(&format!("{EMB}word_embeddings.weight"))?, Some(&x.w("cls.predictions.bias")?), &a.logits, Act::None, None)?);
    let ce = CrossEntropy { rows: m, vocab: c.vocab_size, ignore_index: -1 };
    v.extend(ce.forward(g, &a.logits, &i.mlm_labels, &a.ce_mlm, &a.losses.view(0, &[3])?)?);
    Ok(())
}

/// Returns the indices in `v` of the loss-gradient dispatches.
fn heads_backward(x: &Ctx, d: &DActs, gr: &ParamSet, hid: &Tensor, dhid: &Tensor, scale: f32, v: &mut Vec<Dispatch>) -> Result<Vec<usize>> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (b, h, m) = (x.s.batch, x.h(), x.s.masked);
    v.push(elementwise::fill(g, dhid, 0.0)?);
    let ce = CrossEntropy { rows: m, vocab: c.vocab_size, ignore_index: -1 };
    let mut loss_grads = vec![v.len()];
    v.push(ce.backward(g, &a.logits, &i.mlm_labels, &a.ce_mlm, &a.losses.view(0, &[3])?, &d.dlogits, scale)?);
    let dec = x.lin(m, h, c.vocab_size);
    let word = format!("{EMB}word_embeddings.weight");
    v.extend(dec.backward_split(g, &a.tl, &x.w(&word)?, &d.dlogits, Some(&d.dtl), &gr.get(&word)?, Some(&gr.get("cls.predictions.bias")?), false, x.split)?);
    let ln = "cls.predictions.transform.LayerNorm";
    v.extend(layernorm::layernorm_backward(g, &a.tg, &x.w(&format!("{ln}.weight"))?, &a.st_t, &d.dtl, &d.dtg, &gr.get(&format!("{ln}.weight"))?, &gr.get(&format!("{ln}.bias"))?, m, h, false)?);
    v.push(elementwise::gelu_backward(g, &a.tpre, &d.dtg, &d.dtl, false)?);
    let tr = x.lin(m, h, h);
    let t = "cls.predictions.transform.dense";
    v.extend(tr.backward_split(g, &a.hm, &x.w(&format!("{t}.weight"))?, &d.dtl, Some(&d.dhm), &gr.get(&format!("{t}.weight"))?, Some(&gr.get(&format!("{t}.bias"))?), false, x.split)?);
    v.push(embedding::scatter_add(g, &i.mlm_index, &d.dhm, dhid, m, x.rows(), h)?);
    // contrastive head and pooler
    let ce = CrossEntropy { rows: b, vocab: c.num_contrast_classes, ignore_index: -1 };
    loss_grads.push(v.len());
    v.push(ce.backward(g, &a.clog, &i.con_labels, &a.ce_con, &a.losses.view(4, &[3])?, &d.dclog, scale)?);
    let cls = x.lin(b, h, c.num_contrast_classes);
    v.extend(cls.backward_split(g, &a.pooled, &x.w("cls.seq_relationship.weight")?, &d.dclog, Some(&d.dpooled), &gr.get("cls.seq_relationship.weight")?, Some(&gr.get("cls.seq_relationship.bias")?), false, x.split)?);
    v.push(elementwise::tanh_backward(g, &a.pooled, &d.dpooled, &d.dppre, false)?);
    let pool = x.lin(b, h, h);
    let mut dwd = pool.dw_desc();
    dwd.b = x.cls_rows();
    v.push(matmul(g, &dwd, &d.dppre, hid, &gr.get("bert.pooler.dense.weight")?, None, None)?);
    v.push(reduce::colsum(g, &d.dppre, &gr.get("bert.pooler.dense.bias")?, b, h, true)?);
    let mut dxd = pool.dx_desc(true);
    dxd.c = x.cls_rows();
    v.push(matmul(g, &dxd, &d.dppre, &x.w("bert.pooler.dense.weight")?, dhid, None, None)?);
    Ok(loss_grads)
}

/// Builds the inputs, activations and dispatch lists for one shape. With `grads`, the backward
/// is built too; `dropout` false gives the evaluation model; `loss_scale` multiplies the loss
/// gradients (1/accumulation steps, times the loss scale of the f16 path); `prec` is what every
/// matmul computes its products in (activations, gradients and the rest stay fp32).
pub fn plan(gpu: &Gpu, c: &Config, params: &ParamSet, grads: Option<&ParamSet>, s: Shape, dropout: bool, loss_scale: f32, prec: Precision) -> Result<Step> {
    crate::ensure_shape!("plan", s.batch > 0 && s.text > 0 && s.masked > 0, "batch, text and masked capacity must be positive: {s:?}");
    crate::ensure_shape!("plan", s.text <= c.max_position_embeddings, "text length {} > max_position_embeddings {}", s.text, c.max_position_embeddings);
    let inputs = Inputs::new(gpu, &s, c)?;
    let (acts, dacts, act_bytes, grad_act_bytes) = Acts::new(gpu, c, &s, grads.is_some())?;
    let (ph, pa) = if dropout { (c.hidden_dropout_prob, c.attention_probs_dropout_prob) } else { (0.0, 0.0) };
    let x = Ctx { gpu, c, s, p: params, inp: &inputs, a: &acts, ph, pa, prec, split: dacts.as_ref().map(|d| &d.split) };
    let mut forward = Vec::new();
    embeddings_forward(&x, &mut forward)?;
    let mut input = &acts.x0;
    for (l, la) in acts.layers.iter().enumerate() {
        layer_forward(&x, l, input, la, &mut forward)?;
        input = &la.out;
    }
    heads_forward(&x, &mut forward, input)?;
    let mut backward = Vec::new();
    let mut loss_grads = Vec::new();
    if let (Some(gr), Some(d)) = (grads, dacts.as_ref()) {
        let nl = acts.layers.len();
        loss_grads = heads_backward(&x, d, gr, input, &d.dh[nl % 2], loss_scale, &mut backward)?;
        for l in (0..nl).rev() {
            let inp = if l == 0 { &acts.x0 } else { &acts.layers[l - 1].out };
            layer_backward(&x, l, inp, &acts.layers[l], d, gr, &d.dh[(l + 1) % 2], &d.dh[l % 2], &mut backward)?;
        }
        embeddings_backward(&x, d, gr, &mut backward)?;
    }
    Ok(Step { shape: s, inputs, acts, dacts, forward, backward, act_bytes, grad_act_bytes, loss_grads })
}
