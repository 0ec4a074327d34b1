//! Beam search as Oscar's `_generate_beam_search` (oscar/modeling/modeling_utils.py, from Hugging
//! Face transformers 2.x) with `num_keep_best = 1`, `do_sample = False`, `early_stopping = False`:
//! - every beam of an image starts from [CLS]; beams 1.. start at -1e9 so the first step expands
//!   beam 0 only (the beams are identical then, and would otherwise fill the beam with copies);
//! - each step: log-softmax, beam score + log p over the flattened beams × vocab of the image, the
//!   2 × beams best candidates in order: one ending in the EOS becomes a finished hypothesis, the
//!   others continue until `beams` are kept (a later EOS candidate is not looked at);
//! - a hypothesis scores sum log p / len^length_penalty, len counting the [CLS] and not the EOS;
//! - at the last position (`max_len`) every candidate is finished: its token is dropped (the EOS
//!   written instead) but its log p stays in the score;
//! - an image is done once it has a finished hypothesis and its best candidate's sum, divided by
//!   `max_len`^length_penalty, cannot beat it (`BeamHypotheses.is_done`); its rows are then fed the
//!   pad token and keep their own caches; the search ends when every image is done.
//!
//! With one beam Oscar's `generate` runs greedy decoding instead, and so does `beam_search`.
use super::greedy::greedy;
use super::{bad, check_rows, log_sum_exp, reorder, run_step, top_entries, top_n, Hypothesis, SearchConfig, Stepper};
use crate::Result;

/// The score Oscar gives beams 1.. before the first step.
const UNUSED_BEAM: f32 = -1e9;

/// Beam search with `beams` rows per image; returns each image's best hypothesis.
pub fn beam_search<S: Stepper + ?Sized>(st: &mut S, images: usize, beams: usize, cfg: &SearchConfig) -> Result<Vec<Hypothesis>> {
    Ok(beam_search_n(st, images, beams, 1, cfg)?.into_iter().map(|mut v| v.remove(0)).collect())
}

/// Beam search keeping each image's `keep` best finished hypotheses (Oscar's `num_keep_best`),
/// best first; `keep` is at most `beams` (with one beam: the greedy caption).
pub fn beam_search_n<S: Stepper + ?Sized>(st: &mut S, images: usize, beams: usize, keep: usize, cfg: &SearchConfig) -> Result<Vec<Vec<Hypothesis>>> {
    const OP: &str = "beam_search";
    cfg.check(OP)?;
    check_rows(OP, st, images, beams, "beams")?;
    if keep == 0 || keep > beams {
        return Err(bad(OP, format!("keeping {keep} hypotheses of {beams} beams: must be 1..={beams}")));
    }
    if beams == 1 {
        // Oscar's generate: num_beams > 1 runs beam search, 1 runs _generate_no_beam_search
        return Ok(greedy(st, images, cfg)?.into_iter().map(|h| vec![h]).collect());
    }
    let rows = images * beams;
    let mut scores: Vec<f32> = (0..rows).map(|r| if r % beams == 0 { 0.0 } else { UNUSED_BEAM }).collect();
    // each row's caption so far and the log p of its tokens, reordered with the rows
    let mut past: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); rows];
    let mut finished: Vec<Finished> = (0..images).map(|_| Finished::new(cfg, keep)).collect();
    let mut done = vec![false; images];
    let mut tokens = vec![cfg.bos; rows];
    let mut vocab = None;
    for t in 0..cfg.max_len {
        let logits = run_step(OP, st, t, &tokens, &mut vocab, cfg)?;
        let v = logits.len() / rows;
        let last = t + 1 == cfg.max_len;
        // done images keep their rows in place and feed the pad token
        let mut src: Vec<usize> = (0..rows).collect();
        let mut next_tokens = vec![cfg.pad; rows];
        let mut next_scores = scores.clone();
        let mut next_past = past.clone();
        for i in 0..images {
            if done[i] {
                continue;
            }
            let base = i * beams;
            // Oscar takes the 2 × beams best of the image's flattened beams × vocab: they are among
            // each beam's 2 × beams best words, and in the same order (ties by beam, then word)
            let mut flat = Vec::with_capacity(2 * beams * beams);
            for b in 0..beams {
                let row = &logits[(base + b) * v..(base + b + 1) * v];
                let lse = log_sum_exp(row);
                for (x, w) in top_entries(row, 2 * beams) {
                    let lp = (x as f64 - lse) as f32;
                    flat.push((scores[base + b] + lp, (b, w, lp)));
                }
            }
            let cands = top_n(&flat, 2 * beams);
            done[i] = finished[i].is_done(cands[0].0);
            if done[i] {
                continue;
            }
            let mut kept = 0;
            for &(score, (b, w, lp)) in &cands {
                let r = base + b;
                if w as u32 == cfg.eos || last {
                    let mut lps = past[r].1.clone();
                    lps.push(lp);
                    finished[i].add(&past[r].0, lps, score, w as u32 == cfg.eos);
                } else {
                    let row = base + kept;
                    src[row] = r;
                    next_tokens[row] = w as u32;
                    next_scores[row] = score;
                    next_past[row] = past[r].clone();
                    next_past[row].0.push(w as u32);
                    next_past[row].1.push(lp);
                    kept += 1;
                }
                if kept == beams {
                    break;
                }
            }
            // 2 × beams candidates hold at most one EOS per beam, so `beams` continue, except at
            // the last position where every candidate finished
            debug_assert!(kept == if last { 0 } else { beams });
        }
        if last || done.iter().all(|&d| d) {
            break;
        }
        // after the first step every row of an image still holds the [CLS] alone: nothing to move
        if t > 0 {
            reorder(st, &src)?;
        }
        tokens = next_tokens;
        scores = next_scores;
        past = next_past;
    }
    finished
        .into_iter()
        .map(|f| {
            let h = f.ranked();
            if h.len() < keep {
                return Err(bad(OP, format!("an image ended with {} hypotheses, not {keep}", h.len())));
            }
            Ok(h)
        })
        .collect()
}

