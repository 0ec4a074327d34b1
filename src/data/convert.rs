//! Importer for Oscar's released data (oscar.md §4) into our store:
//! - feature TSVs, both layouts: `img_key \t {"num_boxes": N, "features": b64}` (captioning) and
//!   `img_id \t N \t b64` (retrieval / VinVL); base64 of little-endian float32 [N, D] (D = 2054
//!   in the released files; the width is inferred). The `.lineidx` index is not needed to stream.
//! - label / prediction TSVs: `img \t [{"class", "rect", "conf"}, ...]` or
//!   `img \t {"image_h", "image_w", "objects": [...]}`; the tag string is the classes in order.
//! - captions: a JSON list or JSON lines of {"image_id", "caption"}.
//!
//! [`convert`] adds one split to a store: into a new directory, or into an existing store, whose
//! images, captions and feature files it keeps (this split's features go to a new file
//! `features-<split>.safetensors`, see [`super::features`]); an image id already in the store is
//! an error. The new store is built in a temporary directory next to it and moved into place,
//! so a failed import leaves the store as it was. That part is [`add_to_store`], which the other
//! importers (e.g. [`super::images`]) share.
use super::features::{feature_files, FeatureStore};
use super::store::write_features;
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
    if bytes.is_empty() {
        return Err(bad(file, line, "empty feature payload"));
    }
    if bytes.len() % 4 != 0 {
        return Err(bad(file, line, format!("{} bytes is not a whole number of float32", bytes.len())));
    }
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// Reads a feature TSV: image key -> (regions, row-major features), and the feature width.
pub fn read_feature_tsv(file: &Path) -> Result<(Vec<(String, Vec<f32>)>, usize)> {
    let (rows, dim) = read_feature_tsv_lines(file)?;
    Ok((rows.into_iter().map(|(k, _, f)| (k, f)).collect(), dim))
}

/// [`read_feature_tsv`] with each row's line number. Keys repeated, empty or non-finite features
/// and widths that differ are errors naming file and line.
/// A feature TSV row: image key, line number, features.
type TsvRow = (String, usize, Vec<f32>);

fn read_feature_tsv_lines(file: &Path) -> Result<(Vec<TsvRow>, usize)> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let (mut out, mut dim) = (Vec::new(), None::<usize>);
    let mut seen: HashMap<String, usize> = HashMap::new();
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
        if let Some(k) = feats.iter().position(|x| !x.is_finite()) {
            return Err(bad(file, n, format!("image '{key}' has a non-finite feature value {} (box {}, column {})", feats[k], k / d, k % d)));
        }
        if let Some(l0) = seen.insert(key.to_string(), n) {
            return Err(bad(file, n, format!("image '{key}' repeats line {l0}")));
        }
        out.push((key.to_string(), n, feats));
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

/// Reads captions: a JSON list or JSON lines of {"image_id" (string or number), "caption"};
/// malformed records and empty captions are errors naming file and line (or place in the list).
pub fn read_captions(file: &Path) -> Result<Vec<Caption>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    let norm = |v: &serde_json::Value, n: usize| -> Result<Caption> {
        let id = match &v["image_id"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(x) => x.to_string(),
            _ => return Err(bad(file, n, "record without image_id")),
        };
        let caption = v["caption"].as_str().ok_or_else(|| bad(file, n, "record without caption"))?.to_string();
        if caption.trim().is_empty() {
            return Err(bad(file, n, format!("empty caption for image '{id}'")));
        }
        Ok(Caption { image_id: id, caption })
    };
    if text.trim_start().starts_with('[') {
        // a JSON list: the number is the record's place in the list
        let v: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: bad JSON: {e}", file.display())))?;
        return v.iter().enumerate().map(|(i, x)| norm(x, i + 1)).collect();
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| norm(&serde_json::from_str(l).map_err(|e| bad(file, i + 1, format!("bad JSON: {e}")))?, i + 1))
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Other(format!("{}: {e}", path.display()))
}

