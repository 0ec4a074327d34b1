//! Importer for Oscar's released data (oscar.md §4) into our store:
//! - feature TSVs, both layouts: `img_key \t {"num_boxes": N, "features": b64}` (captioning) and
//!   `img_id \t N \t b64` (retrieval / VinVL); base64 of little-endian float32 [N, D] (D = 2054
//!   in the released files; the width is inferred). The `.lineidx` index is not needed to stream.
//! - label / prediction TSVs: `img \t [{"class", "rect", "conf"}, ...]` or
//!   `img \t {"image_h", "image_w", "objects": [...]}`; the tag string is the classes in order.
//! - captions: a JSON list or JSON lines of {"image_id", "caption"}.
use super::store::{write_features, write_jsonl};
use super::synth::{Caption, Image, Object};
use crate::{Error, Result};
use base64::Engine;
use std::collections::HashMap;
use std::path::Path;

fn bad(file: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}:{line}: {msg}", file.display()))
}

fn decode_floats(file: &Path, line: usize, b64: &str) -> Result<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| bad(file, line, format!("bad base64: {e}")))?;
    if bytes.len() % 4 != 0 {
        return Err(bad(file, line, format!("{} bytes is not a whole number of float32", bytes.len())));
    }
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// Reads a feature TSV: image key -> (regions, row-major features), and the feature width.
pub fn read_feature_tsv(file: &Path) -> Result<(Vec<(String, Vec<f32>)>, usize)> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let (mut out, mut dim) = (Vec::new(), None::<usize>);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let cols: Vec<&str> = line.split('\t').collect();
        let (key, boxes, feats) = match cols.len() {
            2 => {
                let v: serde_json::Value = serde_json::from_str(cols[1]).map_err(|e| bad(file, n, format!("bad JSON: {e}")))?;
                let nb = v["num_boxes"].as_u64().ok_or_else(|| bad(file, n, "no num_boxes"))? as usize;
                let f = v["features"].as_str().ok_or_else(|| bad(file, n, "no features"))?;
                (cols[0], nb, decode_floats(file, n, f)?)
            }
            3 => (cols[0], cols[1].trim().parse::<usize>().map_err(|e| bad(file, n, format!("bad box count: {e}")))?, decode_floats(file, n, cols[2])?),
            k => return Err(bad(file, n, format!("{k} tab-separated columns; expected 2 (key, JSON) or 3 (key, N, base64)"))),
        };
        if boxes == 0 || feats.len() % boxes != 0 {
            return Err(bad(file, n, format!("{} floats do not split into {boxes} boxes", feats.len())));
        }
        let d = feats.len() / boxes;
        if *dim.get_or_insert(d) != d {
            return Err(bad(file, n, format!("feature width {d} differs from earlier rows ({})", dim.unwrap())));
        }
        out.push((key.to_string(), feats));
    }
    let dim = dim.ok_or_else(|| Error::Other(format!("{}: no rows (empty file)", file.display())))?;
    Ok((out, dim))
}

/// Reads a label/prediction TSV: image key -> objects (class, rect) and image size if given.
pub fn read_label_tsv(file: &Path) -> Result<HashMap<String, (Vec<Object>, f32, f32)>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let (key, js) = line.split_once('\t').ok_or_else(|| bad(file, n, "expected key<TAB>JSON"))?;
        let v: serde_json::Value = serde_json::from_str(js).map_err(|e| bad(file, n, format!("bad JSON: {e}")))?;
        let (objs, h, w) = match &v {
            serde_json::Value::Array(a) => (a.clone(), 0.0, 0.0),
            serde_json::Value::Object(o) => (
                o.get("objects").and_then(|x| x.as_array()).cloned().ok_or_else(|| bad(file, n, "no 'objects' list"))?,
                o.get("image_h").and_then(|x| x.as_f64()).unwrap_or(0.0) as f32,
                o.get("image_w").and_then(|x| x.as_f64()).unwrap_or(0.0) as f32,
            ),
            _ => return Err(bad(file, n, "expected a list of objects or {objects: [...]}")),
        };
        let objects = objs
            .iter()
            .map(|o| {
                let class = o["class"].as_str().ok_or_else(|| bad(file, n, "object without 'class'"))?.to_string();
                let r: Vec<f32> = o["rect"].as_array().map(|r| r.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect()).unwrap_or_default();
                let bbox = if r.len() == 4 { [r[0], r[1], r[2], r[3]] } else { [0.0; 4] };
                Ok(Object { class, color: String::new(), size: String::new(), material: String::new(), bbox })
            })
            .collect::<Result<Vec<_>>>()?;
        out.insert(key.to_string(), (objects, w, h));
    }
    Ok(out)
}

