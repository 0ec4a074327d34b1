//! Captioning as Oscar fine-tunes it (docs/oscar.md §3.2, `CaptionTensorizer`): seq2seq "masked"
//! training of the masked-token head.
//! - Layout: `[CLS] caption [SEP]` padded to `caption_len` (type 0), then `tags [SEP]` (type 1) up
//!   to `text` tokens, then the regions. Position ids are plain 0.., so tags start at `caption_len`
//!   — the decoder puts them there too.
//! - 3-D mask: the caption is causal and sees the tags and regions; tags and regions see each other
//!   and never the caption; padding is seen by no one.
//! - 1..=3 caption tokens are masked per example (round(0.15 · caption length), [SEP] a candidate,
//!   [CLS] not), 80 % [MASK] / 10 % random / 10 % kept; the loss is the (label-smoothed) CE at
//!   those positions only.
//!
//! Validation: loss and masked-token accuracy on the val split's captions.
use super::Task;
use crate::data::pretrain::PretrainData;
use crate::data::Tok;
use crate::gpu::Gpu;
use crate::model::decode::Context;
use crate::model::heads::HeadActs;
use crate::model::{Batch, Config, Head, Labels, Shape, Step};
use crate::train::trainer::mix;
use crate::util::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Oscar's `max_masked_tokens`.
pub const MAX_MASKED: usize = 3;

/// Where the caption and the tags live in a sequence; saved with a captioning model
/// (`caption.json`) so decoding puts the tags where training did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionLayout {
    /// Caption positions, [CLS] and [SEP] included (Oscar's max_seq_a_length, 40).
    pub caption_len: usize,
    /// All text positions: caption then tags (Oscar 70).
    pub text_len: usize,
    /// Region slots (Oscar 50).
    pub regions: usize,
}

impl CaptionLayout {
    pub fn check(&self) -> Result<()> {
        if self.caption_len < 3 || self.caption_len + 2 > self.text_len {
            return Err(Error::Other(format!(
                "--caption-len {} with --text-len {}: the caption needs at least 3 positions and the tags at least 2 ([tag] [SEP]) after it",
                self.caption_len, self.text_len
            )));
        }
        Ok(())
    }

    pub fn shape(&self, batch: usize) -> Shape {
        Shape { batch, text: self.text_len, regions: self.regions, masked: MAX_MASKED * batch, mask3d: true }
    }

    /// Tag tokens (with their [SEP]) that fit after the caption.
    pub fn tag_slots(&self) -> usize {
        self.text_len - self.caption_len
    }

    /// `[CLS] caption [SEP]` (truncated to fit) and `tags [SEP]` (truncated to fit).
    pub fn segments(&self, tok: &Tok, caption: &[u32], tags: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let mut a = vec![tok.cls];
        a.extend(&caption[..caption.len().min(self.caption_len - 2)]);
        a.push(tok.sep);
        let mut b: Vec<u32> = tags[..tags.len().min(self.tag_slots() - 1)].to_vec();
        b.push(tok.sep);
        (a, b)
    }
}

/// Writes sequence `bi` of a captioning batch: ids, types, positions and its 3-D mask rows for
/// caption segment `a` and tag segment `tb`, and `regions` real regions (already in `b.img`).
pub fn write_sequence(b: &mut Batch, s: &Shape, lay: &CaptionLayout, bi: usize, pad: u32, a: &[u32], tb: &[u32], regions: usize) {
    let (sq, cl) = (s.seq(), lay.caption_len);
    for t in 0..s.text {
        let (id, ty) = if t < a.len() {
            (a[t], 0)
        } else if t >= cl && t - cl < tb.len() {
            (tb[t - cl], 1)
        } else {
            (pad, (t >= cl) as u32)
        };
        b.input_ids.push(id);
        b.type_ids.push(ty);
        b.pos_ids.push(t as u32);
    }
    let real_ctx = |k: usize| (k >= cl && k < cl + tb.len()) || (k >= s.text && k < s.text + regions);
    write_mask(&mut b.mask[bi * sq * sq..(bi + 1) * sq * sq], sq, real_ctx, |q, k| (q < a.len()).then_some(k <= q));
}

