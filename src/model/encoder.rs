//! The Oscar encoder as lists of prepared dispatches over planned buffers (docs/oscar.md §1): text
//! embeddings (word + position + type → LayerNorm → dropout) and the region projection (Linear →
//! optional LayerNorm → dropout) placed into one [B, T+R, H] sequence, post-LN BERT layers, and the
//! tanh pooler on [CLS]. Each part's backward is written right after its forward, in reverse order of
//! use. Heads (model::heads) read `hidden` and `pooled` and write their gradients.
use super::acts::{EncoderActs, EncoderGrads, EncoderInputs, LayerActs};
use super::batch::Shape;
use super::config::Config;
use super::params::{layer_prefix, ParamSet, EMB};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::ops::attention::{Attention, MaskKind, Seq};
use crate::ops::cache::{self, Rows};
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

/// What every dispatch builder of one plan needs.
pub struct Ctx<'a> {
    pub gpu: &'a Gpu,
    pub c: &'a Config,
    pub s: Shape,
    pub p: &'a ParamSet,
    pub inp: &'a EncoderInputs,
    pub a: &'a EncoderActs,
    /// Hidden and attention dropout (0 when dropout is off).
    pub ph: f32,
    pub pa: f32,
    pub prec: Precision,
    /// Split-K scratch for the backward matmuls.
    pub split: Option<&'a Tensor>,
    /// Decode plans: each layer's keys and values also go to (or come from) a cache.
    pub kv: Option<Kv<'a>>,
}

/// A key/value cache per layer, [B, slots, H] each. Every layer scatters its rows' K and V to cache
/// rows `index` [B*S]; with `attend`, attention reads keys and values from the cache (all `slots`
/// of the sequence, masked by the [B, S, slots] attention mask) instead of from the rows themselves.
#[derive(Clone, Copy)]
pub struct Kv<'a> {
    pub k: &'a [Tensor],
    pub v: &'a [Tensor],
    pub index: &'a Tensor,
    pub slots: usize,
    pub attend: bool,
}

