//! Question answering as Oscar fine-tunes it (docs/oscar.md §3.4–3.5): `[CLS] question [SEP] tags
//! [SEP]` + regions, a linear classifier over an answer vocabulary on pooled [CLS].
//! - VQA: soft targets (from up to 10 human answers: 1 match 0.3, 2 → 0.6, 3 → 0.9, ≥ 4 → 1.0; a
//!   record with one answer gets 1.0), BCE summed over answers and averaged over the batch; metric
//!   Oscar's `compute_score_with_logits`, the mean soft score of the argmax answer.
//! - GQA: the hard label, cross-entropy; metric accuracy.
//!
//! Records come from the store's `vqa.jsonl` (GQA: `gqa.jsonl` when present, else `vqa.jsonl`):
//! `{"image_id", "question", "answer", "answers"?: [...]}`. The answer vocabulary is the training
//! split's answers seen at least `min_answer_count` times, saved with the model as `answers.json`.
use super::Task;
use crate::data::pretrain::PretrainData;
use crate::data::store::read_jsonl_lines;
use crate::data::Tok;
use crate::eval::vqa::soft_score;
use crate::gpu::Gpu;
use crate::model::heads::HeadActs;
use crate::model::{Batch, ClassLoss, Config, Head, Labels, Shape, Step};
use crate::util::Rng;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Clone, Debug, serde::Deserialize)]
struct Record {
    image_id: String,
    question: String,
    answer: String,
    #[serde(default)]
    answers: Vec<String>,
}

pub struct Question {
    pub image: usize,
    pub ids: Vec<u32>,
    /// (answer index, soft score) pairs; the hard label is the first record answer's index.
    pub targets: Vec<(usize, f32)>,
    pub label: Option<usize>,
    /// The human answers as given (one record answer stands for 10 agreeing humans).
    pub humans: Vec<String>,
}

pub struct Qa<'a> {
    pub data: &'a PretrainData,
    pub tok: &'a Tok,
    pub soft: bool,
    pub answers: Vec<String>,
    pub questions: Vec<Question>,
    pub train_pool: Vec<usize>,
    pub val_pool: Vec<usize>,
    pub split_of: Vec<String>,
    pub batch: usize,
    pub text: usize,
    pub regions: usize,
    pub dropout: f32,
}

impl<'a> Qa<'a> {
    /// `soft`: VQA (BCE on soft scores) or GQA (CE on the hard label). `answers`: a fixed answer
    /// vocabulary (a fine-tuned model's), else built from the training split.
    pub fn load(
        dir: &Path,
        data: &'a PretrainData,
        tok: &'a Tok,
        soft: bool,
        answers: Option<Vec<String>>,
        min_answer_count: usize,
        batch: usize,
        text: usize,
        regions: usize,
        dropout: f32,
    ) -> Result<Self> {
        let file = if !soft && dir.join("gqa.jsonl").exists() { dir.join("gqa.jsonl") } else { dir.join("vqa.jsonl") };
        let recs: Vec<(usize, Record)> = read_jsonl_lines(&file)?;
        let ids = data.image_index();
        let mut rows = Vec::with_capacity(recs.len());
        for (line, r) in &recs {
            let im = *ids.get(r.image_id.as_str()).ok_or_else(|| Error::Other(format!("{}:{line}: unknown image_id '{}'", file.display(), r.image_id)))?;
            if r.question.trim().is_empty() || r.answer.trim().is_empty() {
                return Err(Error::Other(format!("{}:{line}: empty question or answer", file.display())));
            }
            rows.push((im, r));
        }
        let answers = match answers {
            Some(a) => a,
            None => {
                let mut count: BTreeMap<&str, usize> = BTreeMap::new();
                for (im, r) in &rows {
                    if data.images[*im].1 == "train" {
                        *count.entry(r.answer.as_str()).or_default() += 1;
                    }
                }
                count.into_iter().filter(|&(_, n)| n >= min_answer_count.max(1)).map(|(a, _)| a.to_string()).collect()
            }
        };
        if answers.len() < 2 {
            return Err(Error::Other(format!(
                "{}: {} answers seen at least {min_answer_count} times in split 'train'; need at least 2",
                file.display(),
                answers.len()
            )));
        }
        let index: HashMap<&str, usize> = answers.iter().enumerate().map(|(i, a)| (a.as_str(), i)).collect();
        let mut questions = Vec::with_capacity(rows.len());
        let mut split_of = Vec::with_capacity(rows.len());
        for (im, r) in &rows {
            let humans: Vec<&str> = if r.answers.is_empty() { vec![r.answer.as_str()] } else { r.answers.iter().map(|s| s.as_str()).collect() };
            let mut targets: BTreeMap<usize, usize> = BTreeMap::new();
            for h in &humans {
                if let Some(&k) = index.get(h) {
                    *targets.entry(k).or_default() += 1;
                }
            }
            let single = r.answers.is_empty();
            let targets = targets.into_iter().map(|(k, n)| (k, if single { 1.0 } else { soft_score(n) })).collect();
            let humans = if single { vec![r.answer.clone(); 10] } else { r.answers.clone() };
            questions.push(Question { image: *im, ids: tok.encode(&r.question)?, targets, label: index.get(r.answer.as_str()).copied(), humans });
            split_of.push(data.images[*im].1.clone());
        }
        let pool = |s: &str| (0..questions.len()).filter(|&i| split_of[i] == s).collect::<Vec<_>>();
        let (train_pool, val_pool) = (pool("train"), pool("val"));
        if train_pool.is_empty() {
            return Err(Error::Other(format!("{}: no questions on split 'train' images", file.display())));
        }
        Ok(Qa { data, tok, soft, answers, questions, train_pool, val_pool, split_of, batch, text, regions, dropout })
    }

