//! The pre-training head (docs/oscar.md §2): the masked-token head at labelled positions only
//! (transform → GELU → LayerNorm → decoder tied to the word embeddings) and the 2- or 3-way
//! contrastive head on pooled [CLS], both cross-entropy, summed.
use super::{HeadCtx, LossGrad};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::acts::Alloc;
use crate::model::batch::{Labels, Shape};
use crate::model::config::Config;
use crate::model::params::{ParamSet, EMB};
use crate::ops::cross_entropy::CrossEntropy;
use crate::ops::embedding::{self, EmbeddingGradIndex};
use crate::ops::matmul::Act;
use crate::ops::{elementwise, layernorm};
use crate::{Error, Result};

/// Parameter names and shapes, as Oscar's `BertImgForPreTraining` names them; without
/// `contrastive`, the masked-token head alone (Oscar's `BertForImageCaptioning`).
pub fn specs(c: &Config, contrastive: bool) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("cls.predictions.transform.dense.weight".into(), vec![h, h]),
        ("cls.predictions.transform.dense.bias".into(), vec![h]),
        ("cls.predictions.transform.LayerNorm.weight".into(), vec![h]),
        ("cls.predictions.transform.LayerNorm.bias".into(), vec![h]),
        ("cls.predictions.bias".into(), vec![c.vocab_size]),
    ];
    if contrastive {
        v.push(("cls.seq_relationship.weight".into(), vec![c.num_contrast_classes, h]));
        v.push(("cls.seq_relationship.bias".into(), vec![c.num_contrast_classes]));
    }
    v
}

pub struct PretrainActs {
    /// Flat positions (b * S + t) of the labelled tokens [M], their labels, the contrastive labels [B].
    pub mlm_pos: Tensor,
    pub mlm_labels: Tensor,
    pub contrast_labels: Tensor,
    /// CSR index of mlm_pos for the gather's backward (Train only).
    pub mlm_grad_index: Option<Tensor>,
    /// Caption LM only: a weight per labelled position [M] (1 unless self-critical training sets
    /// reward-derived ones).
    pub mlm_weights: Option<Tensor>,
    pub contrast_logits: Tensor,
    /// Hidden states at the labelled positions [M, H], transform pre-activation, GELU, LayerNorm.
    pub mlm_hidden: Tensor,
    pub mlm_transform_pre: Tensor,
    pub mlm_transform_act: Tensor,
    pub mlm_transform_ln: Tensor,
    pub mlm_ln_stats: Tensor,
    /// [M, V] logits.
    pub mlm_logits: Tensor,
    pub mlm_ce_stats: Tensor,
    pub contrast_ce_stats: Tensor,
    /// [mlm sum, mlm count, mlm mean, -, con sum, con count, con mean, -]
    pub losses: Tensor,
    pub grads: Option<PretrainGrads>,
    /// False for the caption LM head: the masked-token head alone.
    pub contrastive: bool,
    /// Label smoothing of the masked-token loss (the caption LM head; 0 in pre-training).
    pub smoothing: f32,
}

pub struct PretrainGrads {
    pub d_contrast_logits: Tensor,
    pub d_mlm_logits: Tensor,
    pub d_mlm_ln: Tensor,
    pub d_mlm_act: Tensor,
    pub d_mlm_hidden: Tensor,
}

