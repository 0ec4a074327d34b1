//! Loading a model directory (config.json + model.safetensors + tokenizer) and running the encoder
//! for `vlp-engine embed`.
use crate::ops::matmul::Precision;
use super::batch::{Batch, Shape};
use super::checkpoint::{self, LoadReport};
use super::config::Config;
use super::params::{Layout, ParamSet};
use crate::data::{Tok, Truncation};
use crate::gpu::Gpu;
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

pub struct LoadedModel {
    pub cfg: Config,
    pub params: ParamSet,
    pub tok: Tok,
    pub report: LoadReport,
}

impl LoadedModel {
    /// `dir` holds config.json, model.safetensors and tokenizer.json or vocab.txt.
    pub fn load(gpu: &Gpu, dir: &Path) -> Result<LoadedModel> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let tok = Tok::load(dir)?;
        if tok.vocab_size() > cfg.vocab_size {
            return Err(Error::Other(format!("{}: tokenizer has {} tokens but config vocab_size is {}", dir.display(), tok.vocab_size(), cfg.vocab_size)));
        }
        let layout = Arc::new(Layout::for_config(&cfg, gpu.max_binding_bytes())?);
        let params = ParamSet::zeros(gpu, layout, "params")?;
        params.init(gpu, 42)?;
        let report = checkpoint::load(gpu, &params, &dir.join("model.safetensors"))?;
        Ok(LoadedModel { cfg, params, tok, report })
    }
}

/// One encoded text: its ids, the last hidden states of its text tokens (and of its regions,
/// when features were given), and the pooled [CLS] vector.
pub struct Embedding {
    pub input_ids: Vec<u32>,
    pub hidden: Vec<f32>,
    pub region_hidden: Vec<f32>,
    pub pooled: Vec<f32>,
}

/// Runs the encoder (dropout off) on `[CLS] text [SEP] (tags [SEP])` + optional regions [R, D].
pub fn embed(gpu: &Gpu, m: &LoadedModel, text: &str, tags: Option<&str>, regions: Option<&[f32]>) -> Result<Embedding> {
    let c = &m.cfg;
    let a = m.tok.encode(text)?;
    let b = tags.map(|t| m.tok.encode(t)).transpose()?;
    let max_len = c.max_position_embeddings;
    let x = m.tok.oscar_text(&a, b.as_deref(), max_len, Truncation::Pair);
    let t = x.ids.len();
    let r = regions.map_or(0, |f| f.len() / c.img_feature_dim);
    if let Some(f) = regions {
        if f.len() != r * c.img_feature_dim {
            return Err(Error::Shape { op: "embed", msg: format!("{} feature values are not a multiple of img_feature_dim {}", f.len(), c.img_feature_dim) });
        }
    }
    let shape = Shape { batch: 1, text: t, regions: r, masked: 1, mask3d: false };
    let step = super::oscar::plan(gpu, c, &m.params, None, shape, false, 1.0, Precision::F32)?;
    let batch = Batch {
        input_ids: x.ids.clone(),
        type_ids: x.types,
        pos_ids: (0..t as u32).collect(),
        img: regions.map(|f| f.to_vec()).unwrap_or_default(),
        mask: vec![1.0; t + r],
        mlm_pos: vec![0],
        mlm_labels: vec![-1],
        con_labels: vec![-1],
    };
    step.inputs.upload(gpu, &shape, c, &batch)?;
    gpu.run(&step.forward)?;
    let h = c.hidden_size;
    let all = gpu.read_f32(step.hidden())?;
    Ok(Embedding {
        input_ids: x.ids,
        hidden: all[..t * h].to_vec(),
        region_hidden: all[t * h..].to_vec(),
        pooled: gpu.read_f32(&step.acts.pooled)?,
    })
}
