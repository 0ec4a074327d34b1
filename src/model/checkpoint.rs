//! Checkpoints in safetensors with Oscar / Hugging Face parameter names. Loading accepts our own
//! files, Oscar checkpoints converted by tools/convert_checkpoint.py, and plain Hugging Face BERT
//! checkpoints (names without `bert.`, extra buffers such as `embeddings.position_ids`, maybe no
//! pooler): parts of Oscar they lack (image projection, pooler, heads) keep Oscar's init. Every
//! problem is an error naming the file and the tensor.
use super::params::ParamSet;
use crate::gpu::Gpu;
use crate::{Error, Result};
use safetensors::{tensor::TensorView, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// What a load did, by parameter name.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// Missing from the file but optional for Oscar: left at their (Oscar) initialisation.
    pub initialized: Vec<String>,
    /// In the file but not parameters of this model (buffers, tied copies, other heads).
    pub ignored: Vec<String>,
}

/// Parameters that may be absent from a checkpoint: a BERT checkpoint has none of Oscar's extras,
/// and a pre-trained model has no fine-tuning head (`classifier.*`), which then keeps its init.
fn optional(name: &str) -> bool {
    ["bert.img_embedding", "bert.LayerNorm", "bert.pooler", "cls.", "classifier."].iter().any(|p| name.starts_with(p))
}

/// Maps a tensor name from a file to our name, or None for known non-parameters.
fn canonical(name: &str) -> Option<String> {
    if name.ends_with("position_ids") || name.ends_with("token_type_ids") {
        return None; // registered buffers
    }
    if name == "cls.predictions.decoder.weight" || name == "cls.predictions.decoder.bias" {
        return None; // the decoder is tied to the word embeddings; its bias is cls.predictions.bias
    }
    let mut n =
        if name.starts_with("bert.") || name.starts_with("cls.") || name.starts_with("classifier.") { name.to_string() } else { format!("bert.{name}") };
    // TF-converted checkpoints name LayerNorm parameters gamma/beta
    if n.contains("LayerNorm.") {
        n = n.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias");
    }
    Some(n)
}

fn to_f32(file: &Path, name: &str, t: &TensorView) -> Result<Vec<f32>> {
    crate::tensorfile::decode(t.dtype(), t.data())
        .ok_or_else(|| Error::Other(format!("{}: tensor '{name}' has dtype {:?}; expected F32, F16 or BF16", file.display(), t.dtype())))
}

/// How strict a load is.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Ignore (and report) tensors that are not parameters of the model instead of refusing the
    /// file (`--allow-unexpected`).
    pub allow_unexpected: bool,
}

/// The encoder layer index of a canonical name (`bert.encoder.layer.{l}.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("bert.encoder.layer.")?.split('.').next()?.parse().ok()
}

/// Loads every parameter of `params` from `file`, strictly (see `load_with`).
pub fn load(gpu: &Gpu, params: &ParamSet, file: &Path) -> Result<LoadReport> {
    load_with(gpu, params, file, LoadOptions::default())
}