/// JSON lines of `items`, appended to `old` (ending it with a newline if it lacks one).
fn jsonl_after<T: serde::Serialize>(mut old: String, items: &[T]) -> Result<String> {
    if !old.is_empty() && !old.ends_with('\n') {
        old.push('\n');
    }
    for it in items {
        old.push_str(&serde_json::to_string(it).map_err(|e| Error::Other(e.to_string()))?);
        old.push('\n');
    }
    Ok(old)
}

/// Converts one split of Oscar data into store `out` (images.jsonl, captions.jsonl, feature
/// files), creating it or adding to it (see the module doc). Images without labels get an empty
/// tag string. Returns the number of images added.
pub fn convert(features: &Path, labels: Option<&Path>, captions: &Path, split: &str, out: &Path) -> Result<usize> {
    let (rows, dim) = read_feature_tsv_lines(features)?;
    let labels = labels.map(read_label_tsv).transpose()?.unwrap_or_default();
    let caps = read_captions(captions)?;
    let known: std::collections::HashSet<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
    if let Some(c) = caps.iter().find(|c| !known.contains(c.image_id.as_str())) {
        return Err(Error::Other(format!("{}: caption for image '{}' which has no features in {}", captions.display(), c.image_id, features.display())));
    }
    let new: Vec<NewImage> = rows
        .into_iter()
        .map(|(k, n, f)| {
            let (objects, w, h) = labels.get(&k).cloned().unwrap_or_default();
            let tags = objects.iter().map(|o| o.class.as_str()).collect::<Vec<_>>().join(" ");
            let image = Image { id: k, split: split.to_string(), width: w, height: h, objects, tags };
            NewImage { image, features: f, origin: format!("{}:{n}", features.display()) }
        })
        .collect();
    add_to_store(out, split, new, &caps, dim)
}

/// One image for [`add_to_store`]: its record, its [regions, dim] features (row-major), and where
/// it came from (a file, or file:line), which the store's errors about it name.
pub struct NewImage {
    pub image: Image,
    pub features: Vec<f32>,
    pub origin: String,
}

