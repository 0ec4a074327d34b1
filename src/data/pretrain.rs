//! Oscar pre-training data: (caption, tags, regions) triples and the batch builder with the
//! masked-token and contrastive objectives of oscar.md §2: every caption and tag token is masked
//! with p = 0.15 (80 % [MASK], 10 % a random id, 10 % unchanged); with p = 0.5 the tag sequence is
//! polluted — in vanilla mode by another image's caption or tags (50/50, label 1), in Oscar+ 3-way
//! mode 25 % polluted tags (label 1) and 25 % another image's caption as text_a (label 2).
use super::store::{read_all_features, read_jsonl};
use super::synth::{Caption, Image};
use super::{Tok, Truncation};
use crate::model::{Batch, Labels, Shape};
use crate::util::Rng;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

pub struct PretrainData {
    pub feature_dim: usize,
    /// Per image: tag ids, regions [r, D], split.
    pub images: Vec<(Vec<u32>, Vec<f32>, String)>,
    /// Per caption: (image index, caption ids).
    pub captions: Vec<(usize, Vec<u32>)>,
    /// Caption indices of each image.
    pub by_image: Vec<Vec<usize>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contrast {
    /// Vanilla Oscar: 2 classes.
    TwoWay,
    /// Oscar+: 3 classes.
    ThreeWay,
}

impl PretrainData {
    /// Loads images.jsonl, captions.jsonl and features.safetensors from `dir`, tokenised by `tok`.
    pub fn load(dir: &Path, tok: &Tok) -> Result<PretrainData> {
        let images: Vec<Image> = read_jsonl(&dir.join("images.jsonl"))?;
        let caps: Vec<Caption> = read_jsonl(&dir.join("captions.jsonl"))?;
        let ff = dir.join("features.safetensors");
        let (mut feats, feature_dim) = read_all_features(&ff)?;
        let mut index = HashMap::new();
        let mut imgs = Vec::with_capacity(images.len());
        for (i, im) in images.iter().enumerate() {
            let f = feats.remove(&im.id).ok_or_else(|| Error::Other(format!("{}: no features for image '{}' (images.jsonl line {})", ff.display(), im.id, i + 1)))?;
            index.insert(im.id.clone(), i);
            imgs.push((tok.encode(&im.tags)?, f, im.split.clone()));
        }
        let mut captions = Vec::with_capacity(caps.len());
        let mut by_image = vec![Vec::new(); imgs.len()];
        for (i, c) in caps.iter().enumerate() {
            let im = *index.get(&c.image_id).ok_or_else(|| Error::Other(format!("{}:{}: unknown image_id '{}'", dir.join("captions.jsonl").display(), i + 1, c.image_id)))?;
            by_image[im].push(captions.len());
            captions.push((im, tok.encode(&c.caption)?));
        }
        Ok(PretrainData { feature_dim, images: imgs, captions, by_image })
    }

    /// Caption indices of one split.
    pub fn split(&self, name: &str) -> Vec<usize> {
        (0..self.captions.len()).filter(|&i| self.images[self.captions[i].0].2 == name).collect()
    }
}

/// Builds pre-training batches of a fixed shape.
pub struct Sampler<'a> {
    pub data: &'a PretrainData,
    pub tok: &'a Tok,
    pub pool: Vec<usize>,
    pub shape: Shape,
    pub contrast: Contrast,
    pub vocab: usize,
}

impl<'a> Sampler<'a> {
    pub fn new(data: &'a PretrainData, tok: &'a Tok, split: &str, batch: usize, text: usize, regions: usize, contrast: Contrast, vocab: usize) -> Result<Sampler<'a>> {
        let pool = data.split(split);
        if pool.is_empty() {
            return Err(Error::Other(format!("the data has no captions in split '{split}'")));
        }
        let shape = Shape { batch, text, regions, masked: Shape::mlm_capacity(batch, text), mask3d: false };
        Ok(Sampler { data, tok, pool, shape, contrast, vocab })
    }

    /// One batch, a pure function of `rng`'s state.
    pub fn batch(&self, rng: &mut Rng) -> Batch {
        let s = self.shape;
        let (sq, d) = (s.seq(), self.data.feature_dim);
        let mut b = Batch { img: vec![0.0; s.batch * s.regions * d], mask: vec![0.0; s.rows()], ..Default::default() };
        let (mut mlm_pos, mut mlm_labels, mut contrast_labels) = (Vec::new(), Vec::new(), Vec::new());
        let n_img = self.data.images.len();
        for bi in 0..s.batch {
            let ci = self.pool[rng.below(self.pool.len())];
            let (im, ref cap) = self.data.captions[ci];
            let mut a = cap.clone();
            let mut tb = self.data.images[im].0.clone();
            let other = |rng: &mut Rng| {
                let mut o = rng.below(n_img);
                for _ in 0..10 {
                    if o != im {
                        break;
                    }
                    o = rng.below(n_img);
                }
                o
            };
            let u = rng.uniform();
            let label = match self.contrast {
                _ if u > 0.5 => 0,
                Contrast::TwoWay => {
                    let o = other(rng);
                    tb = if rng.below(2) == 0 { self.random_caption_of(o, rng) } else { self.data.images[o].0.clone() };
                    1
                }
                Contrast::ThreeWay if u > 0.25 => {
                    tb = self.data.images[other(rng)].0.clone();
                    1
                }
                Contrast::ThreeWay => {
                    a = self.random_caption_of(other(rng), rng);
                    2
                }
            };
            let x = self.tok.oscar_text(&a, Some(&tb), s.text, Truncation::Pair);
            for t in 0..s.text {
                let real = t < x.ids.len();
                let mut id = if real { x.ids[t] } else { self.tok.pad };
                if real && id != self.tok.cls && id != self.tok.sep && rng.uniform() < 0.15 && mlm_pos.len() < s.masked {
                    mlm_pos.push((bi * sq + t) as u32);
                    mlm_labels.push(id as i32);
                    let v = rng.uniform();
                    if v < 0.8 {
                        id = self.tok.mask;
                    } else if v < 0.9 {
                        id = rng.below(self.vocab) as u32;
                    }
                }
                b.input_ids.push(id);
                b.type_ids.push(if real { x.types[t] } else { 0 });
                b.pos_ids.push(t as u32);
                b.mask[bi * sq + t] = real as u32 as f32;
            }
            let f = &self.data.images[im].1;
            let r = (f.len() / d).min(s.regions);
            b.img[bi * s.regions * d..(bi * s.regions + r) * d].copy_from_slice(&f[..r * d]);
            for k in 0..r {
                b.mask[bi * sq + s.text + k] = 1.0;
            }
            contrast_labels.push(label);
        }
        // unused masked slots: position 0, label -1 (ignored)
        mlm_labels.resize(s.masked, -1);
        mlm_pos.resize(s.masked, 0);
        b.labels = Labels::Pretrain { mlm_pos, mlm_labels, contrast_labels };
        b
    }

    fn random_caption_of(&self, img: usize, rng: &mut Rng) -> Vec<u32> {
        let caps = &self.data.by_image[img];
        if caps.is_empty() {
            return self.data.images[img].0.clone();
        }
        self.data.captions[caps[rng.below(caps.len())]].1.clone()
    }
}