/// Loads every parameter of `params` from `file` (see the module doc for what is accepted). The
/// load is deterministic and strict: two file names for one parameter (`bert.X` and `X`, or
/// `gamma` and `weight`) are an error naming both; a file with another number of encoder layers
/// than the config is an error naming both counts; tensors that are not parameters of the model are
/// an error listing them unless `opts.allow_unexpected`. Expected and ignored: Hugging Face
/// buffers (`position_ids`, `token_type_ids`), the tied decoder, the AdamW moments of a training
/// checkpoint, and the pre-training head (`cls.*`) when the model has another head (a captioning
/// model keeps `cls.predictions.*` and ignores `cls.seq_relationship.*`).
pub fn load_with(gpu: &Gpu, params: &ParamSet, file: &Path, opts: LoadOptions) -> Result<LoadReport> {
    let bytes = std::fs::read(file).map_err(|e| Error::Other(format!("{}: cannot read checkpoint: {e}", file.display())))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| Error::Other(format!("{}: not a valid safetensors file ({e}); truncated or corrupt?", file.display())))?;
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    let specs = &params.layout.specs;
    let model_has_cls = specs.iter().any(|s| s.name.starts_with("cls."));
    let model_layers = specs.iter().filter_map(|s| layer_of(&s.name)).max().map_or(0, |l| l + 1);
    let mut found: HashMap<String, String> = HashMap::new();
    let mut report = LoadReport::default();
    let (mut unexpected, mut file_layers) = (Vec::new(), 0usize);
    for name in names {
        if name.starts_with("adam_m.") || name.starts_with("adam_v.") {
            report.ignored.push(name.to_string()); // optimizer state of a training checkpoint
            continue;
        }
        let Some(c) = canonical(name) else {
            report.ignored.push(name.to_string());
            continue;
        };
        if let Some(l) = layer_of(&c) {
            file_layers = file_layers.max(l + 1);
        }
        if params.has(&c) {
            if let Some(prev) = found.insert(c.clone(), name.to_string()) {
                return Err(Error::Other(format!("{}: tensors '{prev}' and '{name}' are both parameter '{c}'; keep one of them in the file", file.display())));
            }
        } else if (c.starts_with("cls.") && !model_has_cls) || (c.starts_with("cls.seq_relationship.") && model_has_cls) {
            // the pre-training head when fine-tuning; its contrastive part for a captioning model,
            // which keeps only the masked-token head
            report.ignored.push(name.to_string());
        } else if layer_of(&c).is_none_or(|l| l < model_layers) {
            unexpected.push(name.to_string()); // (layers beyond the config's are the error below)
        }
    }
    if file_layers > 0 && file_layers != model_layers {
        return Err(Error::Other(format!(
            "{}: the checkpoint has {file_layers} encoder layers but the config has {model_layers} (num_hidden_layers); use the checkpoint's config.json",
            file.display()
        )));
    }
    if !unexpected.is_empty() {
        if !opts.allow_unexpected {
            let some = unexpected.iter().take(5).map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
            let more = if unexpected.len() > 5 { format!(" and {} more", unexpected.len() - 5) } else { String::new() };
            return Err(Error::Other(format!(
                "{}: {} unexpected tensors that are not parameters of this model: {some}{more}; is it the checkpoint of another model or head? (--allow-unexpected ignores them)",
                file.display(),
                unexpected.len()
            )));
        }
        report.ignored.extend(unexpected);
    }
    for spec in specs {
        let Some(src) = found.get(&spec.name) else {
            if optional(&spec.name) {
                report.initialized.push(spec.name.clone());
                continue;
            }
            return Err(Error::Other(format!("{}: missing tensor '{}' (shape {:?})", file.display(), spec.name, spec.shape)));
        };
        let t = st.tensor(src).map_err(|e| Error::Other(format!("{}: tensor '{src}': {e}", file.display())))?;
        if t.shape() != spec.shape.as_slice() {
            return Err(Error::Other(format!(
                "{}: tensor '{src}' has shape {:?} but the model config needs {:?} for '{}'",
                file.display(),
                t.shape(),
                spec.shape,
                spec.name
            )));
        }
        let v = to_f32(file, src, &t)?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::Other(format!("{}: tensor '{src}' has a non-finite value at element {i}", file.display())));
        }
        params.upload(gpu, &spec.name, &v)?;
        report.loaded.push(spec.name.clone());
    }
    Ok(report)
}

/// Serialises named f32 tensors (plus metadata) to safetensors bytes.
pub fn to_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let named: Vec<_> = tensors.iter().map(|(n, s, v)| crate::tensorfile::f32_tensor(n, s.clone(), v)).collect();
    crate::tensorfile::to_bytes(&named, Some(metadata))
}

