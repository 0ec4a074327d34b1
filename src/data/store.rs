//! Our store: a directory with images.jsonl, captions.jsonl and region features in safetensors,
//! one [R, D] tensor per image id (f32 or f16), in one or more files (see [`super::features`],
//! which reads them lazily).
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Reads image `id`'s region features from `file` (memory-mapped; only that tensor is read),
/// checking the feature width.
pub fn read_image_features(file: &Path, id: &str, dim: usize) -> Result<Vec<f32>> {
    super::features::read_one(file, id, dim)
}

fn view_f32(file: &Path, id: &str, t: &safetensors::tensor::TensorView) -> Result<Vec<f32>> {
    match t.dtype() {
        Dtype::F32 | Dtype::F16 => Ok(crate::tensorfile::decode(t.dtype(), t.data()).unwrap_or_default()),
        d => Err(Error::Other(format!("{}: image '{id}' has dtype {d:?}, expected F32 or F16", file.display()))),
    }
}

/// Reads a JSON-lines file; empty files and malformed lines are errors naming file and line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(read_jsonl_lines(path)?.into_iter().map(|(_, x)| x).collect())
}

/// [`read_jsonl`] with each record's line number (1-based; blank lines are skipped).
pub fn read_jsonl_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push((i + 1, serde_json::from_str(line).map_err(|e| Error::Other(format!("{}:{}: malformed record: {e}", path.display(), i + 1)))?));
    }
    if out.is_empty() {
        return Err(Error::Other(format!("{}: no records (empty file)", path.display())));
    }
    Ok(out)
}

pub fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut s = String::new();
    for it in items {
        s.push_str(&serde_json::to_string(it).map_err(|e| Error::Other(e.to_string()))?);
        s.push('\n');
    }
    crate::util::atomic_write(path, s.as_bytes()).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// Writes region features, one [R, D] f32 tensor per image id (ids unique, D > 0).
pub fn write_features(path: &Path, items: &[(String, Vec<f32>)], dim: usize) -> Result<()> {
    if dim == 0 {
        return Err(Error::Other(format!("{}: feature width 0", path.display())));
    }
    let mut seen = std::collections::HashSet::new();
    for (id, f) in items {
        if !seen.insert(id.as_str()) {
            return Err(Error::Other(format!("{}: image '{id}' twice", path.display())));
        }
        if f.len() % dim != 0 {
            return Err(Error::Other(format!("{}: image '{id}': {} values are not rows of {dim}", path.display(), f.len())));
        }
    }
    let tensors: Vec<_> = items.iter().map(|(id, f)| crate::tensorfile::f32_tensor(id, vec![f.len() / dim, dim], f)).collect();
    let meta = std::collections::HashMap::from([("feature_dim".to_string(), dim.to_string())]);
    crate::tensorfile::write(path, &tensors, Some(meta))
}

/// All region features of one file, by image id, with their width, read eagerly into memory
/// (for small files and tests; training reads lazily through [`super::features::FeatureStore`]).
pub fn read_all_features(path: &Path) -> Result<(std::collections::HashMap<String, Vec<f32>>, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Other(format!("{}: not a valid safetensors file: {e}", path.display())))?;
    let mut dim = None;
    let mut out = std::collections::HashMap::new();
    for (id, t) in st.tensors() {
        let s = t.shape();
        if s.len() != 2 || dim.is_some_and(|d| d != s[1]) {
            return Err(Error::Other(format!(
                "{}: image '{id}' has shape {s:?}; every image needs [regions, {}]",
                path.display(),
                dim.unwrap_or(s.last().copied().unwrap_or(0))
            )));
        }
        dim = Some(s[1]);
        let v = view_f32(path, &id, &t)?;
        out.insert(id, v);
    }
    let dim = dim.ok_or_else(|| Error::Other(format!("{}: no image features", path.display())))?;
    Ok((out, dim))
}

/// A pre-training store on disk: images.jsonl, captions.jsonl, features.safetensors (and, for the
/// synthetic world, vqa.jsonl, nlvr2.jsonl and tokenizer.json).
pub fn write_world(dir: &Path, w: &super::synth::World, tok: &super::Tok) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    write_jsonl(&dir.join("images.jsonl"), &w.images)?;
    write_jsonl(&dir.join("captions.jsonl"), &w.captions)?;
    write_jsonl(&dir.join("vqa.jsonl"), &w.questions)?;
    write_jsonl(&dir.join("nlvr2.jsonl"), &w.statements)?;
    let items: Vec<(String, Vec<f32>)> = w.images.iter().zip(&w.features).map(|(i, f)| (i.id.clone(), f.clone())).collect();
    write_features(&dir.join("features.safetensors"), &items, w.feature_dim)?;
    tok.save(&dir.join("tokenizer.json"))
}

/// The raw caption texts of a store (`captions.jsonl`) by image id, in file order: the references
/// caption metrics compare against (the tokenizer would lose their case and punctuation).
pub fn caption_texts(dir: &Path) -> Result<std::collections::HashMap<String, Vec<String>>> {
    let mut m: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for (_, c) in read_jsonl_lines::<super::synth::Caption>(&dir.join("captions.jsonl"))? {
        m.entry(c.image_id).or_default().push(c.caption);
    }
    Ok(m)
}
