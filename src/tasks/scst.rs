//! Self-critical sequence training (SCST, CIDEr optimisation) as Oscar does it (docs/oscar.md
//! §3.2, `scst_train_iter`): per training image, `samples` captions drawn multinomially from the
//! current model and one greedy caption as the baseline; reward = CIDEr-D against the image's
//! references (document frequencies from the training references); loss =
//! −mean over samples of (r − r_greedy) · (mean log-probability of the sample's tokens).
//!
//! The samples come from the decode plan (key/value cache, no gradient). The gradient comes from
//! one Train-plan forward that reproduces exactly the distributions the decoder sampled from:
//! the caption segment holds w_0..w_L (causal), a second segment holds one [MASK] per predicted
//! token, MASK_j at position j seeing w_0..w_{j-1}, itself, the tags and the regions — what the
//! decoder's MASK row saw when it produced w_j. The masked-token head reads the MASK rows with
//! the sampled tokens as labels and per-row weights (r − r_greedy) · count / (N · len), so the
//! weighted cross-entropy (ops::cross_entropy) is this loss.
//!
//! Oscar samples with dropout on; here sampling and the gradient pass both run without dropout,
//! so the gradient is that of the policy that was sampled.
use super::caption::CaptionLayout;
use super::Task;
use crate::apps::caption::{GpuStepper, Input};
use crate::data::pretrain::PretrainData;
use crate::data::Tok;
use crate::decoding::{self, Hypothesis, SearchConfig};
use crate::eval::caption::{tokenize, CiderD};
use crate::gpu::Gpu;
use crate::model::decode::{Context, Decode, DecodeShape};
use crate::model::{Batch, Config, Head, Labels, ParamSet, Shape, Step};
use crate::ops::matmul::Precision;
use crate::util::Rng;
use crate::{Error, Result};
use std::cell::RefCell;

/// Each sample's baseline: its image's greedy reward (Oscar's default), or with `sample` the mean
/// reward of the image's other samples (Oscar's `baseline_type='sample'`; the greedy one when an
/// image has a single sample). `rewards` holds `samples` per image, image-major.
fn baselines(rewards: &[f64], greedy: &[f64], samples: usize, sample: bool) -> Vec<f64> {
    (0..rewards.len())
        .map(|bi| {
            let i = bi / samples;
            if sample && samples > 1 {
                (rewards[i * samples..(i + 1) * samples].iter().sum::<f64>() - rewards[bi]) / (samples - 1) as f64
            } else {
                greedy[i]
            }
        })
        .collect()
}

/// The words the reward scores: the caption's PTB tokens and, with `eos`, a final "<eos>", as
/// Oscar's `ScstRewardCriterion._wrap_sentence` ends every candidate and reference (after dropping
/// a final period) before CIDEr-D, so a caption is also rewarded for ending where the references
/// do. Without it (`--scst-no-eos`) they are exactly what `score` and `eval` compute CIDEr-D over.
fn reward_tokens(s: &str, eos: bool) -> Vec<String> {
    let mut t = tokenize(s);
    if eos {
        t.push("<eos>".into());
    }
    t
}

pub struct Scst<'a> {
    pub data: &'a PretrainData,
    pub tok: &'a Tok,
    pub layout: CaptionLayout,
    pub train_images: Vec<usize>,
    pub val_images: Vec<usize>,
    /// Images per batch and samples per image.
    pub images: usize,
    pub samples: usize,
    /// Oscar's max_gen_length: caption positions, [CLS] included.
    pub max_gen_length: usize,
    /// Oscar's `baseline_type`: false = the greedy caption's reward (its default), true = the
    /// mean reward of the image's other samples (`sample`).
    pub sample_baseline: bool,
    /// Where the captions come from: false = multinomial samples (Oscar), true = the `samples`
    /// best hypotheses of a beam search of as many beams (the Meshed-Memory Transformer's variant,
    /// Cornia et al. 2020), which stay near the mode that greedy and beam decoding return.
    pub beam_samples: bool,
    /// Whether the reward's candidates and references end with "<eos>" (Oscar: yes).
    eos: bool,
    /// Tokenised references per image (PTB tokenisation, as the metric).
    refs: Vec<Vec<Vec<String>>>,
    cider: CiderD,
    plans: RefCell<Option<Plans>>,
    last: RefCell<Vec<(String, f32)>>,
}

struct Plans {
    sample: Decode,
    greedy: Decode,
}