impl PretrainActs {
    /// `contrastive` false gives the caption LM head (masked tokens only, smoothed by `smoothing`).
    pub fn new(al: &mut Alloc, c: &Config, s: &Shape, train: bool, contrastive: bool, smoothing: f32) -> Result<PretrainActs> {
        let (h, v, m) = (c.hidden_size, c.vocab_size, s.masked);
        let b = if contrastive { s.batch } else { 1 };
        let k = c.num_contrast_classes;
        Ok(PretrainActs {
            mlm_pos: al.u32("mlm_pos", m)?,
            mlm_labels: al.i32("mlm_labels", m)?,
            contrast_labels: al.i32("contrast_labels", b)?,
            mlm_grad_index: if train { Some(al.u32("mlm_grad_index", EmbeddingGradIndex::len(m))?) } else { None },
            mlm_weights: if contrastive { None } else { Some(al.f32("mlm_weights", m)?) },
            contrast_logits: al.f32("contrast_logits", b * k)?,
            mlm_hidden: al.f32("mlm.hidden", m * h)?,
            mlm_transform_pre: al.f32("mlm.transform_pre", m * h)?,
            mlm_transform_act: al.f32("mlm.transform_act", m * h)?,
            mlm_transform_ln: al.f32("mlm.transform_ln", m * h)?,
            mlm_ln_stats: al.f32("mlm.ln_stats", 2 * m)?,
            mlm_logits: al.f32("mlm.logits", m * v)?,
            mlm_ce_stats: al.f32("mlm.ce_stats", 3 * m)?,
            contrast_ce_stats: al.f32("contrast.ce_stats", 3 * b)?,
            losses: al.f32("losses", 8)?,
            grads: if train {
                Some(PretrainGrads {
                    d_contrast_logits: al.f32("d.contrast_logits", b * k)?,
                    d_mlm_logits: al.f32("d.mlm_logits", m * v)?,
                    d_mlm_ln: al.f32("d.mlm_ln", m * h)?,
                    d_mlm_act: al.f32("d.mlm_act", m * h)?,
                    d_mlm_hidden: al.f32("d.mlm_hidden", m * h)?,
                })
            } else {
                None
            },
            contrastive,
            smoothing,
        })
    }

    pub fn upload(&self, gpu: &Gpu, s: &Shape, c: &Config, l: &Labels) -> Result<()> {
        let none = Vec::new();
        let ones = vec![1.0; s.masked];
        let (mlm_pos, mlm_labels, contrast_labels, weights) = match (l, self.contrastive) {
            (Labels::Pretrain { mlm_pos, mlm_labels, contrast_labels }, true) => (mlm_pos, mlm_labels, contrast_labels, &ones),
            (Labels::Masked { positions, labels, weights }, false) => (positions, labels, &none, if weights.is_empty() { &ones } else { weights }),
            (_, true) => return Err(Error::Shape { op: "batch", msg: "the pre-training head needs masked-token and contrastive labels".into() }),
            (_, false) => return Err(Error::Shape { op: "batch", msg: "the caption LM head needs masked positions and their labels".into() }),
        };
        let n_con = if self.contrastive { s.batch } else { 0 };
        let bad = |m: String| Err(Error::Shape { op: "batch", msg: m });
        for (n, got, want) in
            [("mlm_pos", mlm_pos.len(), s.masked), ("mlm_labels", mlm_labels.len(), s.masked), ("contrast_labels", contrast_labels.len(), n_con)]
        {
            if got != want {
                return bad(format!("{n} has {got} values, shape {s:?} needs {want}"));
            }
        }
        if weights.len() != s.masked {
            return bad(format!("weights has {} values, shape {s:?} needs {}", weights.len(), s.masked));
        }
        if let Some((i, x)) = weights.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return bad(format!("weights[{i}] = {x} is not finite"));
        }
        if let Some((i, x)) = mlm_pos.iter().enumerate().find(|(_, &x)| x as usize >= s.rows()) {
            return bad(format!("mlm_pos[{i}] = {x} is out of range (< {})", s.rows()));
        }
        if let Some((i, x)) = mlm_labels.iter().enumerate().find(|(_, &x)| x < -1 || x >= c.vocab_size as i32) {
            return bad(format!("mlm_labels[{i}] = {x} is neither -1 nor a vocabulary id"));
        }
        if let Some((i, x)) = contrast_labels.iter().enumerate().find(|(_, &x)| x < -1 || x >= c.num_contrast_classes as i32) {
            return bad(format!("contrast_labels[{i}] = {x} is not a class of {}", c.num_contrast_classes));
        }
        gpu.write_u32(&self.mlm_pos, mlm_pos)?;
        gpu.write_i32(&self.mlm_labels, mlm_labels)?;
        if let Some(w) = &self.mlm_weights {
            gpu.write_f32(w, weights)?;
        }
        if self.contrastive {
            gpu.write_i32(&self.contrast_labels, contrast_labels)?;
        }
        if let Some(ix) = &self.mlm_grad_index {
            gpu.write_u32(ix, &EmbeddingGradIndex::build(mlm_pos, s.rows())?)?;
        }
        Ok(())
    }
}

