//! NLVR2 as Oscar fine-tunes it (docs/oscar.md §3.6): each example (a statement about a pair of
//! images) becomes two sequences, `[CLS] statement [SEP]` + the left image's regions and the same
//! with the right image's (no tags, as Oscar's released commands; `--pair-tags` puts each image's
//! tags after the statement, as Oscar's `--use_label_seq`); both run through the encoder,
//! their pooled outputs side by side go through the pair MLP, 2-way cross-entropy; metric accuracy.
//! Records: the store's `nlvr2.jsonl`, `{"left", "right", "statement", "label": bool}`.
use super::Task;
use crate::data::pretrain::PretrainData;
use crate::data::store::read_jsonl_lines;
use crate::data::Tok;
use crate::gpu::Gpu;
use crate::model::heads::HeadActs;
use crate::model::{Batch, Config, Head, Labels, Shape, Step};
use crate::util::Rng;
use crate::{Error, Result};
use std::path::Path;

#[derive(Clone, Debug, serde::Deserialize)]
struct Record {
    left: String,
    right: String,
    statement: String,
    label: bool,
}

pub struct Example {
    pub left: usize,
    pub right: usize,
    pub ids: Vec<u32>,
    pub label: bool,
}

pub struct Nlvr2<'a> {
    pub data: &'a PretrainData,
    pub tok: &'a Tok,
    pub examples: Vec<Example>,
    /// Examples per batch (the batch has twice as many sequences).
    pub batch: usize,
    pub text: usize,
    pub regions: usize,
    pub scale: usize,
    pub dropout: f32,
    /// Each image's tags as the sequence's second text segment.
    pub tags: bool,
    train_pool: Vec<usize>,
    val_pool: Vec<usize>,
}

impl<'a> Nlvr2<'a> {
    pub fn load(dir: &Path, data: &'a PretrainData, tok: &'a Tok, batch: usize, text: usize, regions: usize, scale: usize, dropout: f32) -> Result<Self> {
        let file = dir.join("nlvr2.jsonl");
        let recs: Vec<(usize, Record)> = read_jsonl_lines(&file)?;
        let ids = data.image_index();
        let find = |line: usize, id: &str| ids.get(id).copied().ok_or_else(|| Error::Other(format!("{}:{line}: unknown image id '{id}'", file.display())));
        let mut examples = Vec::with_capacity(recs.len());
        for (line, r) in &recs {
            if r.statement.trim().is_empty() {
                return Err(Error::Other(format!("{}:{line}: empty statement", file.display())));
            }
            examples.push(Example { left: find(*line, &r.left)?, right: find(*line, &r.right)?, ids: tok.encode(&r.statement)?, label: r.label });
        }
        let mut s = Nlvr2 { data, tok, examples, batch, text, regions, scale, dropout, tags: false, train_pool: Vec::new(), val_pool: Vec::new() };
        (s.train_pool, s.val_pool) = (s.pool("train"), s.pool("val"));
        if s.train_pool.is_empty() {
            return Err(Error::Other(format!("{}: no statements about split 'train' images", file.display())));
        }
        Ok(s)
    }

    fn shape(&self) -> Shape {
        Shape { batch: 2 * self.batch, text: self.text, regions: self.regions, masked: 1, mask3d: false }
    }

    /// Examples whose left image is in `split`.
    pub fn pool(&self, split: &str) -> Vec<usize> {
        (0..self.examples.len()).filter(|&i| self.data.images[self.examples[i].left].1 == split).collect()
    }

    pub fn batch_of(&self, picks: &[usize]) -> Batch {
        let s = self.shape();
        let mut b = super::empty_batch(&s, self.data.feature_dim, 2 * picks.len());
        for (i, &e) in picks.iter().enumerate() {
            let ex = &self.examples[e];
            for (k, img) in [(0, ex.left), (1, ex.right)] {
                let tags = self.tags.then(|| self.data.images[img].0.as_slice());
                super::push_sequence(&mut b, &s, 2 * i + k, self.tok, &ex.ids, tags, self.data, img);
            }
        }
        b.labels = Labels::Class(picks.iter().map(|&e| self.examples[e].label as i32).collect());
        b.pad_to(&s, self.data.feature_dim);
        b
    }

