//! A plan: every buffer and prepared dispatch one batch shape needs, made once and replayed.
//! - `Mode::Train`: forward, head loss, backward into a gradient `ParamSet` (dropout optional);
//! - `Mode::Eval`: forward only — no gradient buffers, no activations kept for a backward (one
//!   layer's buffers reused by every layer, outputs alternating between two), dropout off, no
//!   gradient indices. A plan made for batch B also runs a partial batch (`Batch::pad_to`).
//! The decode plan for captioning (key/value caches) is `model::decode`.
use super::acts::{Alloc, EncoderActs, EncoderGrads, EncoderInputs};
use super::batch::{Batch, Shape};
use super::config::Config;
use super::encoder::{self, Ctx};
use super::heads::{Head, HeadActs, HeadCtx, LossGrad};
use super::params::ParamSet;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::ops::matmul::{Linear, Precision};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward + backward; `dropout` false gives deterministic gradients (parity tests).
    Train { dropout: bool },
    /// Forward only, dropout off.
    Eval,
}

/// Everything one shape needs: inputs, activations, and the dispatch lists.
pub struct Step {
    pub shape: Shape,
    pub mode: Mode,
    pub head: Head,
    pub inputs: EncoderInputs,
    pub acts: EncoderActs,
    pub head_acts: HeadActs,
    pub grads: Option<EncoderGrads>,
    pub forward: Vec<Dispatch>,
    pub backward: Vec<Dispatch>,
    /// Bytes of the forward's activations (encoder + head) and of the backward's gradient buffers.
    pub act_bytes: u64,
    pub grad_act_bytes: u64,
    /// Bytes of the input buffers.
    pub input_bytes: u64,
    num_layers: usize,
    /// The loss-gradient dispatches in `backward`, and how each takes the loss scale.
    loss_grads: Vec<(usize, LossGrad)>,
}

/// The largest split-K scratch any backward matmul of this shape asks for.
fn split_scratch(c: &Config, s: &Shape, head: &Head) -> usize {
    let (h, f, rows, m) = (c.hidden_size, c.intermediate_size, s.rows(), s.masked);
    let mut shapes = vec![(rows, h, h), (rows, h, f), (rows, f, h), (s.batch * s.regions, c.img_feature_dim, h), (s.batch, h, h)];
    if matches!(head, Head::Pretrain | Head::CaptionLm { .. }) {
        shapes.extend([(m, h, h), (m, h, c.vocab_size), (s.batch, h, c.num_contrast_classes)]);
    }
    shapes.iter().map(|&(r, i, o)| Linear::new(r, i, o).split_scratch()).max().unwrap_or(0)
}

impl Step {
    /// Builds the plan. `loss_scale` multiplies the loss gradients (1/accumulation steps, times the
    /// loss scale of the f16 path); `prec` is what every matmul computes its products in.
    pub fn new(
        gpu: &Gpu,
        c: &Config,
        params: &ParamSet,
        grads: Option<&ParamSet>,
        head: &Head,
        s: Shape,
        mode: Mode,
        loss_scale: f32,
        prec: Precision,
    ) -> Result<Step> {
        crate::ensure_shape!("plan", s.batch > 0 && s.text > 0, "batch and text must be positive: {s:?}");
        crate::ensure_shape!(
            "plan",
            !matches!(head, Head::Pretrain | Head::CaptionLm { .. }) || s.masked > 0,
            "a masked-token head needs a masked capacity: {s:?}"
        );
        crate::ensure_shape!(
            "plan",
            s.batch % head.seqs_per_example() == 0,
            "batch {} is not a whole number of {}-sequence examples",
            s.batch,
            head.seqs_per_example()
        );
        crate::ensure_shape!("plan", s.text <= c.max_position_embeddings, "text length {} > max_position_embeddings {}", s.text, c.max_position_embeddings);
        let train = matches!(mode, Mode::Train { .. });
        crate::ensure_shape!("plan", train == grads.is_some(), "a Train plan needs gradients and an Eval plan takes none");
        let mut al = Alloc::new(gpu);
        let inputs = EncoderInputs::new(&mut al, &s, c, train)?;
        let input_bytes = al.bytes;
        let mut al = Alloc::new(gpu);
        let acts = EncoderActs::new(&mut al, c, &s, train, s.seq())?;
        let head_acts = HeadActs::new(&mut al, head, c, &s, train)?;
        let act_bytes = al.bytes;
        let mut al = Alloc::new(gpu);
        let eg = if train { Some(EncoderGrads::new(&mut al, c, &s, split_scratch(c, &s, head))?) } else { None };
        let grad_act_bytes = al.bytes;
        let dropout = mode == Mode::Train { dropout: true };
        let (ph, pa) = if dropout { (c.hidden_dropout_prob, c.attention_probs_dropout_prob) } else { (0.0, 0.0) };
        let x = Ctx { gpu, c, s, p: params, inp: &inputs, a: &acts, ph, pa, prec, split: eg.as_ref().map(|d| &d.split_k), kv: None };
        let nl = c.num_hidden_layers;
        let mut forward = Vec::new();
        encoder::forward(&x, &mut forward)?;
        let hx = HeadCtx { e: &x, hidden: acts.hidden(nl), pooled: &acts.pooled };
        head_acts.forward(&hx, &mut forward)?;
        let mut backward = Vec::new();
        let mut loss_grads = Vec::new();
        if let (Some(gr), Some(d)) = (grads, eg.as_ref()) {
            loss_grads = head_acts.backward(&hx, gr, &d.d_hidden[nl % 2], &d.d_pooled, loss_scale, &mut backward)?;
            encoder::backward(&x, d, gr, &mut backward)?;
        }
        Ok(Step {
            shape: s,
            mode,
            head: head.clone(),
            inputs,
            acts,
            head_acts,
            grads: eg,
            forward,
            backward,
            act_bytes,
            grad_act_bytes,
            input_bytes,
            num_layers: nl,
            loss_grads,
        })
    }

    /// Last hidden states [B*S, H].
    pub fn hidden(&self) -> &Tensor {
        self.acts.hidden(self.num_layers)
    }
    pub fn pooled(&self) -> &Tensor {
        &self.acts.pooled
    }
    /// The losses buffer; `Head::loss_parts` names its slots.
    pub fn losses(&self) -> &Tensor {
        self.head_acts.losses()
    }

    /// Uploads a batch (encoder inputs and the head's labels).
    pub fn upload(&self, gpu: &Gpu, c: &Config, b: &Batch) -> Result<()> {
        b.upload_encoder(gpu, &self.shape, c, &self.inputs)?;
        self.head_acts.upload(gpu, &self.shape, c, &b.labels)
    }

    /// Sets the factor on the loss gradients (what `new` took as `loss_scale`) for later steps.
    pub fn set_loss_scale(&self, gpu: &Gpu, scale: f32) {
        for &(i, kind) in &self.loss_grads {
            match kind {
                LossGrad::CrossEntropy => crate::ops::cross_entropy::set_dscale(gpu, &self.backward[i], scale),
                LossGrad::Bce { base } => crate::ops::bce::set_scale(gpu, &self.backward[i], base * scale),
            }
        }
    }
}