/// The finished hypotheses of one image: Oscar's `BeamHypotheses` with `n_hyp = num_keep_best`,
/// scores compared in f64 as Python compares them.
struct Finished {
    n_hyp: usize,
    max_len: usize,
    length_penalty: f64,
    hyps: Vec<(f64, Hypothesis)>,
    worst: f64,
}

impl Finished {
    fn new(cfg: &SearchConfig, n_hyp: usize) -> Finished {
        Finished { n_hyp, max_len: cfg.max_len, length_penalty: cfg.length_penalty as f64, hyps: Vec::new(), worst: 1e9 }
    }

    /// `tokens` without the BOS; Oscar's hypothesis holds the BOS, so its length is one more.
    fn add(&mut self, tokens: &[u32], logprobs: Vec<f32>, sum_logprobs: f32, eos: bool) {
        let score = sum_logprobs as f64 / ((tokens.len() + 1) as f64).powf(self.length_penalty);
        if self.hyps.len() < self.n_hyp || score > self.worst {
            let h = Hypothesis { tokens: tokens.to_vec(), logprobs, score: score as f32, finished: eos };
            self.hyps.push((score, h));
            if self.hyps.len() > self.n_hyp {
                // drop the worst (the earliest on ties, as Python's sort of (score, index))
                let mut order: Vec<usize> = (0..self.hyps.len()).collect();
                order.sort_by(|&a, &b| self.hyps[a].0.total_cmp(&self.hyps[b].0).then(a.cmp(&b)));
                self.worst = self.hyps[order[1]].0;
                self.hyps.remove(order[0]);
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    /// No candidate can beat the kept hypotheses: its sum only falls, and over `max_len` positions
    /// (Oscar's max_length less the BOS) it is divided by the most it can be.
    fn is_done(&self, best_sum_logprobs: f32) -> bool {
        self.hyps.len() >= self.n_hyp && self.worst >= best_sum_logprobs as f64 / (self.max_len as f64).powf(self.length_penalty)
    }

    /// The kept hypotheses, best first (the earliest first on ties, as Oscar's `max`).
    fn ranked(self) -> Vec<Hypothesis> {
        let mut h = self.hyps;
        h.sort_by(|a, b| b.0.total_cmp(&a.0));
        h.into_iter().map(|(_, h)| h).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::log_softmax;
    use super::super::mock::{fixed, hashed, Mock, Model};
    use super::*;

    const EOS: u32 = 2;
    fn cfg(max_len: usize, length_penalty: f32) -> SearchConfig {
        SearchConfig { bos: 0, eos: EOS, pad: 1, max_len, length_penalty }
    }

    /// Oscar's best caption by enumerating every caption up to `max_len`: one ending in the EOS at
    /// position L + 1 < max_len scores (sum + log p(EOS)) / (L + 1)^lp; one reaching the last
    /// position scores (sum + the best log p there) / max_len^lp (the token is replaced by the EOS).
    fn brute_force(model: &Model, image: usize, c: &SearchConfig) -> (Vec<u32>, f64) {
        fn go(model: &Model, image: usize, c: &SearchConfig, past: &mut Vec<u32>, sum: f64, best: &mut (Vec<u32>, f64)) {
            let lp = log_softmax(&model(image, past));
            let len = past.len(); // the BOS and the tokens: the length Oscar divides by
            let pen = (len as f64).powf(c.length_penalty as f64);
            let end = if len == c.max_len { lp.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) } else { lp[EOS as usize] };
            let score = (sum + end as f64) / pen;
            if score > best.1 {
                *best = (past[1..].to_vec(), score);
            }
            if len < c.max_len {
                for (w, &l) in lp.iter().enumerate().filter(|&(w, _)| w as u32 != EOS) {
                    past.push(w as u32);
                    go(model, image, c, past, sum + l as f64, best);
                    past.pop();
                }
            }
        }
        let mut best = (Vec::new(), f64::NEG_INFINITY);
        go(model, image, c, &mut vec![c.bos], 0.0, &mut best);
        best
    }

    #[test]
    fn enough_beams_find_the_brute_force_best() {
        // vocabulary 3 (two words and the EOS), 4 positions: at most 8 live prefixes, whose 24
        // candidates fit in 2 × 12; three images, so the per-image grouping is exercised
        for &lp in &[1.0, 0.5, 2.0] {
            let c = cfg(4, lp);
            for seed in 0..30 {
                let mut st = Mock::new(3, 12, hashed(seed, 3, 2.5));
                let got = beam_search(&mut st, 3, 12, &c).unwrap();
                for (i, g) in got.iter().enumerate() {
                    let (tokens, score) = brute_force(&st.model, i, &c);
                    assert_eq!(g.tokens, tokens, "lp {lp} seed {seed} image {i}");
                    assert!((g.score as f64 - score).abs() < 1e-5, "{} vs {score}", g.score);
                    // the score is the length-penalised sum of the log p, which are the model's
                    let sum: f32 = g.logprobs.iter().sum();
                    assert!((g.score - sum / (g.logprobs.len() as f32).powf(lp)).abs() < 1e-5);
                    assert_eq!(g.logprobs.len(), g.tokens.len() + 1);
                }
                assert!(st.reorders > 0);
            }
        }
    }

    #[test]
    fn keeping_n_gives_the_brute_force_n_best_in_order() {
        // as above, every caption of 4 positions is scored: the 5 kept are the 5 best of them all
        let c = cfg(4, 1.0);
        for seed in 0..20 {
            let mut st = Mock::new(3, 12, hashed(seed, 3, 2.5));
            let got = beam_search_n(&mut st, 3, 12, 5, &c).unwrap();
            assert_eq!(got.len(), 3);
            for (i, g) in got.iter().enumerate() {
                let mut all = Vec::new();
                every_caption(&st.model, i, &c, &mut vec![c.bos], 0.0, &mut all);
                all.sort_by(|a, b| b.1.total_cmp(&a.1));
                let want: Vec<&Vec<u32>> = all.iter().take(5).map(|x| &x.0).collect();
                assert_eq!(g.iter().map(|h| &h.tokens).collect::<Vec<_>>(), want, "seed {seed} image {i}");
                assert!(g.windows(2).all(|w| w[0].score >= w[1].score));
            }
            // the single best is beam_search's
            let mut one = Mock::new(3, 12, hashed(seed, 3, 2.5));
            let best = beam_search(&mut one, 3, 12, &c).unwrap();
            assert!(best.iter().zip(&got).all(|(b, g)| *b == g[0]));
        }
        let mut st = Mock::new(1, 2, hashed(0, 3, 2.5));
        assert!(beam_search_n(&mut st, 1, 2, 3, &c).unwrap_err().to_string().contains("keeping 3 hypotheses of 2 beams"));
    }

    /// Every caption up to `max_len` with Oscar's score (as `brute_force`).
    fn every_caption(model: &Model, image: usize, c: &SearchConfig, past: &mut Vec<u32>, sum: f64, out: &mut Vec<(Vec<u32>, f64)>) {
        let lp = log_softmax(&model(image, past));
        let len = past.len();
        let pen = (len as f64).powf(c.length_penalty as f64);
        if len == c.max_len {
            // the last position: every word ends the caption (dropped, the EOS written instead)
            for &l in &lp {
                out.push((past[1..].to_vec(), (sum + l as f64) / pen));
            }
            return;
        }
        out.push((past[1..].to_vec(), (sum + lp[EOS as usize] as f64) / pen));
        for (w, &l) in lp.iter().enumerate().filter(|&(w, _)| w as u32 != EOS) {
            past.push(w as u32);
            every_caption(model, image, c, past, sum + l as f64, out);
            past.pop();
        }
    }

    #[test]
    fn a_plan_that_ignores_reorders_gives_wrong_captions() {
        // the mock's logits follow each row's past: dropping the reorders must show
        let c = cfg(8, 1.0);
        let run = |seed, ignore| {
            let mut st = Mock::new(2, 3, hashed(seed, 6, 2.0));
            st.ignore_reorder = ignore;
            beam_search(&mut st, 2, 3, &c).unwrap()
        };
        let wrong = (0..30).filter(|&seed| run(seed, true) != run(seed, false)).count();
        assert!(wrong > 15, "{wrong}");
    }

    #[test]
    fn the_first_step_expands_beam_0_only() {
        // one model for every past: word 4 best, then 3, then the EOS; had every beam started at
        // 0 the two beams would both continue with word 4 (copies of one caption)
        let mut st = Mock::new(1, 2, fixed(vec![0.0, 0.0, 1.0, 2.0, 3.0]));
        beam_search(&mut st, 1, 2, &cfg(5, 1.0)).unwrap();
        assert_eq!(st.fed[1], vec![4, 3]);
        // and beam 0 gives all 2 × beams candidates: the EOS first, then words 3 and 0 go on
        let mut st = Mock::new(1, 2, fixed(vec![1.0, 0.0, 3.0, 2.0, -1.0]));
        beam_search(&mut st, 1, 2, &cfg(5, 1.0)).unwrap();
        assert_eq!(st.fed[1], vec![3, 0]);
    }

    #[test]
    fn one_beam_is_greedy() {
        let c = cfg(6, 1.0);
        for seed in 0..20 {
            let mut a = Mock::new(2, 1, hashed(seed, 5, 3.0));
            let mut b = Mock::new(2, 1, hashed(seed, 5, 3.0));
            assert_eq!(beam_search(&mut a, 2, 1, &c).unwrap(), greedy(&mut b, 2, &c).unwrap());
        }
    }

    #[test]
    fn stops_when_no_candidate_can_beat_the_finished_caption() {
        // the EOS first (p ≈ 0.9998): after it no candidate's sum over 20 positions comes close,
        // so the image is done at the second step and the caption is empty
        let mut st = Mock::new(1, 3, Box::new(|_, past: &[u32]| if past.len() == 1 { vec![0.0, 0.0, 10.0, 0.0] } else { vec![0.0; 4] }));
        let h = beam_search(&mut st, 1, 3, &cfg(20, 1.0)).unwrap().remove(0);
        assert_eq!((h.tokens.len(), h.finished, st.steps()), (0, true, 2));
        assert!((h.score - log_softmax(&[0.0, 0.0, 10.0, 0.0])[2]).abs() < 1e-6);
        // not done while the bound allows better: the EOS first by a little, then a sure caption
        // after word 0 beats it; had the image stopped at the first finished caption (what
        // early_stopping=True does) the caption would be empty
        let model = |_: usize, past: &[u32]| match past.len() {
            1 => vec![0.1, 0.0, 0.2, 0.0],
            2 | 3 => vec![-9.0, -9.0, -9.0, 9.0],
            _ => vec![-9.0, -9.0, 9.0, -9.0],
        };
        let mut st = Mock::new(1, 3, Box::new(model));
        let h = beam_search(&mut st, 1, 3, &cfg(20, 1.0)).unwrap().remove(0);
        assert_eq!((h.tokens, h.finished), (vec![0, 3, 3], true));
        let first = log_softmax(&[0.1, 0.0, 0.2, 0.0])[0];
        assert!((h.score - first / 4.0).abs() < 1e-4, "{}", h.score);
    }

    #[test]
    fn images_finish_independently() {
        // image 0 ends at once, image 1 runs to max_len; image 0's rows are then fed the pad token
        let model: Model = Box::new(|i, _| if i == 0 { vec![0.0, 0.0, 10.0, 0.0] } else { vec![0.0, 1.0, -5.0, 2.0] });
        let mut st = Mock::new(2, 2, model);
        let got = beam_search(&mut st, 2, 2, &cfg(5, 1.0)).unwrap();
        assert_eq!((got[0].tokens.len(), got[0].finished), (0, true));
        assert_eq!((got[1].tokens.len(), got[1].finished, got[1].logprobs.len()), (4, false, 5));
        assert_eq!(st.steps(), 5);
        assert_eq!(&st.fed[4][..2], &[1, 1]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = cfg(4, 1.0);
        let mut st = Mock::new(2, 3, hashed(0, 5, 1.0));
        assert!(beam_search(&mut st, 2, 0, &c).is_err(), "zero beams");
        assert!(beam_search(&mut st, 2, 2, &c).is_err(), "6 rows are not 2 × 2");
        assert!(beam_search(&mut st, 4, 3, &c).is_err());
        assert!(beam_search(&mut st, 2, 3, &SearchConfig { length_penalty: -1.0, ..c.clone() }).is_err());
        let mut tiny = Mock::new(1, 2, fixed(vec![0.0]));
        assert!(beam_search(&mut tiny, 1, 2, &SearchConfig { eos: 0, ..c }).is_err(), "a vocabulary of one");
    }
}