impl<'a> Ctx<'a> {
    pub fn w(&self, name: &str) -> Result<Tensor> {
        self.p.get(name)
    }
    pub fn lin(&self, rows: usize, inp: usize, out: usize) -> Linear {
        Linear { precision: self.prec, ..Linear::new(rows, inp, out) }
    }
    pub fn rows(&self) -> usize {
        self.s.rows()
    }
    pub fn h(&self) -> usize {
        self.c.hidden_size
    }
    fn attention(&self, l: usize) -> Attention {
        let c = self.c;
        let cached = self.kv.filter(|k| k.attend);
        Attention {
            batch: self.s.batch,
            tq: self.s.seq(),
            tk: cached.map_or(self.s.seq(), |k| k.slots),
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            mask: if self.s.mask3d || cached.is_some() { MaskKind::Full } else { MaskKind::Padding },
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
    pub fn cls_rows(&self) -> Layout {
        Layout { off: 0, rs: self.s.seq() * self.h(), cs: 1, bs: [0, 0] }
    }
    fn qkv_col(&self, j: usize) -> Layout {
        let h = self.h();
        Layout { off: j * h, rs: 3 * h, cs: 1, bs: [0, 0] }
    }
}

const QKV: [&str; 3] = ["attention.self.query", "attention.self.key", "attention.self.value"];

// ---------------------------------------------------------------- embeddings
pub fn embeddings_forward(x: &Ctx, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (bt, h) = (x.s.batch * x.s.text, x.h());
    if bt > 0 {
        v.push(embedding::gather(g, &i.input_ids, &x.w(&format!("{EMB}word_embeddings.weight"))?, &a.emb_text, bt, c.vocab_size, h, false)?);
        v.push(embedding::gather(g, &i.pos_ids, &x.w(&format!("{EMB}position_embeddings.weight"))?, &a.emb_text, bt, c.max_position_embeddings, h, true)?);
        v.push(embedding::gather(g, &i.type_ids, &x.w(&format!("{EMB}token_type_embeddings.weight"))?, &a.emb_text, bt, c.type_vocab_size, h, true)?);
        let (lw, lb) = (x.w(&format!("{EMB}LayerNorm.weight"))?, x.w(&format!("{EMB}LayerNorm.bias"))?);
        v.push(layernorm::layernorm(g, &a.emb_text, &lw, &lb, &a.emb_text_ln, &a.emb_ln_stats, bt, h, c.layer_norm_eps)?);
        v.push(place(g, &x.text_seg(), &a.emb_text_ln, &a.emb_out, &i.dropout_seed, x.ph, S_EMB_TEXT)?);
    }
    let br = x.s.batch * x.s.regions;
    if br > 0 {
        let lin = x.lin(br, c.img_feature_dim, h);
        v.push(lin.forward(g, &i.img_feats, &x.w("bert.img_embedding.weight")?, Some(&x.w("bert.img_embedding.bias")?), &a.emb_img, Act::None, None)?);
        let placed = match &a.emb_img_ln {
            Some((y, st)) => {
                v.push(layernorm::layernorm(g, &a.emb_img, &x.w("bert.LayerNorm.weight")?, &x.w("bert.LayerNorm.bias")?, y, st, br, h, c.img_layer_norm_eps)?);
                y
            }
            None => &a.emb_img,
        };
        v.push(place(g, &x.img_seg(), placed, &a.emb_out, &i.dropout_seed, x.ph, S_EMB_IMG)?);
    }
    Ok(())
}

pub fn embeddings_backward(x: &Ctx, d: &EncoderGrads, gr: &ParamSet, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (bt, h) = (x.s.batch * x.s.text, x.h());
    let dx0 = &d.d_hidden[0];
    let gi = i.grad_index.as_ref().expect("a Train plan has gradient indices");
    if bt > 0 {
        v.push(take(g, &x.text_seg(), dx0, &d.d_emb_text, &i.dropout_seed, x.ph, S_EMB_TEXT, false)?);
        let n = |s: &str| format!("{EMB}{s}");
        v.extend(layernorm::layernorm_backward(
            g,
            &a.emb_text,
            &x.w(&n("LayerNorm.weight"))?,
            &a.emb_ln_stats,
            &d.d_emb_text,
            &d.d_emb_text_pre,
            &gr.get(&n("LayerNorm.weight"))?,
            &gr.get(&n("LayerNorm.bias"))?,
            bt,
            h,
            false,
        )?);
        v.push(embedding::scatter_add(g, &gi[0], &d.d_emb_text_pre, &gr.get(&n("word_embeddings.weight"))?, bt, c.vocab_size, h)?);
        v.push(embedding::scatter_add(g, &gi[1], &d.d_emb_text_pre, &gr.get(&n("position_embeddings.weight"))?, bt, c.max_position_embeddings, h)?);
        v.push(embedding::scatter_add(g, &gi[2], &d.d_emb_text_pre, &gr.get(&n("token_type_embeddings.weight"))?, bt, c.type_vocab_size, h)?);
    }
    let br = x.s.batch * x.s.regions;
    if br > 0 {
        v.push(take(g, &x.img_seg(), dx0, &d.d_emb_img, &i.dropout_seed, x.ph, S_EMB_IMG, false)?);
        let dy = match &a.emb_img_ln {
            Some((_, st)) => {
                v.extend(layernorm::layernorm_backward(
                    g,
                    &a.emb_img,
                    &x.w("bert.LayerNorm.weight")?,
                    st,
                    &d.d_emb_img,
                    &d.d_emb_img_pre,
                    &gr.get("bert.LayerNorm.weight")?,
                    &gr.get("bert.LayerNorm.bias")?,
                    br,
                    h,
                    false,
                )?);
                &d.d_emb_img_pre
            }
            None => &d.d_emb_img,
        };
        let lin = x.lin(br, c.img_feature_dim, h);
        v.extend(lin.backward_split(
            g,
            &i.img_feats,
            &x.w("bert.img_embedding.weight")?,
            dy,
            None,
            &gr.get("bert.img_embedding.weight")?,
            Some(&gr.get("bert.img_embedding.bias")?),
            false,
            x.split,
        )?);
    }
    Ok(())
}

// ---------------------------------------------------------------- encoder layer
pub fn layer_forward(x: &Ctx, l: usize, input: &Tensor, la: &LayerActs, out: &Tensor, v: &mut Vec<Dispatch>) -> Result<()> {
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
    let (q, mut k, mut vv) = (Seq::new(&la.qkv, 0, 3 * h), Seq::new(&la.qkv, h, 3 * h), Seq::new(&la.qkv, 2 * h, 3 * h));
    if let Some(kv) = x.kv {
        let n = x.s.batch * kv.slots;
        for (j, cache) in [(1, &kv.k[l]), (2, &kv.v[l])] {
            v.push(cache::scatter_rows(g, Rows { t: &la.qkv, off: j * h, rs: 3 * h }, kv.index, Rows { t: cache, off: 0, rs: h }, rows, h, n)?);
        }
        if kv.attend {
            (k, vv) = (Seq::new(&kv.k[l], 0, h), Seq::new(&kv.v[l], 0, h));
        }
    }
    v.extend(x.attention(l).forward(
        g,
        q,
        k,
        vv,
        Seq::new(&la.ctx, 0, h),
        Some(&i.attention_mask),
        &a.scores,
        &la.probs,
        &la.probs_dropped,
        &i.dropout_seed,
    )?);
    v.push(lin.forward(g, &la.ctx, &w("attention.output.dense.weight")?, Some(&w("attention.output.dense.bias")?), &a.scratch_hidden, Act::None, None)?);
    v.push(dropout::dropout_add(g, &a.scratch_hidden, input, &la.ln1_in, &i.dropout_seed, x.ph, stream(l, S_ATTN_OUT))?);
    let eps = c.layer_norm_eps;
    v.push(layernorm::layernorm(
        g,
        &la.ln1_in,
        &w("attention.output.LayerNorm.weight")?,
        &w("attention.output.LayerNorm.bias")?,
        &la.ln1_out,
        &la.ln1_stats,
        rows,
        h,
        eps,
    )?);
    let up = x.lin(rows, h, f);
    v.push(up.forward(g, &la.ln1_out, &w("intermediate.dense.weight")?, Some(&w("intermediate.dense.bias")?), &la.ffn_act, Act::Gelu, Some(&la.ffn_pre))?);
    let down = x.lin(rows, f, h);
    v.push(down.forward(g, &la.ffn_act, &w("output.dense.weight")?, Some(&w("output.dense.bias")?), &a.scratch_hidden, Act::None, None)?);
    v.push(dropout::dropout_add(g, &a.scratch_hidden, &la.ln1_out, &la.ln2_in, &i.dropout_seed, x.ph, stream(l, S_FFN_OUT))?);
    v.push(layernorm::layernorm(g, &la.ln2_in, &w("output.LayerNorm.weight")?, &w("output.LayerNorm.bias")?, out, &la.ln2_stats, rows, h, eps)?);
    Ok(())
}

/// Given dout (gradient of the layer's output), writes din (gradient of its input).
fn layer_backward(
    x: &Ctx,
    l: usize,
    input: &Tensor,
    la: &LayerActs,
    d: &EncoderGrads,
    gr: &ParamSet,
    dout: &Tensor,
    din: &Tensor,
    v: &mut Vec<Dispatch>,
) -> Result<()> {
    let (g, c, a, i) = (x.gpu, x.c, x.a, x.inp);
    let (rows, h, f) = (x.rows(), x.h(), c.intermediate_size);
    let p = layer_prefix(l);
    let w = |n: &str| x.w(&format!("{p}{n}"));
    let dw = |n: &str| gr.get(&format!("{p}{n}"));
    // output LayerNorm, FFN dropout, FFN down, GELU, FFN up (+ residual), attention LayerNorm
    v.extend(layernorm::layernorm_backward(
        g,
        &la.ln2_in,
        &w("output.LayerNorm.weight")?,
        &la.ln2_stats,
        dout,
        &d.d_ln_in,
        &dw("output.LayerNorm.weight")?,
        &dw("output.LayerNorm.bias")?,
        rows,
        h,
        false,
    )?);
    v.push(dropout::dropout_backward(g, &d.d_ln_in, &d.d_tmp, &i.dropout_seed, x.ph, stream(l, S_FFN_OUT), false)?);
    let down = x.lin(rows, f, h);
    v.extend(down.backward_split(
        g,
        &la.ffn_act,
        &w("output.dense.weight")?,
        &d.d_tmp,
        Some(&d.d_ffn),
        &dw("output.dense.weight")?,
        Some(&dw("output.dense.bias")?),
        false,
        x.split,
    )?);
    v.push(elementwise::gelu_backward(g, &la.ffn_pre, &d.d_ffn, &la.ffn_act, false)?); // u now holds dU_pre
    let up = x.lin(rows, h, f);
    v.extend(up.backward_split(
        g,
        &la.ln1_out,
        &w("intermediate.dense.weight")?,
        &la.ffn_act,
        Some(&d.d_ln_in),
        &dw("intermediate.dense.weight")?,
        Some(&dw("intermediate.dense.bias")?),
        true,
        x.split,
    )?);
    v.extend(layernorm::layernorm_backward(
        g,
        &la.ln1_in,
        &w("attention.output.LayerNorm.weight")?,
        &la.ln1_stats,
        &d.d_ln_in,
        din,
        &dw("attention.output.LayerNorm.weight")?,
        &dw("attention.output.LayerNorm.bias")?,
        rows,
        h,
        false,
    )?);
    // attention output projection and its dropout; din already holds the residual gradient
    v.push(dropout::dropout_backward(g, din, &d.d_tmp, &i.dropout_seed, x.ph, stream(l, S_ATTN_OUT), false)?);
    let lin = x.lin(rows, h, h);
    v.extend(lin.backward_split(
        g,
        &la.ctx,
        &w("attention.output.dense.weight")?,
        &d.d_tmp,
        Some(&d.d_ctx),
        &dw("attention.output.dense.weight")?,
        Some(&dw("attention.output.dense.bias")?),
        false,
        x.split,
    )?);
    let (q, k, vv) = (Seq::new(&la.qkv, 0, 3 * h), Seq::new(&la.qkv, h, 3 * h), Seq::new(&la.qkv, 2 * h, 3 * h));
    let (dq, dk, dv) = (Seq::new(&d.d_qkv, 0, 3 * h), Seq::new(&d.d_qkv, h, 3 * h), Seq::new(&d.d_qkv, 2 * h, 3 * h));
    v.extend(x.attention(l).backward(g, q, k, vv, Seq::new(&d.d_ctx, 0, h), dq, dk, dv, &la.probs, &la.probs_dropped, &a.scores, &i.dropout_seed)?);
    for (j, n) in QKV.iter().enumerate() {
        let mut dxd = lin.dx_desc(true);
        dxd.a = x.qkv_col(j);
        v.extend(matmul_auto(g, &dxd, &d.d_qkv, &w(&format!("{n}.weight"))?, din, None, None, x.split)?);
        let mut dwd = lin.dw_desc();
        dwd.a = x.qkv_col(j).t();
        v.extend(matmul_auto(g, &dwd, &d.d_qkv, input, &dw(&format!("{n}.weight"))?, None, None, x.split)?);
        v.push(reduce::colsum_strided(g, &d.d_qkv, j * h, 3 * h, &dw(&format!("{n}.bias"))?, rows, h, true)?);
    }
    Ok(())
}

// ---------------------------------------------------------------- pooler
pub fn pooler_forward(x: &Ctx, hid: &Tensor, v: &mut Vec<Dispatch>) -> Result<()> {
    let (b, h) = (x.s.batch, x.h());
    let mut d = x.lin(b, h, h).fwd_desc();
    d.a = x.cls_rows();
    d.bias_off = Some(0);
    d.act = Act::Tanh;
    v.push(matmul(x.gpu, &d, hid, &x.w("bert.pooler.dense.weight")?, &x.a.pooled, Some(&x.w("bert.pooler.dense.bias")?), None)?);
    Ok(())
}

/// From d_pooled (written by the head): the pooler's gradients, and its dx accumulated into dhid.
pub fn pooler_backward(x: &Ctx, d: &EncoderGrads, gr: &ParamSet, hid: &Tensor, dhid: &Tensor, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, b, h) = (x.gpu, x.s.batch, x.h());
    v.push(elementwise::tanh_backward(g, &x.a.pooled, &d.d_pooled, &d.d_pooled_pre, false)?);
    let pool = x.lin(b, h, h);
    let mut dwd = pool.dw_desc();
    dwd.b = x.cls_rows();
    v.push(matmul(g, &dwd, &d.d_pooled_pre, hid, &gr.get("bert.pooler.dense.weight")?, None, None)?);
    v.push(reduce::colsum(g, &d.d_pooled_pre, &gr.get("bert.pooler.dense.bias")?, b, h, true)?);
    let mut dxd = pool.dx_desc(true);
    dxd.c = x.cls_rows();
    v.push(matmul(g, &dxd, &d.d_pooled_pre, &x.w("bert.pooler.dense.weight")?, dhid, None, None)?);
    Ok(())
}

/// Embeddings, every layer and the pooler.
pub fn forward(x: &Ctx, v: &mut Vec<Dispatch>) -> Result<()> {
    embeddings_forward(x, v)?;
    for l in 0..x.c.num_hidden_layers {
        layer_forward(x, l, x.a.input(l), x.a.layer(l), x.a.out(l), v)?;
    }
    pooler_forward(x, x.a.hidden(x.c.num_hidden_layers), v)
}

/// The encoder's backward, after the head has written d_pooled and `d.d_hidden[L % 2]`.
pub fn backward(x: &Ctx, d: &EncoderGrads, gr: &ParamSet, v: &mut Vec<Dispatch>) -> Result<()> {
    let nl = x.c.num_hidden_layers;
    pooler_backward(x, d, gr, x.a.hidden(nl), &d.d_hidden[nl % 2], v)?;
    for l in (0..nl).rev() {
        layer_backward(x, l, x.a.input(l), x.a.layer(l), d, gr, &d.d_hidden[(l + 1) % 2], &d.d_hidden[l % 2], v)?;
    }
    embeddings_backward(x, d, gr, v)
}
