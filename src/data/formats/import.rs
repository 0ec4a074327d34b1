//! Appending imported datasets to an existing store (`vlp-engine import`): each task's records go
//! to their own JSON-lines file next to images.jsonl, one record per line, appended atomically
//! (the whole file rewritten through a temporary file and a rename, so a failed import leaves it
//! as it was):
//! - `vqa.jsonl`: `image_id`, `question`, `answer` (the keyed multiple-choice answer, absent for
//!   test splits), `question_id`, `split`, `answers` (the human answers as given, for the official
//!   evaluator), `targets` (`[answer, soft score]` pairs, all answers; training keeps those in the
//!   vocabulary); and `vqa_answers.json`, the answer vocabulary of the store's `train` records
//!   (`{"min_answer_count", "answers"}`), rewritten whenever a train split is imported;
//! - `gqa.jsonl`: `image_id`, `question`, `answer`, `question_id`, `split`;
//! - `nlvr2.jsonl`: `left`, `right`, `statement`, `label`, `identifier`, `split`;
//! - `captions.jsonl`: `image_id`, `caption` (COCO).
//!
//! The first fields of each record are those of the synthetic world's records
//! ([`crate::data::synth::Question`], [`crate::data::synth::Statement`],
//! [`crate::data::synth::Caption`]), so readers of those read these. Every record's images must
//! be in the store's images.jsonl (or, with `skip_unknown_images`, records naming other images
//! are dropped and counted); a split already in the file is an error, as are captions for images
//! that already have some.
use super::{bad, coco, gqa, nlvr2, vqa};
use crate::data::synth::Caption;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqaRecord {
    pub image_id: String,
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    pub question_id: String,
    pub split: String,
    #[serde(default)]
    pub answers: Vec<String>,
    #[serde(default)]
    pub targets: Vec<(String, f32)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GqaRecord {
    pub image_id: String,
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    pub question_id: String,
    pub split: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nlvr2Record {
    pub left: String,
    pub right: String,
    pub statement: String,
    pub label: bool,
    pub identifier: String,
    pub split: String,
}

/// `vqa_answers.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerVocab {
    pub min_answer_count: usize,
    pub answers: Vec<String>,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImportReport {
    /// The file appended to.
    pub file: PathBuf,
    pub records: usize,
    /// Records dropped because their image is not in the store (with `skip_unknown_images`).
    pub skipped: usize,
    /// Size of the rewritten answer vocabulary (VQA train splits).
    pub vocab: Option<usize>,
}

/// Which COCO field names an image in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CocoKey {
    /// The integer id (`391895`), as Oscar's retrieval TSVs.
    Id,
    /// The file name's stem (`COCO_val2014_000000391895`), as Oscar's captioning TSVs.
    Stem,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct SplitOnly {
    #[serde(default)]
    split: Option<String>,
}

fn store_images(store: &Path) -> Result<HashSet<String>> {
    let p = store.join("images.jsonl");
    if !p.is_file() {
        return Err(bad(store, "not a store (no images.jsonl); import images and features first (`vlp-engine convert`)"));
    }
    Ok(crate::data::store::read_jsonl::<IdOnly>(&p)?.into_iter().map(|i| i.id).collect())
}

fn check_split(file: &Path, split: &str) -> Result<()> {
    if split.is_empty() {
        return Err(Error::Other("import: empty split name".into()));
    }
    if file.is_file() {
        for (line, r) in crate::data::store::read_jsonl_lines::<SplitOnly>(file)? {
            if r.split.as_deref() == Some(split) {
                return Err(bad(file, format!("line {line}: split '{split}' is already imported")));
            }
        }
    }
    Ok(())
}

/// Appends `records` to the JSON-lines `file` atomically (temporary file, then rename).
pub fn append_jsonl<T: Serialize>(file: &Path, records: &[T]) -> Result<()> {
    let mut body = if file.is_file() { std::fs::read_to_string(file).map_err(|e| bad(file, e))? } else { String::new() };
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    for r in records {
        body.push_str(&serde_json::to_string(r).map_err(|e| bad(file, e))?);
        body.push('\n');
    }
    crate::util::atomic_write(file, body.as_bytes()).map_err(|e| bad(file, e))
}

/// Keeps the items whose images are all in the store; otherwise an error naming the first
/// unknown image (and how many items have one), or, with `skip`, drops them and counts.
fn known<T>(store: &Path, items: Vec<T>, images: impl Fn(&T) -> Vec<String>, what: impl Fn(&T) -> String, skip: bool) -> Result<(Vec<T>, usize)> {
    let have = store_images(store)?;
    let (mut keep, mut dropped, mut first) = (Vec::with_capacity(items.len()), 0, None);
    for it in items {
        match images(&it).into_iter().find(|i| !have.contains(i)) {
            None => keep.push(it),
            Some(im) => {
                dropped += 1;
                first.get_or_insert_with(|| format!("{} names image '{im}'", what(&it)));
            }
        }
    }
    if keep.is_empty() {
        return Err(bad(
            &store.join("images.jsonl"),
            format!("none of the {dropped} records has its images in the store ({} not in it)", first.unwrap_or_default()),
        ));
    }
    if dropped > 0 && !skip {
        return Err(bad(
            &store.join("images.jsonl"),
            format!("{} not in the store ({dropped} records have such images; skip them with --skip-unknown-images)", first.unwrap()),
        ));
    }
    Ok((keep, dropped))
}

/// Imports VQA v2 questions (+ annotations) as split `split`; a `train` split also rewrites
/// `vqa_answers.json` from all the store's train records.
pub fn import_vqa(
    store: &Path,
    questions: &Path,
    annotations: Option<&Path>,
    split: &str,
    min_answer_count: usize,
    skip_unknown_images: bool,
) -> Result<ImportReport> {
    let file = store.join("vqa.jsonl");
    check_split(&file, split)?;
    let qs = vqa::read_vqa_v2(questions, annotations)?;
    let (qs, skipped) =
        known(store, qs, |q| vec![q.image_id.to_string()], |q| format!("{}: question {}", questions.display(), q.question_id), skip_unknown_images)?;
    let recs: Vec<VqaRecord> = qs
        .iter()
        .map(|q| VqaRecord {
            image_id: q.image_id.to_string(),
            question: q.question.clone(),
            answer: q.label(),
            question_id: q.question_id.to_string(),
            split: split.to_string(),
            answers: q.answers.clone(),
            targets: q.soft_targets(),
        })
        .collect();
    append_jsonl(&file, &recs)?;
    let mut vocab = None;
    if split == "train" {
        let all: Vec<VqaRecord> = crate::data::store::read_jsonl(&file)?;
        let labels: Vec<(&str, &str)> =
            all.iter().filter(|r| r.split == "train").filter_map(|r| Some((r.question_id.as_str(), r.answer.as_deref()?))).collect();
        let answers = super::answer_vocab(labels, min_answer_count);
        vocab = Some(answers.len());
        let v = AnswerVocab { min_answer_count, answers };
        let p = store.join("vqa_answers.json");
        crate::util::atomic_write(&p, serde_json::to_string_pretty(&v).map_err(|e| bad(&p, e))?.as_bytes()).map_err(|e| bad(&p, e))?;
    }
    Ok(ImportReport { file, records: recs.len(), skipped, vocab })
}

/// Imports a GQA questions file as split `split`.
pub fn import_gqa(store: &Path, questions: &Path, split: &str, skip_unknown_images: bool) -> Result<ImportReport> {
    let file = store.join("gqa.jsonl");
    check_split(&file, split)?;
    let qs = gqa::read_gqa(questions)?;
    let (qs, skipped) =
        known(store, qs, |q| vec![q.image_id.clone()], |q| format!("{}: question '{}'", questions.display(), q.question_id), skip_unknown_images)?;
    let recs: Vec<GqaRecord> = qs
        .into_iter()
        .map(|q| GqaRecord { image_id: q.image_id, question: q.question, answer: q.answer, question_id: q.question_id, split: split.to_string() })
        .collect();
    append_jsonl(&file, &recs)?;
    Ok(ImportReport { file, records: recs.len(), skipped, vocab: None })
}

/// Imports an NLVR2 JSON-lines file as split `split`.
pub fn import_nlvr2(store: &Path, examples: &Path, split: &str, skip_unknown_images: bool) -> Result<ImportReport> {
    let file = store.join("nlvr2.jsonl");
    check_split(&file, split)?;
    let v = nlvr2::read_nlvr2(examples)?;
    let (v, skipped) =
        known(store, v, |e| vec![e.left.clone(), e.right.clone()], |e| format!("{}: example '{}'", examples.display(), e.identifier), skip_unknown_images)?;
    let recs: Vec<Nlvr2Record> = v
        .into_iter()
        .map(|e| Nlvr2Record { left: e.left, right: e.right, statement: e.sentence, label: e.label, identifier: e.identifier, split: split.to_string() })
        .collect();
    append_jsonl(&file, &recs)?;
    Ok(ImportReport { file, records: recs.len(), skipped, vocab: None })
}

/// Imports COCO captions into captions.jsonl, naming images by `key`.
pub fn import_coco(store: &Path, captions: &Path, key: CocoKey, skip_unknown_images: bool) -> Result<ImportReport> {
    let file = store.join("captions.jsonl");
    let c = coco::read_coco_captions(captions)?;
    let names: std::collections::HashMap<u64, String> = c
        .images
        .iter()
        .map(|i| {
            (
                i.id,
                match key {
                    CocoKey::Id => i.id.to_string(),
                    CocoKey::Stem => i.stem().to_string(),
                },
            )
        })
        .collect();
    let caps: Vec<Caption> = c.captions.iter().map(|x| Caption { image_id: names[&x.image_id].clone(), caption: x.caption.clone() }).collect();
    let (caps, skipped) = known(store, caps, |x| vec![x.image_id.clone()], |_| format!("{}: a caption", captions.display()), skip_unknown_images)?;
    if file.is_file() {
        let mine: HashSet<&str> = caps.iter().map(|x| x.image_id.as_str()).collect();
        for (line, x) in crate::data::store::read_jsonl_lines::<Caption>(&file)? {
            if mine.contains(x.image_id.as_str()) {
                return Err(bad(&file, format!("line {line}: image '{}' already has captions; {} would add more", x.image_id, captions.display())));
            }
        }
    }
    append_jsonl(&file, &caps)?;
    Ok(ImportReport { file, records: caps.len(), skipped, vocab: None })
}

/// `vlp-engine import`: which dataset, from which files, into which store.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub what: ImportWhat,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImportWhat {
    /// VQA v2: the official questions JSON and, except for test splits, its annotations JSON.
    Vqa {
        #[arg(long)]
        questions: PathBuf,
        #[arg(long)]
        annotations: Option<PathBuf>,
        #[arg(long)]
        split: String,
        /// Answer vocabulary: multiple-choice answers of at least this many train questions.
        #[arg(long, default_value_t = 9)]
        min_answer_count: usize,
        #[command(flatten)]
        to: Target,
    },
    /// GQA: a questions JSON (question id -> {imageId, question, answer}).
    Gqa {
        #[arg(long)]
        questions: PathBuf,
        #[arg(long)]
        split: String,
        #[command(flatten)]
        to: Target,
    },
    /// NLVR2: a JSON-lines file (sentence, label, identifier); images `<pair>-img0`, `<pair>-img1`.
    Nlvr2 {
        #[arg(long)]
        examples: PathBuf,
        #[arg(long)]
        split: String,
        #[command(flatten)]
        to: Target,
    },
    /// COCO captions JSON into captions.jsonl (images keep their store split).
    Coco {
        #[arg(long)]
        captions: PathBuf,
        /// Name images by their integer id or by the file name's stem.
        #[arg(long, default_value = "id", value_parser = ["id", "stem"])]
        image_key: String,
        #[command(flatten)]
        to: Target,
    },
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// An existing store (with images.jsonl).
    #[arg(long)]
    pub out: PathBuf,
    /// Drop records whose images are not in the store instead of failing.
    #[arg(long)]
    pub skip_unknown_images: bool,
}

/// Runs `vlp-engine import`.
pub fn run(a: &ImportArgs) -> Result<ImportReport> {
    match &a.what {
        ImportWhat::Vqa { questions, annotations, split, min_answer_count, to } => {
            import_vqa(&to.out, questions, annotations.as_deref(), split, *min_answer_count, to.skip_unknown_images)
        }
        ImportWhat::Gqa { questions, split, to } => import_gqa(&to.out, questions, split, to.skip_unknown_images),
        ImportWhat::Nlvr2 { examples, split, to } => import_nlvr2(&to.out, examples, split, to.skip_unknown_images),
        ImportWhat::Coco { captions, image_key, to } => {
            import_coco(&to.out, captions, if image_key == "stem" { CocoKey::Stem } else { CocoKey::Id }, to.skip_unknown_images)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;
    use crate::data::synth::{Question, Statement};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: ImportArgs,
    }

    #[test]
    fn command_line() {
        let s = store("cli", &["42", "7"]);
        let (q, a) = (fixture("vqa_v2_questions.json"), fixture("vqa_v2_annotations.json"));
        let argv = [
            "x",
            "vqa",
            "--questions",
            q.to_str().unwrap(),
            "--annotations",
            a.to_str().unwrap(),
            "--split",
            "train",
            "--min-answer-count",
            "1",
            "--out",
            s.to_str().unwrap(),
        ];
        let r = run(&Cli::parse_from(argv).a).unwrap();
        assert_eq!((r.records, r.vocab), (4, Some(3)));
        let c = fixture("coco_captions.json");
        let argv = ["x", "coco", "--captions", c.to_str().unwrap(), "--image-key", "stem", "--out", s.to_str().unwrap(), "--skip-unknown-images"];
        assert!(run(&Cli::parse_from(argv).a).unwrap_err().to_string().contains("none of the 4 records"));
        assert!(Cli::try_parse_from(["x", "gqa", "--questions", "q.json", "--out", "s"]).is_err());
        // --split is required
    }

    fn store(name: &str, ids: &[&str]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vlp-import-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let lines: String = ids
            .iter()
            .map(|i| format!("{{\"id\": \"{i}\", \"split\": \"train\", \"width\": 640, \"height\": 480, \"objects\": [], \"tags\": \"\"}}\n"))
            .collect();
        std::fs::write(d.join("images.jsonl"), lines).unwrap();
        d
    }

    #[test]
    fn vqa_records_and_vocabulary() {
        let s = store("vqa", &["42", "7"]);
        let r = import_vqa(&s, &fixture("vqa_v2_questions.json"), Some(&fixture("vqa_v2_annotations.json")), "train", 2, false).unwrap();
        assert_eq!((r.records, r.skipped, r.vocab), (4, 0, Some(1)));
        let recs: Vec<VqaRecord> = crate::data::store::read_jsonl(&s.join("vqa.jsonl")).unwrap();
        assert_eq!(recs[1].answer.as_deref(), Some("3"));
        assert_eq!(recs[1].targets, vec![("3".to_string(), 1.0), ("2".into(), 0.3)]);
        assert_eq!(recs[1].answers.len(), 10);
        // the synthetic world's reader reads them
        let q: Vec<Question> = crate::data::store::read_jsonl(&s.join("vqa.jsonl")).unwrap();
        assert_eq!((q[0].image_id.as_str(), q[0].answer.as_str()), ("42", "red"));
        let v: AnswerVocab = serde_json::from_str(&std::fs::read_to_string(s.join("vqa_answers.json")).unwrap()).unwrap();
        assert_eq!(v, AnswerVocab { min_answer_count: 2, answers: vec!["yes".into()] });
        // a second split appends; the same split again is an error and leaves the file alone
        let before = std::fs::read_to_string(s.join("vqa.jsonl")).unwrap();
        let m = import_vqa(&s, &fixture("vqa_v2_questions.json"), None, "train", 2, false).unwrap_err().to_string();
        assert!(m.contains("split 'train' is already imported"), "{m}");
        assert_eq!(std::fs::read_to_string(s.join("vqa.jsonl")).unwrap(), before);
        let r = import_vqa(&s, &fixture("vqa_v2_questions.json"), None, "test", 2, false).unwrap();
        assert_eq!((r.records, r.vocab), (4, None));
        let recs: Vec<VqaRecord> = crate::data::store::read_jsonl(&s.join("vqa.jsonl")).unwrap();
        assert_eq!(recs.len(), 8);
        assert!(recs[4..].iter().all(|r| r.split == "test" && r.answer.is_none() && r.targets.is_empty()));
    }

    #[test]
    fn unknown_images_are_errors_or_skipped() {
        let s = store("unknown", &["42"]);
        let m = import_vqa(&s, &fixture("vqa_v2_questions.json"), None, "val", 9, false).unwrap_err().to_string();
        assert!(m.contains("question 1003 names image '7' not in the store (2 records"), "{m}");
        assert!(!s.join("vqa.jsonl").exists());
        let r = import_vqa(&s, &fixture("vqa_v2_questions.json"), None, "val", 9, true).unwrap();
        assert_eq!((r.records, r.skipped), (2, 2));
        let m = import_gqa(&s, &fixture("gqa_questions.json"), "val", true).unwrap_err().to_string();
        assert!(m.contains("none of the 3 records has its images in the store"), "{m}");
        assert!(!s.join("gqa.jsonl").exists());
        let m = import_gqa(&std::env::temp_dir().join("vlp-no-such-store"), &fixture("gqa_questions.json"), "val", false).unwrap_err().to_string();
        assert!(m.contains("not a store"), "{m}");
    }

    #[test]
    fn gqa_nlvr2_coco_records() {
        let s = store("others", &["2354786", "2375429", "2368326", "dev-850-0-img0", "dev-850-0-img1", "dev-121-3-img0", "dev-121-3-img1", "391895", "522418"]);
        let r = import_gqa(&s, &fixture("gqa_questions.json"), "testdev", false).unwrap();
        assert_eq!(r.records, 3);
        let g: Vec<Question> = crate::data::store::read_jsonl(&s.join("gqa.jsonl")).unwrap();
        assert_eq!((g[0].image_id.as_str(), g[0].answer.as_str()), ("2354786", "yes"));
        let r = import_nlvr2(&s, &fixture("nlvr2_dev.json"), "dev", false).unwrap();
        assert_eq!(r.records, 3);
        let st: Vec<Statement> = crate::data::store::read_jsonl(&s.join("nlvr2.jsonl")).unwrap();
        assert_eq!((st[0].left.as_str(), st[0].right.as_str(), st[0].label), ("dev-850-0-img0", "dev-850-0-img1", false));
        let r = import_coco(&s, &fixture("coco_captions.json"), CocoKey::Id, false).unwrap();
        assert_eq!(r.records, 4);
        let c: Vec<Caption> = crate::data::store::read_jsonl(&s.join("captions.jsonl")).unwrap();
        assert_eq!(c[1], Caption { image_id: "522418".into(), caption: "A woman wearing a net on her head cutting a cake.".into() });
        let m = import_coco(&s, &fixture("coco_captions.json"), CocoKey::Id, false).unwrap_err().to_string();
        assert!(m.contains("already has captions"), "{m}");
        let m = import_coco(&s, &fixture("coco_captions.json"), CocoKey::Stem, false).unwrap_err().to_string();
        assert!(m.contains("names image 'COCO_val2014_000000391895'"), "{m}");
    }
}
