//! Activation and gradient buffers for one batch shape, allocated once. Everything the forward
//! keeps for the backward has its own buffer per layer; scratch is shared between layers.
use super::batch::Shape;
use super::config::Config;
use crate::gpu::{DType, Gpu, Tensor};
use crate::Result;

pub struct LayerActs {
    /// Q | K | V for each row: [B*S, 3H].
    pub qkv: Tensor,
    /// Softmax probabilities and their dropped-out copy: [B, heads, S, S].
    pub probs: Tensor,
    pub pd: Tensor,
    pub ctx: Tensor,
    /// Input of the attention LayerNorm (dropout(attn_out) + x), its stats, and its output.
    pub y1: Tensor,
    pub st1: Tensor,
    pub a: Tensor,
    /// FFN pre-activation and GELU output: [B*S, FFN]. The backward overwrites `u` with dU_pre.
    pub upre: Tensor,
    pub u: Tensor,
    pub y2: Tensor,
    pub st2: Tensor,
    /// Layer output h_{l+1}.
    pub out: Tensor,
}

pub struct Acts {
    pub et: Tensor,
    pub et_ln: Tensor,
    pub st_e: Tensor,
    pub ei: Tensor,
    pub ei_ln: Option<(Tensor, Tensor)>,
    pub x0: Tensor,
    pub layers: Vec<LayerActs>,
    pub pooled: Tensor,
    pub clog: Tensor,
    pub hm: Tensor,
    pub tpre: Tensor,
    pub tg: Tensor,
    pub tl: Tensor,
    pub st_t: Tensor,
    pub logits: Tensor,
    pub ce_mlm: Tensor,
    pub ce_con: Tensor,
    /// [mlm sum, mlm count, mlm mean, -, con sum, con count, con mean, -]
    pub losses: Tensor,
    pub scores: Tensor,
    pub t1: Tensor,
}

/// Gradient buffers of the activations (all scratch, reused by every layer).
pub struct DActs {
    pub dh: [Tensor; 2],
    pub dy2: Tensor,
    pub dt: Tensor,
    pub dctx: Tensor,
    pub dqkv: Tensor,
    pub dffn: Tensor,
    pub dpooled: Tensor,
    pub dppre: Tensor,
    pub dclog: Tensor,
    pub dlogits: Tensor,
    pub dtl: Tensor,
    pub dtg: Tensor,
    pub dhm: Tensor,
    pub det: Tensor,
    pub de: Tensor,
    pub dei: Tensor,
    pub dei_pre: Tensor,
    /// Split-K partial products (ops::matmul::matmul_split), shared by every backward matmul.
    pub split: Tensor,
}

/// The largest split-K scratch any backward matmul of this shape asks for.
fn split_scratch(c: &Config, s: &Shape) -> usize {
    use crate::ops::matmul::Linear;
    let (h, f, rows, m) = (c.hidden_size, c.intermediate_size, s.rows(), s.masked);
    [(rows, h, h), (rows, h, f), (rows, f, h), (s.batch * s.regions, c.img_feature_dim, h), (m, h, h), (m, h, c.vocab_size), (s.batch, h, h), (s.batch, h, c.num_contrast_classes)]
        .iter()
        .map(|&(r, i, o)| Linear::new(r, i, o).split_scratch())
        .max()
        .unwrap_or(0)
}

struct Alloc<'a> {
    gpu: &'a Gpu,
    bytes: u64,
}

impl Alloc<'_> {
    fn f(&mut self, name: &str, n: usize) -> Result<Tensor> {
        let t = self.gpu.zeros(name, &[n.max(1)], DType::F32)?;
        self.bytes += t.bytes();
        Ok(t)
    }
}