/// Saves the parameters atomically (temporary file, then rename).
pub fn save(gpu: &Gpu, params: &ParamSet, file: &Path, metadata: HashMap<String, String>) -> Result<()> {
    let bytes = to_bytes(&params.download(gpu)?, metadata)?;
    crate::util::atomic_write(file, &bytes).map_err(|e| Error::Other(format!("{}: cannot write checkpoint: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Config, Head, ParamLayout};
    use safetensors::Dtype;
    use std::sync::Arc;

    fn tiny() -> Config {
        let mut c = Config::preset("tiny").unwrap();
        c.vocab_size = 50;
        c.max_position_embeddings = 16;
        c.img_feature_dim = 10;
        c
    }

    #[test]
    fn save_load_round_trip_and_hf_names_and_errors() {
        let gpu = crate::ops::testutil::gpu();
        let c = tiny();
        let layout = Arc::new(ParamLayout::for_model(&c, &Head::Pretrain, gpu.max_binding_bytes()).unwrap());
        let p = ParamSet::zeros(gpu, layout.clone(), "p").unwrap();
        p.init(gpu, 7).unwrap();
        let dir = std::env::temp_dir().join(format!("vlp-ckpt-{}", std::process::id()));
        let f = dir.join("model.safetensors");
        save(gpu, &p, &f, HashMap::new()).unwrap();
        let q = ParamSet::zeros(gpu, layout.clone(), "q").unwrap();
        let r = load(gpu, &q, &f).unwrap();
        assert_eq!(r.loaded.len(), layout.specs.len());
        let (a, b) = (p.download(gpu).unwrap(), q.download(gpu).unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| x == y), "round trip changed values");

        // a Hugging Face BertModel file: no `bert.` prefix, a position_ids buffer, no pooler, no heads,
        // the word embeddings in f16 and the first query weight in bf16 (the rest f32)
        let hf: Vec<(String, Vec<usize>, Vec<f32>)> = a
            .iter()
            .filter(|(n, _, _)| n.starts_with("bert.embeddings") || n.starts_with("bert.encoder"))
            .map(|(n, s, v)| (n.trim_start_matches("bert.").to_string(), s.clone(), v.clone()))
            .collect();
        const F16: &str = "embeddings.word_embeddings.weight";
        const BF16: &str = "encoder.layer.0.attention.self.query.weight";
        let halves: Vec<Vec<u8>> = hf
            .iter()
            .map(|(n, _, v)| match n.as_str() {
                F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut views: Vec<(String, TensorView)> = hf
            .iter()
            .zip(&halves)
            .map(|((n, s, v), h)| {
                let t = match n.as_str() {
                    F16 => TensorView::new(Dtype::F16, s.clone(), h),
                    BF16 => TensorView::new(Dtype::BF16, s.clone(), h),
                    _ => TensorView::new(Dtype::F32, s.clone(), bytemuck::cast_slice(v)),
                };
                (n.clone(), t.unwrap())
            })
            .collect();
        assert_eq!(views.iter().filter(|(_, t)| t.dtype() != Dtype::F32).count(), 2);
        let pos: Vec<u8> = (0..16i64).flat_map(|i| i.to_le_bytes()).collect();
        views.push(("embeddings.position_ids".into(), TensorView::new(Dtype::I64, vec![1, 16], &pos).unwrap()));
        let fhf = dir.join("hf.safetensors");
        std::fs::write(&fhf, safetensors::serialize(views, None).unwrap()).unwrap();
        let r = load(gpu, &q, &fhf).unwrap();
        assert!(r.initialized.iter().any(|n| n == "bert.pooler.dense.weight"));
        assert!(r.initialized.iter().any(|n| n == "bert.img_embedding.weight"));
        assert_eq!(r.ignored, vec!["embeddings.position_ids".to_string()]);
        // each half-precision tensor loads as exactly its rounded values, which are within the
        // format's rounding of the originals (f16: 11 significant bits, bf16: 8); f32 ones exactly
        let got: HashMap<String, Vec<f32>> = q.download(gpu).unwrap().into_iter().map(|(n, _, v)| (n, v)).collect();
        for (n, _, v) in &hf {
            let y = &got[&format!("bert.{n}")];
            let (want, rel): (Vec<f32>, f32) = match n.as_str() {
                F16 => (v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(), 2f32.powi(-11)),
                BF16 => (v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect(), 2f32.powi(-8)),
                _ => (v.clone(), 0.0),
            };
            assert_eq!(y, &want, "{n}: loaded values are not the file's");
            // f16's subnormals (below 6.1e-5) are spaced 2^-24 apart
            let tol = |x: f32| rel * x.abs() + if n == F16 { 2f32.powi(-25) } else { 0.0 };
            assert!(y.iter().zip(v).all(|(y, x)| (y - x).abs() <= tol(*x)), "{n}: beyond rounding");
            if rel > 0.0 {
                assert!(y.iter().zip(v).any(|(y, x)| y != x), "{n}: no value was rounded; not stored in half precision?");
            }
        }

        // wrong shape: a config with another hidden size
        let mut c2 = c.clone();
        c2.intermediate_size = 128;
        let l2 = Arc::new(ParamLayout::for_model(&c2, &Head::Pretrain, gpu.max_binding_bytes()).unwrap());
        let q2 = ParamSet::zeros(gpu, l2, "q2").unwrap();
        let e = load(gpu, &q2, &f).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("intermediate.dense.weight") && e.contains("[128, 64]"), "{e}");
        // missing required tensor
        let only: Vec<(String, TensorView)> =
            vec![("bert.embeddings.word_embeddings.weight".into(), TensorView::new(Dtype::F32, vec![50, 64], bytemuck::cast_slice(&a[0].2)).unwrap())];
        let fm = dir.join("partial.safetensors");
        std::fs::write(&fm, safetensors::serialize(only, None).unwrap()).unwrap();
        let e = load(gpu, &q, &fm).unwrap_err().to_string();
        assert!(e.contains("partial.safetensors") && e.contains("missing tensor"), "{e}");
        // truncated file
        let full = std::fs::read(&f).unwrap();
        let ft = dir.join("truncated.safetensors");
        std::fs::write(&ft, &full[..full.len() / 2]).unwrap();
        let e = load(gpu, &q, &ft).unwrap_err().to_string();
        assert!(e.contains("truncated.safetensors") && e.contains("truncated or corrupt"), "{e}");
        // wrong dtype
        let ints: Vec<u8> = vec![0; 50 * 64 * 4];
        let bad = vec![("bert.embeddings.word_embeddings.weight".to_string(), TensorView::new(Dtype::I32, vec![50, 64], &ints).unwrap())];
        let fd = dir.join("dtype.safetensors");
        std::fs::write(&fd, safetensors::serialize(bad, None).unwrap()).unwrap();
        let e = load(gpu, &q, &fd).unwrap_err().to_string();
        assert!(e.contains("dtype.safetensors") && e.contains("'bert.embeddings.word_embeddings.weight'") && e.contains("I32"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