pub fn forward(x: &HeadCtx, a: &PretrainActs, v: &mut Vec<Dispatch>) -> Result<()> {
    let (g, c) = (x.e.gpu, x.e.c);
    let (b, h, m) = (x.e.s.batch, x.e.h(), x.e.s.masked);
    if a.contrastive {
        let cls = x.e.lin(b, h, c.num_contrast_classes);
        let (w, bias) = (x.e.w("cls.seq_relationship.weight")?, x.e.w("cls.seq_relationship.bias")?);
        v.push(cls.forward(g, x.pooled, &w, Some(&bias), &a.contrast_logits, Act::None, None)?);
        let ce = CrossEntropy { rows: b, vocab: c.num_contrast_classes, ignore_index: -1, smoothing: 0.0 };
        v.extend(ce.forward(g, &a.contrast_logits, &a.contrast_labels, &a.contrast_ce_stats, &a.losses.view(4, &[3])?)?);
    }
    // masked-token head at the labelled positions only
    v.push(embedding::gather(g, &a.mlm_pos, x.hidden, &a.mlm_hidden, m, x.e.rows(), h, false)?);
    let tr = x.e.lin(m, h, h);
    let w = |n: &str| x.e.w(n);
    v.push(tr.forward(
        g,
        &a.mlm_hidden,
        &w("cls.predictions.transform.dense.weight")?,
        Some(&w("cls.predictions.transform.dense.bias")?),
        &a.mlm_transform_act,
        Act::Gelu,
        Some(&a.mlm_transform_pre),
    )?);
    v.push(layernorm::layernorm(
        g,
        &a.mlm_transform_act,
        &w("cls.predictions.transform.LayerNorm.weight")?,
        &w("cls.predictions.transform.LayerNorm.bias")?,
        &a.mlm_transform_ln,
        &a.mlm_ln_stats,
        m,
        h,
        c.layer_norm_eps,
    )?);
    let dec = x.e.lin(m, h, c.vocab_size);
    v.push(dec.forward(
        g,
        &a.mlm_transform_ln,
        &w(&format!("{EMB}word_embeddings.weight"))?,
        Some(&w("cls.predictions.bias")?),
        &a.mlm_logits,
        Act::None,
        None,
    )?);
    let ce = CrossEntropy { rows: m, vocab: c.vocab_size, ignore_index: -1, smoothing: a.smoothing };
    v.extend(ce.forward_weighted(g, &a.mlm_logits, &a.mlm_labels, &a.mlm_ce_stats, &a.losses.view(0, &[3])?, a.mlm_weights.as_ref())?);
    Ok(())
}