impl<'a> Scst<'a> {
    pub fn new(
        data: &'a PretrainData,
        tok: &'a Tok,
        texts: &std::collections::HashMap<String, Vec<String>>,
        layout: CaptionLayout,
        images: usize,
        samples: usize,
        max_gen_length: usize,
        eos: bool,
    ) -> Result<Self> {
        layout.check()?;
        if samples < 1 {
            return Err(Error::Other("--scst-samples must be at least 1".into()));
        }
        if max_gen_length < 2 || max_gen_length > layout.caption_len {
            return Err(Error::Other(format!("--scst-max-gen-length {max_gen_length}: must be in 2..={} (--caption-len)", layout.caption_len)));
        }
        let refs: Vec<Vec<Vec<String>>> =
            data.ids.iter().map(|id| texts.get(id).map(|v| v.iter().map(|c| reward_tokens(c, eos)).collect()).unwrap_or_default()).collect();
        let with = |split: &str| -> Vec<usize> { (0..data.images.len()).filter(|&i| data.images[i].1 == split && !refs[i].is_empty()).collect() };
        let (train_images, val_images) = (with("train"), with("val"));
        if train_images.is_empty() {
            return Err(Error::Other("self-critical training needs training images with captions".into()));
        }
        let train_refs: Vec<Vec<Vec<String>>> = train_images.iter().map(|&i| refs[i].clone()).collect();
        let cider = CiderD::new(&train_refs);
        Ok(Scst {
            data,
            tok,
            layout,
            train_images,
            val_images,
            images,
            samples,
            max_gen_length,
            sample_baseline: false,
            beam_samples: false,
            eos,
            refs,
            cider,
            plans: RefCell::new(None),
            last: RefCell::new(Vec::new()),
        })
    }

    fn shape(&self) -> Shape {
        // caption slots w_0..w_{P-1} for up to P = max_gen_length - 1 predicted tokens, one MASK each
        let g = self.max_gen_length - 1;
        let b = self.images * self.samples;
        Shape { batch: b, text: 2 * g + self.layout.tag_slots(), regions: self.layout.regions, masked: b * g, mask3d: true }
    }

    fn search(&self) -> SearchConfig {
        SearchConfig::oscar(self.tok.cls, self.tok.sep, self.tok.pad, self.max_gen_length)
    }

    fn context(&self, images: &[usize], copies: usize) -> (Context, Vec<Input>) {
        let inputs = crate::apps::caption::store_inputs(self.data, images, self.layout.regions);
        let mut x = Context { tag_ids: Vec::new(), tag_pos: Vec::new(), valid: Vec::new(), img: Vec::new() };
        for inp in &inputs {
            super::caption::push_context(&mut x, &self.layout, self.tok, &inp.tags, &inp.regions, self.data.feature_dim, copies);
        }
        (x, inputs)
    }

    fn reward(&self, im: usize, h: &Hypothesis) -> Result<f64> {
        Ok(self.cider.score(&reward_tokens(&self.tok.decode(&h.tokens)?, self.eos), &self.refs[im]))
    }

    /// The predicted tokens of a hypothesis: its words, and [SEP] when it was produced.
    fn predicted(&self, h: &Hypothesis) -> Vec<u32> {
        let mut p = h.tokens.clone();
        if h.logprobs.len() > h.tokens.len() {
            p.push(self.tok.sep);
        }
        p
    }

    /// Greedy captions of `images` through the greedy plan, `self.images` at a time.
    fn greedy(&self, gpu: &Gpu, c: &Config, plans: &mut Plans, images: &[usize]) -> Result<Vec<Hypothesis>> {
        let mut out = Vec::new();
        for chunk in images.chunks(self.images) {
            let mut ims = chunk.to_vec();
            ims.resize(self.images, *chunk.last().unwrap());
            let (x, _) = self.context(&ims, 1);
            plans.greedy.set_context(gpu, c, &x)?;
            gpu.run(&plans.greedy.prefill)?;
            let mut st = GpuStepper { gpu, cfg: c, dec: &mut plans.greedy };
            out.extend(decoding::greedy(&mut st, self.images, &self.search())?.into_iter().take(chunk.len()));
        }
        Ok(out)
    }
}

