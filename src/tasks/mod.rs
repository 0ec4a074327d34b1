//! Tasks: what the one trainer (train::trainer) and evaluation drive. A task owns its data, its
//! batch builder, its head and its metrics; batches are pure functions of an RNG so a run resumes
//! bit for bit.
pub mod caption;
pub mod nlvr2;
pub mod pretrain;
pub mod qa;
pub mod retrieval;
pub mod scst;

use crate::data::pretrain::PretrainData;
use crate::data::{Tok, Truncation};
use crate::gpu::Gpu;
use crate::model::{Batch, Config, Head, ParamSet, Shape, Step};
use crate::util::Rng;
use crate::Result;

pub trait Task {
    /// The head this task trains (the config may set its number of classes).
    fn head(&self, c: &Config) -> Head;
    /// Width of the region features of the data (a preset config adapts to it).
    fn feature_dim(&self) -> usize;
    /// The training batch geometry (sequences, not examples).
    fn train_shape(&self) -> Shape;
    /// One training batch, a pure function of `rng`'s state.
    fn train_batch(&self, rng: &mut Rng) -> Result<Batch>;
    /// Builds what the task plans over the parameters (SCST's decoders), before the first step
    /// or evaluation; calling it again does nothing.
    fn prepare(&self, _gpu: &Gpu, _c: &Config, _params: &ParamSet) -> Result<()> {
        Ok(())
    }
    /// The batch the trainer asks for: `train_batch`, unless the task's batches come from the
    /// model itself (self-critical training samples captions with the current parameters).
    fn train_batch_on(&self, _gpu: &Gpu, _c: &Config, _params: &ParamSet, rng: &mut Rng) -> Result<Batch> {
        self.train_batch(rng)
    }
    /// Whether the Train plan applies the config's dropout.
    fn dropout(&self) -> bool {
        true
    }
    /// Extra values for the logged line of a step (e.g. the mean reward of the last batch).
    fn step_metrics(&self) -> Vec<(String, f32)> {
        Vec::new()
    }
    /// The evaluation batch geometry, when the data has a validation split.
    fn eval_shape(&self) -> Option<Shape>;
    /// Validation metrics over `batches` fixed batches (seeded by `seed`) through an Eval plan.
    fn evaluate(&self, gpu: &Gpu, c: &Config, step: &Step, seed: u64, batches: usize) -> Result<Vec<(String, f32)>>;
    /// Title of the loss plot.
    fn title(&self) -> &'static str;
    /// The starting value of a fresh head's output bias (`classifier.bias`), when the head is not
    /// loaded from `--init`: e.g. the log prior of the answers, so that the first steps do not
    /// spend themselves (and the encoder) on learning the answers' frequencies.
    fn head_bias(&self) -> Option<Vec<f32>> {
        None
    }
    /// Extra files for the saved model directory (e.g. the answer vocabulary): (name, contents).
    fn model_files(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// An empty batch of `n` sequences of shape `s` (all masked out) to fill with `push_sequence`;
/// `Batch::pad_to` then completes a partial one.
pub fn empty_batch(s: &Shape, feature_dim: usize, n: usize) -> Batch {
    Batch { img: vec![0.0; n * s.regions * feature_dim], mask: vec![0.0; n * s.seq()], ..Default::default() }
}

/// Writes sequence `bi` of `b`: `[CLS] a [SEP] (b [SEP])` padded to the shape's text length, then
/// the regions of image `img` (up to the shape's region slots), with its attention mask row.
pub fn push_sequence(b: &mut Batch, s: &Shape, bi: usize, tok: &Tok, text_a: &[u32], text_b: Option<&[u32]>, data: &PretrainData, img: usize) {
    let (sq, d) = (s.seq(), data.feature_dim);
    let x = tok.oscar_text(text_a, text_b, s.text, Truncation::Pair);
    for t in 0..s.text {
        let real = t < x.ids.len();
        b.input_ids.push(if real { x.ids[t] } else { tok.pad });
        b.type_ids.push(if real { x.types[t] } else { 0 });
        b.pos_ids.push(t as u32);
        b.mask[bi * sq + t] = real as u32 as f32;
    }
    let r = data.features.read_into(data.feature_of[img], &mut b.img[bi * s.regions * d..(bi + 1) * s.regions * d]);
    for k in 0..r {
        b.mask[bi * sq + s.text + k] = 1.0;
    }
}

/// Sum of the loss parts read from a losses buffer.
pub fn loss_of(head: &Head, l: &[f32]) -> f32 {
    head.loss_parts().iter().map(|&(_, i)| l[i]).sum()
}
