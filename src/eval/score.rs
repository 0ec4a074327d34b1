//! `vlp-engine score`: metrics over answer and caption files, no model involved.
//!
//! `--task vqa --refs REFS --cands CANDS`: REFS maps each question id to its list of human answers
//! (`{"1": ["yes", "yes", ...]}`), or is a VQA annotations file (`{"annotations": [{"question_id",
//! "answers": [{"answer"}, ...]}, ...]}`); CANDS maps the same ids to one answer (`{"1": "yes"}`),
//! or is a VQA results file (`[{"question_id", "answer"}, ...]`). Ids may be numbers or strings.
//! Like the VQA API's `loadRes`, the two must cover the same questions: an id in one and not the
//! other, a repeated id or a malformed file is an error naming the file and the id or key.
//!
//! `--task caption`: REFS maps each image id to its reference captions (`{"391895": ["A man ...",
//! ...]}`, or pycocoevalcap's `[{"caption": ...}, ...]` per image), or is a COCO captions annotations file (`{"annotations": [{"image_id", "caption"},
//! ...]}`, several per image); CANDS maps the same ids to one caption, or is a COCO results list
//! (`[{"image_id", "caption"}, ...]`). The same rules for ids, and no image may have an empty
//! reference list or an empty caption. Prints pycocoevalcap's BLEU-1..4, ROUGE-L and CIDEr
//! ([`super::caption`]).
use super::caption::{self, CaptionScores};
use super::vqa;
use crate::data::formats::Ordered;
use crate::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// The `score --task vqa` result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VqaScore {
    /// The official evaluator's overall accuracy, percent (unrounded; vqaEval.py prints it
    /// rounded to 2 decimals).
    pub accuracy: f64,
    pub questions: usize,
}

fn err(file: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {msg}", file.display()))
}

fn read_text(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|e| err(file, e))
}

/// Reads a JSON object as its members in order; a repeated key is an error naming it.
fn read_members(file: &Path, text: &str) -> Result<Vec<(String, Value)>> {
    let Ordered(v) = serde_json::from_str(text).map_err(|e| err(file, format!("not a JSON object: {e}")))?;
    Ok(v)
}

/// What a task's files call their ids and values (in result lists and in messages).
struct Kind {
    /// The id field of a result list entry: `question_id`, `image_id`.
    id_key: &'static str,
    /// The value field: `answer`, `caption`.
    value_key: &'static str,
    /// What an id names: `question`, `image`.
    item: &'static str,
}
const VQA: Kind = Kind { id_key: "question_id", value_key: "answer", item: "question" };
const CAPTION: Kind = Kind { id_key: "image_id", value_key: "caption", item: "image" };

fn id_string(file: &Path, at: &str, key: &str, v: Option<&Value>) -> Result<String> {
    match v {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(x) => Err(err(file, format!("{at}.{key}: expected an integer or string id, found {x}"))),
        None => Err(err(file, format!("{at}: no {key}"))),
    }
}

fn answer_list(file: &Path, id: &str, v: &Value) -> Result<Vec<String>> {
    let Value::Array(a) = v else {
        return Err(err(file, format!("question '{id}': expected a list of human answers, found {v}")));
    };
    if a.is_empty() {
        return Err(err(file, format!("question '{id}': no human answers")));
    }
    a.iter()
        .enumerate()
        .map(|(k, x)| match x {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => match o.get("answer") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(err(file, format!("question '{id}': answers[{k}] has no string 'answer'"))),
            },
            _ => Err(err(file, format!("question '{id}': answers[{k}] is {x}, not a string"))),
        })
        .collect()
}

/// REFS: question id -> human answers, in file order.
pub fn read_refs(file: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let text = read_text(file)?;
    let members = read_members(file, &text)?;
    let out: Vec<(String, Vec<String>)> = match members.iter().find(|(k, _)| k == "annotations") {
        Some((_, Value::Array(anns))) => anns
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let at = format!("annotations[{i}]");
                let id = id_string(file, &at, VQA.id_key, a.get(VQA.id_key))?;
                let answers = a.get("answers").ok_or_else(|| err(file, format!("{at} (question '{id}'): no answers")))?;
                Ok((id.clone(), answer_list(file, &id, answers)?))
            })
            .collect::<Result<_>>()?,
        _ => members.iter().map(|(id, v)| Ok((id.clone(), answer_list(file, id, v)?))).collect::<Result<_>>()?,
    };
    let mut seen = std::collections::HashSet::new();
    if let Some((id, _)) = out.iter().find(|(id, _)| !seen.insert(id.clone())) {
        return Err(err(file, format!("question '{id}' appears twice")));
    }
    if out.is_empty() {
        return Err(err(file, "no questions"));
    }
    Ok(out)
}