    fn shape(&self) -> Shape {
        Shape { batch: self.batch, text: self.text, regions: self.regions, masked: 1, mask3d: false }
    }

    /// A batch of the questions `picks` (fewer than the batch size: padded).
    pub fn batch_of(&self, picks: &[usize]) -> Batch {
        let s = self.shape();
        let mut b = super::empty_batch(&s, self.data.feature_dim, picks.len());
        let n = self.answers.len();
        let (mut hard, mut soft) = (Vec::new(), Vec::new());
        for (i, &q) in picks.iter().enumerate() {
            let qu = &self.questions[q];
            super::push_sequence(&mut b, &s, i, self.tok, &qu.ids, Some(&self.data.images[qu.image].0), self.data, qu.image);
            hard.push(qu.label.map_or(-1, |l| l as i32));
            let mut t = vec![0f32; n];
            for &(k, v) in &qu.targets {
                t[k] = v;
            }
            soft.extend(t);
        }
        b.labels = if self.soft { Labels::Soft(soft) } else { Labels::Class(hard) };
        b.pad_to(&s, self.data.feature_dim);
        b
    }

    /// The predicted answer of every question in `pool`, through an Eval plan.
    pub fn predict(&self, gpu: &Gpu, c: &Config, step: &Step, pool: &[usize], mut progress: impl FnMut(usize)) -> Result<Vec<usize>> {
        let HeadActs::Classifier(acts) = &step.head_acts else { return Err(Error::Other("question answering needs a classifier head".into())) };
        let mut out = Vec::with_capacity(pool.len());
        for chunk in pool.chunks(self.batch) {
            step.upload(gpu, c, &self.batch_of(chunk))?;
            gpu.run(&step.forward)?;
            out.extend(acts.read_logits(gpu)?.iter().take(chunk.len()).map(|r| crate::model::heads::argmax(r)));
            progress(out.len());
        }
        Ok(out)
    }

    /// Metrics over the questions `pool` (all of them, in order), through an Eval plan.
    pub fn score(&self, gpu: &Gpu, c: &Config, step: &Step, pool: &[usize]) -> Result<Vec<(String, f32)>> {
        let HeadActs::Classifier(acts) = &step.head_acts else { return Err(Error::Other("question answering needs a classifier head".into())) };
        let (mut score, mut n) = (0f64, 0usize);
        for chunk in pool.chunks(self.batch) {
            step.upload(gpu, c, &self.batch_of(chunk))?;
            gpu.run(&step.forward)?;
            for (row, &q) in acts.read_logits(gpu)?.iter().zip(chunk) {
                let best = crate::model::heads::argmax(row);
                let qu = &self.questions[q];
                score += if self.soft { qu.targets.iter().find(|t| t.0 == best).map_or(0.0, |t| t.1) as f64 } else { (qu.label == Some(best)) as u32 as f64 };
                n += 1;
            }
        }
        Ok(vec![("accuracy".into(), (100.0 * score / n.max(1) as f64) as f32), ("questions".into(), n as f32)])
    }