/// Writes one sequence's [S, S] mask: `text(q, k)` says whether text row q attends to k (None: q
/// is not a real text row); the real context (tags and regions, `ctx`) is seen by every real row
/// and sees only itself; a padding row attends to itself alone (nobody reads it, and its softmax
/// stays finite).
pub fn write_mask(m: &mut [f32], sq: usize, ctx: impl Fn(usize) -> bool, text: impl Fn(usize, usize) -> Option<bool>) {
    for q in 0..sq {
        let row = &mut m[q * sq..(q + 1) * sq];
        let own = text(q, q).is_some();
        for (k, x) in row.iter_mut().enumerate() {
            let on = match text(q, k) {
                Some(t) => t || ctx(k),
                None if !own && ctx(q) => ctx(k),
                None => k == q && !own,
            };
            *x = on as u32 as f32;
        }
    }
}

/// Chooses the masked caption positions of a `[CLS] caption [SEP]` segment of length `la` and
/// corrupts `ids` in place (80 % [MASK], 10 % a random id, 10 % kept); returns (position, label).
/// Positions whose token is in `first` (object-aware masking: the image's tag words) are taken
/// before the others; with `first` empty the choice is Oscar's, uniform.
pub fn mask_caption(ids: &mut [u32], la: usize, mask: u32, vocab: usize, first: &[u32], rng: &mut Rng) -> Vec<(usize, u32)> {
    let n = ((0.15 * la as f64).round() as usize).clamp(1, MAX_MASKED).min(la - 1);
    let mut cand: Vec<usize> = (1..la).collect();
    rng.shuffle(&mut cand);
    if !first.is_empty() {
        // stable: the preferred positions in their shuffled order, then the rest in theirs
        cand.sort_by_key(|&t| !first.contains(&ids[t]));
    }
    let mut out: Vec<(usize, u32)> = cand[..n].iter().map(|&t| (t, ids[t])).collect();
    out.sort();
    for &(t, _) in &out {
        if rng.uniform() <= 0.8 {
            ids[t] = mask;
        } else if rng.uniform() <= 0.5 {
            ids[t] = rng.below(vocab) as u32;
        }
    }
    out
}

pub struct Captioning<'a> {
    pub data: &'a PretrainData,
    pub tok: &'a Tok,
    pub train_pool: Vec<usize>,
    pub val_pool: Vec<usize>,
    pub batch: usize,
    pub layout: CaptionLayout,
    pub smoothing: f32,
    pub vocab: usize,
    /// Share of examples masked object-aware (`mask_caption`'s `first` = the image's tag words).
    pub tag_words: f32,
}

impl<'a> Captioning<'a> {
    pub fn new(data: &'a PretrainData, tok: &'a Tok, batch: usize, layout: CaptionLayout, smoothing: f32, vocab: usize) -> Result<Self> {
        layout.check()?;
        if !(0.0..1.0).contains(&smoothing) {
            return Err(Error::Other(format!("--label-smoothing {smoothing} must be in [0, 1)")));
        }
        let train_pool = data.split("train");
        if train_pool.is_empty() {
            return Err(Error::Other("the data has no captions in split 'train'".into()));
        }
        Ok(Captioning { data, tok, train_pool, val_pool: data.split("val"), batch, layout, smoothing, vocab, tag_words: 0.0 })
    }

    /// `--mask-tag-words`: the share of training captions masked object-aware.
    pub fn mask_tag_words(mut self, share: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&share) {
            return Err(Error::Other(format!("--mask-tag-words {share} must be in [0, 1]")));
        }
        self.tag_words = share;
        Ok(self)
    }

    /// A batch from `pool`; `tag_words` of its captions masked object-aware (validation: 0, Oscar's).
    fn batch_from(&self, pool: &[usize], tag_words: f32, rng: &mut Rng) -> Batch {
        let s = self.layout.shape(self.batch);
        let d = self.data.feature_dim;
        let mut b = Batch { img: vec![0.0; s.batch * s.regions * d], mask: vec![0.0; s.mask_len()], ..Default::default() };
        let (mut positions, mut labels) = (Vec::new(), Vec::new());
        for bi in 0..s.batch {
            let (im, ref cap) = self.data.captions[pool[rng.below(pool.len())]];
            let (mut a, tb) = self.layout.segments(self.tok, cap, &self.data.images[im].0);
            let la = a.len();
            let first: &[u32] = if tag_words > 0.0 && rng.uniform() < tag_words { &self.data.images[im].0 } else { &[] };
            for (t, y) in mask_caption(&mut a, la, self.tok.mask, self.vocab, first, rng) {
                positions.push((bi * s.seq() + t) as u32);
                labels.push(y as i32);
            }
            let r = self.data.features.read_into(self.data.feature_of[im], &mut b.img[bi * s.regions * d..(bi + 1) * s.regions * d]);
            write_sequence(&mut b, &s, &self.layout, bi, self.tok.pad, &a, &tb, r);
        }
        positions.resize(s.masked, 0);
        labels.resize(s.masked, -1);
        b.labels = Labels::Masked { positions, labels, weights: Vec::new() };
        b
    }
}

