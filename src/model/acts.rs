//! The encoder's activation buffers for one batch shape, allocated once per plan. Field names are
//! the buffers' GPU labels, so a profile or a validation error points at the field.
//!
//! - `Train`: everything the forward keeps for the backward has a buffer per layer; scratch is
//!   shared between layers; the gradient buffers (`EncoderGrads`) are all scratch.
//! - `Eval`: one layer's buffers are reused by every layer and the layer outputs alternate between
//!   two buffers, so memory does not grow with the number of layers.
use super::batch::Shape;
use super::config::Config;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::embedding::EmbeddingGradIndex;
use crate::Result;

/// Allocates zeroed f32/u32 buffers and counts their bytes.
pub struct Alloc<'a> {
    pub gpu: &'a Gpu,
    pub bytes: u64,
}

impl<'a> Alloc<'a> {
    pub fn new(gpu: &'a Gpu) -> Self {
        Alloc { gpu, bytes: 0 }
    }
    pub fn f32(&mut self, name: &str, n: usize) -> Result<Tensor> {
        self.typed(name, n, DType::F32)
    }
    pub fn u32(&mut self, name: &str, n: usize) -> Result<Tensor> {
        self.typed(name, n, DType::U32)
    }
    pub fn i32(&mut self, name: &str, n: usize) -> Result<Tensor> {
        self.typed(name, n, DType::I32)
    }
    fn typed(&mut self, name: &str, n: usize, d: DType) -> Result<Tensor> {
        let t = self.gpu.zeros(name, &[n.max(1)], d)?;
        self.bytes += t.bytes();
        Ok(t)
    }
}

/// The encoder's inputs on the GPU: [B, T] ids, [B, R, D] region features, the attention mask and
/// the dropout seed; with gradients, the CSR indices of the embedding backward.
pub struct EncoderInputs {
    pub input_ids: Tensor,
    pub type_ids: Tensor,
    pub pos_ids: Tensor,
    pub img_feats: Tensor,
    /// [B, S] (2-D) or [B, S, S] (3-D), 1 = attend.
    pub attention_mask: Tensor,
    /// The dropout seed of the current step (one u32).
    pub dropout_seed: Tensor,
    /// (word, position, type) gradient indices; Train only.
    pub grad_index: Option<[Tensor; 3]>,
}

impl EncoderInputs {
    pub fn new(al: &mut Alloc, s: &Shape, c: &Config, with_grads: bool) -> Result<EncoderInputs> {
        let bt = s.batch * s.text;
        let mask = if s.mask3d { s.batch * s.seq() * s.seq() } else { s.rows() };
        let n = EmbeddingGradIndex::len(bt);
        Ok(EncoderInputs {
            input_ids: al.u32("input_ids", bt)?,
            type_ids: al.u32("type_ids", bt)?,
            pos_ids: al.u32("pos_ids", bt)?,
            img_feats: al.f32("img_feats", s.batch * s.regions * c.img_feature_dim)?,
            attention_mask: al.f32("attention_mask", mask)?,
            dropout_seed: al.u32("dropout_seed", 1)?,
            grad_index: if with_grads { Some([al.u32("word_grad_index", n)?, al.u32("pos_grad_index", n)?, al.u32("type_grad_index", n)?]) } else { None },
        })
    }
}

/// One layer's activations ([B*S] rows).
pub struct LayerActs {
    /// Q | K | V for each row: [B*S, 3H].
    pub qkv: Tensor,
    /// Softmax probabilities and their dropped-out copy: [B, heads, S, S].
    pub probs: Tensor,
    pub probs_dropped: Tensor,
    pub ctx: Tensor,
    /// Input of the attention LayerNorm (dropout(attn_out) + x), its stats, and its output.
    pub ln1_in: Tensor,
    pub ln1_stats: Tensor,
    pub ln1_out: Tensor,
    /// FFN pre-activation and GELU output: [B*S, FFN]. The backward overwrites `ffn_act` with dU_pre.
    pub ffn_pre: Tensor,
    pub ffn_act: Tensor,
    pub ln2_in: Tensor,
    pub ln2_stats: Tensor,
}

impl LayerActs {
    fn new(al: &mut Alloc, prefix: &str, c: &Config, s: &Shape, keys: usize) -> Result<LayerActs> {
        let (h, f, rows) = (c.hidden_size, c.intermediate_size, s.rows());
        let score = s.batch * c.num_attention_heads * s.seq() * keys;
        let n = |x: &str| format!("{prefix}.{x}");
        Ok(LayerActs {
            qkv: al.f32(&n("qkv"), rows * 3 * h)?,
            probs: al.f32(&n("probs"), score)?,
            probs_dropped: al.f32(&n("probs_dropped"), score)?,
            ctx: al.f32(&n("ctx"), rows * h)?,
            ln1_in: al.f32(&n("ln1_in"), rows * h)?,
            ln1_stats: al.f32(&n("ln1_stats"), 2 * rows)?,
            ln1_out: al.f32(&n("ln1_out"), rows * h)?,
            ffn_pre: al.f32(&n("ffn_pre"), rows * f)?,
            ffn_act: al.f32(&n("ffn_act"), rows * f)?,
            ln2_in: al.f32(&n("ln2_in"), rows * h)?,
            ln2_stats: al.f32(&n("ln2_stats"), 2 * rows)?,
        })
    }
}

