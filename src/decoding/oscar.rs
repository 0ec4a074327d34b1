//! The searches against Oscar's own code: tests/fixtures/oscar_search.json holds the captions and
//! scores that microsoft/Oscar's `_generate_no_beam_search`, `_generate_beam_search` and cbs.py's
//! FSM builder, `ConstrainedBeamSearch` and `select_best_beam_with_constraints` return, run
//! unchanged on a mock model (tools/oscar_search_reference.py). `logit` is that model, bit for bit.
use super::mock::{Mock, Model};
use super::{beam_search, cbs_states, constrained_beam_search, greedy, Constraint, SearchConfig};
use serde_json::Value;

/// The reference's mock model: an FNV-style hash of (seed, image, past, word) to [-4, 4).
fn logit(seed: u64, image: usize, past: &[u32], w: usize) -> f32 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for x in [seed, image as u64].into_iter().chain(past.iter().map(|&t| t as u64)).chain([w as u64]) {
        h ^= x;
        h = h.wrapping_mul(0x0100_0000_01B3);
        h ^= h >> 29;
    }
    ((h % 1_000_003) as f64 / 125_000.0 - 4.0) as f32
}

fn model(seed: u64, vocab: usize) -> Model {
    Box::new(move |image, past| (0..vocab).map(|w| logit(seed, image, past, w)).collect())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn searches_match_oscars_code() {
    let doc: Value = serde_json::from_str(include_str!("../../tests/fixtures/oscar_search.json")).unwrap();
    let tok = |k: &str| doc[k].as_u64().unwrap() as u32;
    let (mut counts, mut masked) = ([0; 3], 0);
    for (n, case) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let num = |k: &str| case[k].as_u64().unwrap() as usize;
        let (seed, vocab, images) = (num("seed") as u64, num("vocab"), num("images"));
        let lp = case["length_penalty"].as_f64().unwrap_or(1.0) as f32;
        let cfg = SearchConfig { length_penalty: lp, ..SearchConfig::oscar(tok("bos"), tok("eos"), tok("pad"), num("max_length")) };
        let want = case["want"].as_array().unwrap();
        let got: Vec<(Vec<u32>, f32, bool)> = match case["kind"].as_str().unwrap() {
            "greedy" => {
                counts[0] += 1;
                let mut st = Mock::new(images, 1, model(seed, vocab));
                greedy(&mut st, images, &cfg).unwrap().into_iter().map(|h| (h.tokens, h.score, true)).collect()
            }
            "beam" => {
                counts[1] += 1;
                let beams = num("beams");
                let mut st = Mock::new(images, beams, model(seed, vocab));
                beam_search(&mut st, images, beams, &cfg).unwrap().into_iter().map(|h| (h.tokens, h.score, true)).collect()
            }
            _ => {
                counts[2] += 1;
                let beams = num("beams");
                let cons: Vec<Vec<Constraint>> = case["constraints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_array().unwrap().iter().map(|x| Constraint::with_forms(x.as_array().unwrap().iter().map(ids).collect())).collect())
                    .collect();
                // every image in one search (the reference ran one per call)
                let k = cons.iter().map(|c| cbs_states(c).unwrap()).max().unwrap() * beams;
                let mut st = Mock::new(images, k, model(seed, vocab));
                let got = constrained_beam_search(&mut st, images, &cons, num("min_satisfy"), beams, &cfg).unwrap();
                got.into_iter().map(|c| (c.hypothesis.tokens, c.hypothesis.score, c.accepted)).collect()
            }
        };
        for (i, (w, (tokens, score, accepted))) in want.iter().zip(&got).enumerate() {
            if w["masked"].as_bool() == Some(true) {
                // cbs.py returned a masked beam: no accepting state held a real one
                assert!(!accepted, "case {n} image {i}");
                masked += 1;
                continue;
            }
            assert_eq!(tokens, &ids(&w["tokens"]), "case {n} image {i}: {case}");
            let ws = w["score"].as_f64().unwrap() as f32;
            assert!(*accepted && (score - ws).abs() < 1e-5, "case {n} image {i}: {score} vs {ws}");
        }
        assert_eq!(got.len(), want.len());
    }
    assert!(counts.iter().all(|&c| c > 8) && masked == 1, "{counts:?} {masked}");
}
