//! `vlp-engine embed`: last hidden states and pooled [CLS] of many texts, through one forward-only
//! plan of `batch` sequences (the last, partial batch padded), each text padded to the longest.
use super::ModelDir;
use crate::data::Truncation;
use crate::gpu::Gpu;
use crate::model::{Batch, Labels, Shape};
use crate::{Error, Result};

/// One encoded text: its ids, the last hidden states of its text tokens (and of its regions,
/// when features were given), and the pooled [CLS] vector.
pub struct Embedding {
    pub input_ids: Vec<u32>,
    pub hidden: Vec<f32>,
    pub region_hidden: Vec<f32>,
    pub pooled: Vec<f32>,
}

/// Runs the encoder (dropout off) on `[CLS] text [SEP] (tags [SEP])` + optional regions [R, D] for
/// every text, `batch` texts per plan run; `progress` is called with the number done.
pub fn embed_many(
    gpu: &Gpu,
    m: &ModelDir,
    texts: &[String],
    tags: Option<&str>,
    regions: Option<&[f32]>,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Embedding>> {
    let c = &m.cfg;
    let b_ids = tags.map(|t| m.tok.encode(t)).transpose()?;
    let mut inputs = Vec::with_capacity(texts.len());
    for t in texts {
        let a = m.tok.encode(t)?;
        inputs.push(m.tok.oscar_text(&a, b_ids.as_deref(), c.max_position_embeddings, Truncation::Pair));
    }
    let r = regions.map_or(0, |f| f.len() / c.img_feature_dim);
    if let Some(f) = regions {
        if f.len() != r * c.img_feature_dim {
            return Err(Error::Shape { op: "embed", msg: format!("{} feature values are not a multiple of img_feature_dim {}", f.len(), c.img_feature_dim) });
        }
    }
    let Some(text) = inputs.iter().map(|x| x.ids.len()).max() else { return Ok(Vec::new()) };
    let (step, shape) = m.eval_step(gpu, batch.clamp(1, texts.len()), text, r)?;
    let (h, sq) = (c.hidden_size, shape.seq());
    let mut out = Vec::with_capacity(texts.len());
    for chunk in inputs.chunks(shape.batch) {
        let mut b = Batch { labels: labels_for(&m.head, &shape, chunk.len()), ..Default::default() };
        for x in chunk {
            let t = x.ids.len();
            b.input_ids.extend(x.ids.iter().copied().chain(std::iter::repeat(m.tok.pad).take(text - t)));
            b.type_ids.extend(x.types.iter().copied().chain(std::iter::repeat(0).take(text - t)));
            b.pos_ids.extend((0..text as u32).map(|p| if (p as usize) < t { p } else { 0 }));
            b.img.extend(regions.unwrap_or(&[]));
            b.mask.extend((0..sq).map(|j| (j < t || j >= text) as u32 as f32));
        }
        b.pad_to(&shape, c.img_feature_dim);
        step.upload(gpu, c, &b)?;
        gpu.run(&step.forward)?;
        let (all, pooled) = (gpu.read_f32(step.hidden())?, gpu.read_f32(step.pooled())?);
        for (i, x) in chunk.iter().enumerate() {
            let (t, base) = (x.ids.len(), i * sq * h);
            let hidden = &all[base..base + sq * h];
            let e = Embedding {
                input_ids: x.ids.clone(),
                hidden: hidden[..t * h].to_vec(),
                region_hidden: hidden[text * h..].to_vec(),
                pooled: pooled[i * h..(i + 1) * h].to_vec(),
            };
            if let Some(k) = e.hidden.iter().chain(&e.region_hidden).chain(&e.pooled).position(|v| !v.is_finite()) {
                return Err(Error::Other(format!(
                    "the model produced a non-finite value for text {} (element {k}); the weights, config or features overflow",
                    out.len()
                )));
            }
            out.push(e);
        }
        progress(out.len());
    }
    Ok(out)
}

/// Inert labels for `n` sequences, for a head that needs some (its loss is not read).
pub fn labels_for(head: &crate::model::Head, s: &Shape, n: usize) -> Labels {
    use crate::model::{ClassLoss, Head};
    match head {
        Head::Pretrain => Labels::Pretrain { mlm_pos: vec![0; s.masked], mlm_labels: vec![-1; s.masked], contrast_labels: vec![-1; n] },
        Head::CaptionLm { .. } => Labels::Masked { positions: vec![0; s.masked], labels: vec![-1; s.masked], weights: Vec::new() },
        Head::Classifier { loss: ClassLoss::SoftBce, labels, .. } => Labels::Soft(vec![0.0; n * labels]),
        _ => Labels::Class(vec![-1; n / head.seqs_per_example()]),
    }
}

/// One text (the test and small callers).
pub fn embed(gpu: &Gpu, m: &ModelDir, text: &str, tags: Option<&str>, regions: Option<&[f32]>) -> Result<Embedding> {
    Ok(embed_many(gpu, m, &[text.to_string()], tags, regions, 1, |_| {})?.remove(0))
}
