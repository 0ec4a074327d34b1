//! COCO's captions JSON (`captions_{train,val}2014.json`): `{"images": [{"id", "file_name",
//! "width", "height", ...}], "annotations": [{"image_id", "id", "caption"}], ...}`. Captions are
//! trimmed (COCO's often end in a space or newline).
use super::{bad, read_json};
use crate::Result;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct RawFile {
    images: Vec<RawImage>,
    annotations: Vec<RawCaption>,
}

#[derive(Deserialize)]
struct RawImage {
    id: u64,
    file_name: String,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
}

#[derive(Deserialize)]
struct RawCaption {
    image_id: u64,
    caption: String,
    #[serde(default)]
    id: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl CocoImage {
    /// The file name without its extension (`COCO_val2014_000000391895`), the key Oscar's
    /// captioning TSVs use; retrieval's use the integer id.
    pub fn stem(&self) -> &str {
        Path::new(&self.file_name).file_stem().and_then(|s| s.to_str()).unwrap_or(&self.file_name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CocoCaption {
    pub image_id: u64,
    pub id: Option<u64>,
    pub caption: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CocoCaptions {
    pub images: Vec<CocoImage>,
    pub captions: Vec<CocoCaption>,
}

/// Reads a COCO captions file. Errors name the file and the key: syntax and missing fields (with
/// line and column), an image id twice, a caption of an image not in `images`, an empty caption,
/// no images.
pub fn read_coco_captions(file: &Path) -> Result<CocoCaptions> {
    let f: RawFile = read_json(file)?;
    let mut at = HashMap::new();
    for (i, im) in f.images.iter().enumerate() {
        if let Some(j) = at.insert(im.id, i) {
            return Err(bad(file, format!("images[{i}]: id {} repeats images[{j}]", im.id)));
        }
    }
    if f.images.is_empty() {
        return Err(bad(file, "no images"));
    }
    let mut captions = Vec::with_capacity(f.annotations.len());
    for (k, a) in f.annotations.into_iter().enumerate() {
        if !at.contains_key(&a.image_id) {
            return Err(bad(file, format!("annotations[{k}]: image_id {} is not in images", a.image_id)));
        }
        let caption = a.caption.trim().to_string();
        if caption.is_empty() {
            return Err(bad(file, format!("annotations[{k}]: empty caption (image_id {})", a.image_id)));
        }
        captions.push(CocoCaption { image_id: a.image_id, id: a.id, caption });
    }
    let images = f.images.into_iter().map(|i| CocoImage { id: i.id, file_name: i.file_name, width: i.width, height: i.height }).collect();
    Ok(CocoCaptions { images, captions })
}

#[cfg(test)]
mod tests {
    use super::super::{fixture, tmp_file};
    use super::*;

    #[test]
    fn reads_images_and_captions() {
        let c = read_coco_captions(&fixture("coco_captions.json")).unwrap();
        assert_eq!(c.images.len(), 2);
        assert_eq!(c.images[0].id, 391895);
        assert_eq!(c.images[0].stem(), "COCO_val2014_000000391895");
        assert_eq!((c.images[1].width, c.images[1].height), (Some(640), Some(480)));
        assert_eq!(c.captions.len(), 4);
        assert_eq!(
            c.captions[0],
            CocoCaption { image_id: 391895, id: Some(770337), caption: "A man with a red helmet on a small moped on a dirt road.".into() }
        );
        assert_eq!(c.captions.iter().filter(|x| x.image_id == 522418).count(), 2);
    }

    #[test]
    fn malformed_files_name_file_and_key() {
        let e = |body: &str| read_coco_captions(&tmp_file("coco_bad.json", body)).unwrap_err().to_string();
        let im = r#"{"id": 1, "file_name": "a.jpg"}"#;
        let m = e(&format!(r#"{{"images": [{im}], "annotations": [{{"image_id": 2, "caption": "c"}}]}}"#));
        assert!(m.contains("coco_bad.json") && m.contains("annotations[0]: image_id 2 is not in images"), "{m}");
        let m = e(&format!(r#"{{"images": [{im}, {im}], "annotations": []}}"#));
        assert!(m.contains("images[1]: id 1 repeats images[0]"), "{m}");
        let m = e(&format!("{{\"images\": [{im}],\n \"annotations\": [{{\"image_id\": 1}}]}}"));
        assert!(m.contains("missing field `caption`") && m.contains("line 2"), "{m}");
        let m = e(&format!(r#"{{"images": [{im}], "annotations": [{{"image_id": 1, "caption": "  "}}]}}"#));
        assert!(m.contains("empty caption"), "{m}");
        assert!(e(r#"{"annotations": []}"#).contains("missing field `images`"));
        assert!(e(r#"{"images": [], "annotations": []}"#).contains("no images"));
    }
}
