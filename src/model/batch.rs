//! A batch on the host (built by `data` or an application) and the geometry of the plan it runs
//! through. Upload validates every id and label, so a bad batch is an error naming the field and
//! position, never an out-of-bounds read on the GPU.
use super::acts::EncoderInputs;
use super::config::Config;
use crate::gpu::Gpu;
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
    pub fn mask_len(&self) -> usize {
        if self.mask3d {
            self.batch * self.seq() * self.seq()
        } else {
            self.rows()
        }
    }
    /// Capacity for masked positions when masking 15 % of `text` tokens per sequence: mean plus
    /// 4 standard deviations, so overflowing it is rare (the batch builder stops masking there).
    pub fn mlm_capacity(batch: usize, text: usize) -> usize {
        let n = (batch * text) as f64;
        ((0.15 * n + 4.0 * (0.1275 * n).sqrt()).ceil() as usize + 4).min(batch * text).max(1)
    }
}

/// What the head learns from, per batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// No labels (a forward pass for its outputs only; the losses are meaningless).
    None,
    /// Flat positions (b * S + t) of the labelled tokens, padded to capacity with position 0 and
    /// label -1 (ignored); contrastive labels [B] (0 matched, 1 polluted tags, 2 polluted caption).
    Pretrain { mlm_pos: Vec<u32>, mlm_labels: Vec<i32>, contrast_labels: Vec<i32> },
    /// Masked positions (b * S + t) and their labels (-1 ignored), padded to the shape's capacity:
    /// the caption LM head; `weights` per position (empty: all 1; self-critical training's rewards).
    Masked { positions: Vec<u32>, labels: Vec<i32>, weights: Vec<f32> },
    /// One class per example (-1 ignored).
    Class(Vec<i32>),
    /// [examples, labels] soft targets in [0, 1].
    Soft(Vec<f32>),
}

impl Default for Labels {
    fn default() -> Self {
        Labels::None
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
    pub labels: Labels,
}

impl Batch {
    /// Sequences in this batch (from its mask).
    pub fn sequences(&self, s: &Shape) -> usize {
        self.mask.len() / (s.mask_len() / s.batch).max(1)
    }

    /// Pads a batch of fewer than `s.batch` sequences with inert ones ([CLS]-only, label ignored)
    /// so a plan made for B runs a final partial batch; returns how many sequences were real.
    pub fn pad_to(&mut self, s: &Shape, feature_dim: usize) -> usize {
        let have = self.sequences(s);
        let missing = s.batch.saturating_sub(have);
        let per_mask = s.mask_len() / s.batch;
        for _ in 0..missing {
            self.input_ids.extend(std::iter::repeat(0).take(s.text));
            self.type_ids.extend(std::iter::repeat(0).take(s.text));
            self.pos_ids.extend(std::iter::repeat(0).take(s.text));
            self.img.extend(std::iter::repeat(0.0).take(s.regions * feature_dim));
            let mut m = vec![0.0; per_mask];
            // attend to the first token only, so the padding rows stay finite
            if s.mask3d {
                for q in 0..s.seq() {
                    m[q * s.seq()] = 1.0;
                }
            } else {
                m[0] = 1.0;
            }
            self.mask.extend(m);
        }
        match &mut self.labels {
            // one label per example; an example may be several sequences (NLVR2's pair)
            Labels::Class(y) => {
                let per = if y.is_empty() { 1 } else { (have / y.len()).max(1) };
                y.resize(s.batch / per, -1)
            }
            Labels::Soft(t) => {
                let per = if have > 0 { t.len() / have } else { 0 };
                t.resize(t.len() + missing * per, 0.0)
            }
            Labels::Pretrain { contrast_labels, .. } => contrast_labels.resize(contrast_labels.len() + missing, -1),
            Labels::None | Labels::Masked { .. } => {}
        }
        have
    }

