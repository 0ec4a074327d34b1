//! Tasks: what the one trainer (train::trainer) and evaluation drive. A task owns its data, its
//! batch builder, its head and its metrics; batches are pure functions of an RNG so a run resumes
//! bit for bit.
pub mod pretrain;
pub mod retrieval;

use crate::gpu::Gpu;
use crate::model::{Batch, Config, Head, Shape, Step};
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
    /// The evaluation batch geometry, when the data has a validation split.
    fn eval_shape(&self) -> Option<Shape>;
    /// Validation metrics over `batches` fixed batches (seeded by `seed`) through an Eval plan.
    fn evaluate(&self, gpu: &Gpu, c: &Config, step: &Step, seed: u64, batches: usize) -> Result<Vec<(String, f32)>>;
    /// Title of the loss plot.
    fn title(&self) -> &'static str;
}

/// Sum of the loss parts read from a losses buffer.
pub fn loss_of(head: &Head, l: &[f32]) -> f32 {
    head.loss_parts().iter().map(|&(_, i)| l[i]).sum()
}
