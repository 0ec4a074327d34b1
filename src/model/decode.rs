//! The decode plan for captioning (docs/oscar.md §3.2): per-layer key/value caches
//! [B·beams, slots, H] over a sequence laid out as [tags, regions | caption positions 0..G).
//! - `prefill`: the context (tags and regions, which never attend to the caption) runs once through
//!   the encoder and every layer writes its keys and values into cache slots [0, C).
//! - `step`: Oscar re-feeds `[w_t, MASK]` at caption positions t and t+1: two rows per sequence go
//!   through the layers, each writing its K/V at slots C+t and C+t+1 (the MASK's entry is
//!   overwritten by w_{t+1} on the next step) and attending to every cache slot through a
//!   [B, 2, slots] mask (context, and caption positions ≤ its own). The next token's logits are the
//!   masked-token head's at the MASK row. Which slots are written lives in a GPU index buffer, so
//!   the dispatches are prepared once and replayed at every position.
//! - `reorder`: beams are re-ordered by gathering whole cache rows (`set_reorder`, then run).
use super::acts::{Alloc, EncoderActs, EncoderInputs};
use super::batch::{Labels, Shape};
use super::config::Config;
use super::encoder::{self, Ctx, Kv};
use super::heads::{pretrain::PretrainActs, HeadActs, HeadCtx};
use super::params::ParamSet;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::ops::matmul::Precision;
use crate::ops::{elementwise, embedding};
use crate::{Error, Result};

/// Geometry of a decode plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeShape {
    /// Sequences (images × beams).
    pub batch: usize,
    /// Tag tokens (the text segment after the caption, with its [SEP]) and region slots.
    pub tags: usize,
    pub regions: usize,
    /// Caption positions, [CLS] and the final MASK included (Oscar: max_gen_length + 2).
    pub caption: usize,
}

impl DecodeShape {
    pub fn context(&self) -> usize {
        self.tags + self.regions
    }
    pub fn slots(&self) -> usize {
        self.context() + self.caption
    }
}

/// The prefill's inputs: the context of every sequence.
pub struct Context {
    /// [B, tags] tag ids, their position ids (Oscar puts tags at max(40, max_gen_length) and up).
    pub tag_ids: Vec<u32>,
    pub tag_pos: Vec<u32>,
    /// [B, tags + regions], 1 = a real tag or region.
    pub valid: Vec<f32>,
    /// [B, regions, D].
    pub img: Vec<f32>,
}

pub struct Decode {
    pub shape: DecodeShape,
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub prefill_inputs: EncoderInputs,
    pub prefill: Vec<Dispatch>,
    pub step_inputs: EncoderInputs,
    pub step_acts: EncoderActs,
    pub step_head: HeadActs,
    pub step: Vec<Dispatch>,
    /// Cache rows the step writes: b * slots + C + t + i.
    step_index: Tensor,
    /// Source cache row of every cache row, for `reorder`.
    reorder_index: Tensor,
    pub reorder: Vec<Dispatch>,
    /// [B, context] validity, kept for the step masks.
    valid: Vec<f32>,
    mask_token: u32,
    num_layers: usize,
    pub bytes: u64,
}