    pub fn score(&self, gpu: &Gpu, c: &Config, step: &Step, pool: &[usize]) -> Result<Vec<(String, f32)>> {
        let HeadActs::Classifier(acts) = &step.head_acts else { return Err(Error::Other("NLVR2 needs the pair head".into())) };
        let (mut ok, mut n) = (0usize, 0usize);
        for chunk in pool.chunks(self.batch) {
            step.upload(gpu, c, &self.batch_of(chunk))?;
            gpu.run(&step.forward)?;
            for (row, &e) in acts.read_logits(gpu)?.iter().zip(chunk) {
                ok += ((crate::model::heads::argmax(row) == 1) == self.examples[e].label) as usize;
                n += 1;
            }
        }
        Ok(vec![("accuracy".into(), (100.0 * ok as f64 / n.max(1) as f64) as f32), ("examples".into(), n as f32)])
    }
}

impl Task for Nlvr2<'_> {
    fn head(&self, _: &Config) -> Head {
        Head::Pair { scale: self.scale, dropout: self.dropout, tags: self.tags }
    }
    fn feature_dim(&self) -> usize {
        self.data.feature_dim
    }
    fn train_shape(&self) -> Shape {
        self.shape()
    }
    fn train_batch(&self, rng: &mut Rng) -> Result<Batch> {
        let pool = &self.train_pool;
        let picks: Vec<usize> = (0..self.batch).map(|_| pool[rng.below(pool.len())]).collect();
        Ok(self.batch_of(&picks))
    }
    fn eval_shape(&self) -> Option<Shape> {
        (!self.val_pool.is_empty()).then(|| self.shape())
    }
    fn evaluate(&self, gpu: &Gpu, c: &Config, step: &Step, _seed: u64, batches: usize) -> Result<Vec<(String, f32)>> {
        let pool = &self.val_pool;
        let n = (batches.max(1) * self.batch).min(pool.len());
        Ok(vec![("val_accuracy".into(), self.score(gpu, c, step, &pool[..n])?[0].1)])
    }
    fn title(&self) -> &'static str {
        "Oscar NLVR2 fine-tuning"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{store, synth};

    /// Without `tags` a sequence is `[CLS] statement [SEP]` and padding; with them the image's own
    /// tags follow as type-1 tokens and a second [SEP], on each side of the pair.
    #[test]
    fn tags_follow_the_statement_only_when_asked() {
        let dir = std::env::temp_dir().join(format!("vlp-nlvr2-unit-{}", std::process::id()));
        let w = synth::generate_with_classes(60, 1, 38, 3).unwrap();
        let tok = Tok::train(&w.corpus(), 200).unwrap();
        store::write_world(&dir, &w, &tok).unwrap();
        let data = PretrainData::load(&dir, &tok).unwrap();
        let mut t = Nlvr2::load(&dir, &data, &tok, 4, 24, 6, 2, 0.0).unwrap();
        let e = (0..t.examples.len()).find(|&e| !data.images[t.examples[e].left].0.is_empty() && !data.images[t.examples[e].right].0.is_empty()).unwrap();
        let n = t.examples[e].ids.len();
        let plain = t.batch_of(&[e]);
        t.tags = true;
        let tagged = t.batch_of(&[e]);
        for (k, img) in [(0, t.examples[e].left), (1, t.examples[e].right)] {
            let row = |b: &Batch| b.input_ids[k * 24..(k + 1) * 24].to_vec();
            let tags = &data.images[img].0;
            assert_eq!(row(&plain)[n + 1], tok.sep);
            assert!(row(&plain)[n + 2..].iter().all(|&x| x == tok.pad), "no tags: {:?}", row(&plain));
            assert_eq!(&row(&tagged)[n + 2..n + 2 + tags.len()], tags.as_slice(), "side {k}");
            assert_eq!(row(&tagged)[n + 2 + tags.len()], tok.sep);
            assert!(tagged.type_ids[k * 24 + n + 2..k * 24 + n + 3 + tags.len()].iter().all(|&x| x == 1));
        }
        assert!(matches!(t.head(&crate::model::Config::preset("tiny").unwrap()), Head::Pair { tags: true, .. }));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