impl Task for Captioning<'_> {
    fn head(&self, _: &Config) -> Head {
        Head::CaptionLm { label_smoothing: self.smoothing }
    }
    fn feature_dim(&self) -> usize {
        self.data.feature_dim
    }
    fn train_shape(&self) -> Shape {
        self.layout.shape(self.batch)
    }
    fn train_batch(&self, rng: &mut Rng) -> Result<Batch> {
        Ok(self.batch_from(&self.train_pool, self.tag_words, rng))
    }
    fn eval_shape(&self) -> Option<Shape> {
        (!self.val_pool.is_empty()).then(|| self.layout.shape(self.batch))
    }
    fn evaluate(&self, gpu: &Gpu, c: &Config, step: &Step, seed: u64, batches: usize) -> Result<Vec<(String, f32)>> {
        let HeadActs::Pretrain(acts) = &step.head_acts else { return Err(Error::Other("caption evaluation needs the caption LM head".into())) };
        // val_tag_word_acc: accuracy on the masked words that are also one of the image's tags
        // (object words the captioner can copy from the tag segment; chance is about 1 / classes)
        let (mut loss, mut ok, mut n, mut tag_ok, mut tag_n) = (0f64, 0usize, 0usize, 0usize, 0usize);
        let s = self.layout.shape(self.batch);
        for i in 0..batches.max(1) {
            let b = self.batch_from(&self.val_pool, 0.0, &mut Rng::new(mix(seed, 0xCA97, i as u64)));
            step.upload(gpu, c, &b)?;
            gpu.run(&step.forward)?;
            loss += gpu.read_f32(step.losses())?[2] as f64;
            let Labels::Masked { labels, positions, .. } = &b.labels else { unreachable!() };
            let logits = gpu.read_f32(&acts.mlm_logits)?;
            for ((row, &y), &p) in logits.chunks(c.vocab_size).zip(labels).zip(positions) {
                if y >= 0 {
                    let hit = (crate::model::heads::argmax(row) == y as usize) as usize;
                    n += 1;
                    ok += hit;
                    let base = p as usize / s.seq() * s.text;
                    let tags = &b.input_ids[base + self.layout.caption_len..base + self.layout.text_len];
                    if y as u32 != self.tok.sep && tags.contains(&(y as u32)) {
                        tag_n += 1;
                        tag_ok += hit;
                    }
                }
            }
        }
        Ok(vec![
            ("val_loss".into(), (loss / batches.max(1) as f64) as f32),
            ("val_token_acc".into(), ok as f32 / n.max(1) as f32),
            ("val_tag_word_acc".into(), tag_ok as f32 / tag_n.max(1) as f32),
        ])
    }
    fn title(&self) -> &'static str {
        "Oscar caption fine-tuning"
    }
    fn model_files(&self) -> Vec<(String, String)> {
        vec![("caption.json".into(), serde_json::to_string_pretty(&self.layout).expect("layout serialises"))]
    }
}

