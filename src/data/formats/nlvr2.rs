//! NLVR2's JSON lines (lil-lab/nlvr, `nlvr2/data/{train,dev,test1}.json`): one example per line
//! with `sentence`, `label` ("True" / "False") and `identifier` (`split-set_id-pair_id-sentence_id`,
//! e.g. `dev-850-0-0`), plus fields we ignore (`left_url`, `writer`, `synset`, ...). The two
//! images are named as the dataset's README says: identifier `split-set_id-pair_id-sentence_id`
//! → left `split-set_id-pair_id-img0`, right `split-set_id-pair_id-img1` (the files add `.png`).
use super::bad;
use crate::Result;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct RawExample {
    identifier: String,
    sentence: String,
    label: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Nlvr2Example {
    pub identifier: String,
    pub sentence: String,
    pub label: bool,
    /// Left image id (`…-img0`).
    pub left: String,
    /// Right image id (`…-img1`).
    pub right: String,
}

/// The (left, right) image ids of an NLVR2 identifier; an identifier not of the form
/// `split-set_id-pair_id-sentence_id` (pair and sentence ids numbers) is an error message.
pub fn image_ids(identifier: &str) -> std::result::Result<(String, String), String> {
    let parts: Vec<&str> = identifier.split('-').collect();
    let n = parts.len();
    if n < 4 || parts.iter().any(|p| p.is_empty()) || !parts[n - 2..].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("identifier '{identifier}' is not split-set_id-pair_id-sentence_id"));
    }
    let stem = parts[..n - 1].join("-");
    Ok((format!("{stem}-img0"), format!("{stem}-img1")))
}

/// Reads an NLVR2 JSON-lines file. Errors name the file and line: bad JSON or a missing field,
/// a label other than "True" / "False" (any case), a malformed identifier, an identifier twice,
/// no examples.
pub fn read_nlvr2(file: &Path) -> Result<Vec<Nlvr2Example>> {
    let text = std::fs::read_to_string(file).map_err(|e| bad(file, e))?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let r: RawExample = serde_json::from_str(line).map_err(|e| bad(file, format!("line {n}: {e}")))?;
        let label = match r.label.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(bad(file, format!("line {n}: label '{}' is neither True nor False", r.label))),
        };
        let (left, right) = image_ids(&r.identifier).map_err(|e| bad(file, format!("line {n}: {e}")))?;
        if let Some(m) = seen.insert(r.identifier.clone(), n) {
            return Err(bad(file, format!("line {n}: identifier '{}' repeats line {m}", r.identifier)));
        }
        out.push(Nlvr2Example { identifier: r.identifier, sentence: r.sentence, label, left, right });
    }
    if out.is_empty() {
        return Err(bad(file, "no examples (empty file)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{fixture, tmp_file};
    use super::*;

    #[test]
    fn reads_examples_and_names_images_as_the_dataset() {
        let v = read_nlvr2(&fixture("nlvr2_dev.json")).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].identifier, "dev-850-0-0");
        assert_eq!((v[0].left.as_str(), v[0].right.as_str()), ("dev-850-0-img0", "dev-850-0-img1"));
        assert!(!v[0].label && v[1].label);
        assert_eq!((v[1].left.as_str(), v[1].right.as_str()), ("dev-850-0-img0", "dev-850-0-img1")); // the pair's second sentence
        assert_eq!(v[2].right, "dev-121-3-img1");
        assert_eq!(image_ids("test1-0-1-0").unwrap(), ("test1-0-1-img0".to_string(), "test1-0-1-img1".to_string()));
        assert!(image_ids("dev-850-0").is_err() && image_ids("dev-850-x-0").is_err() && image_ids("dev--0-0").is_err());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = |body: &str| read_nlvr2(&tmp_file("nlvr2_bad.json", body)).unwrap_err().to_string();
        let ok = r#"{"identifier": "dev-1-0-0", "sentence": "s", "label": "True"}"#;
        let m = e(&format!("{ok}\n{{\"identifier\": \"dev-1-0-1\", \"label\": \"True\"}}\n"));
        assert!(m.contains("nlvr2_bad.json") && m.contains("line 2") && m.contains("sentence"), "{m}");
        let m = e(&format!("{ok}\n\n{}", ok.replace("True", "yes").replace("-0-0", "-0-1")));
        assert!(m.contains("line 3") && m.contains("label 'yes'"), "{m}");
        let m = e(&ok.replace("dev-1-0-0", "dev-1-0"));
        assert!(m.contains("line 1") && m.contains("identifier 'dev-1-0'"), "{m}");
        let m = e(&format!("{ok}\n{ok}"));
        assert!(m.contains("line 2") && m.contains("repeats line 1"), "{m}");
        assert!(e("{not json").contains("line 1"));
        assert!(e("\n").contains("no examples"));
    }
}