/// The encoder's activations: embeddings, layers, pooler.
pub struct EncoderActs {
    /// Text embeddings (word + position + type) [B*T, H], after LayerNorm, and its stats.
    pub emb_text: Tensor,
    pub emb_text_ln: Tensor,
    pub emb_ln_stats: Tensor,
    /// Region projection [B*R, H], and its LayerNorm output + stats when the config has one.
    pub emb_img: Tensor,
    pub emb_img_ln: Option<(Tensor, Tensor)>,
    /// The embedded sequence [B*S, H], input of layer 0.
    pub emb_out: Tensor,
    /// Train: one per layer; Eval: one, shared.
    pub layers: Vec<LayerActs>,
    /// Layer outputs [B*S, H]. Train: one per layer; Eval: two, alternating.
    pub outs: Vec<Tensor>,
    /// tanh(W h_CLS + b) [B, H].
    pub pooled: Tensor,
    /// Scratch: attention scores [B, heads, S, S] and one [B*S, H] matrix.
    pub scores: Tensor,
    pub scratch_hidden: Tensor,
}

impl EncoderActs {
    /// `keys`: keys each query attends to (the sequence, or a decode plan's cache slots).
    pub fn new(al: &mut Alloc, c: &Config, s: &Shape, train: bool, keys: usize) -> Result<EncoderActs> {
        let (h, bt, br, rows) = (c.hidden_size, s.batch * s.text, s.batch * s.regions, s.rows());
        let score = s.batch * c.num_attention_heads * s.seq() * keys;
        let (n_layers, n_outs) = if train { (c.num_hidden_layers, c.num_hidden_layers) } else { (1, 2.min(c.num_hidden_layers)) };
        let mut layers = Vec::new();
        for l in 0..n_layers {
            layers.push(LayerActs::new(al, &if train { format!("layer{l}") } else { "layer".into() }, c, s, keys)?);
        }
        let mut outs = Vec::new();
        for l in 0..n_outs {
            outs.push(al.f32(&format!("layer{l}.out"), rows * h)?);
        }
        Ok(EncoderActs {
            emb_text: al.f32("emb.text", bt * h)?,
            emb_text_ln: al.f32("emb.text_ln", bt * h)?,
            emb_ln_stats: al.f32("emb.ln_stats", 2 * bt)?,
            emb_img: al.f32("emb.img", br * h)?,
            emb_img_ln: if c.use_img_layernorm { Some((al.f32("emb.img_ln", br * h)?, al.f32("emb.img_ln_stats", 2 * br)?)) } else { None },
            emb_out: al.f32("emb.out", rows * h)?,
            layers,
            outs,
            pooled: al.f32("pooled", s.batch * h)?,
            scores: al.f32("scratch.scores", score)?,
            scratch_hidden: al.f32("scratch.hidden", rows * h)?,
        })
    }
    pub fn layer(&self, l: usize) -> &LayerActs {
        &self.layers[l.min(self.layers.len() - 1)]
    }
    /// Output of layer `l`.
    pub fn out(&self, l: usize) -> &Tensor {
        &self.outs[if self.outs.len() == self.layers.len() { l } else { l % self.outs.len() }]
    }
    /// Input of layer `l`.
    pub fn input(&self, l: usize) -> &Tensor {
        if l == 0 {
            &self.emb_out
        } else {
            self.out(l - 1)
        }
    }
    /// Last hidden states [B*S, H].
    pub fn hidden(&self, num_layers: usize) -> &Tensor {
        if num_layers == 0 {
            &self.emb_out
        } else {
            self.out(num_layers - 1)
        }
    }
}

/// Gradient buffers of the encoder's activations (all scratch, reused by every layer).
pub struct EncoderGrads {
    /// d(hidden) alternating between layers; the head writes the last layer's into `d_hidden[L % 2]`.
    pub d_hidden: [Tensor; 2],
    pub d_ln_in: Tensor,
    pub d_tmp: Tensor,
    pub d_ctx: Tensor,
    pub d_qkv: Tensor,
    pub d_ffn: Tensor,
    /// d(pooled), written by the head; and d(pooler pre-activation).
    pub d_pooled: Tensor,
    pub d_pooled_pre: Tensor,
    pub d_emb_text: Tensor,
    pub d_emb_text_pre: Tensor,
    pub d_emb_img: Tensor,
    pub d_emb_img_pre: Tensor,
    /// Split-K partial products (ops::matmul::matmul_split), shared by every backward matmul.
    pub split_k: Tensor,
}

impl EncoderGrads {
    pub fn new(al: &mut Alloc, c: &Config, s: &Shape, split: usize) -> Result<EncoderGrads> {
        let (h, f, bt, br, rows) = (c.hidden_size, c.intermediate_size, s.batch * s.text, s.batch * s.regions, s.rows());
        Ok(EncoderGrads {
            d_hidden: [al.f32("d.hidden_a", rows * h)?, al.f32("d.hidden_b", rows * h)?],
            d_ln_in: al.f32("d.ln_in", rows * h)?,
            d_tmp: al.f32("d.tmp", rows * h)?,
            d_ctx: al.f32("d.ctx", rows * h)?,
            d_qkv: al.f32("d.qkv", rows * 3 * h)?,
            d_ffn: al.f32("d.ffn", rows * f)?,
            d_pooled: al.f32("d.pooled", s.batch * h)?,
            d_pooled_pre: al.f32("d.pooled_pre", s.batch * h)?,
            d_emb_text: al.f32("d.emb_text", bt * h)?,
            d_emb_text_pre: al.f32("d.emb_text_pre", bt * h)?,
            d_emb_img: al.f32("d.emb_img", br * h)?,
            d_emb_img_pre: al.f32("d.emb_img_pre", br * h)?,
            split_k: al.f32("d.split_k", split)?,
        })
    }
}