impl Decode {
    pub fn new(gpu: &Gpu, c: &Config, params: &ParamSet, d: DecodeShape, mask_token: u32, prec: Precision) -> Result<Decode> {
        crate::ensure_shape!("decode", d.batch > 0 && d.caption >= 2 && d.tags > 0, "decode needs a batch, tags and at least 2 caption positions: {d:?}");
        crate::ensure_shape!(
            "decode",
            d.caption <= c.max_position_embeddings,
            "caption positions {} > max_position_embeddings {}",
            d.caption,
            c.max_position_embeddings
        );
        if !params.has("cls.predictions.bias") {
            return Err(Error::Other("decoding needs the masked-token head (cls.predictions.*): load a pre-training or captioning model".into()));
        }
        let (h, b, slots, nl) = (c.hidden_size, d.batch, d.slots(), c.num_hidden_layers);
        let mut al = Alloc::new(gpu);
        let mut k = Vec::new();
        let mut v = Vec::new();
        for l in 0..nl {
            k.push(al.f32(&format!("cache.layer{l}.k"), b * slots * h)?);
            v.push(al.f32(&format!("cache.layer{l}.v"), b * slots * h)?);
        }
        // prefill: [tags, regions] as one sequence with a 2-D mask; K/V to slots [0, C)
        let ps = Shape { batch: b, text: d.tags, regions: d.regions, masked: 1, mask3d: false };
        let prefill_inputs = EncoderInputs::new(&mut al, &ps, c, false)?;
        let prefill_acts = EncoderActs::new(&mut al, c, &ps, false, ps.seq())?;
        let prefill_index = al.u32("cache.prefill_index", b * d.context())?;
        let idx: Vec<u32> = (0..b).flat_map(|bi| (0..d.context()).map(move |j| (bi * slots + j) as u32)).collect();
        gpu.write_u32(&prefill_index, &idx)?;
        let kv = Kv { k: &k, v: &v, index: &prefill_index, slots, attend: false };
        let x = Ctx { gpu, c, s: ps, p: params, inp: &prefill_inputs, a: &prefill_acts, ph: 0.0, pa: 0.0, prec, split: None, kv: Some(kv) };
        let mut prefill = Vec::new();
        encoder::embeddings_forward(&x, &mut prefill)?;
        for l in 0..nl {
            encoder::layer_forward(&x, l, prefill_acts.input(l), prefill_acts.layer(l), prefill_acts.out(l), &mut prefill)?;
        }
        // step: 2 rows per sequence attending to the cache through a [B, 2, slots] mask
        let ss = Shape { batch: b, text: 2, regions: 0, masked: b, mask3d: true };
        let mut step_inputs = EncoderInputs::new(&mut al, &ss, c, false)?;
        step_inputs.attention_mask = al.f32("attention_mask", b * 2 * slots)?;
        let step_acts = EncoderActs::new(&mut al, c, &ss, false, slots)?;
        // the masked-token head alone: a captioning model has no contrastive head
        let step_head = HeadActs::Pretrain(PretrainActs::new(&mut al, c, &ss, false, false, 0.0)?);
        let step_index = al.u32("cache.step_index", b * 2)?;
        let kv = Kv { k: &k, v: &v, index: &step_index, slots, attend: true };
        let x = Ctx { gpu, c, s: ss, p: params, inp: &step_inputs, a: &step_acts, ph: 0.0, pa: 0.0, prec, split: None, kv: Some(kv) };
        let mut step = Vec::new();
        encoder::forward(&x, &mut step)?;
        let hx = HeadCtx { e: &x, hidden: step_acts.hidden(nl), pooled: &step_acts.pooled };
        step_head.forward(&hx, &mut step)?;
        // the head reads the MASK row (2b + 1) of every sequence; labels are not used
        let labels = Labels::Masked { positions: (0..b).map(|bi| (2 * bi + 1) as u32).collect(), labels: vec![-1; b], weights: Vec::new() };
        step_head.upload(gpu, &ss, c, &labels)?;
        // reorder: gather every cache row from its source beam into scratch, copy back
        let reorder_index = al.u32("cache.reorder_index", b * slots)?;
        let scratch = al.f32("cache.reorder_scratch", b * slots * h)?;
        let mut reorder = Vec::new();
        for t in k.iter().chain(&v) {
            reorder.push(embedding::gather(gpu, &reorder_index, t, &scratch, b * slots, b * slots, h, false)?);
            reorder.push(elementwise::acc_into(gpu, 1.0, &scratch, 0.0, t)?);
        }
        let valid = vec![0.0; b * d.context()];
        Ok(Decode {
            shape: d,
            k,
            v,
            prefill_inputs,
            prefill,
            step_inputs,
            step_acts,
            step_head,
            step,
            step_index,
            reorder_index,
            reorder,
            valid,
            mask_token,
            num_layers: nl,
            bytes: al.bytes,
        })
    }

