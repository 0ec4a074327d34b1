//! The one place that decodes and writes safetensors data: f32/f16/bf16 to f32 (checkpoints,
//! features) and named tensors to a file written atomically (checkpoints, stores, `embed`).
use crate::{Error, Result};
use safetensors::{tensor::TensorView, Dtype};
use std::collections::HashMap;
use std::path::Path;

/// Copies little-endian F32 / F16 / BF16 `data` into `out` as f32; None for another dtype.
pub fn decode_into(dtype: Dtype, data: &[u8], out: &mut [f32]) -> Option<()> {
    match dtype {
        Dtype::F32 => out.iter_mut().zip(data.chunks_exact(4)).for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::F16 => out.iter_mut().zip(data.chunks_exact(2)).for_each(|(o, b)| *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        Dtype::BF16 => out.iter_mut().zip(data.chunks_exact(2)).for_each(|(o, b)| *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        _ => return None,
    }
    Some(())
}

/// `data` as f32 values; None for a dtype other than F32 / F16 / BF16.
pub fn decode(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let n = data.len() / dtype.bitsize().div_ceil(8).max(1);
    let mut out = vec![0f32; n];
    decode_into(dtype, data, &mut out)?;
    Some(out)
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
pub type Named = (String, Dtype, Vec<usize>, Vec<u8>);

/// An f32 tensor to write.
pub fn f32_tensor(name: &str, shape: Vec<usize>, v: &[f32]) -> Named {
    (name.to_string(), Dtype::F32, shape, bytemuck::cast_slice(v).to_vec())
}

/// Serialises named tensors (plus metadata) to safetensors bytes.
pub fn to_bytes(tensors: &[Named], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b).map_err(|e| Error::Other(format!("tensor '{n}': {e}")))?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| Error::Other(format!("serialising tensors: {e}")))
}

/// Writes named tensors to `path` atomically (a temporary file, then rename).
pub fn write(path: &Path, tensors: &[Named], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let bytes = to_bytes(tensors, metadata)?;
    crate::util::atomic_write(path, &bytes).map_err(|e| Error::Other(format!("{}: cannot write: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_float_dtype_and_round_trips_through_a_file() {
        let v = [1.5f32, -2.25, 65504.0, 1e-3];
        let h: Vec<u8> = v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let b: Vec<u8> = v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        assert_eq!(decode(Dtype::F32, bytemuck::cast_slice(&v)).unwrap(), v);
        let hf = decode(Dtype::F16, &h).unwrap();
        let bf = decode(Dtype::BF16, &b).unwrap();
        for i in 0..4 {
            assert_eq!(hf[i], half::f16::from_f32(v[i]).to_f32());
            assert_eq!(bf[i], half::bf16::from_f32(v[i]).to_f32());
        }
        assert_ne!(bf[3], v[3], "bf16 rounds 1e-3: the test must see a rounded value");
        assert!(decode(Dtype::I32, &[0; 4]).is_none());
        let p = std::env::temp_dir().join(format!("vlp-tensorfile-{}.safetensors", std::process::id()));
        write(&p, &[f32_tensor("x", vec![2, 2], &v)], None).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(decode(Dtype::F32, st.tensor("x").unwrap().data()).unwrap(), v);
        std::fs::remove_file(&p).ok();
    }
}