/// Writes sequence `bi` of a self-critical batch: caption segment `[CLS] w_1 .. w_{P-1}` in
/// slots 0..G, MASK_j (j = 1..=P) in slots G + j − 1 at position j, tags at `caption_len..`, and
/// the 3-D mask that makes MASK_j see what the decoder's MASK saw; returns the flat MASK rows.
pub fn write_teacher_forced(b: &mut Batch, s: &Shape, lay: &CaptionLayout, bi: usize, tok: &Tok, predicted: &[u32], tb: &[u32], regions: usize) -> Vec<u32> {
    let (sq, p) = (s.seq(), predicted.len());
    let g = (s.text - lay.tag_slots()) / 2;
    let ctx0 = 2 * g;
    for t in 0..s.text {
        let (id, ty, pos) = if t < g {
            (
                if t == 0 {
                    tok.cls
                } else if t < p {
                    predicted[t - 1]
                } else {
                    tok.pad
                },
                0,
                t,
            )
        } else if t < ctx0 {
            (if t - g < p { tok.mask } else { tok.pad }, 0, t - g + 1)
        } else {
            let j = t - ctx0;
            (tb.get(j).copied().unwrap_or(tok.pad), 1, lay.caption_len + j)
        };
        b.input_ids.push(id);
        b.type_ids.push(ty);
        b.pos_ids.push(pos as u32);
    }
    let real_ctx = |k: usize| (k >= ctx0 && k < ctx0 + tb.len()) || (k >= s.text && k < s.text + regions);
    let text = |q: usize, k: usize| {
        if q < g && q < p {
            // w_q: causal over the words
            Some(k <= q)
        } else if q >= g && q < ctx0 && q - g < p {
            // MASK_j, j = q - g + 1: the words before j, and itself
            Some(k < q - g + 1 || k == q)
        } else {
            None
        }
    };
    super::caption::write_mask(&mut b.mask[bi * sq * sq..(bi + 1) * sq * sq], sq, real_ctx, text);
    (0..p).map(|j| (bi * sq + g + j) as u32).collect()
}

impl Task for Scst<'_> {
    fn head(&self, _: &Config) -> Head {
        Head::CaptionLm { label_smoothing: 0.0 }
    }
    fn feature_dim(&self) -> usize {
        self.data.feature_dim
    }
    fn train_shape(&self) -> Shape {
        self.shape()
    }
    fn train_batch(&self, _: &mut Rng) -> Result<Batch> {
        Err(Error::Other("self-critical batches are sampled from the model (train_batch_on)".into()))
    }
    fn prepare(&self, gpu: &Gpu, c: &Config, params: &ParamSet) -> Result<()> {
        let mut plans = self.plans.borrow_mut();
        if plans.is_none() {
            let d = |batch| DecodeShape { batch, tags: self.layout.tag_slots(), regions: self.layout.regions, caption: self.max_gen_length };
            *plans = Some(Plans {
                sample: Decode::new(gpu, c, params, d(self.images * self.samples), self.tok.mask, Precision::F32)?,
                greedy: Decode::new(gpu, c, params, d(self.images), self.tok.mask, Precision::F32)?,
            });
        }
        Ok(())
    }
    fn train_batch_on(&self, gpu: &Gpu, c: &Config, params: &ParamSet, rng: &mut Rng) -> Result<Batch> {
        self.prepare(gpu, c, params)?;
        let mut plans = self.plans.borrow_mut();
        let plans = plans.as_mut().expect("prepared");
        let ims: Vec<usize> = (0..self.images).map(|_| self.train_images[rng.below(self.train_images.len())]).collect();
        let base = self.greedy(gpu, c, plans, &ims)?;
        let (x, inputs) = self.context(&ims, self.samples);
        plans.sample.set_context(gpu, c, &x)?;
        gpu.run(&plans.sample.prefill)?;
        let mut st = GpuStepper { gpu, cfg: c, dec: &mut plans.sample };
        let hyps = if self.beam_samples {
            decoding::beam_search_n(&mut st, self.images, self.samples, self.samples, &self.search())?.concat()
        } else {
            decoding::sample(&mut st, self.images, self.samples, 1.0, 0, rng, &self.search())?
        };
        let s = self.shape();
        let n = hyps.len();
        let mut b = Batch { img: vec![0.0; s.batch * s.regions * self.data.feature_dim], mask: vec![0.0; s.mask_len()], ..Default::default() };
        let (mut positions, mut labels, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let (mut r_sum, mut b_sum) = (0f64, 0f64);
        let d = self.data.feature_dim;
        let rewards: Vec<f64> = hyps.iter().enumerate().map(|(bi, h)| self.reward(ims[bi / self.samples], h)).collect::<Result<_>>()?;
        let greedy: Vec<f64> = ims.iter().zip(&base).map(|(&im, h)| self.reward(im, h)).collect::<Result<_>>()?;
        let baseline = baselines(&rewards, &greedy, self.samples, self.sample_baseline);
        for (bi, h) in hyps.iter().enumerate() {
            let i = bi / self.samples;
            let im = ims[i];
            let (r, rb) = (rewards[bi], baseline[bi]);
            r_sum += r;
            b_sum += greedy[i];
            let pred = self.predicted(h);
            let mut tb: Vec<u32> = self.data.images[im].0[..self.data.images[im].0.len().min(self.layout.tag_slots() - 1)].to_vec();
            tb.push(self.tok.sep);
            let reg = inputs[i].regions.len() / d;
            b.img[bi * s.regions * d..bi * s.regions * d + reg * d].copy_from_slice(&inputs[i].regions);
            let pos = write_teacher_forced(&mut b, &s, &self.layout, bi, self.tok, &pred, &tb, reg);
            for (p, &y) in pos.iter().zip(&pred) {
                positions.push(*p);
                labels.push(y as i32);
                rows.push((r - rb, pred.len()));
            }
        }
        // the kernel averages over the labelled rows: fold that count into the weights
        let count = rows.len() as f64;
        let weights: Vec<f32> = rows.iter().map(|&(adv, len)| (adv * count / (n as f64 * len as f64)) as f32).collect();
        positions.resize(s.masked, 0);
        labels.resize(s.masked, -1);
        let mut w = weights;
        w.resize(s.masked, 0.0);
        b.labels = Labels::Masked { positions, labels, weights: w };
        *self.last.borrow_mut() = vec![("reward".into(), (r_sum / n as f64) as f32), ("greedy_reward".into(), (b_sum / n as f64) as f32)];
        Ok(b)
    }
    fn dropout(&self) -> bool {
        false
    }
    fn step_metrics(&self) -> Vec<(String, f32)> {
        self.last.borrow().clone()
    }
    fn eval_shape(&self) -> Option<Shape> {
        // the trainer plans an Eval step for this shape; validation decodes through the greedy plan instead
        (!self.val_images.is_empty()).then(|| Shape { batch: 1, text: self.layout.text_len, regions: self.layout.regions, masked: 1, mask3d: true })
    }
    fn evaluate(&self, gpu: &Gpu, c: &Config, _: &Step, _: u64, batches: usize) -> Result<Vec<(String, f32)>> {
        Ok(self.val_cider(gpu, c, batches.max(1) * self.images)?.map(|v| vec![("val_cider_d".to_string(), v as f32)]).unwrap_or_default())
    }
    fn title(&self) -> &'static str {
        "Oscar self-critical caption training (CIDEr-D reward)"
    }
    fn model_files(&self) -> Vec<(String, String)> {
        vec![("caption.json".into(), serde_json::to_string_pretty(&self.layout).expect("layout serialises"))]
    }
}

