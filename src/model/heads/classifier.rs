//! Heads that classify pooled [CLS] vectors: the linear classifier (retrieval, VQA, GQA) and the
//! NLVR2 pair MLP, with cross-entropy on hard labels or BCE on soft targets (docs/oscar.md §3).
use super::ops::{ClassifierHead, PairActs, PairHead};
use super::{ClassLoss, Head, HeadCtx, LossGrad, HEAD_STREAM};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::acts::Alloc;
use crate::model::batch::{Labels, Shape};
use crate::model::config::Config;
use crate::model::params::ParamSet;
use crate::ops::cross_entropy::CrossEntropy;
use crate::ops::{bce, elementwise};
use crate::{Error, Result};

/// `classifier.weight` [n, H] and `classifier.bias` [n], as Oscar's ImageBertForSequenceClassification.
pub fn specs(c: &Config, labels: usize) -> Vec<(String, Vec<usize>)> {
    ClassifierHead { rows: 1, hidden: c.hidden_size, classes: labels, p_drop: 0.0, stream: HEAD_STREAM }.params()
}

pub enum Layer {
    Linear { op: ClassifierHead, dropped: Tensor, d_scratch: Option<Tensor> },
    Pair { op: PairHead, acts: PairActs },
}

pub struct ClassifierActs {
    pub layer: Layer,
    pub loss: ClassLoss,
    pub examples: usize,
    pub classes: usize,
    /// Hard labels [examples] (i32, -1 ignored) or soft targets [examples, classes].
    pub labels: Tensor,
    /// [examples, classes].
    pub logits: Tensor,
    /// CE: per-row stats [3 · examples]; BCE: elementwise losses [examples · classes].
    pub loss_scratch: Tensor,
    /// [sum, count, mean, ...]: the loss is slot 2.
    pub losses: Tensor,
    pub d_logits: Option<Tensor>,
}

impl ClassifierActs {
    pub fn new(al: &mut Alloc, head: &Head, c: &Config, s: &Shape, train: bool) -> Result<ClassifierActs> {
        let h = c.hidden_size;
        let examples = s.batch / head.seqs_per_example();
        let (layer, classes, loss) = match *head {
            Head::Classifier { labels, loss, dropout } => {
                let op = ClassifierHead { rows: examples, hidden: h, classes: labels, p_drop: if train { dropout } else { 0.0 }, stream: HEAD_STREAM };
                let d_scratch = if train { Some(al.f32("cls.d_dropped", examples * h)?) } else { None };
                (Layer::Linear { op, dropped: al.f32("cls.dropped", examples * h)?, d_scratch }, labels, loss)
            }
            Head::Pair { scale, dropout, .. } => {
                let op = PairHead {
                    pairs: examples,
                    hidden: h,
                    scale,
                    layer_norm: c.use_img_layernorm.then_some(c.layer_norm_eps),
                    p_drop: if train { dropout } else { 0.0 },
                    stream: HEAD_STREAM,
                };
                let acts = op.acts(al.gpu)?;
                (Layer::Pair { op, acts }, 2, ClassLoss::CrossEntropy)
            }
            Head::Pretrain | Head::CaptionLm { .. } => return Err(Error::Other("not a classifier head".into())),
        };
        let soft = loss == ClassLoss::SoftBce;
        Ok(ClassifierActs {
            loss,
            examples,
            classes,
            labels: if soft { al.f32("cls.targets", examples * classes)? } else { al.i32("cls.labels", examples)? },
            logits: match &layer {
                Layer::Pair { acts, .. } => acts.logits.clone(),
                Layer::Linear { .. } => al.f32("cls.logits", examples * classes)?,
            },
            loss_scratch: al.f32("cls.loss_scratch", if soft { examples * classes } else { 3 * examples })?,
            losses: al.f32("losses", 8)?,
            d_logits: if train { Some(al.f32("d.cls_logits", examples * classes)?) } else { None },
            layer,
        })
    }

