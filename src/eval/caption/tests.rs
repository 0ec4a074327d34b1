//! Agreement with pycocoevalcap on the committed fixtures (`tools/caption_refs.py` wrote the
//! `*_expected.json` and `ptb_expected.json` files with pycocoevalcap 1.2 and its Java tokenizer).
use super::*;
use crate::data::formats::Ordered;
use crate::eval::score;
use serde_json::Value;
use std::path::PathBuf;

const SETS: [&str; 4] = ["basic", "apostrophes", "numbers", "edge"];
const METRICS: [&str; 6] = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"];
/// Agreement demanded on every metric (the brief allows 1e-3; the float operations follow
/// pycocoevalcap's order, so the differences measured are at the last bits).
const TOL: f64 = 1e-9;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/caption").join(name)
}
fn read<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}
/// A number the fixture also wrote as Python's `repr` (Rust's parse is correctly rounded).
fn exact(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}
fn metric(s: &CaptionScores, m: &str) -> f64 {
    serde_json::to_value(s).unwrap()[m].as_f64().unwrap()
}

/// Every mismatch, so a failure shows them all rather than the first.
fn compare_lines(what: &str, cases: &[(String, String)], got: &[String]) {
    let bad: Vec<String> =
        cases.iter().zip(got).filter(|((_, want), got)| want != *got).map(|((s, want), got)| format!("{s:?}: java {want:?}, ours {got:?}")).collect();
    assert!(bad.is_empty(), "{what}: {} of {} strings differ:\n{}", bad.len(), cases.len(), bad.join("\n"));
}

#[test]
fn ptb_tokenizer_matches_java() {
    let v: Value = read("ptb_expected.json");
    for what in ["tricky", "fuzz"] {
        let cases: Vec<(String, String)> = serde_json::from_value(v[what].clone()).unwrap();
        assert!(cases.len() > 100, "{what}: {}", cases.len());
        // one tokenizer run over all strings, one per line, as the fixture was made
        let got = ptb_lines(&cases.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>());
        compare_lines(what, &cases, &got);
    }
}

/// A larger check against strings made by `tools/caption_refs.py --fuzz N FILE` (needs Java and
/// pycocoevalcap to make, so not committed): `CAPTION_PTB_FILE=FILE cargo test --lib
/// eval::caption -- --ignored`.
#[test]
#[ignore]
fn ptb_tokenizer_matches_java_on_file() {
    let path = std::env::var("CAPTION_PTB_FILE").expect("set CAPTION_PTB_FILE to a file from tools/caption_refs.py --fuzz");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases: Vec<(String, String)> = serde_json::from_value(v["fuzz"].clone()).unwrap();
    let got = ptb_lines(&cases.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>());
    compare_lines("file", &cases, &got);
}

#[test]
fn tokenize_by_hand() {
    assert_eq!(tokenize("A man's hat (red)."), ["a", "man", "'s", "hat", "-lrb-", "red", "-rrb-"]);
    assert_eq!(
        tokenize("I can't, he won't; it cannot be \"gonna\" work!"),
        ["i", "ca", "n't", "he", "wo", "n't", "it", "can", "not", "be", "gon", "na", "work"]
    );
    assert_eq!(
        tokenize("A black-and-white photo of Mr. Smith at 3:30 p.m. -- $1,000.50?!"),
        ["a", "black-and-white", "photo", "of", "mr.", "smith", "at", "3:30", "p.m.", "$", "1,000.50", "?!"]
    );
    // `2 1/2` is one PTB token with a no-break space: BLEU/CIDEr split it (Python's split()),
    // ROUGE-L does not (split(" "))
    assert_eq!(ptb_line("a 2 1/2 year old"), "a 2\u{A0}1/2 year old");
    assert_eq!(tokenize("a 2 1/2 year old"), ["a", "2", "1/2", "year", "old"]);
    assert_eq!(rouge_tokens(&ptb_line("a 2 1/2 year old")), ["a", "2\u{A0}1/2", "year", "old"]);
    assert!(tokenize(" ... ").is_empty());
    assert_eq!(rouge_tokens(""), [""]);
    // a few rules look into the next line: `fig.` before a digit keeps its period (checked
    // against the jar: "see fig.\n3 dogs\nsee fig." gives "see fig." / "3 dogs" / "see fig .")
    assert_eq!(ptb_lines(&["see fig.", "3 dogs", "see fig."]), ["see fig.", "3 dogs", "see fig"]);
    assert_eq!(ptb_line("see fig."), "see fig");
    // `\n` inside a caption is a space (pycocoevalcap replaces it); other line breaks separate
    // tokens without starting a line (Java would, and shift every later caption)
    assert_eq!(ptb_lines(&["a\nb", "c\rd\u{2028}e", "f"]), ["a b", "c d e", "f"]);
    assert!(ptb_lines::<&str>(&[]).is_empty());
}