impl Scst<'_> {
    /// Mean CIDEr-D (against the training document frequencies) of greedy captions of up to `n`
    /// validation images, with the current parameters.
    pub fn val_cider(&self, gpu: &Gpu, c: &Config, n: usize) -> Result<Option<f64>> {
        let mut plans = self.plans.borrow_mut();
        let Some(plans) = plans.as_mut() else { return Ok(None) };
        let ims: Vec<usize> = self.val_images.iter().copied().take(n).collect();
        if ims.is_empty() {
            return Ok(None);
        }
        let hyps = self.greedy(gpu, c, plans, &ims)?;
        let mut s = 0.0;
        for (&im, h) in ims.iter().zip(&hyps) {
            s += self.reward(im, h)?;
        }
        Ok(Some(s / ims.len() as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_greedy_or_the_other_samples_mean() {
        // 2 images x 3 samples
        let (r, g) = ([1.0, 2.0, 3.0, 0.0, 0.0, 6.0], [10.0, 20.0]);
        assert_eq!(baselines(&r, &g, 3, false), [10.0, 10.0, 10.0, 20.0, 20.0, 20.0]);
        assert_eq!(baselines(&r, &g, 3, true), [2.5, 2.0, 1.5, 3.0, 3.0, 0.0]);
        assert_eq!(baselines(&[4.0, 5.0], &[1.0, 2.0], 1, true), [1.0, 2.0], "one sample: the greedy baseline");
    }

    #[test]
    fn reward_words_end_with_eos_as_oscars_wrap_sentence() {
        assert_eq!(reward_tokens("A red cube sits alone.", true), ["a", "red", "cube", "sits", "alone", "<eos>"]);
        // the "<eos>" n-grams reward stopping where a reference stops: running on past "alone"
        // scores less than stopping there
        let refs: Vec<Vec<String>> = ["a red cube sits alone.", "a blue ball sits alone in the picture."].iter().map(|r| reward_tokens(r, true)).collect();
        let cider = CiderD::new(&[refs.clone(), vec![reward_tokens("a dog and a cat.", true)]]);
        let (stop, run_on) =
            (cider.score(&reward_tokens("a red cube sits alone", true), &refs), cider.score(&reward_tokens("a red cube sits alone in", true), &refs));
        assert!(stop > run_on, "{stop} vs {run_on}");
    }

    #[test]
    fn reward_words_without_eos_are_the_metrics_words() {
        assert_eq!(reward_tokens("A red cube sits alone.", false), tokenize("A red cube sits alone."));
        assert_eq!(reward_tokens("A red cube sits alone.", false).last().map(String::as_str), Some("alone"));
    }
}
