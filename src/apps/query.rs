//! `vlp-engine retrieve` and `vlp-engine answer`: a fine-tuned model used on one query.
//! - retrieve: a sentence against every image of the store (or an image against every caption),
//!   scored as Oscar's retrieval inference (softmax(logits)[1]) in batches; the top K printed.
//! - answer: a question about one image (from the store, or a PNG/JPEG file cut into patch regions
//!   as `convert-images` does), the top answers with their probabilities (softmax for a GQA model,
//!   sigmoid per answer for a VQA model, as each was trained).
use super::ModelDir;
use crate::data::pretrain::PretrainData;
use crate::gpu::Gpu;
use crate::model::heads::HeadActs;
use crate::model::{Batch, ClassLoss, Head, Labels, Shape, Step};
use crate::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct QueryArgs {
    /// A fine-tuned model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// The store whose images (and captions) are searched or asked about.
    #[arg(long)]
    pub data: PathBuf,
    /// retrieve: rank images for this sentence.
    #[arg(long)]
    pub query: Option<String>,
    /// retrieve: rank captions for this image id; answer: the image asked about.
    #[arg(long)]
    pub image: Option<String>,
    /// answer: an image file instead of a store image (patch regions; the model must be trained on them).
    #[arg(long)]
    pub image_file: Option<PathBuf>,
    /// answer: the patch grid of --image-file (as convert-images --grid; the patch size follows from
    /// the model's feature width).
    #[arg(long, default_value_t = crate::data::images::DEFAULT_GRID)]
    pub grid: usize,
    /// answer: the question.
    #[arg(long)]
    pub question: Option<String>,
    /// Tags for --image-file (space-separated class names; default none).
    #[arg(long)]
    pub tags: Option<String>,
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 32)]
    pub text_len: usize,
    #[arg(long, default_value_t = 6)]
    pub regions: usize,
}

/// (id or text, score), best first.
pub type Ranked = Vec<(String, f32)>;

/// Logit rows of `n` sequences written by `fill(batch, i)`, `s.batch` at a time.
fn run_rows(gpu: &Gpu, m: &ModelDir, step: &Step, s: &Shape, d: usize, n: usize, fill: impl Fn(&mut Batch, usize)) -> Result<Vec<Vec<f32>>> {
    let HeadActs::Classifier(acts) = &step.head_acts else { return Err(Error::Other("a classifier model is needed".into())) };
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(s.batch) {
        let k = (n - start).min(s.batch);
        let mut b = crate::tasks::empty_batch(s, d, k);
        for i in 0..k {
            fill(&mut b, start + i);
        }
        b.labels = Labels::Class(vec![-1; k]);
        b.pad_to(s, d);
        step.upload(gpu, &m.cfg, &b)?;
        gpu.run(&step.forward)?;
        out.extend(acts.read_logits(gpu)?.into_iter().take(k));
    }
    if let Some(i) = out.iter().position(|r| r.iter().any(|v| !v.is_finite())) {
        return Err(Error::Other(format!("the model produced a non-finite score for candidate {i}")));
    }
    Ok(out)
}

fn top(mut v: Ranked, k: usize) -> Ranked {
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k.max(1));
    v
}

pub fn retrieve(gpu: &Gpu, a: &QueryArgs) -> Result<Ranked> {
    let m = ModelDir::load(gpu, &a.model)?;
    if !matches!(m.head, Head::Classifier { labels: 2, loss: ClassLoss::CrossEntropy, .. }) {
        return Err(Error::Other(format!("{}: a {} model is not a retrieval model", a.model.display(), m.head.name())));
    }
    let data = PretrainData::load(&a.data, &m.tok)?;
    let (step, s) = m.eval_step(gpu, a.batch, a.text_len, a.regions)?;
    let score = |r: &Vec<f32>| 1.0 / (1.0 + (r[0] - r[1]).exp());
    match (&a.query, &a.image) {
        (Some(q), None) => {
            let ids = m.tok.encode(q)?;
            let rows = run_rows(gpu, &m, &step, &s, data.feature_dim, data.ids.len(), |b, i| {
                crate::tasks::push_sequence(b, &s, i % s.batch, &m.tok, &ids, Some(&data.images[i].0), &data, i)
            })?;
            Ok(top(rows.iter().enumerate().map(|(i, r)| (data.ids[i].clone(), score(r))).collect(), a.top))
        }
        (None, Some(id)) => {
            let im = *data.image_index().get(id.as_str()).ok_or_else(|| Error::Other(format!("{}: no image '{id}'", a.data.display())))?;
            let rows = run_rows(gpu, &m, &step, &s, data.feature_dim, data.captions.len(), |b, c| {
                crate::tasks::push_sequence(b, &s, c % s.batch, &m.tok, &data.captions[c].1, Some(&data.images[im].0), &data, im)
            })?;
            let text = |c: usize| m.tok.decode(&data.captions[c].1).unwrap_or_default();
            Ok(top(rows.iter().enumerate().map(|(c, r)| (format!("{} ({})", text(c), data.ids[data.captions[c].0]), score(r))).collect(), a.top))
        }
        _ => Err(Error::Other("retrieve takes --query TEXT (rank images) or --image ID (rank captions), one of them".into())),
    }
}

