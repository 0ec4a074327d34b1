//! `vlp-engine eval`: a fine-tuned model directory on a store's split, as one JSON object.
//! - retrieval: every image × every caption of the split's first `--images` images scored on the
//!   GPU (softmax(logits)[1], Oscar's inference score) in batches, then R@1/5/10 both ways
//!   (eval::retrieval: an image's rank is its best true caption's; ties count against the truth);
//! - vqa: the predicted answer strings scored exactly as the official evaluator (eval::vqa);
//! - gqa, nlvr2: accuracy;
//! - caption: every image of the split captioned (beam search by default) and scored against the
//!   store's captions with BLEU-1..4, ROUGE-L and CIDEr-D as the COCO caption evaluation code; also
//!   the copy-the-tags baseline (the tags as the caption). `--out DIR` gets captions.json and metrics.json.
use super::ModelDir;
use crate::data::pretrain::PretrainData;
use crate::gpu::Gpu;
use crate::model::heads::HeadActs;
use crate::model::{Batch, Head, Labels};
use crate::tasks::{nlvr2::Nlvr2, qa::Qa};
use crate::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Clone, Debug)]
pub struct EvalArgs {
    #[arg(long, value_parser = ["retrieval", "vqa", "gqa", "nlvr2", "caption"])]
    pub task: String,
    /// A fine-tuned model directory (config.json, model.safetensors, tokenizer.json, head.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The store to evaluate on.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Retrieval, caption: the first N images of the split (e.g. COCO 1K); all by default.
    #[arg(long)]
    pub images: Option<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 32)]
    pub text_len: usize,
    #[arg(long, default_value_t = 6)]
    pub regions: usize,
    /// An empty tag segment (a model trained with `train --no-tags`).
    #[arg(long)]
    pub no_tags: bool,
    /// Also write the JSON object here (atomically); caption: a directory for captions.json and metrics.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub search: crate::apps::caption::SearchArgs,
}

fn bar(n: usize, what: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(n as u64);
    b.set_style(indicatif::ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what} {{per_sec}} ETA {{eta}}")).unwrap());
    b
}