#[test]
fn numpy_sum_order() {
    // numpy's pairwise sum (8 accumulators from 8 elements on) differs from a running sum: 1 +
    // 1e-16 rounds back to 1 every time, while pairs of 1e-16 survive
    let mut a = vec![1e-16; 20];
    a[0] = 1.0;
    let mut r = [0.0; 8];
    r.copy_from_slice(&a[..8]);
    for i in 0..8 {
        r[i] += a[8 + i];
    }
    let want = ((((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])) + a[16]) + a[17] + a[18]) + a[19];
    assert_eq!(np_sum(&a), want);
    assert!(np_sum(&a) > 1.0 && a.iter().fold(0.0, |s, x| s + x) == 1.0);
    assert_eq!(np_sum(&a[..5]), (((a[0] + a[1]) + a[2]) + a[3]) + a[4]);
    assert_eq!(np_mean(&[1.0, 2.0]), 1.5);
}

struct Set {
    refs: Vec<(String, Vec<String>)>,
    cands: Vec<(String, String)>,
    expected: Value,
}

fn set(name: &str) -> Set {
    let Ordered(refs) = read(&format!("{name}_refs.json"));
    let Ordered(cands) = read(&format!("{name}_cands.json"));
    Set { refs, cands, expected: read(&format!("{name}_expected.json")) }
}

#[test]
fn scores_match_pycocoevalcap() {
    let (mut worst, mut worst_image) = ([0.0f64; 6], [0.0f64; 6]);
    for name in SETS {
        let s = set(name);
        let e = &s.expected;
        // the tokenisation, references in one run and candidates in another
        let tok = &e["tokenized"];
        let want_refs: Vec<Vec<String>> = s.refs.iter().map(|(id, _)| serde_json::from_value(tok["refs"][id].clone()).unwrap()).collect();
        let want_cands: Vec<String> = s.refs.iter().map(|(id, _)| tok["cands"][id].as_str().unwrap().to_string()).collect();
        let flat: Vec<&str> = s.refs.iter().flat_map(|(_, r)| r.iter().map(String::as_str)).collect();
        let got: Vec<String> = ptb_lines(&flat);
        let want_flat: Vec<String> = want_refs.iter().flatten().cloned().collect();
        compare_lines(&format!("{name} refs"), &flat.iter().map(|s| s.to_string()).zip(want_flat).collect::<Vec<_>>(), &got);
        let cand_text: Vec<&str> = s.refs.iter().map(|(id, _)| s.cands.iter().find(|(c, _)| c == id).unwrap().1.as_str()).collect();
        compare_lines(&format!("{name} cands"), &cand_text.iter().map(|s| s.to_string()).zip(want_cands.clone()).collect::<Vec<_>>(), &ptb_lines(&cand_text));

        // the scores, from raw text and from pycocoevalcap's own tokenisation
        let from_text = caption_scores(&s.refs, &s.cands).unwrap();
        let from_lines = scores_of_lines(&want_refs, &want_cands);
        assert_eq!(from_text.images, e["images"].as_u64().unwrap() as usize);
        for (k, m) in METRICS.iter().enumerate() {
            let want = exact(&e["exact"][*m]);
            for got in [metric(&from_text, m), metric(&from_lines, m)] {
                let d = (got - want).abs();
                worst[k] = worst[k].max(d);
                assert!(d <= TOL, "{name} {m}: ours {got}, pycocoevalcap {want}");
            }
        }
        // per image: ROUGE-L, and CIDEr-D through the reusable scorer with the same corpus df
        let words = |l: &String| py_split(l);
        let ref_words: Vec<Vec<Vec<String>>> = want_refs.iter().map(|r| r.iter().map(words).collect()).collect();
        let cider = CiderD::new(&ref_words);
        for (i, (id, _)) in s.refs.iter().enumerate() {
            let per = &e["exact"]["per_image"][id];
            let r = rouge::image_rouge_l(&rouge_tokens(&want_cands[i]), &want_refs[i].iter().map(|l| rouge_tokens(l)).collect::<Vec<_>>());
            let c = cider.score(&py_split(&want_cands[i]), &ref_words[i]);
            let (rt, ct) = (from_text.rouge_l_per_image[i], from_text.cider_per_image[i]);
            for (k, got, want) in [(4, r, exact(&per["ROUGE-L"])), (5, c, exact(&per["CIDEr"])), (4, rt, exact(&per["ROUGE-L"])), (5, ct, exact(&per["CIDEr"]))]
            {
                worst_image[k] = worst_image[k].max((got - want).abs());
                assert!((got - want).abs() <= TOL, "{name} image {id} {}: ours {got}, pycocoevalcap {want}", METRICS[k]);
            }
        }
    }
    eprintln!("largest |ours - pycocoevalcap| over {} sets: {:?}", SETS.len(), METRICS.iter().zip(worst).collect::<Vec<_>>());
    eprintln!("per image: ROUGE-L {:e}, CIDEr {:e}", worst_image[4], worst_image[5]);
}

