//! Heads on the encoder's outputs. A model is the encoder plus one head; each head owns its
//! parameters (named as Oscar's checkpoints name them), its activations and labels on the GPU, its
//! loss and the host readout of its metrics (docs/oscar.md §2–3):
//! - `Pretrain`: masked-token + 2- or 3-way contrastive (pre-training);
//! - `Classifier`: dropout → Linear(H, n) on pooled [CLS], cross-entropy on a hard label
//!   (retrieval n = 2, GQA) or BCE on soft targets summed over labels, averaged over the batch (VQA);
//! - `CaptionLm`: the masked-token head alone at chosen positions, label-smoothed (captioning);
//! - `Pair`: NLVR2, two sequences per example, pooled outputs side by side → the pair MLP → 2-way CE.
//!
//! `ops` holds the classifier and pair layers' forward/backward kernels lists (tested against finite
//! differences); the per-head modules put them together with labels and losses.
pub mod classifier;
pub mod ops;
pub mod pretrain;

use super::acts::Alloc;
use super::batch::{Labels, Shape};
use super::config::Config;
use super::encoder::Ctx;
use super::params::ParamSet;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::Result;
use serde::{Deserialize, Serialize};

/// Which head a model has; saved as `head.json` in a model directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Head {
    /// Masked-token + contrastive (classes: the config's num_contrast_classes).
    Pretrain,
    /// Linear(H, labels) on pooled [CLS].
    Classifier {
        labels: usize,
        loss: ClassLoss,
        #[serde(default)]
        dropout: f32,
    },
    /// Captioning: the masked-token head at chosen positions (seq2seq mask), label-smoothed CE.
    CaptionLm {
        #[serde(default)]
        label_smoothing: f32,
    },
    /// NLVR2: pooled outputs of two sequences → Linear(2H, scale·H) → ReLU → [LN] → Linear(·, 2).
    Pair {
        scale: usize,
        #[serde(default)]
        dropout: f32,
        /// Each image's tags after the statement (Oscar's `--use_label_seq`); the saved head keeps
        /// it so `eval` builds the sequences the model was trained on.
        #[serde(default)]
        tags: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassLoss {
    /// Softmax cross-entropy on one label per sequence.
    CrossEntropy,
    /// BCE with logits on soft targets, summed over labels and averaged over the batch (VQA).
    SoftBce,
}

/// How a loss-gradient dispatch takes the loss scale (1/accumulation × the f16 loss scale).
#[derive(Clone, Copy, Debug)]
pub enum LossGrad {
    CrossEntropy,
    /// BCE's gradient carries its own averaging factor.
    Bce {
        base: f32,
    },
}

/// Dropout stream of the heads (the encoder's are 1, 2 and 16 + 8 l + site).
pub const HEAD_STREAM: u32 = 3;

impl Head {
    /// Parameter names and shapes of the head, in the order they are laid out.
    pub fn specs(&self, c: &Config) -> Vec<(String, Vec<usize>)> {
        match self {
            Head::Pretrain => pretrain::specs(c, true),
            Head::CaptionLm { .. } => pretrain::specs(c, false),
            Head::Classifier { labels, .. } => classifier::specs(c, *labels),
            Head::Pair { scale, .. } => ops::PairHead {
                pairs: 1,
                hidden: c.hidden_size,
                scale: *scale,
                layer_norm: c.use_img_layernorm.then_some(c.layer_norm_eps),
                p_drop: 0.0,
                stream: HEAD_STREAM,
            }
            .params(),
        }
    }
    /// Sequences the encoder runs per example (2 for a pair).
    pub fn seqs_per_example(&self) -> usize {
        if matches!(self, Head::Pair { .. }) {
            2
        } else {
            1
        }
    }
    /// Names of the loss parts and their slot in the losses buffer; the loss is their sum.
    pub fn loss_parts(&self) -> &'static [(&'static str, usize)] {
        match self {
            Head::Pretrain => &[("mtl_loss", 2), ("contrastive_loss", 6)],
            _ => &[("loss", 2)],
        }
    }
    pub fn name(&self) -> String {
        match self {
            Head::Pretrain => "pre-training (masked-token + contrastive)".into(),
            Head::CaptionLm { label_smoothing } => format!("caption LM (masked-token, label smoothing {label_smoothing})"),
            Head::Classifier { labels, loss, .. } => format!("classifier ({labels} labels, {loss:?})"),
            Head::Pair { scale, tags, .. } => format!("pair (NLVR2, scale {scale}{})", if *tags { ", tags" } else { "" }),
        }
    }
}

/// What a head's dispatch builders read: the encoder context, its last hidden states and pooled.
pub struct HeadCtx<'a> {
    pub e: &'a Ctx<'a>,
    pub hidden: &'a Tensor,
    pub pooled: &'a Tensor,
}

/// A head's buffers for one shape.
pub enum HeadActs {
    Pretrain(pretrain::PretrainActs),
    Classifier(classifier::ClassifierActs),
}

impl HeadActs {
    pub fn new(al: &mut Alloc, head: &Head, c: &Config, s: &Shape, train: bool) -> Result<HeadActs> {
        Ok(match head {
            Head::Pretrain => HeadActs::Pretrain(pretrain::PretrainActs::new(al, c, s, train, true, 0.0)?),
            Head::CaptionLm { label_smoothing } => HeadActs::Pretrain(pretrain::PretrainActs::new(al, c, s, train, false, *label_smoothing)?),
            Head::Classifier { .. } | Head::Pair { .. } => HeadActs::Classifier(classifier::ClassifierActs::new(al, head, c, s, train)?),
        })
    }
    /// The losses buffer (slots as `Head::loss_parts`).
    pub fn losses(&self) -> &Tensor {
        match self {
            HeadActs::Pretrain(a) => &a.losses,
            HeadActs::Classifier(a) => &a.losses,
        }
    }
    pub fn upload(&self, gpu: &Gpu, s: &Shape, c: &Config, l: &Labels) -> Result<()> {
        match self {
            HeadActs::Pretrain(a) => a.upload(gpu, s, c, l),
            HeadActs::Classifier(a) => a.upload(gpu, l),
        }
    }
    pub fn forward(&self, x: &HeadCtx, v: &mut Vec<Dispatch>) -> Result<()> {
        match self {
            HeadActs::Pretrain(a) => pretrain::forward(x, a, v),
            HeadActs::Classifier(a) => classifier::forward(x, a, v),
        }
    }
    /// Writes d(hidden) and d(pooled) for the encoder's backward; returns the loss-gradient dispatches.
    pub fn backward(&self, x: &HeadCtx, gr: &ParamSet, dhid: &Tensor, dpooled: &Tensor, scale: f32, v: &mut Vec<Dispatch>) -> Result<Vec<(usize, LossGrad)>> {
        match self {
            HeadActs::Pretrain(a) => pretrain::backward(x, a, gr, dhid, dpooled, scale, v),
            HeadActs::Classifier(a) => classifier::backward(x, a, gr, dhid, dpooled, scale, v),
        }
    }
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
}