/// The decode context of `copies` sequences of one image: its tags (with [SEP]) at positions
/// `caption_len..`, padded to `tag_slots`, and its region features `img` ([r, d], cut or
/// zero-padded to the layout's region slots). Appends to `x`.
pub fn push_context(x: &mut Context, lay: &CaptionLayout, tok: &Tok, tags: &[u32], img: &[f32], d: usize, copies: usize) {
    let regions = (img.len() / d).min(lay.regions);
    let mut padded = vec![0f32; lay.regions * d];
    padded[..regions * d].copy_from_slice(&img[..regions * d]);
    let ts = lay.tag_slots();
    let mut tb: Vec<u32> = tags[..tags.len().min(ts - 1)].to_vec();
    tb.push(tok.sep);
    for _ in 0..copies {
        x.tag_ids.extend((0..ts).map(|j| tb.get(j).copied().unwrap_or(tok.pad)));
        x.tag_pos.extend((0..ts).map(|j| (lay.caption_len + j) as u32));
        x.valid.extend((0..ts).map(|j| (j < tb.len()) as u32 as f32));
        x.valid.extend((0..lay.regions).map(|k| (k < regions) as u32 as f32));
        x.img.extend(&padded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_aware_masking_takes_the_tag_words_first() {
        // [CLS] a red cube is left of a ball [SEP] with tags {cube, ball}: 2 masked (15 % of 10),
        // always the two tag words; without `first` they are chosen as often as any other word
        let ids = [2u32, 10, 11, 12, 13, 14, 15, 10, 16, 3];
        let mut r = Rng::new(5);
        for _ in 0..50 {
            let m = mask_caption(&mut ids.clone(), 10, 4, 50, &[12, 16], &mut r);
            assert_eq!(m.iter().map(|p| p.1).collect::<Vec<_>>(), [12, 16], "{m:?}");
        }
        let hits = (0..400).filter(|_| mask_caption(&mut ids.clone(), 10, 4, 50, &[], &mut r).iter().any(|p| p.1 == 12)).count();
        assert!((50..130).contains(&hits), "uniform: the cube is masked in {hits} of 400 (expect 2/9 of them)");
    }

    #[test]
    fn masking_follows_oscar_counts_and_never_touches_cls() {
        let mut r = Rng::new(1);
        for la in [3usize, 5, 10, 17, 30] {
            for _ in 0..50 {
                let mut ids: Vec<u32> = (100..100 + la as u32).collect();
                let m = mask_caption(&mut ids, la, 4, 50, &[], &mut r);
                let want = ((0.15 * la as f64).round() as usize).clamp(1, 3);
                assert_eq!(m.len(), want, "length {la}");
                assert!(m.iter().all(|&(t, y)| t >= 1 && t < la && y == 100 + t as u32));
                assert_eq!(ids[0], 100, "[CLS] is never a candidate");
            }
        }
        // the final [SEP] is a candidate: over many draws of a 3-token caption it gets chosen
        let hits = (0..200).filter(|_| mask_caption(&mut [2, 9, 3], 3, 4, 50, &[], &mut r).iter().any(|&(t, _)| t == 2)).count();
        assert!(hits > 50 && hits < 150, "[SEP] chosen {hits} of 200 times");
    }

    #[test]
    fn the_seq2seq_mask_is_causal_over_the_caption_and_hides_it_from_the_context() {
        let lay = CaptionLayout { caption_len: 5, text_len: 8, regions: 2 };
        let s = lay.shape(1);
        let sq = s.seq();
        let mut b = Batch { mask: vec![0.0; s.mask_len()], ..Default::default() };
        // caption [CLS] w [SEP] (3 of 5), tags t [SEP] (2 of 3), 1 real region of 2
        write_sequence(&mut b, &s, &lay, 0, 0, &[2, 9, 3], &[7, 3], 1);
        let at = |q: usize, k: usize| b.mask[q * sq + k] == 1.0;
        assert_eq!(b.input_ids, vec![2, 9, 3, 0, 0, 7, 3, 0]);
        assert_eq!(b.type_ids, vec![0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(b.pos_ids, (0..8).collect::<Vec<_>>());
        for q in 0..3 {
            for k in 0..3 {
                assert_eq!(at(q, k), k <= q, "caption {q} -> {k}");
            }
            assert!(at(q, 5) && at(q, 6) && at(q, 8), "caption sees tags and the real region");
            assert!(!at(q, 3) && !at(q, 7) && !at(q, 9), "padding is seen by no one");
        }
        for q in [5, 6, 8] {
            assert!((0..3).all(|k| !at(q, k)), "context row {q} must not see the caption");
            assert!(at(q, 5) && at(q, 6) && at(q, 8));
        }
        assert!(at(3, 3) && (0..sq).filter(|&k| at(3, k)).count() == 1, "a padding row attends to itself only");
    }
}