/// CANDS: question id -> predicted answer.
pub fn read_cands(file: &Path) -> Result<HashMap<String, String>> {
    Ok(read_values(file, &VQA)?.into_iter().collect())
}

/// A candidates file of `kind`: a results list `[{id_key, value_key}]` or an object id -> value
/// string, as (id, value) in file order; a repeated id is an error.
fn read_values(file: &Path, kind: &Kind) -> Result<Vec<(String, String)>> {
    let text = read_text(file)?;
    let (item, value) = (kind.item, kind.value_key);
    let value_string = |id: &str, v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(err(file, format!("{item} '{id}': expected one {value} string, found {v}"))),
    };
    let pairs: Vec<(String, String)> = if text.trim_start().starts_with('[') {
        let v: Vec<Value> = serde_json::from_str(&text).map_err(|e| err(file, format!("not a JSON list of results: {e}")))?;
        v.iter()
            .enumerate()
            .map(|(i, r)| {
                let id = id_string(file, &format!("[{i}]"), kind.id_key, r.get(kind.id_key))?;
                let a = r.get(value).ok_or_else(|| err(file, format!("[{i}] ({item} '{id}'): no {value}")))?;
                Ok((id.clone(), value_string(&id, a)?))
            })
            .collect::<Result<_>>()?
    } else {
        read_members(file, &text)?.into_iter().map(|(id, v)| Ok((id.clone(), value_string(&id, &v)?))).collect::<Result<_>>()?
    };
    let mut seen = std::collections::HashSet::new();
    if let Some((id, _)) = pairs.iter().find(|(id, _)| !seen.insert(id.as_str())) {
        return Err(err(file, format!("{item} '{id}' appears twice")));
    }
    Ok(pairs)
}

/// A caption must hold a word; an empty one is a broken file, not a candidate to score.
fn nonempty_caption(file: &Path, id: &str, at: &str, c: String) -> Result<String> {
    if c.trim().is_empty() {
        return Err(err(file, format!("image '{id}': {at} is an empty caption")));
    }
    Ok(c)
}

/// REFS for `--task caption`: image id -> reference captions, images in order of first appearance.
pub fn read_caption_refs(file: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let text = read_text(file)?;
    let members = read_members(file, &text)?;
    let out: Vec<(String, Vec<String>)> = match members.iter().find(|(k, _)| k == "annotations") {
        Some((_, Value::Array(anns))) => {
            // a COCO annotations file: one entry per caption
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            let mut at: HashMap<String, usize> = HashMap::new();
            for (i, a) in anns.iter().enumerate() {
                let here = format!("annotations[{i}]");
                let id = id_string(file, &here, CAPTION.id_key, a.get(CAPTION.id_key))?;
                let c = match a.get("caption") {
                    Some(Value::String(s)) => nonempty_caption(file, &id, &here, s.clone())?,
                    Some(x) => return Err(err(file, format!("{here} (image '{id}'): caption is {x}, not a string"))),
                    None => return Err(err(file, format!("{here} (image '{id}'): no caption"))),
                };
                let k = *at.entry(id.clone()).or_insert_with(|| {
                    out.push((id.clone(), Vec::new()));
                    out.len() - 1
                });
                out[k].1.push(c);
            }
            out
        }
        Some((_, x)) => return Err(err(file, format!("'annotations' is {}, not a list", kind_of(x)))),
        None => members
            .into_iter()
            .map(|(id, v)| {
                let Value::Array(a) = v else {
                    return Err(err(file, format!("image '{id}': expected a list of reference captions, found {v}")));
                };
                if a.is_empty() {
                    return Err(err(file, format!("image '{id}': no reference captions")));
                }
                let caps = a
                    .into_iter()
                    .enumerate()
                    .map(|(k, x)| match x {
                        Value::String(s) => nonempty_caption(file, &id, &format!("captions[{k}]"), s),
                        // pycocoevalcap's own `gts` layout: [{"caption": ...}, ...]
                        Value::Object(mut o) => match o.remove("caption") {
                            Some(Value::String(s)) => nonempty_caption(file, &id, &format!("captions[{k}]"), s),
                            _ => Err(err(file, format!("image '{id}': captions[{k}] has no string 'caption'"))),
                        },
                        _ => Err(err(file, format!("image '{id}': captions[{k}] is {x}, not a string"))),
                    })
                    .collect::<Result<_>>()?;
                Ok((id, caps))
            })
            .collect::<Result<_>>()?,
    };
    if out.is_empty() {
        return Err(err(file, "no images"));
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// CANDS for `--task caption`: image id -> candidate caption.
pub fn read_caption_cands(file: &Path) -> Result<HashMap<String, String>> {
    read_values(file, &CAPTION)?.into_iter().map(|(id, c)| Ok((id.clone(), nonempty_caption(file, &id, "the candidate", c)?))).collect()
}

fn some_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = ids.collect();
    let shown: Vec<String> = v.iter().take(5).map(|s| format!("'{s}'")).collect();
    format!("{}{}", shown.join(", "), if v.len() > 5 { format!(" and {} more", v.len() - 5) } else { String::new() })
}

/// CANDS must answer exactly the ids of REFS.
fn same_ids<T>(refs: &Path, cands: &Path, item: &str, value: &str, ids: &[&str], c: &HashMap<String, T>) -> Result<()> {
    let known: std::collections::HashSet<&str> = ids.iter().copied().collect();
    let mut unknown: Vec<&str> = c.keys().map(|s| s.as_str()).filter(|id| !known.contains(id)).collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(err(cands, format!("unknown {item} id {} (not in {})", some_ids(unknown.into_iter()), refs.display())));
    }
    let missing: Vec<&str> = ids.iter().copied().filter(|id| !c.contains_key(*id)).collect();
    if !missing.is_empty() {
        return Err(err(cands, format!("no {value} for {item} id {} of {}", some_ids(missing.into_iter()), refs.display())));
    }
    Ok(())
}

