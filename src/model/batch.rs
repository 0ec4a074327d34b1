//! A batch on the host (built by `data`) and its GPU mirror, uploaded every step into buffers
//! planned once per shape. Upload validates every id and label so a bad batch is an error naming
//! the field and position, never an out-of-bounds read on the GPU.
use super::config::Config;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::embedding::EmbeddingGradIndex;
use crate::{Error, Result};

/// Batch geometry: B sequences of `text` tokens followed by `regions` image regions; up to
/// `masked` labelled positions for the masked-token head; 2-D padding or 3-D attention masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub batch: usize,
    pub text: usize,
    pub regions: usize,
    pub masked: usize,
    pub mask3d: bool,
}

impl Shape {
    pub fn seq(&self) -> usize {
        self.text + self.regions
    }
    pub fn rows(&self) -> usize {
        self.batch * self.seq()
    }
    /// Capacity for masked positions when masking 15 % of `text` tokens per sequence: mean plus
    /// 4 standard deviations, so overflowing it is rare (the batch builder stops masking there).
    pub fn mlm_capacity(batch: usize, text: usize) -> usize {
        let n = (batch * text) as f64;
        ((0.15 * n + 4.0 * (0.1275 * n).sqrt()).ceil() as usize + 4).min(batch * text).max(1)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// [B, T] word ids, token types (0 caption, 1 tags), position ids.
    pub input_ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub pos_ids: Vec<u32>,
    /// [B, R, img_feature_dim] region features (zero rows for padding).
    pub img: Vec<f32>,
    /// [B, S] (2-D) or [B, S, S] (3-D), 1 = attend.
    pub mask: Vec<f32>,
    /// Flat positions (b * S + t) of the labelled tokens, padded to capacity with position 0 and
    /// label -1 (ignored).
    pub mlm_pos: Vec<u32>,
    pub mlm_labels: Vec<i32>,
    /// [B] contrastive labels (0 matched, 1 polluted tags, 2 polluted caption).
    pub con_labels: Vec<i32>,
}

/// GPU buffers for one shape's inputs.
pub struct Inputs {
    pub input_ids: Tensor,
    pub type_ids: Tensor,
    pub pos_ids: Tensor,
    pub img: Tensor,
    pub mask: Tensor,
    pub mlm_pos: Tensor,
    pub mlm_labels: Tensor,
    pub con_labels: Tensor,
    pub word_index: Tensor,
    pub pos_index: Tensor,
    pub type_index: Tensor,
    pub mlm_index: Tensor,
    /// The dropout seed of the current step (one u32).
    pub seed: Tensor,
}

impl Inputs {
    pub fn new(gpu: &Gpu, s: &Shape, c: &Config) -> Result<Inputs> {
        let bt = s.batch * s.text;
        let u = |n: &str, len: usize| gpu.zeros(n, &[len.max(1)], DType::U32);
        Ok(Inputs {
            input_ids: u("input_ids", bt)?,
            type_ids: u("type_ids", bt)?,
            pos_ids: u("pos_ids", bt)?,
            img: gpu.zeros("img_feats", &[(s.batch * s.regions * c.img_feature_dim).max(1)], DType::F32)?,
            mask: gpu.zeros("attention_mask", &[if s.mask3d { s.batch * s.seq() * s.seq() } else { s.rows() }], DType::F32)?,
            mlm_pos: u("mlm_pos", s.masked)?,
            mlm_labels: gpu.zeros("mlm_labels", &[s.masked], DType::I32)?,
            con_labels: gpu.zeros("contrast_labels", &[s.batch], DType::I32)?,
            word_index: u("word_grad_index", EmbeddingGradIndex::len(bt))?,
            pos_index: u("pos_grad_index", EmbeddingGradIndex::len(bt))?,
            type_index: u("type_grad_index", EmbeddingGradIndex::len(bt))?,
            mlm_index: u("mlm_grad_index", EmbeddingGradIndex::len(s.masked))?,
            seed: u("dropout_seed", 1)?,
        })
    }

    pub fn upload(&self, gpu: &Gpu, s: &Shape, c: &Config, b: &Batch) -> Result<()> {
        b.validate(s, c)?;
        gpu.write_u32(&self.input_ids, &b.input_ids)?;
        gpu.write_u32(&self.type_ids, &b.type_ids)?;
        gpu.write_u32(&self.pos_ids, &b.pos_ids)?;
        gpu.write_f32(&self.img, &b.img)?;
        gpu.write_f32(&self.mask, &b.mask)?;
        gpu.write_u32(&self.mlm_pos, &b.mlm_pos)?;
        gpu.write_i32(&self.mlm_labels, &b.mlm_labels)?;
        gpu.write_i32(&self.con_labels, &b.con_labels)?;
        gpu.write_u32(&self.word_index, &EmbeddingGradIndex::build(&b.input_ids, c.vocab_size)?)?;
        gpu.write_u32(&self.pos_index, &EmbeddingGradIndex::build(&b.pos_ids, c.max_position_embeddings)?)?;
        gpu.write_u32(&self.type_index, &EmbeddingGradIndex::build(&b.type_ids, c.type_vocab_size)?)?;
        gpu.write_u32(&self.mlm_index, &EmbeddingGradIndex::build(&b.mlm_pos, s.rows())?)
    }
}

impl Batch {
    pub fn validate(&self, s: &Shape, c: &Config) -> Result<()> {
        let bt = s.batch * s.text;
        let bad = |m: String| Err(Error::Shape { op: "batch", msg: m });
        let lens = [
            ("input_ids", self.input_ids.len(), bt),
            ("type_ids", self.type_ids.len(), bt),
            ("pos_ids", self.pos_ids.len(), bt),
            ("img", self.img.len(), s.batch * s.regions * c.img_feature_dim),
            ("mask", self.mask.len(), if s.mask3d { s.batch * s.seq() * s.seq() } else { s.rows() }),
            ("mlm_pos", self.mlm_pos.len(), s.masked),
            ("mlm_labels", self.mlm_labels.len(), s.masked),
            ("con_labels", self.con_labels.len(), s.batch),
        ];
        for (n, got, want) in lens {
            if got != want {
                return bad(format!("{n} has {got} values, shape {s:?} needs {want}"));
            }
        }
        let ranges: [(&str, &[u32], usize); 4] = [
            ("input_ids", &self.input_ids, c.vocab_size),
            ("type_ids", &self.type_ids, c.type_vocab_size),
            ("pos_ids", &self.pos_ids, c.max_position_embeddings),
            ("mlm_pos", &self.mlm_pos, s.rows()),
        ];
        for (n, v, lim) in ranges {
            if let Some((i, x)) = v.iter().enumerate().find(|(_, &x)| x as usize >= lim) {
                return bad(format!("{n}[{i}] = {x} is out of range (< {lim})"));
            }
        }
        if let Some((i, x)) = self.mlm_labels.iter().enumerate().find(|(_, &x)| x < -1 || x >= c.vocab_size as i32) {
            return bad(format!("mlm_labels[{i}] = {x} is neither -1 nor a vocabulary id"));
        }
        if let Some((i, x)) = self.con_labels.iter().enumerate().find(|(_, &x)| x < -1 || x >= c.num_contrast_classes as i32) {
            return bad(format!("con_labels[{i}] = {x} is not a class of {}", c.num_contrast_classes));
        }
        if let Some(i) = self.img.iter().position(|v| !v.is_finite()) {
            return bad(format!("img[{i}] is not finite"));
        }
        Ok(())
    }
}
