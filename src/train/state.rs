//! Training checkpoints: parameters under their model names, the AdamW moments as `adam_m.<name>`
//! and `adam_v.<name>`, and metadata (step, seed, config). The data order and dropout masks are
//! functions of (seed, step), so (seed, step) is the whole RNG and data position; the f16 path adds
//! its loss scale and clean-step count. Written
//! atomically: a run killed mid-write leaves the previous checkpoint intact.
use crate::gpu::Gpu;
use crate::model::checkpoint::to_bytes;
use crate::model::{Config, ParamSet};
use crate::{Error, Result};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

pub struct Resume {
    pub step: usize,
    pub seed: u64,
    /// (loss scale, clean steps) when the checkpoint was written by the f16 path.
    pub loss_scale: Option<(f32, u32)>,
}

pub fn save(
    gpu: &Gpu,
    file: &Path,
    cfg: &Config,
    params: &ParamSet,
    m: &ParamSet,
    v: &ParamSet,
    step: usize,
    seed: u64,
    loss_scale: Option<(f32, u32)>,
) -> Result<()> {
    let mut tensors = params.download(gpu)?;
    for (prefix, set) in [("adam_m.", m), ("adam_v.", v)] {
        tensors.extend(set.download(gpu)?.into_iter().map(|(n, s, d)| (format!("{prefix}{n}"), s, d)));
    }
    let mut meta = HashMap::new();
    meta.insert("step".into(), step.to_string());
    meta.insert("seed".into(), seed.to_string());
    if let Some((scale, clean)) = loss_scale {
        meta.insert("loss_scale".into(), scale.to_string());
        meta.insert("loss_scale_clean_steps".into(), clean.to_string());
    }
    meta.insert("config".into(), serde_json::to_string(cfg).unwrap());
    meta.insert("format".into(), "vlp-engine training checkpoint v1".into());
    let bytes = to_bytes(&tensors, meta)?;
    crate::util::atomic_write(file, &bytes).map_err(|e| Error::Other(format!("{}: cannot write checkpoint: {e}", file.display())))
}

/// Restores parameters and moments; returns the step and seed the checkpoint was written at.
pub fn load(gpu: &Gpu, file: &Path, cfg: &Config, params: &ParamSet, m: &ParamSet, v: &ParamSet) -> Result<Resume> {
    let bytes = std::fs::read(file).map_err(|e| Error::Other(format!("{}: cannot read checkpoint: {e}", file.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Other(format!("{}: not a valid checkpoint ({e}); truncated or corrupt?", file.display())))?;
    let (_, md) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let meta = md.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).ok_or_else(|| Error::Other(format!("{}: not a training checkpoint (no '{k}' in its metadata)", file.display())));
    let saved: Config = serde_json::from_str(get("config")?).map_err(|e| Error::Other(format!("{}: bad config metadata: {e}", file.display())))?;
    if &saved != cfg {
        return Err(Error::Other(format!("{}: was written for another model config; resume with the same --config and data", file.display())));
    }
    for (prefix, set) in [("", params), ("adam_m.", m), ("adam_v.", v)] {
        for s in &set.layout.specs {
            let name = format!("{prefix}{}", s.name);
            let t = st.tensor(&name).map_err(|_| Error::Other(format!("{}: missing tensor '{name}'", file.display())))?;
            if t.shape() != s.shape.as_slice() {
                return Err(Error::Other(format!("{}: tensor '{name}' has shape {:?}, expected {:?}", file.display(), t.shape(), s.shape)));
            }
            set.upload(gpu, &s.name, &bytemuck::pod_collect_to_vec::<u8, f32>(t.data()))?;
        }
    }
    let parse = |k: &str| get(k)?.parse::<u64>().map_err(|e| Error::Other(format!("{}: bad '{k}': {e}", file.display())));
    let loss_scale = match (meta.get("loss_scale"), meta.get("loss_scale_clean_steps")) {
        (Some(s), Some(c)) => Some((
            s.parse::<f32>().map_err(|e| Error::Other(format!("{}: bad 'loss_scale': {e}", file.display())))?,
            c.parse::<u32>().map_err(|e| Error::Other(format!("{}: bad 'loss_scale_clean_steps': {e}", file.display())))?,
        )),
        _ => None,
    };
    Ok(Resume { step: parse("step")? as usize, seed: parse("seed")?, loss_scale })
}