    /// Uploads the context of every sequence; run `prefill` after it.
    pub fn set_context(&mut self, gpu: &Gpu, c: &Config, x: &Context) -> Result<()> {
        let d = self.shape;
        let (b, ctx) = (d.batch, d.context());
        let lens = [
            ("tag_ids", x.tag_ids.len(), b * d.tags),
            ("tag_pos", x.tag_pos.len(), b * d.tags),
            ("valid", x.valid.len(), b * ctx),
            ("img", x.img.len(), b * d.regions * c.img_feature_dim),
        ];
        for (n, got, want) in lens {
            if got != want {
                return Err(Error::Shape { op: "decode", msg: format!("context {n} has {got} values, {d:?} needs {want}") });
            }
        }
        let batch = crate::model::Batch {
            input_ids: x.tag_ids.clone(),
            type_ids: vec![1; b * d.tags],
            pos_ids: x.tag_pos.clone(),
            img: x.img.clone(),
            mask: x.valid.clone(),
            labels: Labels::None,
        };
        let ps = Shape { batch: b, text: d.tags, regions: d.regions, masked: 1, mask3d: false };
        batch.upload_encoder(gpu, &ps, c, &self.prefill_inputs)?;
        self.valid = x.valid.clone();
        Ok(())
    }

    /// Uploads step t's inputs: `tokens[b]` = w_t at caption position t, MASK at t + 1.
    pub fn set_step(&self, gpu: &Gpu, c: &Config, t: usize, tokens: &[u32]) -> Result<()> {
        let d = self.shape;
        let (b, ctx, slots) = (d.batch, d.context(), d.slots());
        if t + 1 >= d.caption {
            return Err(Error::Shape { op: "decode", msg: format!("step at caption position {t}: the plan has {} positions", d.caption) });
        }
        if tokens.len() != b {
            return Err(Error::Shape { op: "decode", msg: format!("{} tokens for {b} sequences", tokens.len()) });
        }
        let ids: Vec<u32> = tokens.iter().flat_map(|&w| [w, self.mask_token]).collect();
        let pos: Vec<u32> = (0..b).flat_map(|_| [t as u32, t as u32 + 1]).collect();
        let mut mask = vec![0f32; b * 2 * slots];
        for bi in 0..b {
            for i in 0..2 {
                let row = &mut mask[(bi * 2 + i) * slots..(bi * 2 + i + 1) * slots];
                row[..ctx].copy_from_slice(&self.valid[bi * ctx..(bi + 1) * ctx]);
                for j in 0..=t + i {
                    row[ctx + j] = 1.0;
                }
            }
        }
        let index: Vec<u32> = (0..b).flat_map(|bi| [(bi * slots + ctx + t) as u32, (bi * slots + ctx + t + 1) as u32]).collect();
        // the ids are checked as any batch's (with a 2-D mask: the [B, 2, slots] one is written as it is)
        let batch =
            crate::model::Batch { input_ids: ids, type_ids: vec![0; 2 * b], pos_ids: pos, img: Vec::new(), mask: vec![1.0; 2 * b], labels: Labels::None };
        batch.validate(&Shape { batch: b, text: 2, regions: 0, masked: b, mask3d: false }, c)?;
        gpu.write_u32(&self.step_inputs.input_ids, &batch.input_ids)?;
        gpu.write_u32(&self.step_inputs.type_ids, &batch.type_ids)?;
        gpu.write_u32(&self.step_inputs.pos_ids, &batch.pos_ids)?;
        gpu.write_f32(&self.step_inputs.attention_mask, &mask)?;
        gpu.write_u32(&self.step_index, &index)
    }

    /// Sequence b takes over the cache of sequence `src[b]` (beam search); run `reorder` after it.
    pub fn set_reorder(&mut self, gpu: &Gpu, src: &[usize]) -> Result<()> {
        let (b, ctx, slots) = (self.shape.batch, self.shape.context(), self.shape.slots());
        if src.len() != b || src.iter().any(|&s| s >= b) {
            return Err(Error::Shape { op: "decode", msg: format!("reorder needs {b} source sequences < {b}, got {src:?}") });
        }
        let idx: Vec<u32> = src.iter().flat_map(|&s| (0..slots).map(move |j| (s * slots + j) as u32)).collect();
        let v: Vec<f32> = src.iter().flat_map(|&s| self.valid[s * ctx..(s + 1) * ctx].to_vec()).collect();
        self.valid = v;
        gpu.write_u32(&self.reorder_index, &idx)
    }

    /// Hidden states of the step's rows [B*2, H] (w_t, MASK per sequence).
    pub fn hidden(&self) -> &Tensor {
        self.step_acts.hidden(self.num_layers)
    }
    /// Next-token logits at the MASK row [B, V].
    pub fn logits(&self) -> &Tensor {
        match &self.step_head {
            HeadActs::Pretrain(a) => &a.mlm_logits,
            _ => unreachable!("the decode head is the masked-token head"),
        }
    }
}
