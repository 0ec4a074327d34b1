//! VQA v2's official files (visualqa.org): `v2_OpenEnded_mscoco_<split>_questions.json`
//! (`{"questions": [{"question_id", "image_id", "question"}, ...], ...}`) and
//! `v2_mscoco_<split>_annotations.json` (`{"annotations": [{"question_id", "image_id",
//! "multiple_choice_answer", "answers": [{"answer", "answer_confidence", "answer_id"} × 10],
//! "question_type", "answer_type"}, ...]}`; absent for test splits).
//!
//! Soft targets as Oscar's data has them (bottom-up-attention's `compute_softscore.py`): each
//! human answer keyed by [`answer_key`], its count among the humans scored by [`soft_score`]
//! (1 → 0.3, 2 → 0.6, 3 → 0.9, ≥ 4 → 1.0). The answer vocabulary is the keyed
//! `multiple_choice_answer`s of the training questions, kept when seen for at least
//! `min_answer_count` questions (9 in bottom-up-attention, giving Oscar's 3,129 answers over
//! train + val). compute_softscore.py counts the raw human answers against keyed vocabulary
//! entries (its docstring asks for keyed answers, its main never keys them); we key both.
use super::{bad, read_json};
use crate::eval::vqa::answer_key;
#[cfg(doc)]
use crate::eval::vqa::soft_score;
use crate::Result;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct QuestionsFile {
    questions: Vec<RawQuestion>,
}

#[derive(Deserialize)]
struct RawQuestion {
    question_id: u64,
    image_id: u64,
    question: String,
}

#[derive(Deserialize)]
struct AnnotationsFile {
    annotations: Vec<RawAnnotation>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    question_id: u64,
    image_id: u64,
    multiple_choice_answer: String,
    answers: Vec<RawAnswer>,
    #[serde(default)]
    answer_type: Option<String>,
}

#[derive(Deserialize)]
struct RawAnswer {
    answer: String,
}

/// One VQA v2 question with its annotation, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct VqaQuestion {
    pub question_id: u64,
    pub image_id: u64,
    pub question: String,
    /// The human answers as given (usually 10; empty without annotations).
    pub answers: Vec<String>,
    /// The most common human answer, as given (None without annotations).
    pub multiple_choice_answer: Option<String>,
    pub answer_type: Option<String>,
}

impl VqaQuestion {
    /// Soft targets: each distinct keyed human answer with its soft score, highest first.
    pub fn soft_targets(&self) -> Vec<(String, f32)> {
        crate::eval::vqa::soft_targets(&self.answers)
    }

    /// [`Self::soft_targets`] restricted to a vocabulary (answers outside it get no target).
    pub fn soft_targets_in(&self, vocab: &std::collections::HashSet<String>) -> Vec<(String, f32)> {
        self.soft_targets().into_iter().filter(|(a, _)| vocab.contains(a)).collect()
    }

    /// The keyed multiple-choice answer: the hard label, in the vocabulary's terms.
    pub fn label(&self) -> Option<String> {
        self.multiple_choice_answer.as_deref().map(answer_key)
    }
}

/// Reads a questions file and, optionally, its annotations file. Errors name the file and the
/// key or question id: syntax and missing fields (with line and column), a question id twice,
/// an annotation for a question not in the questions file, a question without an annotation,
/// image ids that disagree, an annotation with no answers.
pub fn read_vqa_v2(questions: &Path, annotations: Option<&Path>) -> Result<Vec<VqaQuestion>> {
    let qf: QuestionsFile = read_json(questions)?;
    let mut at: HashMap<u64, usize> = HashMap::new();
    let mut out = Vec::with_capacity(qf.questions.len());
    for (i, q) in qf.questions.into_iter().enumerate() {
        if let Some(j) = at.insert(q.question_id, i) {
            return Err(bad(questions, format!("questions[{i}]: question_id {} repeats questions[{j}]", q.question_id)));
        }
        out.push(VqaQuestion {
            question_id: q.question_id,
            image_id: q.image_id,
            question: q.question,
            answers: vec![],
            multiple_choice_answer: None,
            answer_type: None,
        });
    }
    if out.is_empty() {
        return Err(bad(questions, "no questions"));
    }
    let Some(af) = annotations else { return Ok(out) };
    let anns: AnnotationsFile = read_json(af)?;
    let mut done = vec![false; out.len()];
    for (k, a) in anns.annotations.into_iter().enumerate() {
        let i = *at.get(&a.question_id).ok_or_else(|| bad(af, format!("annotations[{k}]: question_id {} is not in {}", a.question_id, questions.display())))?;
        let q = &mut out[i];
        if done[i] {
            return Err(bad(af, format!("annotations[{k}]: question_id {} annotated twice", a.question_id)));
        }
        if a.image_id != q.image_id {
            return Err(bad(
                af,
                format!("annotations[{k}]: question_id {} has image_id {}, but {} says {}", a.question_id, a.image_id, questions.display(), q.image_id),
            ));
        }
        if a.answers.is_empty() {
            return Err(bad(af, format!("annotations[{k}]: question_id {} has no answers", a.question_id)));
        }
        done[i] = true;
        q.answers = a.answers.into_iter().map(|x| x.answer).collect();
        q.multiple_choice_answer = Some(a.multiple_choice_answer);
        q.answer_type = a.answer_type;
    }
    if let Some(i) = done.iter().position(|d| !d) {
        return Err(bad(af, format!("question_id {} of {} has no annotation", out[i].question_id, questions.display())));
    }
    Ok(out)
}

