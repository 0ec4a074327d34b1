//! GQA's questions files (`{train,val,testdev,...}_{all,balanced}_questions.json`): one JSON
//! object, question id → `{"imageId", "question", "answer", "fullAnswer", "types", ...}`; the
//! test and challenge files have no `answer`. Oscar trains on the hard label `answer`.
use super::{bad, read_json, Ordered};
use crate::Result;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct RawQuestion {
    #[serde(rename = "imageId")]
    image_id: String,
    question: String,
    #[serde(default)]
    answer: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GqaQuestion {
    pub question_id: String,
    pub image_id: String,
    pub question: String,
    /// The short answer (None in files without answers).
    pub answer: Option<String>,
}

/// Reads a GQA questions file in file order. Errors name the file, the question id and the field
/// (with line and column): not an object, a question without `imageId` or `question`, an id
/// twice, an empty file.
pub fn read_gqa(file: &Path) -> Result<Vec<GqaQuestion>> {
    let Ordered(v): Ordered<RawQuestion> = read_json(file)?;
    if v.is_empty() {
        return Err(bad(file, "no questions"));
    }
    Ok(v.into_iter().map(|(id, q)| GqaQuestion { question_id: id, image_id: q.image_id, question: q.question, answer: q.answer }).collect())
}

/// The answer vocabulary: answers of at least `min_count` questions, most frequent first.
pub fn answer_vocab(questions: &[GqaQuestion], min_count: usize) -> Vec<String> {
    super::answer_vocab(questions.iter().filter_map(|q| Some((q.question_id.as_str(), q.answer.as_deref()?))), min_count)
}

#[cfg(test)]
mod tests {
    use super::super::{fixture, tmp_file};
    use super::*;

    #[test]
    fn reads_questions_in_file_order() {
        let q = read_gqa(&fixture("gqa_questions.json")).unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(
            q[0],
            GqaQuestion { question_id: "02930152".into(), image_id: "2354786".into(), question: "Is the sky dark?".into(), answer: Some("yes".into()) }
        );
        assert_eq!(q[2].question_id, "00384720");
        assert_eq!(q[2].answer.as_deref(), Some("left"));
        assert_eq!(answer_vocab(&q, 1), vec!["yes", "left"]);
        assert_eq!(answer_vocab(&q, 2), vec!["yes"]);
        let t = read_gqa(&tmp_file("gqa_test.json", r#"{"201307251": {"imageId": "n15740", "question": "Is it a cat?", "isBalanced": true}}"#)).unwrap();
        assert_eq!(t[0].answer, None);
    }

    #[test]
    fn malformed_files_name_file_and_key() {
        let e = |body: &str| read_gqa(&tmp_file("gqa_bad.json", body)).unwrap_err().to_string();
        let m = e("{\"1\": {\"imageId\": \"a\", \"question\": \"q\"},\n \"2\": {\"question\": \"q\"}}");
        assert!(m.contains("gqa_bad.json") && m.contains("key '2'") && m.contains("imageId") && m.contains("line 2"), "{m}");
        let m = e(r#"{"1": {"imageId": "a", "question": "q"}, "1": {"imageId": "b", "question": "q"}}"#);
        assert!(m.contains("key '1' appears twice"), "{m}");
        let m = e(r#"[{"imageId": "a", "question": "q"}]"#);
        assert!(m.contains("gqa_bad.json") && m.contains("JSON object"), "{m}");
        let m = e(r#"{"1": {"imageId": 5, "question": "q"}}"#);
        assert!(m.contains("key '1'"), "{m}");
        assert!(e("{}").contains("no questions"));
    }
}