    pub fn upload(&self, gpu: &Gpu, l: &Labels) -> Result<()> {
        let bad = |m: String| Err(Error::Shape { op: "batch", msg: m });
        match (self.loss, l) {
            (ClassLoss::CrossEntropy, Labels::Class(y)) => {
                if y.len() != self.examples {
                    return bad(format!("{} labels for {} examples", y.len(), self.examples));
                }
                if let Some((i, x)) = y.iter().enumerate().find(|(_, &x)| x < -1 || x >= self.classes as i32) {
                    return bad(format!("labels[{i}] = {x} is not a class of {}", self.classes));
                }
                gpu.write_i32(&self.labels, y)
            }
            (ClassLoss::SoftBce, Labels::Soft(t)) => {
                if t.len() != self.examples * self.classes {
                    return bad(format!("{} soft targets for {} examples x {} labels", t.len(), self.examples, self.classes));
                }
                if let Some(i) = t.iter().position(|x| !(0.0..=1.0).contains(x)) {
                    return bad(format!("soft target [{}, {}] = {} is not in [0, 1]", i / self.classes, i % self.classes, t[i]));
                }
                gpu.write_f32(&self.labels, t)
            }
            (want, _) => bad(format!("the classifier head ({want:?}) got labels of another kind")),
        }
    }

    /// Logits on the host, [examples][classes].
    pub fn read_logits(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(gpu.read_f32(&self.logits)?.chunks(self.classes).map(|r| r.to_vec()).collect())
    }
}

fn weights(x: &HeadCtx, names: &[(String, Vec<usize>)]) -> Result<Vec<Tensor>> {
    names.iter().map(|(n, _)| x.e.w(n)).collect()
}

pub fn forward(x: &HeadCtx, a: &ClassifierActs, v: &mut Vec<Dispatch>) -> Result<()> {
    let g = x.e.gpu;
    let seed = &x.e.inp.dropout_seed;
    match &a.layer {
        Layer::Linear { op, dropped, .. } => {
            v.extend(op.forward(g, x.pooled, &x.e.w("classifier.weight")?, &x.e.w("classifier.bias")?, dropped, &a.logits, seed)?);
        }
        Layer::Pair { op, acts } => {
            v.extend(op.forward(g, x.pooled, &weights(x, &op.params())?, acts, seed)?);
        }
    }
    let out = a.losses.view(0, &[3])?;
    match a.loss {
        ClassLoss::CrossEntropy => v.extend(CrossEntropy { rows: a.examples, vocab: a.classes, ignore_index: -1, smoothing: 0.0 }.forward(
            g,
            &a.logits,
            &a.labels,
            &a.loss_scratch,
            &out,
        )?),
        ClassLoss::SoftBce => v.extend(bce::forward(g, &a.logits, &a.labels, &a.loss_scratch, &a.losses, 2, 1.0 / a.examples as f32)?),
    }
    Ok(())
}

pub fn backward(
    x: &HeadCtx,
    a: &ClassifierActs,
    gr: &ParamSet,
    dhid: &Tensor,
    dpooled: &Tensor,
    scale: f32,
    v: &mut Vec<Dispatch>,
) -> Result<Vec<(usize, LossGrad)>> {
    let g = x.e.gpu;
    let seed = &x.e.inp.dropout_seed;
    let dl = a.d_logits.as_ref().expect("a Train plan has head gradients");
    // only [CLS] rows get a gradient, through the pooler (which accumulates into dhid)
    v.push(elementwise::fill(g, dhid, 0.0)?);
    let at = v.len();
    let lg = match a.loss {
        ClassLoss::CrossEntropy => {
            v.push(CrossEntropy { rows: a.examples, vocab: a.classes, ignore_index: -1, smoothing: 0.0 }.backward(
                g,
                &a.logits,
                &a.labels,
                &a.loss_scratch,
                &a.losses.view(0, &[3])?,
                dl,
                scale,
            )?);
            LossGrad::CrossEntropy
        }
        ClassLoss::SoftBce => {
            let base = 1.0 / a.examples as f32;
            v.push(bce::backward(g, &a.logits, &a.labels, dl, base * scale)?);
            LossGrad::Bce { base }
        }
    };
    match &a.layer {
        Layer::Linear { op, dropped, d_scratch } => {
            let sc = d_scratch.as_ref().expect("Train");
            v.extend(op.backward(
                g,
                dropped,
                &x.e.w("classifier.weight")?,
                dl,
                sc,
                dpooled,
                &gr.get("classifier.weight")?,
                &gr.get("classifier.bias")?,
                seed,
                false,
            )?);
        }
        Layer::Pair { op, acts } => {
            let names = op.params();
            let dw = names.iter().map(|(n, _)| gr.get(n)).collect::<Result<Vec<_>>>()?;
            v.extend(op.backward(g, &weights(x, &names)?, &dw, acts, dl, dpooled, seed, false)?);
        }
    }
    Ok(vec![(at, lg)])
}