impl Acts {
    /// Returns the activations, their gradients, and the bytes of each.
    pub fn new(gpu: &Gpu, c: &Config, s: &Shape, with_grads: bool) -> Result<(Acts, Option<DActs>, u64, u64)> {
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (bt, br, rows, m) = (s.batch * s.text, s.batch * s.regions, s.rows(), s.masked);
        let score = s.batch * c.num_attention_heads * s.seq() * s.seq();
        let mut al = Alloc { gpu, bytes: 0 };
        let mut layers = Vec::new();
        for l in 0..c.num_hidden_layers {
            let n = |x: &str| format!("layer{l}.{x}");
            layers.push(LayerActs {
                qkv: al.f(&n("qkv"), rows * 3 * h)?,
                probs: al.f(&n("probs"), score)?,
                pd: al.f(&n("probs_dropped"), score)?,
                ctx: al.f(&n("ctx"), rows * h)?,
                y1: al.f(&n("ln1_in"), rows * h)?,
                st1: al.f(&n("ln1_stats"), 2 * rows)?,
                a: al.f(&n("ln1_out"), rows * h)?,
                upre: al.f(&n("ffn_pre"), rows * f)?,
                u: al.f(&n("ffn_act"), rows * f)?,
                y2: al.f(&n("ln2_in"), rows * h)?,
                st2: al.f(&n("ln2_stats"), 2 * rows)?,
                out: al.f(&n("out"), rows * h)?,
            });
        }
        let acts = Acts {
            et: al.f("emb.text", bt * h)?,
            et_ln: al.f("emb.text_ln", bt * h)?,
            st_e: al.f("emb.ln_stats", 2 * bt)?,
            ei: al.f("emb.img", br * h)?,
            ei_ln: if c.use_img_layernorm { Some((al.f("emb.img_ln", br * h)?, al.f("emb.img_ln_stats", 2 * br)?)) } else { None },
            x0: al.f("emb.out", rows * h)?,
            layers,
            pooled: al.f("pooled", s.batch * h)?,
            clog: al.f("contrast_logits", s.batch * c.num_contrast_classes)?,
            hm: al.f("mlm.hidden", m * h)?,
            tpre: al.f("mlm.transform_pre", m * h)?,
            tg: al.f("mlm.transform_act", m * h)?,
            tl: al.f("mlm.transform_ln", m * h)?,
            st_t: al.f("mlm.ln_stats", 2 * m)?,
            logits: al.f("mlm.logits", m * v)?,
            ce_mlm: al.f("mlm.ce_stats", 3 * m)?,
            ce_con: al.f("contrast.ce_stats", 3 * s.batch)?,
            losses: al.f("losses", 8)?,
            scores: al.f("scratch.scores", score)?,
            t1: al.f("scratch.hidden", rows * h)?,
        };
        let act_bytes = al.bytes;
        let mut al = Alloc { gpu, bytes: 0 };
        let d = if with_grads {
            Some(DActs {
                dh: [al.f("d.hidden_a", rows * h)?, al.f("d.hidden_b", rows * h)?],
                dy2: al.f("d.ln_in", rows * h)?,
                dt: al.f("d.tmp", rows * h)?,
                dctx: al.f("d.ctx", rows * h)?,
                dqkv: al.f("d.qkv", rows * 3 * h)?,
                dffn: al.f("d.ffn", rows * f)?,
                dpooled: al.f("d.pooled", s.batch * h)?,
                dppre: al.f("d.pooled_pre", s.batch * h)?,
                dclog: al.f("d.contrast_logits", s.batch * c.num_contrast_classes)?,
                dlogits: al.f("d.mlm_logits", m * v)?,
                dtl: al.f("d.mlm_ln", m * h)?,
                dtg: al.f("d.mlm_act", m * h)?,
                dhm: al.f("d.mlm_hidden", m * h)?,
                det: al.f("d.emb_text", bt * h)?,
                de: al.f("d.emb_text_pre", bt * h)?,
                dei: al.f("d.emb_img", br * h)?,
                dei_pre: al.f("d.emb_img_pre", br * h)?,
                split: al.f("d.split_k", split_scratch(c, s))?,
            })
        } else {
            None
        };
        Ok((acts, d, act_bytes, al.bytes))
    }
}