/// The answer vocabulary from training questions: keyed multiple-choice answers seen for at
/// least `min_answer_count` questions, most frequent first.
pub fn answer_vocab(train: &[VqaQuestion], min_answer_count: usize) -> Vec<String> {
    let keyed: Vec<(String, String)> = train.iter().filter_map(|q| Some((q.question_id.to_string(), q.label()?))).collect();
    super::answer_vocab(keyed.iter().map(|(q, a)| (q.as_str(), a.as_str())), min_answer_count)
}

#[cfg(test)]
mod tests {
    use super::super::{fixture, tmp_file};
    use super::*;
    use crate::eval::vqa::soft_score;

    #[test]
    fn reads_the_official_files() {
        let qs = read_vqa_v2(&fixture("vqa_v2_questions.json"), Some(&fixture("vqa_v2_annotations.json"))).unwrap();
        assert_eq!(qs.len(), 4);
        assert_eq!((qs[0].question_id, qs[0].image_id, qs[0].question.as_str()), (1001, 42, "What color is the cube?"));
        assert_eq!(qs[0].answers.len(), 10);
        assert_eq!(qs[1].multiple_choice_answer.as_deref(), Some("3"));
        assert_eq!(qs[2].answer_type.as_deref(), Some("yes/no"));
        // 1001: 8 × red, 2 × dark red; 1002: 1 × "2", 4 × "3", 5 × "three" (keyed to "3")
        assert_eq!(qs[0].soft_targets(), vec![("red".to_string(), 1.0), ("dark red".into(), 0.6)]);
        assert_eq!(qs[1].soft_targets(), vec![("3".to_string(), 1.0), ("2".into(), 0.3)]);
        // 1004: 6 × yes, 4 × no
        assert_eq!(qs[3].soft_targets(), vec![("no".to_string(), 1.0), ("yes".into(), 1.0)]);
        let q2 = VqaQuestion { answers: vec!["x".into(), "b".into(), "b".into(), "c".into(), "c".into(), "c".into()], ..qs[0].clone() };
        assert_eq!(q2.soft_targets(), vec![("c".to_string(), 0.9), ("b".into(), 0.6), ("x".into(), 0.3)]);
        // the vocabulary: keyed multiple-choice answers by the number of questions
        assert_eq!(answer_vocab(&qs, 1), vec!["yes", "3", "red"]);
        assert_eq!(answer_vocab(&qs, 2), vec!["yes"]);
        assert!(answer_vocab(&qs, 3).is_empty());
        let vocab = answer_vocab(&qs, 2).into_iter().collect();
        assert_eq!(qs[3].soft_targets_in(&vocab), vec![("yes".to_string(), 1.0)]);
        // test splits: questions only
        let t = read_vqa_v2(&fixture("vqa_v2_questions.json"), None).unwrap();
        assert!(t.iter().all(|q| q.answers.is_empty() && q.label().is_none()));
        assert_eq!(soft_score(2), 0.6);
    }

    fn err(q: &str, a: Option<&str>) -> String {
        let qp = tmp_file("q.json", q);
        let ap = a.map(|a| tmp_file("a.json", a));
        read_vqa_v2(&qp, ap.as_deref()).unwrap_err().to_string()
    }

    #[test]
    fn malformed_files_name_file_and_key() {
        let q1 = r#"{"questions": [{"question_id": 1, "image_id": 5, "question": "Q?"}]}"#;
        let m = err(r#"{"questions": [{"question_id": 1, "image_id": 5}]}"#, None);
        assert!(m.contains("q.json") && m.contains("missing field `question`") && m.contains("line 1"), "{m}");
        let m = err("{\"questions\": [\n{\"question_id\": \"x\", \"image_id\": 5, \"question\": \"Q\"}]}", None);
        assert!(m.contains("q.json") && m.contains("line 2"), "{m}");
        let m = err(r#"{"questions": [{"question_id": 1, "image_id": 5, "question": "a"}, {"question_id": 1, "image_id": 5, "question": "b"}]}"#, None);
        assert!(m.contains("questions[1]: question_id 1 repeats questions[0]"), "{m}");
        assert!(err(r#"{"questions": []}"#, None).contains("no questions"));
        let a = |body: &str| format!(r#"{{"annotations": [{body}]}}"#);
        let ok = r#"{"question_id": 1, "image_id": 5, "multiple_choice_answer": "x", "answers": [{"answer": "x"}]}"#;
        let m = err(q1, Some(&a(r#"{"question_id": 2, "image_id": 5, "multiple_choice_answer": "x", "answers": [{"answer": "x"}]}"#)));
        assert!(m.contains("a.json") && m.contains("annotations[0]: question_id 2 is not in"), "{m}");
        let m = err(q1, Some(&a(r#"{"question_id": 1, "image_id": 6, "multiple_choice_answer": "x", "answers": [{"answer": "x"}]}"#)));
        assert!(m.contains("image_id 6") && m.contains("says 5"), "{m}");
        let m = err(q1, Some(&a(r#"{"question_id": 1, "image_id": 5, "multiple_choice_answer": "x", "answers": []}"#)));
        assert!(m.contains("question_id 1 has no answers"), "{m}");
        let m = err(q1, Some(&a(r#"{"question_id": 1, "image_id": 5, "multiple_choice_answer": "x", "answers": [{"text": "x"}]}"#)));
        assert!(m.contains("a.json") && m.contains("missing field `answer`"), "{m}");
        let m = err(q1, Some(&a(&format!("{ok}, {ok}"))));
        assert!(m.contains("annotated twice"), "{m}");
        let m = err(r#"{"questions": [{"question_id": 1, "image_id": 5, "question": "a"}, {"question_id": 3, "image_id": 5, "question": "b"}]}"#, Some(&a(ok)));
        assert!(m.contains("question_id 3 of") && m.contains("has no annotation"), "{m}");
        assert!(err("not json", None).contains("q.json"));
    }
}
