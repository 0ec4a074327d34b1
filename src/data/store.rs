//! Our feature store: region features in safetensors, one [R, D] tensor per image id (f32 or f16).
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Reads image `id`'s region features from `file`, checking the feature width.
pub fn read_image_features(file: &Path, id: &str, dim: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Other(format!("{}: not a valid safetensors file: {e}", file.display())))?;
    let t = st.tensor(id).map_err(|_| Error::Other(format!("{}: no features for image '{id}'", file.display())))?;
    if t.shape().len() != 2 || t.shape()[1] != dim {
        return Err(Error::Other(format!("{}: image '{id}' has shape {:?}, expected [regions, {dim}]", file.display(), t.shape())));
    }
    Ok(match t.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec(t.data()),
        Dtype::F16 => t.data().chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        d => return Err(Error::Other(format!("{}: image '{id}' has dtype {d:?}, expected F32 or F16", file.display()))),
    })
}