pub fn evaluate(gpu: &Gpu, a: &EvalArgs, progress: bool) -> Result<serde_json::Value> {
    let m = ModelDir::load(gpu, &a.model)?;
    if !m.report.initialized.is_empty() {
        return Err(Error::Other(format!(
            "{}: the checkpoint lacks {} (e.g. {}); evaluate a fine-tuned model",
            a.model.display(),
            m.report.initialized.len(),
            m.report.initialized[0]
        )));
    }
    let mut data = PretrainData::load(&a.data, &m.tok)?;
    if a.no_tags {
        data.clear_tags();
    }
    if data.feature_dim != m.cfg.img_feature_dim {
        return Err(Error::Other(format!("{}: features are {}-d but the model takes {}", a.data.display(), data.feature_dim, m.cfg.img_feature_dim)));
    }
    let text = a.text_len.min(m.cfg.max_position_embeddings);
    let t0 = Instant::now();
    let mut out = match (a.task.as_str(), &m.head) {
        ("retrieval", Head::Classifier { labels: 2, .. }) => retrieval(gpu, &m, &data, a, text, progress)?,
        ("vqa" | "gqa", Head::Classifier { .. }) => {
            let answers = m.answers(&a.model)?;
            let qa = Qa::load(&a.data, &data, &m.tok, a.task == "vqa", Some(answers), 1, a.batch, text, a.regions, 0.0)?;
            let pool = qa.pool(&a.split);
            if pool.is_empty() {
                return Err(Error::Other(format!("{}: no questions on split '{}' images", a.data.display(), a.split)));
            }
            let (step, _) = m.eval_step(gpu, a.batch, text, a.regions)?;
            let b = bar(pool.len(), "questions", progress);
            let pred = qa.predict(gpu, &m.cfg, &step, &pool, |n| b.set_position(n as u64))?;
            b.finish_and_clear();
            let correct = pool.iter().zip(&pred).filter(|(q, p)| qa.questions[**q].label == Some(**p)).count();
            let mut o = serde_json::json!({"questions": pool.len(), "exact_match": 100.0 * correct as f64 / pool.len() as f64});
            o["accuracy"] = if a.task == "vqa" {
                let items: Vec<(&str, &[String])> =
                    pool.iter().zip(&pred).map(|(&q, &p)| (qa.answers[p].as_str(), qa.questions[q].humans.as_slice())).collect();
                crate::eval::vqa::vqa_accuracy(items)?.into()
            } else {
                (100.0 * correct as f64 / pool.len() as f64).into()
            };
            o
        }
        ("nlvr2", Head::Pair { scale, tags, .. }) => {
            let mut t = Nlvr2::load(&a.data, &data, &m.tok, (a.batch / 2).max(1), text, a.regions, *scale, 0.0)?;
            t.tags = *tags;
            let pool = t.pool(&a.split);
            if pool.is_empty() {
                return Err(Error::Other(format!("{}: no statements on split '{}' images", a.data.display(), a.split)));
            }
            let (step, _) = m.eval_step(gpu, 2 * t.batch, text, a.regions)?;
            let r = t.score(gpu, &m.cfg, &step, &pool)?;
            serde_json::json!({"accuracy": r[0].1, "examples": pool.len()})
        }
        ("caption", Head::CaptionLm { .. }) => {
            let (o, caps) = caption(gpu, &m, &data, a, progress)?;
            if let Some(dir) = &a.out {
                std::fs::create_dir_all(dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
                let mut obj = serde_json::Map::new();
                for (id, c) in caps {
                    obj.insert(id, c.into());
                }
                let f = dir.join("captions.json");
                crate::util::atomic_write(&f, serde_json::to_string_pretty(&obj).unwrap_or_default().as_bytes())
                    .map_err(|e| Error::Other(format!("{}: {e}", f.display())))?;
            }
            o
        }
        (task, head) => return Err(Error::Other(format!("{}: a {} model cannot be evaluated on --task {task}", a.model.display(), head.name()))),
    };
    out["task"] = a.task.clone().into();
    out["split"] = a.split.clone().into();
    out["seconds"] = t0.elapsed().as_secs_f64().into();
    if let Some(p) = &a.out {
        let p = if a.task == "caption" { p.join("metrics.json") } else { p.clone() };
        crate::util::atomic_write(&p, serde_json::to_string_pretty(&out).unwrap_or_default().as_bytes())
            .map_err(|e| Error::Other(format!("{}: {e}", p.display())))?;
    }
    Ok(out)
}

/// The images × captions score matrix of the split's first `--images` images, and R@K.
fn retrieval(gpu: &Gpu, m: &ModelDir, data: &PretrainData, a: &EvalArgs, text: usize, progress: bool) -> Result<serde_json::Value> {
    let mut images: Vec<usize> = (0..data.images.len()).filter(|&i| data.images[i].1 == a.split).collect();
    if let Some(n) = a.images {
        images.truncate(n);
    }
    let caps: Vec<(usize, usize)> = images.iter().enumerate().flat_map(|(k, &im)| data.by_image[im].iter().map(move |&c| (c, k))).collect();
    if images.is_empty() || caps.is_empty() {
        return Err(Error::Other(format!("{}: no images with captions on split '{}'", a.data.display(), a.split)));
    }
    let (step, s) = m.eval_step(gpu, a.batch, text, a.regions)?;
    let HeadActs::Classifier(acts) = &step.head_acts else { unreachable!("a classifier head") };
    let pairs: Vec<(usize, usize)> = (0..images.len()).flat_map(|i| (0..caps.len()).map(move |c| (i, c))).collect();
    let mut scores = vec![0f32; pairs.len()];
    let b = bar(pairs.len(), "pairs", progress);
    let t0 = Instant::now();
    for (k, chunk) in pairs.chunks(s.batch).enumerate() {
        let mut batch: Batch = crate::tasks::empty_batch(&s, data.feature_dim, chunk.len());
        for (bi, &(i, c)) in chunk.iter().enumerate() {
            let im = images[i];
            crate::tasks::push_sequence(&mut batch, &s, bi, &m.tok, &data.captions[caps[c].0].1, Some(&data.images[im].0), data, im);
        }
        batch.labels = Labels::Class(vec![-1; chunk.len()]);
        batch.pad_to(&s, data.feature_dim);
        step.upload(gpu, &m.cfg, &batch)?;
        gpu.run(&step.forward)?;
        for (j, row) in acts.read_logits(gpu)?.iter().take(chunk.len()).enumerate() {
            // softmax(logits)[1]
            let p = 1.0 / (1.0 + (row[0] - row[1]).exp());
            if !p.is_finite() {
                return Err(Error::Other(format!("a non-finite score for pair {} (the model overflows)", k * s.batch + j)));
            }
            scores[k * s.batch + j] = p;
        }
        b.set_position(((k + 1) * s.batch).min(pairs.len()) as u64);
    }
    b.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let caption_image: Vec<usize> = caps.iter().map(|&(_, k)| k).collect();
    let r = crate::eval::retrieval::retrieval_metrics(&scores, images.len(), &caption_image)?;
    let mut o = serde_json::to_value(&r).map_err(|e| Error::Other(e.to_string()))?;
    o["images"] = images.len().into();
    o["captions"] = caps.len().into();
    o["pairs_per_s"] = (pairs.len() as f64 / secs.max(1e-9)).into();
    Ok(o)
}

/// Captions for the split's first `--images` images, scored against the store's captions; the
/// metrics object and (image id, caption) pairs.
fn caption(gpu: &Gpu, m: &ModelDir, data: &PretrainData, a: &EvalArgs, progress: bool) -> Result<(serde_json::Value, Vec<(String, String)>)> {
    use crate::apps::caption::{read_layout, store_inputs, Captioner};
    let layout = read_layout(&a.model)?;
    let mut images: Vec<usize> = (0..data.images.len()).filter(|&i| data.images[i].1 == a.split && !data.by_image[i].is_empty()).collect();
    if let Some(n) = a.images {
        images.truncate(n);
    }
    if images.is_empty() {
        return Err(Error::Other(format!("{}: no images with captions on split '{}'", a.data.display(), a.split)));
    }
    let texts = crate::data::store::caption_texts(&a.data)?;
    let refs: Vec<(String, Vec<String>)> = images.iter().map(|&im| (data.ids[im].clone(), texts.get(&data.ids[im]).cloned().unwrap_or_default())).collect();
    let mut cap = Captioner::new(gpu, m, layout, a.search.search()?, &a.search)?;
    let b = bar(images.len(), "images", progress);
    let t0 = Instant::now();
    let hyps = cap.run(gpu, &store_inputs(data, &images, layout.regions), |n| b.set_position(n as u64))?;
    b.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let mut cands = Vec::with_capacity(images.len());
    let (mut recall, mut with_tags) = (0.0, 0usize);
    for (&im, hs) in images.iter().zip(&hyps) {
        cands.push((data.ids[im].clone(), cap.text(&hs[0])?));
        if let Some(r) = crate::apps::caption::tag_recall(&m.tok, &data.images[im].0, &hs[0].tokens) {
            recall += r;
            with_tags += 1;
        }
    }
    let tags: Vec<(String, String)> = images.iter().map(|&im| (data.ids[im].clone(), m.tok.decode(&data.images[im].0).unwrap_or_default())).collect();
    let mut o = serde_json::to_value(crate::eval::caption::caption_scores(&refs, &cands)?).map_err(|e| Error::Other(e.to_string()))?;
    // a caption of nothing but the tags: what the model must beat to show it describes scenes. An
    // image whose detector found nothing gets the empty caption, scored as pycocoevalcap scores an
    // empty candidate; a store without any tags has no baseline.
    if tags.iter().any(|(_, t)| !t.trim().is_empty()) {
        o["tags_baseline"] = serde_json::to_value(crate::eval::caption::caption_scores(&refs, &tags)?).map_err(|e| Error::Other(e.to_string()))?;
    }
    o["images"] = images.len().into();
    // how many of each image's first 3 tag words the captions mention (what CBS enforces)
    o["tag_recall"] = (recall / with_tags.max(1) as f64).into();
    o["captions_per_s"] = (images.len() as f64 / secs.max(1e-9)).into();
    o["search"] = format!("{:?}", cap.search).into();
    Ok((o, cands))
}