    /// Accuracy of always answering the training split's most frequent answer, on `pool`.
    pub fn majority_baseline(&self, pool: &[usize]) -> f32 {
        let mut count = vec![0usize; self.answers.len()];
        for &q in &self.train_pool {
            if let Some(l) = self.questions[q].label {
                count[l] += 1;
            }
        }
        let top = (0..count.len()).max_by_key(|&k| count[k]).unwrap_or(0);
        let s: f64 = pool
            .iter()
            .map(|&q| {
                if self.soft {
                    self.questions[q].targets.iter().find(|t| t.0 == top).map_or(0.0, |t| t.1) as f64
                } else {
                    (self.questions[q].label == Some(top)) as u32 as f64
                }
            })
            .sum();
        (100.0 * s / pool.len().max(1) as f64) as f32
    }

    /// The log prior of each answer on the training split, as a fresh classifier's bias: for VQA's
    /// BCE the log-odds of the mean soft target, for GQA's cross-entropy the log frequency (add-one
    /// smoothed, so an answer seen once is not -inf).
    pub fn prior_bias(&self) -> Vec<f32> {
        let n = self.answers.len();
        let mut mass = vec![0f64; n];
        for &q in &self.train_pool {
            if self.soft {
                for &(k, v) in &self.questions[q].targets {
                    mass[k] += v as f64;
                }
            } else if let Some(l) = self.questions[q].label {
                mass[l] += 1.0;
            }
        }
        let total = self.train_pool.len().max(1) as f64;
        if self.soft {
            mass.iter().map(|&m| (m / total).clamp(1e-4, 1.0 - 1e-4)).map(|p| (p / (1.0 - p)).ln() as f32).collect()
        } else {
            mass.iter().map(|&m| ((m + 1.0) / (total + n as f64)).ln() as f32).collect()
        }
    }

    pub fn pool(&self, split: &str) -> Vec<usize> {
        (0..self.questions.len()).filter(|&i| self.split_of[i] == split).collect()
    }
}

impl Task for Qa<'_> {
    fn head(&self, _: &Config) -> Head {
        Head::Classifier { labels: self.answers.len(), loss: if self.soft { ClassLoss::SoftBce } else { ClassLoss::CrossEntropy }, dropout: self.dropout }
    }
    fn feature_dim(&self) -> usize {
        self.data.feature_dim
    }
    fn train_shape(&self) -> Shape {
        self.shape()
    }
    fn train_batch(&self, rng: &mut Rng) -> Result<Batch> {
        let picks: Vec<usize> = (0..self.batch).map(|_| self.train_pool[rng.below(self.train_pool.len())]).collect();
        Ok(self.batch_of(&picks))
    }
    fn eval_shape(&self) -> Option<Shape> {
        (!self.val_pool.is_empty()).then(|| self.shape())
    }
    fn evaluate(&self, gpu: &Gpu, c: &Config, step: &Step, _seed: u64, batches: usize) -> Result<Vec<(String, f32)>> {
        let n = (batches.max(1) * self.batch).min(self.val_pool.len());
        let m = self.score(gpu, c, step, &self.val_pool[..n])?;
        Ok(vec![("val_accuracy".into(), m[0].1)])
    }
    fn title(&self) -> &'static str {
        if self.soft {
            "Oscar VQA fine-tuning"
        } else {
            "Oscar GQA fine-tuning"
        }
    }
    fn head_bias(&self) -> Option<Vec<f32>> {
        Some(self.prior_bias())
    }
    fn model_files(&self) -> Vec<(String, String)> {
        vec![("answers.json".into(), serde_json::to_string(&self.answers).unwrap_or_default())]
    }
}