fn read_captions(file: &Path) -> Result<Vec<Caption>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let norm = |v: &serde_json::Value, n: usize| -> Result<Caption> {
        let id = match &v["image_id"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(x) => x.to_string(),
            _ => return Err(bad(file, n, "record without image_id")),
        };
        Ok(Caption { image_id: id, caption: v["caption"].as_str().ok_or_else(|| bad(file, n, "record without caption"))?.to_string() })
    };
    if text.trim_start().starts_with('[') {
        let v: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: bad JSON: {e}", file.display())))?;
        return v.iter().enumerate().map(|(i, x)| norm(x, i + 1)).collect();
    }
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| norm(&serde_json::from_str(l).map_err(|e| bad(file, i + 1, format!("bad JSON: {e}")))?, i + 1)).collect()
}

/// Converts one split of Oscar data into a store directory (images.jsonl, captions.jsonl,
/// features.safetensors). Images without labels get an empty tag string.
pub fn convert(features: &Path, labels: Option<&Path>, captions: &Path, split: &str, out: &Path) -> Result<usize> {
    let (feats, dim) = read_feature_tsv(features)?;
    let labels = labels.map(read_label_tsv).transpose()?.unwrap_or_default();
    let caps = read_captions(captions)?;
    let known: std::collections::HashSet<&str> = feats.iter().map(|(k, _)| k.as_str()).collect();
    if let Some(c) = caps.iter().find(|c| !known.contains(c.image_id.as_str())) {
        return Err(Error::Other(format!("{}: caption for image '{}' which has no features in {}", captions.display(), c.image_id, features.display())));
    }
    let images: Vec<Image> = feats
        .iter()
        .map(|(k, _)| {
            let (objects, w, h) = labels.get(k).cloned().unwrap_or_default();
            let tags = objects.iter().map(|o| o.class.as_str()).collect::<Vec<_>>().join(" ");
            Image { id: k.clone(), split: split.to_string(), width: w, height: h, objects, tags }
        })
        .collect();
    std::fs::create_dir_all(out).map_err(|e| Error::Other(format!("{}: {e}", out.display())))?;
    write_jsonl(&out.join("images.jsonl"), &images)?;
    write_jsonl(&out.join("captions.jsonl"), &caps)?;
    write_features(&out.join("features.safetensors"), &feats, dim)?;
    Ok(images.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_feature_layouts_and_rejects_bad_rows() {
        let d = std::env::temp_dir().join(format!("vlp-convert-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let b64 = |v: &[f32]| base64::engine::general_purpose::STANDARD.encode(bytemuck::cast_slice(v));
        let f1: Vec<f32> = (0..8).map(|i| i as f32).collect(); // 2 boxes x 4
        let f2: Vec<f32> = (0..4).map(|i| -(i as f32)).collect(); // 1 box x 4
        std::fs::write(d.join("feat.tsv"), format!("101\t{{\"num_boxes\": 2, \"features\": \"{}\"}}\n102\t1\t{}\n", b64(&f1), b64(&f2))).unwrap();
        std::fs::write(d.join("label.tsv"), "101\t[{\"class\": \"dog\", \"rect\": [1,2,3,4], \"conf\": 0.9}, {\"class\": \"ball\", \"rect\": [0,0,1,1]}]\n102\t{\"image_h\": 480, \"image_w\": 640, \"objects\": [{\"class\": \"cat\"}]}\n").unwrap();
        std::fs::write(d.join("caps.json"), r#"[{"image_id": 101, "caption": "a dog with a ball"}, {"image_id": "102", "caption": "a cat"}]"#).unwrap();
        let n = convert(&d.join("feat.tsv"), Some(&d.join("label.tsv")), &d.join("caps.json"), "train", &d.join("store")).unwrap();
        assert_eq!(n, 2);
        let imgs: Vec<Image> = crate::data::store::read_jsonl(&d.join("store/images.jsonl")).unwrap();
        assert_eq!(imgs[0].tags, "dog ball");
        assert_eq!(imgs[1].width, 640.0);
        let (feats, dim) = crate::data::store::read_all_features(&d.join("store/features.safetensors")).unwrap();
        assert_eq!((dim, &feats["101"], &feats["102"]), (4, &f1, &f2));
        // a truncated base64 payload is an error naming file and line
        std::fs::write(d.join("bad.tsv"), format!("101\t2\t{}\n102\t1\t{}\n", b64(&f1), &b64(&f2)[..7])).unwrap();
        let e = read_feature_tsv(&d.join("bad.tsv")).unwrap_err().to_string();
        assert!(e.contains("bad.tsv:2"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
