//! Oscar pre-training data: (caption, tags, regions) triples and the batch builder with the
//! masked-token and contrastive objectives of oscar.md §2: every caption and tag token is masked
//! with p = 0.15 (80 % [MASK], 10 % a random id, 10 % unchanged); with p = 0.5 the tag sequence is
//! polluted — in vanilla mode by another image's caption or tags (50/50, label 1), in Oscar+ 3-way
//! mode 25 % polluted tags (label 1) and 25 % another image's caption as text_a (label 2).
use super::features::FeatureStore;
use super::store::read_jsonl_lines;
use super::synth::{Caption, Image};
use super::{Tok, Truncation};
use crate::model::{Batch, Labels, Shape};
use crate::util::Rng;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

pub struct PretrainData {
    pub feature_dim: usize,
    /// Per image: tag ids, split.
    pub images: Vec<(Vec<u32>, String)>,
    /// Per image: its id.
    pub ids: Vec<String>,
    /// Per image: its entry in `features` (regions [r, D], read when a batch needs them).
    pub feature_of: Vec<usize>,
    /// The store's region features, memory-mapped.
    pub features: FeatureStore,
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
    /// Loads images.jsonl and captions.jsonl from `dir`, tokenised by `tok`, and opens (and
    /// validates) its feature files; features stay on disk until a batch reads them.
    pub fn load(dir: &Path, tok: &Tok) -> Result<PretrainData> {
        let (ip, cp) = (dir.join("images.jsonl"), dir.join("captions.jsonl"));
        let images: Vec<(usize, Image)> = read_jsonl_lines(&ip)?;
        let caps: Vec<(usize, Caption)> = read_jsonl_lines(&cp)?;
        let features = FeatureStore::open(dir)?;
        let mut index = HashMap::new();
        let mut imgs = Vec::with_capacity(images.len());
        let mut feature_of = Vec::with_capacity(images.len());
        let mut ids = Vec::with_capacity(images.len());
        for (line, im) in &images {
            let f = features
                .entry(&im.id)
                .ok_or_else(|| Error::Other(format!("{}:{line}: image '{}' has no features in {}", ip.display(), im.id, features.describe())))?;
            if let Some((l0, _)) = index.insert(im.id.clone(), (*line, imgs.len())) {
                return Err(Error::Other(format!("{}:{line}: image '{}' repeats line {l0}", ip.display(), im.id)));
            }
            feature_of.push(f);
            ids.push(im.id.clone());
            imgs.push((tok.encode(&im.tags)?, im.split.clone()));
        }
        let mut captions = Vec::with_capacity(caps.len());
        let mut by_image = vec![Vec::new(); imgs.len()];
        for (line, c) in &caps {
            let im = index.get(&c.image_id).ok_or_else(|| Error::Other(format!("{}:{line}: unknown image_id '{}'", cp.display(), c.image_id)))?.1;
            if c.caption.trim().is_empty() {
                return Err(Error::Other(format!("{}:{line}: empty caption for image '{}'", cp.display(), c.image_id)));
            }
            by_image[im].push(captions.len());
            captions.push((im, tok.encode(&c.caption)?));
        }
        Ok(PretrainData { feature_dim: features.dim(), images: imgs, ids, feature_of, features, captions, by_image })
    }

    /// Empties every image's tags (the no-tags ablation).
    pub fn clear_tags(&mut self) {
        self.images.iter_mut().for_each(|t| t.0.clear());
    }

    /// Image index by id.
    pub fn image_index(&self) -> HashMap<&str, usize> {
        self.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect()
    }

    /// Caption indices of one split.
    pub fn split(&self, name: &str) -> Vec<usize> {
        (0..self.captions.len()).filter(|&i| self.images[self.captions[i].0].1 == name).collect()
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
    pub fn new(
        data: &'a PretrainData,
        tok: &'a Tok,
        split: &str,
        batch: usize,
        text: usize,
        regions: usize,
        contrast: Contrast,
        vocab: usize,
    ) -> Result<Sampler<'a>> {
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
            let r = self.data.features.read_into(self.data.feature_of[im], &mut b.img[bi * s.regions * d..(bi + 1) * s.regions * d]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::store::{read_all_features, read_jsonl, write_world};
    use crate::data::synth::generate;

    fn store(name: &str) -> (std::path::PathBuf, Tok) {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("vlp-pretrain-{name}-{}-{t}", std::process::id()));
        let w = generate(12, 3, 16).unwrap();
        let tok = Tok::train(&w.corpus(), 1000).unwrap();
        write_world(&d, &w, &tok).unwrap();
        (d, tok)
    }

    #[test]
    fn batches_read_the_regions_of_their_images_from_the_store() {
        let (d, tok) = store("batch");
        let data = PretrainData::load(&d, &tok).unwrap();
        let (eager, dim) = read_all_features(&d.join("features.safetensors")).unwrap();
        let ids: Vec<Image> = read_jsonl(&d.join("images.jsonl")).unwrap();
        let mut s = Sampler::new(&data, &tok, "train", 4, 24, 3, Contrast::TwoWay, tok.vocab_size()).unwrap();
        let mut rng = Rng::new(5);
        for ci in [0, 7, 23, 31] {
            // one caption in the pool: every slot shows its image
            s.pool = vec![ci];
            let b = s.batch(&mut rng);
            let want = &eager[&ids[data.captions[ci].0].id];
            let r = (want.len() / dim).min(3);
            for bi in 0..4 {
                let slot = &b.img[bi * 3 * dim..(bi + 1) * 3 * dim];
                assert_eq!(&slot[..r * dim], &want[..r * dim]);
                assert!(slot[r * dim..].iter().all(|&x| x == 0.0));
            }
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn an_image_without_features_and_an_empty_caption_name_file_and_line() {
        let (d, tok) = store("bad");
        let ip = d.join("images.jsonl");
        let text = std::fs::read_to_string(&ip).unwrap();
        std::fs::write(&ip, format!("\n{}", text.replacen("\"img000004\"", "\"img999999\"", 1))).unwrap();
        let e = PretrainData::load(&d, &tok).err().unwrap().to_string();
        assert!(e.contains("images.jsonl:6") && e.contains("'img999999'") && e.contains("no features"), "{e}");
        std::fs::write(&ip, format!("{text}{}", text.lines().nth(2).unwrap())).unwrap();
        let e = PretrainData::load(&d, &tok).err().unwrap().to_string();
        assert!(e.contains("images.jsonl:13") && e.contains("repeats line 3"), "{e}");
        std::fs::write(&ip, &text).unwrap();
        let cp = d.join("captions.jsonl");
        let caps = std::fs::read_to_string(&cp).unwrap();
        let mut lines: Vec<String> = caps.lines().map(String::from).collect();
        lines[7] = "{\"image_id\": \"img000001\", \"caption\": \"  \"}".into();
        std::fs::write(&cp, lines.join("\n")).unwrap();
        let e = PretrainData::load(&d, &tok).err().unwrap().to_string();
        assert!(e.contains("captions.jsonl:8") && e.contains("empty caption"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
