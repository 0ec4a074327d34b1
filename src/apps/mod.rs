//! Applications over the model: they load a model directory (config.json, model.safetensors,
//! tokenizer, head.json), tokenize, and run many inputs through one forward-only plan.
pub mod caption;
pub mod embed;
pub mod evaluate;
pub mod query;

use crate::data::Tok;
use crate::gpu::Gpu;
use crate::model::checkpoint::{self, LoadOptions, LoadReport};
use crate::model::{Config, Head, Mode, ParamLayout, ParamSet, Shape, Step};
use crate::ops::matmul::Precision;
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

pub struct ModelDir {
    pub cfg: Config,
    pub head: Head,
    pub params: ParamSet,
    pub tok: Tok,
    pub report: LoadReport,
}

/// The head of a model directory: `head.json` when present, else the pre-training head (a
/// pre-trained Oscar or BERT checkpoint).
pub fn read_head(dir: &Path) -> Result<Head> {
    let f = dir.join("head.json");
    if !f.exists() {
        return Ok(Head::Pretrain);
    }
    let text = std::fs::read_to_string(&f).map_err(|e| Error::Other(format!("{}: {e}", f.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: invalid head description: {e}", f.display())))
}

impl ModelDir {
    /// The forward-only plan of `batch` sequences of `text` tokens (capped at the model's positions)
    /// + `regions` region slots that every application runs its inputs through.
    pub fn eval_step(&self, gpu: &Gpu, batch: usize, text: usize, regions: usize) -> Result<(Step, Shape)> {
        let s = Shape { batch: batch.max(1), text: text.min(self.cfg.max_position_embeddings), regions, masked: 1, mask3d: false };
        Ok((Step::new(gpu, &self.cfg, &self.params, None, &self.head, s, Mode::Eval, 1.0, Precision::F32)?, s))
    }

    /// The patch front end (as convert-images) whose regions this model takes: the patch side
    /// follows from the feature width, 3 p² + 6; a model of detector features is an error.
    pub fn patches(&self, dir: &Path, grid: usize) -> Result<crate::data::images::Patches> {
        let d = self.cfg.img_feature_dim;
        let p = (((d.saturating_sub(6)) / 3) as f64).sqrt().round() as usize;
        if p == 0 || 3 * p * p + 6 != d {
            return Err(Error::Other(format!("{}: the model takes {d}-d features, not patch regions (3 p² + 6)", dir.display())));
        }
        crate::data::images::Patches::new(grid, Some(grid * p))
    }

    /// The answer vocabulary a VQA/GQA model keeps in `answers.json`, checked against its head.
    pub fn answers(&self, dir: &Path) -> Result<Vec<String>> {
        let f = dir.join("answers.json");
        let text =
            std::fs::read_to_string(&f).map_err(|e| Error::Other(format!("{}: {e} (a VQA/GQA model keeps its answer vocabulary there)", f.display())))?;
        let answers: Vec<String> = serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: not a JSON list of answers: {e}", f.display())))?;
        match self.head {
            crate::model::Head::Classifier { labels, .. } if labels == answers.len() => Ok(answers),
            _ => Err(Error::Other(format!("{}: {} answers do not fit the model's head ({})", f.display(), answers.len(), self.head.name()))),
        }
    }

    /// `dir` holds config.json, model.safetensors and tokenizer.json or vocab.txt (+ head.json).
    pub fn load(gpu: &Gpu, dir: &Path) -> Result<ModelDir> {
        ModelDir::load_with(gpu, dir, LoadOptions::default())
    }

    /// As `load`, with the checkpoint loaded under `opts` (e.g. allowing unexpected tensors).
    pub fn load_with(gpu: &Gpu, dir: &Path, opts: LoadOptions) -> Result<ModelDir> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let tok = Tok::load(dir)?;
        tok.check_fits(cfg.vocab_size, &dir.join("config.json"))?;
        let head = read_head(dir)?;
        let layout = Arc::new(ParamLayout::for_model(&cfg, &head, gpu.max_binding_bytes())?);
        let params = ParamSet::zeros(gpu, layout, "params")?;
        params.init(gpu, 42)?;
        let report = checkpoint::load_with(gpu, &params, &dir.join("model.safetensors"), opts)?;
        Ok(ModelDir { cfg, head, params, tok, report })
    }
}