    pub fn validate(&self, s: &Shape, c: &Config) -> Result<()> {
        let bt = s.batch * s.text;
        let bad = |m: String| Err(Error::Shape { op: "batch", msg: m });
        let lens = [
            ("input_ids", self.input_ids.len(), bt),
            ("type_ids", self.type_ids.len(), bt),
            ("pos_ids", self.pos_ids.len(), bt),
            ("img", self.img.len(), s.batch * s.regions * c.img_feature_dim),
            ("mask", self.mask.len(), s.mask_len()),
        ];
        for (n, got, want) in lens {
            if got != want {
                return bad(format!("{n} has {got} values, shape {s:?} needs {want}"));
            }
        }
        let ranges: [(&str, &[u32], usize); 3] = [
            ("input_ids", &self.input_ids, c.vocab_size),
            ("type_ids", &self.type_ids, c.type_vocab_size),
            ("pos_ids", &self.pos_ids, c.max_position_embeddings),
        ];
        for (n, v, lim) in ranges {
            if let Some((i, x)) = v.iter().enumerate().find(|(_, &x)| x as usize >= lim) {
                return bad(format!("{n}[{i}] = {x} is out of range (< {lim})"));
            }
        }
        if let Some(i) = self.img.iter().position(|v| !v.is_finite()) {
            return bad(format!("img[{i}] is not finite"));
        }
        Ok(())
    }

    /// Writes the encoder's inputs (and, for a Train plan, the embedding-gradient indices).
    pub fn upload_encoder(&self, gpu: &Gpu, s: &Shape, c: &Config, i: &EncoderInputs) -> Result<()> {
        self.validate(s, c)?;
        gpu.write_u32(&i.input_ids, &self.input_ids)?;
        gpu.write_u32(&i.type_ids, &self.type_ids)?;
        gpu.write_u32(&i.pos_ids, &self.pos_ids)?;
        gpu.write_f32(&i.img_feats, &self.img)?;
        gpu.write_f32(&i.attention_mask, &self.mask)?;
        if let Some([w, p, t]) = &i.grad_index {
            gpu.write_u32(w, &EmbeddingGradIndex::build(&self.input_ids, c.vocab_size)?)?;
            gpu.write_u32(p, &EmbeddingGradIndex::build(&self.pos_ids, c.max_position_embeddings)?)?;
            gpu.write_u32(t, &EmbeddingGradIndex::build(&self.type_ids, c.type_vocab_size)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_batch_pads_sequences_and_labels_per_example() {
        let c = Config { img_feature_dim: 3, ..Config::preset("tiny").unwrap() };
        let s = Shape { batch: 6, text: 4, regions: 2, masked: 1, mask3d: false };
        // 2 pair examples = 4 sequences of 6
        let mut b = Batch {
            input_ids: vec![2; 16],
            type_ids: vec![0; 16],
            pos_ids: vec![0; 16],
            img: vec![0.5; 4 * 2 * 3],
            mask: vec![1.0; 4 * 6],
            labels: Labels::Class(vec![1, 0]),
        };
        assert_eq!(b.pad_to(&s, 3), 4);
        assert_eq!(b.labels, Labels::Class(vec![1, 0, -1]), "3 pair examples of 2 sequences each");
        assert_eq!((b.input_ids.len(), b.img.len(), b.mask.len()), (24, 36, 36));
        assert_eq!(&b.mask[24..30], &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "a padding sequence attends to its first token only");
        b.validate(&s, &c).unwrap();
        let mut soft = Batch {
            mask: vec![1.0; 6],
            img: vec![0.0; 6],
            input_ids: vec![0; 4],
            type_ids: vec![0; 4],
            pos_ids: vec![0; 4],
            labels: Labels::Soft(vec![0.3; 5]),
        };
        soft.pad_to(&s, 3);
        assert_eq!(soft.labels, Labels::Soft([vec![0.3; 5], vec![0.0; 25]].concat()), "5 answers per example");
    }
}