/// Adds one split to store `out`, or creates the store (see the module doc): `images` are
/// appended to images.jsonl, `captions` to captions.jsonl (which is written only if it has a
/// record), and the features go to a new feature file. Feature widths other than the store's and
/// image ids already in the store are errors naming the image's origin. The store is built in a
/// temporary directory next to `out` and moved into place, so on an error `out` is as it was.
/// Returns the number of images added.
pub fn add_to_store(out: &Path, split: &str, images: Vec<NewImage>, captions: &[Caption], dim: usize) -> Result<usize> {
    let Some(first) = images.first() else {
        return Err(Error::Other(format!("{}: no images to add (split {split})", out.display())));
    };
    // an existing store: its images and feature files, which this split must not repeat
    let (ip, cp) = (out.join("images.jsonl"), out.join("captions.jsonl"));
    let existing = ip.exists();
    let (mut old_images, mut old_captions, mut old_files) = (String::new(), String::new(), Vec::new());
    if existing {
        let old: Vec<(usize, Image)> = super::store::read_jsonl_lines(&ip)?;
        let fs = FeatureStore::open_headers(out)?;
        if fs.dim() != dim {
            return Err(Error::Other(format!("{}: feature width {dim} differs from the store's ({}, in {})", first.origin, fs.dim(), fs.describe())));
        }
        let ids: HashMap<&str, usize> = old.iter().map(|(l, im)| (im.id.as_str(), *l)).collect();
        for n in &images {
            let k = &n.image.id;
            if let Some(l) = ids.get(k.as_str()) {
                return Err(Error::Other(format!("{}: image '{k}' is already in the store ({}:{l})", n.origin, ip.display())));
            }
            if fs.entry(k).is_some() {
                return Err(Error::Other(format!("{}: image '{k}' already has features in the store ({})", n.origin, fs.describe())));
            }
        }
        old_images = std::fs::read_to_string(&ip).map_err(io(&ip))?;
        old_captions = if cp.exists() { std::fs::read_to_string(&cp).map_err(io(&cp))? } else { String::new() };
        old_files = feature_files(out)?;
    } else if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(Error::Other(format!("{}: not empty and not a store (no images.jsonl)", out.display())));
    }
    // this split's feature file: features.safetensors in a new store, else a new features-<split>[-k]
    let feat_name = if old_files.is_empty() {
        "features.safetensors".to_string()
    } else {
        let stem: String = split.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
        (1..)
            .map(|k| if k == 1 { format!("features-{stem}.safetensors") } else { format!("features-{stem}-{k}.safetensors") })
            .find(|n| !out.join(n).exists())
            .unwrap()
    };
    let (mut records, mut items) = (Vec::with_capacity(images.len()), Vec::with_capacity(images.len()));
    for n in images {
        items.push((n.image.id.clone(), n.features));
        records.push(n.image);
    }
    // build the new store next to the old one, then move it into place
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "store".into());
    let tag = format!("{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    let tmp = parent.join(format!(".{name}.import-{tag}"));
    let build = || -> Result<()> {
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        if existing {
            for e in std::fs::read_dir(out).map_err(io(out))? {
                let e = e.map_err(io(out))?;
                let (from, fname) = (e.path(), e.file_name());
                if fname == "images.jsonl" || fname == "captions.jsonl" {
                    continue;
                }
                if !e.file_type().map_err(io(&from))?.is_file() {
                    return Err(Error::Other(format!("{}: only files are expected in a store", from.display())));
                }
                // files are never changed in place, so the new store may share them
                let to = tmp.join(&fname);
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).map_err(io(&from))?;
                }
            }
        }
        write_features(&tmp.join(&feat_name), &items, dim)?;
        std::fs::write(tmp.join("images.jsonl"), jsonl_after(old_images.clone(), &records)?).map_err(io(&tmp))?;
        let caps = jsonl_after(old_captions.clone(), captions)?;
        if !caps.is_empty() {
            std::fs::write(tmp.join("captions.jsonl"), caps).map_err(io(&tmp))?;
        }
        // a last check of the whole new store's feature index
        FeatureStore::open_headers(&tmp)?;
        Ok(())
    };
    if let Err(e) = build() {
        std::fs::remove_dir_all(&tmp).ok();
        return Err(e);
    }
    if existing {
        let old = parent.join(format!(".{name}.old-{tag}"));
        std::fs::rename(out, &old).map_err(|e| {
            std::fs::remove_dir_all(&tmp).ok();
            io(out)(e)
        })?;
        if let Err(e) = std::fs::rename(&tmp, out) {
            std::fs::rename(&old, out).ok();
            std::fs::remove_dir_all(&tmp).ok();
            return Err(io(out)(e));
        }
        std::fs::remove_dir_all(&old).ok();
    } else {
        if out.exists() {
            std::fs::remove_dir(out).map_err(io(out))?;
        }
        if let Err(e) = std::fs::rename(&tmp, out) {
            std::fs::remove_dir_all(&tmp).ok();
            return Err(io(out)(e));
        }
    }
    Ok(records.len())
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

    fn tmp(name: &str) -> std::path::PathBuf {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("vlp-convert-{name}-{}-{t}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn b64(v: &[f32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytemuck::cast_slice(v))
    }

    /// A split's feature TSV and captions: images `ids`, `boxes` regions of width 3 each.
    fn split_files(d: &Path, name: &str, ids: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut tsv = String::new();
        let mut caps = String::new();
        for (i, id) in ids.iter().enumerate() {
            let f: Vec<f32> = (0..3 * (i + 1)).map(|k| k as f32 + i as f32 * 0.5).collect();
            tsv.push_str(&format!("{id}\t{}\t{}\n", i + 1, b64(&f)));
            caps.push_str(&format!("{{\"image_id\": \"{id}\", \"caption\": \"picture {id}\"}}\n"));
        }
        let (t, c) = (d.join(format!("{name}.tsv")), d.join(format!("{name}.jsonl")));
        std::fs::write(&t, tsv).unwrap();
        std::fs::write(&c, caps).unwrap();
        (t, c)
    }

    /// Every file of a directory, by name, with its bytes.
    fn snapshot(d: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn converting_a_second_split_adds_to_the_store_and_keeps_the_first() {
        let d = tmp("add");
        let store = d.join("store");
        let (t1, c1) = split_files(&d, "train", &["a", "b", "c"]);
        let (t2, c2) = split_files(&d, "val", &["x", "y"]);
        assert_eq!(convert(&t1, None, &c1, "train", &store).unwrap(), 3);
        let first = FeatureStore::open(&store).unwrap();
        let before: Vec<Vec<f32>> = ["a", "b", "c"].iter().map(|id| first.read(id).unwrap()).collect();
        drop(first);
        assert_eq!(convert(&t2, None, &c2, "val", &store).unwrap(), 2);
        assert!(store.join("features.safetensors").exists() && store.join("features-val.safetensors").exists());
        let imgs: Vec<Image> = crate::data::store::read_jsonl(&store.join("images.jsonl")).unwrap();
        assert_eq!(
            imgs.iter().map(|i| (i.id.as_str(), i.split.as_str())).collect::<Vec<_>>(),
            [("a", "train"), ("b", "train"), ("c", "train"), ("x", "val"), ("y", "val")]
        );
        let caps: Vec<Caption> = crate::data::store::read_jsonl(&store.join("captions.jsonl")).unwrap();
        assert_eq!(caps.len(), 5);
        let fs = FeatureStore::open(&store).unwrap();
        assert_eq!((fs.len(), fs.dim()), (5, 3));
        for (id, want) in ["a", "b", "c"].iter().zip(&before) {
            assert_eq!(&fs.read(id).unwrap(), want);
        }
        assert_eq!(fs.read("y").unwrap(), (0..6).map(|k| k as f32 + 0.5).collect::<Vec<_>>());
        // a second batch of the same split goes to a file of its own
        let (t3, c3) = split_files(&d, "val2", &["z"]);
        convert(&t3, None, &c3, "val", &store).unwrap();
        assert!(store.join("features-val-2.safetensors").exists());
        assert_eq!(FeatureStore::open(&store).unwrap().len(), 6);
        // nothing is left next to the store
        assert_eq!(std::fs::read_dir(&d).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".store")).count(), 0);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_failed_import_leaves_the_store_as_it_was() {
        let d = tmp("fail");
        let store = d.join("store");
        let (t1, c1) = split_files(&d, "train", &["a", "b"]);
        convert(&t1, None, &c1, "train", &store).unwrap();
        let before = snapshot(&store);
        // an image id the store has
        let (t2, c2) = split_files(&d, "val", &["x", "b"]);
        let e = convert(&t2, None, &c2, "val", &store).unwrap_err().to_string();
        assert!(e.contains("val.tsv:2") && e.contains("image 'b'") && e.contains("already"), "{e}");
        // another feature width
        std::fs::write(d.join("wide.tsv"), format!("w\t1\t{}\n", b64(&[1.0, 2.0, 3.0, 4.0]))).unwrap();
        std::fs::write(d.join("wide.jsonl"), "{\"image_id\": \"w\", \"caption\": \"wide\"}\n").unwrap();
        let e = convert(&d.join("wide.tsv"), None, &d.join("wide.jsonl"), "val", &store).unwrap_err().to_string();
        assert!(e.contains("wide.tsv:1") && e.contains("width 4") && e.contains("(3"), "{e}");
        // a bad row, an empty caption
        let (t3, c3) = split_files(&d, "val3", &["p", "q"]);
        std::fs::write(&t3, std::fs::read_to_string(&t3).unwrap() + "r\t1\t" + &b64(&[f32::NAN, 0.0, 0.0]) + "\n").unwrap();
        let e = convert(&t3, None, &c3, "val", &store).unwrap_err().to_string();
        assert!(e.contains("val3.tsv:3") && e.contains("non-finite"), "{e}");
        let (t4, c4) = split_files(&d, "val4", &["p", "q"]);
        std::fs::write(&c4, "{\"image_id\": \"p\", \"caption\": \"\"}\n").unwrap();
        let e = convert(&t4, None, &c4, "val", &store).unwrap_err().to_string();
        assert!(e.contains("val4.jsonl:1") && e.contains("empty caption"), "{e}");
        // features in the store that images.jsonl does not list: caught in the temporary store
        let (t5, c5) = split_files(&d, "val5", &["ghost"]);
        std::fs::rename(store.join("features.safetensors"), d.join("keep.safetensors")).unwrap();
        crate::data::store::write_features(&store.join("features.safetensors"), &[("a".into(), vec![0.0; 3]), ("b".into(), vec![0.0; 3])], 3).unwrap();
        crate::data::store::write_features(&store.join("features-extra.safetensors"), &[("ghost2".into(), vec![0.0; 3])], 3).unwrap();
        let with_extra = snapshot(&store);
        std::fs::write(&t5, format!("ghost2\t1\t{}\n", b64(&[1.0, 2.0, 3.0]))).unwrap();
        std::fs::write(&c5, "{\"image_id\": \"ghost2\", \"caption\": \"boo\"}\n").unwrap();
        let e = convert(&t5, None, &c5, "val", &store).unwrap_err().to_string();
        assert!(e.contains("val5.tsv:1") && e.contains("'ghost2'") && e.contains("already has features"), "{e}");
        assert_eq!(snapshot(&store), with_extra);
        std::fs::remove_file(store.join("features-extra.safetensors")).unwrap();
        std::fs::rename(d.join("keep.safetensors"), store.join("features.safetensors")).unwrap();
        assert_eq!(snapshot(&store), before);
        // not a store: a directory with other things in it
        std::fs::create_dir_all(d.join("other")).unwrap();
        std::fs::write(d.join("other/notes.txt"), "mine").unwrap();
        let e = convert(&t1, None, &c1, "train", &d.join("other")).unwrap_err().to_string();
        assert!(e.contains("not a store"), "{e}");
        assert_eq!(std::fs::read_to_string(d.join("other/notes.txt")).unwrap(), "mine");
        assert_eq!(std::fs::read_dir(&d).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count(), 0);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_repeated_key_an_empty_payload_and_nan_are_errors_naming_file_and_line() {
        let d = tmp("panics");
        let f = b64(&[1.0, 2.0]);
        std::fs::write(d.join("dup.tsv"), format!("101\t1\t{f}\n\n102\t1\t{f}\n101\t1\t{f}\n")).unwrap();
        std::fs::write(d.join("caps.jsonl"), "{\"image_id\": \"101\", \"caption\": \"x\"}\n").unwrap();
        let e = convert(&d.join("dup.tsv"), None, &d.join("caps.jsonl"), "train", &d.join("s1")).unwrap_err().to_string();
        assert!(e.contains("dup.tsv:4") && e.contains("'101'") && e.contains("repeats line 1"), "{e}");
        std::fs::write(d.join("empty.tsv"), format!("102\t1\t{f}\n101\t1\t\n")).unwrap();
        let e = convert(&d.join("empty.tsv"), None, &d.join("caps.jsonl"), "train", &d.join("s2")).unwrap_err().to_string();
        assert!(e.contains("empty.tsv:2") && e.contains("empty feature payload"), "{e}");
        std::fs::write(d.join("nan.tsv"), format!("101\t{{\"num_boxes\": 1, \"features\": \"{}\"}}\n", b64(&[1.0, f32::NAN]))).unwrap();
        let e = convert(&d.join("nan.tsv"), None, &d.join("caps.jsonl"), "train", &d.join("s3")).unwrap_err().to_string();
        assert!(e.contains("nan.tsv:1") && e.contains("non-finite"), "{e}");
        assert!(!d.join("s1").exists() && !d.join("s2").exists() && !d.join("s3").exists());
        std::fs::remove_dir_all(&d).ok();
    }
}