pub fn answer(gpu: &Gpu, a: &QueryArgs) -> Result<Ranked> {
    let m = ModelDir::load(gpu, &a.model)?;
    let Head::Classifier { labels, loss, .. } = m.head.clone() else {
        return Err(Error::Other(format!("{}: a {} model does not answer questions", a.model.display(), m.head.name())));
    };
    let answers = m.answers(&a.model)?;
    let question = a.question.as_deref().ok_or_else(|| Error::Other("answer needs --question".into()))?;
    let (step, s) = m.eval_step(gpu, a.batch, a.text_len, a.regions)?;
    let d = m.cfg.img_feature_dim;
    let (tags, regions): (Vec<u32>, Vec<f32>) = match (&a.image, &a.image_file) {
        (Some(id), None) => {
            let data = PretrainData::load(&a.data, &m.tok)?;
            let im = *data.image_index().get(id.as_str()).ok_or_else(|| Error::Other(format!("{}: no image '{id}'", a.data.display())))?;
            let mut f = vec![0f32; s.regions * d];
            let r = data.features.read_into(data.feature_of[im], &mut f);
            f.truncate(r * d);
            (data.images[im].0.clone(), f)
        }
        (None, Some(file)) => {
            let (_, f) = m.patches(&a.model, a.grid)?.file_features(file)?;
            (m.tok.encode(a.tags.as_deref().unwrap_or(""))?, f)
        }
        _ => return Err(Error::Other("answer takes --image ID (a store image) or --image-file PATH, one of them".into())),
    };
    let ids = m.tok.encode(question)?;
    let x = m.tok.oscar_text(&ids, Some(&tags), s.text, crate::data::Truncation::Pair);
    let mut b = crate::tasks::empty_batch(&s, d, 1);
    for t in 0..s.text {
        let real = t < x.ids.len();
        b.input_ids.push(if real { x.ids[t] } else { m.tok.pad });
        b.type_ids.push(if real { x.types[t] } else { 0 });
        b.pos_ids.push(t as u32);
        b.mask[t] = real as u32 as f32;
    }
    let r = (regions.len() / d).min(s.regions);
    b.img[..r * d].copy_from_slice(&regions[..r * d]);
    for k in 0..r {
        b.mask[s.text + k] = 1.0;
    }
    b.labels = Labels::Class(vec![-1]);
    b.pad_to(&s, d);
    // a soft-target head has its own labels kind; an inert target row keeps upload happy
    if loss == ClassLoss::SoftBce {
        b.labels = Labels::Soft(vec![0.0; s.batch * labels]);
    }
    step.upload(gpu, &m.cfg, &b)?;
    gpu.run(&step.forward)?;
    let HeadActs::Classifier(acts) = &step.head_acts else { unreachable!() };
    let row = acts.read_logits(gpu)?.remove(0);
    let probs: Vec<f32> = match loss {
        ClassLoss::SoftBce => row.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
        ClassLoss::CrossEntropy => {
            let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|v| (v - mx).exp()).sum();
            row.iter().map(|v| (v - mx).exp() / z).collect()
        }
    };
    if probs.iter().any(|p| !p.is_finite()) {
        return Err(Error::Other("the model produced non-finite answer scores".into()));
    }
    Ok(top(answers.into_iter().zip(probs).collect(), a.top))
}