/// `score --task vqa`: the official VQA accuracy of CANDS against REFS.
pub fn score_vqa(refs: &Path, cands: &Path) -> Result<VqaScore> {
    let r = read_refs(refs)?;
    let c = read_cands(cands)?;
    same_ids(refs, cands, "question", "answer", &r.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), &c)?;
    let accuracy = vqa::vqa_accuracy(r.iter().map(|(id, h)| (c[id].as_str(), h.as_slice())))?;
    Ok(VqaScore { accuracy, questions: r.len() })
}

/// `score --task caption`: pycocoevalcap's BLEU-1..4, ROUGE-L and CIDEr of CANDS against REFS.
pub fn score_caption(refs: &Path, cands: &Path) -> Result<CaptionScores> {
    Ok(score_caption_ids(refs, cands)?.1)
}

/// `score_caption`, and the image ids in REFS' order (that of the per-image scores).
fn score_caption_ids(refs: &Path, cands: &Path) -> Result<(Vec<String>, CaptionScores)> {
    let r = read_caption_refs(refs)?;
    let c = read_caption_cands(cands)?;
    same_ids(refs, cands, "image", "caption", &r.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), &c)?;
    let pairs: Vec<(String, String)> = r.iter().map(|(id, _)| (id.clone(), c[id].clone())).collect();
    let s = caption::caption_scores(&r, &pairs)?;
    Ok((r.into_iter().map(|(id, _)| id).collect(), s))
}