/// Writes d_hidden (zeroed first) and d_pooled; returns the loss-gradient dispatches.
pub fn backward(
    x: &HeadCtx,
    a: &PretrainActs,
    gr: &ParamSet,
    dhid: &Tensor,
    dpooled: &Tensor,
    scale: f32,
    v: &mut Vec<Dispatch>,
) -> Result<Vec<(usize, LossGrad)>> {
    let (g, c) = (x.e.gpu, x.e.c);
    let (b, h, m) = (x.e.s.batch, x.e.h(), x.e.s.masked);
    let d = a.grads.as_ref().expect("a Train plan has head gradients");
    let w = |n: &str| x.e.w(n);
    v.push(elementwise::fill(g, dhid, 0.0)?);
    let ce = CrossEntropy { rows: m, vocab: c.vocab_size, ignore_index: -1, smoothing: a.smoothing };
    let mut loss_grads = vec![(v.len(), LossGrad::CrossEntropy)];
    v.push(ce.backward_weighted(g, &a.mlm_logits, &a.mlm_labels, &a.mlm_ce_stats, &a.losses.view(0, &[3])?, &d.d_mlm_logits, scale, a.mlm_weights.as_ref())?);
    let dec = x.e.lin(m, h, c.vocab_size);
    let word = format!("{EMB}word_embeddings.weight");
    v.extend(dec.backward_split(
        g,
        &a.mlm_transform_ln,
        &w(&word)?,
        &d.d_mlm_logits,
        Some(&d.d_mlm_ln),
        &gr.get(&word)?,
        Some(&gr.get("cls.predictions.bias")?),
        false,
        x.e.split,
    )?);
    let ln = "cls.predictions.transform.LayerNorm";
    v.extend(layernorm::layernorm_backward(
        g,
        &a.mlm_transform_act,
        &w(&format!("{ln}.weight"))?,
        &a.mlm_ln_stats,
        &d.d_mlm_ln,
        &d.d_mlm_act,
        &gr.get(&format!("{ln}.weight"))?,
        &gr.get(&format!("{ln}.bias"))?,
        m,
        h,
        false,
    )?);
    v.push(elementwise::gelu_backward(g, &a.mlm_transform_pre, &d.d_mlm_act, &d.d_mlm_ln, false)?);
    let tr = x.e.lin(m, h, h);
    let t = "cls.predictions.transform.dense";
    v.extend(tr.backward_split(
        g,
        &a.mlm_hidden,
        &w(&format!("{t}.weight"))?,
        &d.d_mlm_ln,
        Some(&d.d_mlm_hidden),
        &gr.get(&format!("{t}.weight"))?,
        Some(&gr.get(&format!("{t}.bias"))?),
        false,
        x.e.split,
    )?);
    v.push(embedding::scatter_add(g, a.mlm_grad_index.as_ref().expect("Train"), &d.d_mlm_hidden, dhid, m, x.e.rows(), h)?);
    // contrastive head; the pooler's backward is the encoder's (with no contrastive head the
    // pooled output does not reach the loss: its gradient is zero)
    if !a.contrastive {
        v.push(elementwise::fill(g, dpooled, 0.0)?);
        return Ok(loss_grads);
    }
    let ce = CrossEntropy { rows: b, vocab: c.num_contrast_classes, ignore_index: -1, smoothing: 0.0 };
    loss_grads.push((v.len(), LossGrad::CrossEntropy));
    v.push(ce.backward(g, &a.contrast_logits, &a.contrast_labels, &a.contrast_ce_stats, &a.losses.view(4, &[3])?, &d.d_contrast_logits, scale)?);
    let cls = x.e.lin(b, h, c.num_contrast_classes);
    v.extend(cls.backward_split(
        g,
        x.pooled,
        &w("cls.seq_relationship.weight")?,
        &d.d_contrast_logits,
        Some(dpooled),
        &gr.get("cls.seq_relationship.weight")?,
        Some(&gr.get("cls.seq_relationship.bias")?),
        false,
        x.e.split,
    )?);
    Ok(loss_grads)
}

/// Masked-token and contrastive (correct, counted) on the host, from the plan's logits.
pub fn readout(gpu: &Gpu, c: &Config, a: &PretrainActs, l: &Labels) -> Result<[(usize, usize); 2]> {
    let Labels::Pretrain { mlm_labels, contrast_labels, .. } = l else { return Err(Error::Other("pre-training readout needs pre-training labels".into())) };
    let (logits, clog) = (gpu.read_f32(&a.mlm_logits)?, gpu.read_f32(&a.contrast_logits)?);
    let (mut mtl, mut con) = ((0, 0), (0, 0));
    for (k, &lab) in mlm_labels.iter().enumerate() {
        if lab >= 0 {
            mtl.1 += 1;
            mtl.0 += (super::argmax(&logits[k * c.vocab_size..(k + 1) * c.vocab_size]) == lab as usize) as usize;
        }
    }
    let n = c.num_contrast_classes;
    for (k, &lab) in contrast_labels.iter().enumerate() {
        con.1 += 1;
        con.0 += (super::argmax(&clog[k * n..(k + 1) * n]) == lab as usize) as usize;
    }
    Ok([mtl, con])
}
