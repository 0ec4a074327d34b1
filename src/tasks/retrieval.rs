//! Image-text retrieval fine-tuning as Oscar does it (docs/oscar.md §3.1): a 2-way classifier on
//! pooled [CLS] (1 = the caption matches the image). Each positive (caption, image + its tags) comes
//! with one negative: half the time the image keeps its features and tags and gets another image's
//! caption, half the time the caption keeps its place and gets another image's features *and tags*.
//! Positives and negatives form one batch of 2 × batch sequences. Validation: pair accuracy.
use super::Task;
use crate::data::pretrain::PretrainData;
use crate::data::Tok;
use crate::gpu::Gpu;
use crate::model::heads::HeadActs;
use crate::model::{Batch, ClassLoss, Config, Head, Labels, Shape, Step};
use crate::train::trainer::mix;
use crate::util::Rng;
use crate::{Error, Result};

pub struct Retrieval<'a> {
    pub data: &'a PretrainData,
    pub tok: &'a Tok,
    pub train_pool: Vec<usize>,
    pub val_pool: Vec<usize>,
    /// Positives per batch (the batch has twice as many sequences).
    pub positives: usize,
    pub text: usize,
    pub regions: usize,
    pub dropout: f32,
}

impl<'a> Retrieval<'a> {
    pub fn new(data: &'a PretrainData, tok: &'a Tok, positives: usize, text: usize, regions: usize, dropout: f32) -> Result<Self> {
        let train_pool = data.split("train");
        if train_pool.is_empty() {
            return Err(Error::Other("the data has no captions in split 'train'".into()));
        }
        if data.images.len() < 2 {
            return Err(Error::Other("retrieval needs at least two images (negatives come from other images)".into()));
        }
        Ok(Retrieval { data, tok, train_pool, val_pool: data.split("val"), positives, text, regions, dropout })
    }

    fn shape(&self) -> Shape {
        Shape { batch: 2 * self.positives, text: self.text, regions: self.regions, masked: 1, mask3d: false }
    }

    fn other_image(&self, im: usize, rng: &mut Rng) -> usize {
        let n = self.data.images.len();
        let o = rng.below(n - 1);
        if o >= im {
            o + 1
        } else {
            o
        }
    }

    /// Writes sequence `bi`: caption ids, tag ids and the regions of image `img`.
    fn push(&self, b: &mut Batch, bi: usize, caption: &[u32], tags: &[u32], img: usize) {
        super::push_sequence(b, &self.shape(), bi, self.tok, caption, Some(tags), self.data, img);
    }

    /// `positives` positives followed by their negatives, from captions in `pool`.
    fn batch_from(&self, pool: &[usize], rng: &mut Rng) -> Batch {
        let s = self.shape();
        let mut b = super::empty_batch(&s, self.data.feature_dim, s.batch);
        let picks: Vec<usize> = (0..self.positives).map(|_| pool[rng.below(pool.len())]).collect();
        for (i, &ci) in picks.iter().enumerate() {
            let (im, ref cap) = self.data.captions[ci];
            self.push(&mut b, i, cap, &self.data.images[im].0, im);
        }
        for (i, &ci) in picks.iter().enumerate() {
            let (im, ref cap) = self.data.captions[ci];
            let o = self.other_image(im, rng);
            if rng.below(2) == 0 {
                let caps = &self.data.by_image[o];
                let other_cap = if caps.is_empty() { &self.data.images[o].0 } else { &self.data.captions[caps[rng.below(caps.len())]].1 };
                self.push(&mut b, self.positives + i, other_cap, &self.data.images[im].0, im);
            } else {
                self.push(&mut b, self.positives + i, cap, &self.data.images[o].0, o);
            }
        }
        b.labels = Labels::Class((0..s.batch).map(|i| (i < self.positives) as i32).collect());
        b
    }
}

impl Task for Retrieval<'_> {
    fn head(&self, _: &Config) -> Head {
        Head::Classifier { labels: 2, loss: ClassLoss::CrossEntropy, dropout: self.dropout }
    }
    fn feature_dim(&self) -> usize {
        self.data.feature_dim
    }
    fn train_shape(&self) -> Shape {
        self.shape()
    }
    fn train_batch(&self, rng: &mut Rng) -> Result<Batch> {
        Ok(self.batch_from(&self.train_pool, rng))
    }
    fn eval_shape(&self) -> Option<Shape> {
        (!self.val_pool.is_empty()).then(|| self.shape())
    }
    fn evaluate(&self, gpu: &Gpu, c: &Config, step: &Step, seed: u64, batches: usize) -> Result<Vec<(String, f32)>> {
        let HeadActs::Classifier(acts) = &step.head_acts else { return Err(Error::Other("retrieval evaluation needs a classifier head".into())) };
        let (mut loss, mut ok, mut n) = (0f64, 0usize, 0usize);
        for i in 0..batches.max(1) {
            let b = self.batch_from(&self.val_pool, &mut Rng::new(mix(seed, 0xE7A1, i as u64)));
            step.upload(gpu, c, &b)?;
            gpu.run(&step.forward)?;
            loss += gpu.read_f32(step.losses())?[2] as f64;
            let Labels::Class(y) = &b.labels else { unreachable!() };
            for (row, &lab) in acts.read_logits(gpu)?.iter().zip(y) {
                n += 1;
                ok += (crate::model::heads::argmax(row) == lab as usize) as usize;
            }
        }
        Ok(vec![("val_loss".into(), (loss / batches.max(1) as f64) as f32), ("val_pair_acc".into(), ok as f32 / n.max(1) as f32)])
    }
    fn title(&self) -> &'static str {
        "Oscar retrieval fine-tuning"
    }
}
