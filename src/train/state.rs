//! Training checkpoints: parameters under their model names, the AdamW moments as `adam_m.<name>`
//! and `adam_v.<name>`, and metadata (step, seed, config). The data order and dropout masks are
//! functions of (seed, step), so (seed, step) is the whole RNG and data position; the f16 path adds
//! its loss scale and clean-step count, and `run` the flags that make a run the same run (task,
//! batch size, accumulation, shapes, precision, schedule, optimizer), which a resume must repeat.
//! Written
//! atomically: a run killed mid-write leaves the previous checkpoint intact.
use crate::gpu::Gpu;
use crate::model::checkpoint::to_bytes;
use crate::model::{Config, ParamSet};
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
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
    run: &[(&str, String)],
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
    let run: serde_json::Map<String, serde_json::Value> = run.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect();
    meta.insert("run".into(), serde_json::Value::Object(run).to_string());
    meta.insert("format".into(), "vlp-engine training checkpoint v1".into());
    let bytes = to_bytes(&tensors, meta)?;
    crate::util::atomic_write(file, &bytes).map_err(|e| Error::Other(format!("{}: cannot write checkpoint: {e}", file.display())))
}

/// Restores parameters and moments; returns the step and seed the checkpoint was written at.
/// `run` are this run's flags (as `save` got them) and `steps` its --steps: a flag that differs
/// from the checkpoint's, or a checkpoint already at --steps, is an error, as is a tensor that is
/// not F32 or not finite.
pub fn load(gpu: &Gpu, file: &Path, cfg: &Config, params: &ParamSet, m: &ParamSet, v: &ParamSet, run: &[(&str, String)], steps: usize) -> Result<Resume> {
    let bytes = std::fs::read(file).map_err(|e| Error::Other(format!("{}: cannot read checkpoint: {e}", file.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Other(format!("{}: not a valid checkpoint ({e}); truncated or corrupt?", file.display())))?;
    let (_, md) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let meta = md.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).ok_or_else(|| Error::Other(format!("{}: not a training checkpoint (no '{k}' in its metadata)", file.display())));
    let parse = |k: &str| get(k)?.parse::<u64>().map_err(|e| Error::Other(format!("{}: bad '{k}': {e}", file.display())));
    let step = parse("step")? as usize;
    let seed = parse("seed")?;
    if step >= steps {
        return Err(Error::Other(format!(
            "{}: the run is complete: the checkpoint is at step {step} and --steps is {steps}; nothing to resume (a longer run is a new run: another --out, --init from its model)",
            file.display()
        )));
    }
    let saved: Config = serde_json::from_str(get("config")?).map_err(|e| Error::Other(format!("{}: bad config metadata: {e}", file.display())))?;
    if &saved != cfg {
        return Err(Error::Other(format!("{}: was written for another model config; resume with the same --config and data", file.display())));
    }
    // checkpoints from before the `run` record only carry the seed and config
    if let Some(r) = meta.get("run") {
        let saved: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r).map_err(|e| Error::Other(format!("{}: bad 'run' metadata: {e}", file.display())))?;
        for (flag, now) in run {
            let Some(was) = saved.get(*flag).and_then(|v| v.as_str()) else { continue };
            if was != now {
                return Err(Error::Other(format!(
                    "{}: written with {flag} {was}, resuming with {flag} {now}; a resumed run must use the same flags (or train into another --out)",
                    file.display()
                )));
            }
        }
    }
    for (prefix, set) in [("", params), ("adam_m.", m), ("adam_v.", v)] {
        for s in &set.layout.specs {
            let name = format!("{prefix}{}", s.name);
            let t = st.tensor(&name).map_err(|_| Error::Other(format!("{}: missing tensor '{name}'", file.display())))?;
            if t.dtype() != Dtype::F32 {
                return Err(Error::Other(format!(
                    "{}: tensor '{name}' has dtype {:?}; a training checkpoint holds F32 tensors only (not one this program wrote?)",
                    file.display(),
                    t.dtype()
                )));
            }
            if t.shape() != s.shape.as_slice() {
                return Err(Error::Other(format!("{}: tensor '{name}' has shape {:?}, expected {:?}", file.display(), t.shape(), s.shape)));
            }
            let vals = bytemuck::pod_collect_to_vec::<u8, f32>(t.data());
            if let Some(i) = vals.iter().position(|x| !x.is_finite()) {
                return Err(Error::Other(format!(
                    "{}: tensor '{name}' has a non-finite value ({}) at element {i}; this checkpoint cannot be resumed",
                    file.display(),
                    vals[i]
                )));
            }
            set.upload(gpu, &s.name, &vals)?;
        }
    }
    let loss_scale = match (meta.get("loss_scale"), meta.get("loss_scale_clean_steps")) {
        (Some(s), Some(c)) => Some((
            s.parse::<f32>().map_err(|e| Error::Other(format!("{}: bad 'loss_scale': {e}", file.display())))?,
            c.parse::<u32>().map_err(|e| Error::Other(format!("{}: bad 'loss_scale_clean_steps': {e}", file.display())))?,
        )),
        _ => None,
    };
    if let Some((s, _)) = loss_scale.filter(|(s, _)| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::Other(format!("{}: loss_scale {s} in its metadata is not a positive finite number", file.display())));
    }
    Ok(Resume { step, seed, loss_scale })
}