/// The `score` command: one JSON object for `task` (`vqa` or `caption`). With `per_image`
/// (captions only) it also writes image id -> {"ROUGE-L", "CIDEr"} there, in the references'
/// order, for paired tests between two systems (`tools/paired_bootstrap.py`).
pub fn score(task: &str, refs: &Path, cands: &Path, per_image: Option<&Path>) -> Result<Value> {
    let json = |v: std::result::Result<Value, serde_json::Error>| v.map_err(|e| Error::Other(e.to_string()));
    match (task, per_image) {
        ("vqa", None) => json(serde_json::to_value(score_vqa(refs, cands)?)),
        ("vqa", Some(_)) => Err(Error::Other("score: --per-image is for --task caption (per-image ROUGE-L and CIDEr)".into())),
        ("caption", _) => {
            let same = |a: &Path, b: &Path| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
            if let Some(out) = per_image.filter(|o| same(o, refs) || same(o, cands)) {
                return Err(err(out, "--per-image would overwrite an input file (--refs or --cands); name another file"));
            }
            let (ids, s) = score_caption_ids(refs, cands)?;
            if let Some(out) = per_image {
                let mut m = serde_json::Map::new();
                for (i, id) in ids.iter().enumerate() {
                    m.insert(id.clone(), serde_json::json!({"ROUGE-L": s.rouge_l_per_image[i], "CIDEr": s.cider_per_image[i]}));
                }
                let text = serde_json::to_string_pretty(&Value::Object(m)).map_err(|e| Error::Other(e.to_string()))?;
                crate::util::atomic_write(out, text.as_bytes()).map_err(|e| err(out, e))?;
            }
            json(serde_json::to_value(s))
        }
        (t, _) => Err(Error::Other(format!("score: unknown task '{t}' (expected vqa or caption)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats").join(name)
    }
    fn tmp(name: &str, body: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vlp-score-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }
    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn committed_refs_and_cands() {
        // vqa_refs.json / vqa_cands.json: one question per rule (see the per-question values in
        // vqa_cands_expected.json, worked out by hand from vqaEval.py's definition)
        let s = score_vqa(&fixture("vqa_refs.json"), &fixture("vqa_cands.json")).unwrap();
        let expected: HashMap<String, f64> = serde_json::from_str(&std::fs::read_to_string(fixture("vqa_cands_expected.json")).unwrap()).unwrap();
        let refs = read_refs(&fixture("vqa_refs.json")).unwrap();
        let cands = read_cands(&fixture("vqa_cands.json")).unwrap();
        for (id, h) in &refs {
            let a = vqa::question_accuracy(&cands[id], h).unwrap();
            assert!((a - expected[id]).abs() < 1e-12, "question {id}: {a} != {}", expected[id]);
        }
        let mean = 100.0 * refs.iter().map(|(id, _)| expected[id]).sum::<f64>() / refs.len() as f64;
        assert_eq!(s.questions, refs.len());
        assert!((s.accuracy - mean).abs() < 1e-9, "{} vs {mean}", s.accuracy);
        let v = score("vqa", &fixture("vqa_refs.json"), &fixture("vqa_cands.json"), None).unwrap();
        assert!(v["accuracy"].is_f64());
        // the official file layouts give the same number
        let s2 = score_vqa(&fixture("vqa_v2_annotations.json"), &fixture("vqa_results.json")).unwrap();
        assert_eq!(s2.questions, 4);
        // 1001 "red": 8 of 10 humans; 1002 "2": 1 of 10 ("three" stays a word: humans get punctuation only); 1003 "Yes": lower-cased to the 10 "yes"; 1004 "no": 4
        assert!((s2.accuracy - 100.0 * (1.0 + 0.3 + 1.0 + 1.0) / 4.0).abs() < 1e-9, "{}", s2.accuracy);
    }

    #[test]
    fn ids_and_malformed_files_are_clear_errors() {
        let refs = tmp("refs.json", r#"{"1": ["yes", "yes"], "2": ["no"]}"#);
        let m = msg(score_vqa(&refs, &tmp("c1.json", r#"{"1": "yes", "2": "no", "3": "x"}"#)));
        assert!(m.contains("c1.json") && m.contains("unknown question id '3'"), "{m}");
        let m = msg(score_vqa(&refs, &tmp("c2.json", r#"{"1": "yes"}"#)));
        assert!(m.contains("c2.json") && m.contains("no answer for question id '2'"), "{m}");
        let m = msg(score_vqa(&refs, &tmp("c3.json", r#"{"1": "yes", "2": 7}"#)));
        assert!(m.contains("c3.json") && m.contains("question '2'"), "{m}");
        let m = msg(score_vqa(&refs, &tmp("c4.json", r#"{"1": "yes", "1": "no", "2": "no"}"#)));
        assert!(m.contains("'1' appears twice"), "{m}");
        let m = msg(score_vqa(&refs, &tmp("c5.json", r#"{"1": "yes""#)));
        assert!(m.contains("c5.json") && m.contains("line 1"), "{m}");
        let m = msg(score_vqa(&refs, &tmp("c6.json", r#"[{"question_id": 1, "answer": "yes"}, {"answer": "no"}]"#)));
        assert!(m.contains("c6.json") && m.contains("[1]: no question_id"), "{m}");
        let m = msg(score_vqa(&tmp("r2.json", r#"{"1": "yes"}"#), &refs));
        assert!(m.contains("r2.json") && m.contains("question '1'"), "{m}");
        let m = msg(score_vqa(&tmp("r3.json", r#"{"1": []}"#), &refs));
        assert!(m.contains("r3.json") && m.contains("no human answers"), "{m}");
        let m = msg(score_vqa(&tmp("r4.json", r#"{}"#), &refs));
        assert!(m.contains("r4.json") && m.contains("no questions"), "{m}");
        let m = msg(score_vqa(&tmp("r5.json", r#"{"annotations": [{"question_id": 4}]}"#), &refs));
        assert!(m.contains("r5.json") && m.contains("annotations[0] (question '4'): no answers"), "{m}");
        let missing = refs.with_file_name("missing.json");
        assert!(msg(score_vqa(&missing, &refs)).contains("missing.json"));
        assert!(score("gqa", &refs, &refs, None).is_err());
        assert!(msg(score("vqa", &refs, &refs, Some(&refs.with_file_name("p.json")))).contains("--per-image is for --task caption"));
        let before = std::fs::read_to_string(&refs).unwrap();
        assert!(msg(score("caption", &refs, &refs, Some(&refs))).contains("would overwrite an input file"));
        assert_eq!(std::fs::read_to_string(&refs).unwrap(), before);
        // numbers and strings name the same id
        let s = score_vqa(&refs, &tmp("c7.json", r#"[{"question_id": 1, "answer": "yes"}, {"question_id": "2", "answer": "no"}]"#)).unwrap();
        // "1": each of the 2 answers leaves 1 match: 1/3; "2": 1 answer leaves none: 0
        assert!((s.accuracy - 100.0 * (1.0 / 3.0 + 0.0) / 2.0).abs() < 1e-12, "{}", s.accuracy);
    }
}