#[test]
fn fixtures_exercise_the_cases() {
    // the hand-made sets hold what they are meant to: an exact copy of a reference, a candidate
    // sharing nothing, one-word and very long candidates, one to five references
    let e = set("edge");
    let per = &e.expected["per_image"];
    assert!(per["31"]["CIDEr"].as_f64().unwrap() == 0.0 && per["31"]["ROUGE-L"].as_f64().unwrap() == 0.0);
    assert_eq!(per["30"]["ROUGE-L"].as_f64().unwrap(), 1.0);
    let sizes: Vec<usize> = e.refs.iter().map(|(_, r)| r.len()).collect();
    assert!(sizes.contains(&1) && sizes.contains(&5));
    assert!(e.cands.iter().any(|(_, c)| c.split(' ').count() > 30) && e.cands.iter().any(|(_, c)| c.split(' ').count() == 1));
}

#[test]
fn score_command_reads_both_layouts() {
    let s = score::score_caption(&fixture("basic_refs.json"), &fixture("basic_cands.json")).unwrap();
    // the COCO annotations / results layout of the same set gives the same numbers
    let coco = score::score_caption(&fixture("coco_refs.json"), &fixture("coco_cands.json")).unwrap();
    assert_eq!(s, coco);
    let out = std::env::temp_dir().join(format!("vlp-per-image-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let v = score::score("caption", &fixture("coco_refs.json"), &fixture("coco_cands.json"), Some(&out)).unwrap();
    let e = set("basic").expected;
    for m in METRICS {
        assert!((v[m].as_f64().unwrap() - e[m].as_f64().unwrap()).abs() <= TOL, "{m}");
    }
    assert_eq!(v["images"], 8);
    assert_eq!(v.as_object().unwrap().len(), 7);
    // --per-image: pycocoevalcap's per-image ROUGE-L and CIDEr for every image, and their means
    // are the corpus numbers
    let per: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let per = per.as_object().unwrap();
    assert_eq!(per.len(), 8);
    for m in ["ROUGE-L", "CIDEr"] {
        for (id, want) in e["exact"]["per_image"].as_object().unwrap() {
            let got = per[id.as_str()][m].as_f64().unwrap();
            assert!((got - exact(&want[m])).abs() <= TOL, "image {id} {m}: {got} vs {}", want[m]);
        }
        let mean = per.values().map(|x| x[m].as_f64().unwrap()).sum::<f64>() / 8.0;
        assert!((mean - v[m].as_f64().unwrap()).abs() < 1e-12, "{m}");
    }
    let _ = std::fs::remove_file(&out);
}

fn tmp(name: &str, body: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vlp-caption-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn caption_files_errors_name_file_and_id() {
    let refs = tmp("refs.json", r#"{"1": ["a dog", "a brown dog"], "2": ["a cat"]}"#);
    let msg = |r: &std::path::Path, c: &std::path::Path| score::score_caption(r, c).unwrap_err().to_string();
    let m = msg(&refs, &tmp("c1.json", r#"{"1": "a dog", "2": "a cat", "3": "x"}"#));
    assert!(m.contains("c1.json") && m.contains("unknown image id '3'"), "{m}");
    let m = msg(&refs, &tmp("c2.json", r#"[{"image_id": 1, "caption": "a dog"}]"#));
    assert!(m.contains("c2.json") && m.contains("no caption for image id '2'"), "{m}");
    let m = msg(&refs, &tmp("c3.json", r#"{"1": "a dog", "2": ["a cat"]}"#));
    assert!(m.contains("c3.json") && m.contains("image '2': expected one caption string"), "{m}");
    let m = msg(&refs, &tmp("c4.json", r#"[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}, {"image_id": 2, "caption": "c"}]"#));
    assert!(m.contains("c4.json") && m.contains("image '1' appears twice"), "{m}");
    let m = msg(&refs, &tmp("c5.json", r#"{"1": "a dog", "2": "  "}"#));
    assert!(m.contains("c5.json") && m.contains("image '2'") && m.contains("empty caption"), "{m}");
    let m = msg(&refs, &tmp("c6.json", r#"[{"image_id": 1, "caption": "a"}, {"caption": "b"}]"#));
    assert!(m.contains("c6.json") && m.contains("[1]: no image_id"), "{m}");
    let m = msg(&refs, &tmp("c7.json", r#"{"1": "a dog", "2": "a cat""#));
    assert!(m.contains("c7.json") && m.contains("line 1"), "{m}");
    let cands = tmp("c8.json", r#"{"1": "a dog", "2": "a cat"}"#);
    let m = msg(&tmp("r1.json", r#"{"1": ["a dog"], "2": []}"#), &cands);
    assert!(m.contains("r1.json") && m.contains("image '2': no reference captions"), "{m}");
    let m = msg(&tmp("r2.json", r#"{"1": ["a dog"], "2": ["a cat", 3]}"#), &cands);
    assert!(m.contains("r2.json") && m.contains("image '2': captions[1] is 3, not a string"), "{m}");
    let m = msg(&tmp("r3.json", r#"{"1": ["a dog"], "1": ["a cat"]}"#), &cands);
    assert!(m.contains("r3.json") && m.contains("'1' appears twice"), "{m}");
    let m = msg(&tmp("r4.json", r#"{"annotations": [{"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": ""}]}"#), &cands);
    assert!(m.contains("r4.json") && m.contains("annotations[1]") && m.contains("image '2'") && m.contains("empty caption"), "{m}");
    let m = msg(&tmp("r5.json", r#"{"annotations": [{"image_id": 1}]}"#), &cands);
    assert!(m.contains("r5.json") && m.contains("annotations[0] (image '1'): no caption"), "{m}");
    let m = msg(&tmp("r6.json", r#"{"annotations": {"image_id": 1}}"#), &cands);
    assert!(m.contains("r6.json") && m.contains("'annotations' is an object, not a list"), "{m}");
    let m = msg(&tmp("r7.json", r#"{"1": "a dog"}"#), &cands);
    assert!(m.contains("r7.json") && m.contains("image '1': expected a list of reference captions"), "{m}");
    let m = msg(&tmp("r8.json", "{}"), &cands);
    assert!(m.contains("r8.json") && m.contains("no images"), "{m}");
    let m = msg(&tmp("r9.json", "[1, 2]"), &cands);
    assert!(m.contains("r9.json") && m.contains("not a JSON object"), "{m}");
    // numbers and strings name the same image; several annotations per image are grouped
    let r = tmp(
        "r10.json",
        r#"{"annotations": [{"image_id": 1, "caption": "a dog"}, {"image_id": "2", "caption": "a cat"}, {"image_id": 1, "caption": "a brown dog"}]}"#,
    );
    assert_eq!(score::read_caption_refs(&r).unwrap(), score::read_caption_refs(&refs).unwrap());
    let r2 = tmp("r11.json", r#"{"1": [{"caption": "a dog"}, "a brown dog"], "2": [{"caption": "a cat", "id": 7}]}"#);
    assert_eq!(score::read_caption_refs(&r2).unwrap(), score::read_caption_refs(&refs).unwrap());
    let m = msg(&tmp("r12.json", r#"{"1": ["a dog"], "2": [{"text": "a cat"}]}"#), &cands);
    assert!(m.contains("r12.json") && m.contains("image '2': captions[0] has no string 'caption'"), "{m}");
    assert!(score::score_caption(&r, &cands).is_ok());
    // the library function checks the same things
    let one = |id: &str, c: &[&str]| (id.to_string(), c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(caption_scores(&[one("1", &[])], &[("1".into(), "x".into())]).unwrap_err().to_string().contains("no reference captions"));
    assert!(caption_scores(&[one("1", &["a"])], &[]).unwrap_err().to_string().contains("no candidate for image '1'"));
    assert!(caption_scores(&[one("1", &["a"])], &[("2".into(), "x".into())]).unwrap_err().to_string().contains("unknown image '2'"));
}
