//! Constrained beam search for NoCaps, as Oscar's `ConstrainedBeamSearch.search` and
//! `select_best_beam_with_constraints` (oscar/utils/cbs.py, `use_hypo = False`, the default):
//! - `beams` beams per FSM state (`fsm.rs`); rows [i*k, (i+1)*k) of image i hold state s's beams
//!   at i*k + s*beams + b, and rows past states × beams are unused (fed the pad token);
//! - the first step reads one row of the image (all rows were fed the [CLS]) and gives state s the
//!   `beams` best words leading from state 0 to s;
//! - each later step gives state s the `beams` best of (beam score + log p(w)) over every beam of
//!   every state and every word leading from that beam's state to s;
//! - a beam that emitted the EOS stays in the beam, extended by EOS at log p 0, so within a state
//!   finished and unfinished beams compete on their raw sums (no length normalisation there);
//! - nothing is forced at the end: after `max_len` words a beam stops where it is;
//! - the caption: among the main states satisfying at least min(c, min_satisfy) of the c
//!   constraints, the state whose best (raw sum) beam has the highest sum / (words + 1), the +1
//!   for the EOS (cbs.py divides by the length, no penalty: we raise it to `length_penalty`, 1
//!   in Oscar, so it is the same).
//!
//! Where we differ from cbs.py, and why:
//! - cbs.py reads the first step's log p from rows [0, batch) of a batch, all of which belong to
//!   image 0 (rows are image-major), so every image of a batch (Oscar's CBS command runs 2) starts
//!   from image 0's first-word distribution; we read each image's own row.
//! - Where fewer words than beams lead to a state, cbs.py fills the beam with masked candidates
//!   (score -1e20 or -inf) that then go on as beams; we leave those rows unused. No live beam
//!   differs: masked candidates never outrank real ones.
//! - When no accepting state holds a beam (its constraints cannot fit in `max_len` words), cbs.py
//!   returns such a masked beam, which need not satisfy anything; we return the best beam of the
//!   main states that satisfy the most constraints, marked `accepted: false`.
use super::fsm::{check_constraints, Constraint, Fsm, Words};
use super::{bad, check_rows, log_sum_exp, reorder, run_step, top_entries, top_n, Hypothesis, SearchConfig, Stepper};
use crate::Result;

/// A constrained caption and the constraints its final state satisfies.
#[derive(Clone, Debug, PartialEq)]
pub struct Constrained {
    pub hypothesis: Hypothesis,
    pub satisfied: usize,
    /// False when no state satisfying min(c, min_satisfy) constraints held a beam (see the module
    /// doc); then `satisfied` is less.
    pub accepted: bool,
}

/// One live beam: its words (the EOS left out), their log p, the raw sum and whether it ended.
#[derive(Clone, Debug)]
struct Beam {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    score: f32,
    finished: bool,
}

/// A candidate beam: (score, (source row, word, log p)).
type Candidate = (f32, (usize, u32, f32));

/// Constrained beam search: `constraints[i]` (at most 3) are image i's, `beams` per state; the
/// stepper holds k rows per image, a multiple of `beams` with at least `cbs_states` × beams.
pub fn constrained_beam_search<S: Stepper + ?Sized>(
    st: &mut S,
    images: usize,
    constraints: &[Vec<Constraint>],
    min_satisfy: usize,
    beams: usize,
    cfg: &SearchConfig,
) -> Result<Vec<Constrained>> {
    const OP: &str = "constrained_beam_search";
    cfg.check(OP)?;
    if constraints.len() != images || images == 0 || beams == 0 || !st.rows().is_multiple_of(images) {
        return Err(bad(OP, format!("{} rows, {images} images, constraints for {}, {beams} beams", st.rows(), constraints.len())));
    }
    let k = st.rows() / images;
    for c in constraints {
        check_constraints(c, Some(cfg.eos))?;
    }
    let fsms: Vec<Fsm> = constraints.iter().map(|c| Fsm::new(c)).collect();
    let need = fsms.iter().map(|f| f.states()).max().unwrap_or(1) * beams;
    if !k.is_multiple_of(beams) || k < need {
        return Err(bad(OP, format!("{k} rows per image: need a multiple of {beams} beams, at least {need}")));
    }
    check_rows(OP, st, images, k, "rows per image")?;
    let rows = st.rows();
    // the first step's only beam: state 0, beam 0, nothing generated
    let mut live: Vec<Option<Beam>> = vec![None; rows];
    for i in 0..images {
        live[i * k] = Some(Beam { tokens: Vec::new(), logprobs: Vec::new(), score: 0.0, finished: false });
    }
    let mut tokens = vec![cfg.bos; rows];
    let mut vocab = None;
    for t in 0..cfg.max_len {
        if t > 0 && live.iter().flatten().all(|b| b.finished) {
            break;
        }
        let logits = run_step(OP, st, t, &tokens, &mut vocab, cfg)?;
        let v = logits.len() / rows;
        if let Some(w) = constraints.iter().flatten().flat_map(|c| c.slots.iter().flatten()).find(|&&w| w as usize >= v) {
            return Err(bad(OP, format!("constraint token {w} is outside the vocabulary of {v}")));
        }
        let mut next: Vec<Option<Beam>> = vec![None; rows];
        let mut src: Vec<usize> = (0..rows).collect();
        let mut next_tokens = vec![cfg.pad; rows];
        for (i, fsm) in fsms.iter().enumerate() {
            // candidates per target state: (score, (source row, word, log p))
            let mut cands: Vec<Vec<Candidate>> = vec![Vec::new(); fsm.states()];
            for (s, b) in (0..fsm.states()).flat_map(|s| (0..beams).map(move |b| (s, b))) {
                let r = i * k + s * beams + b;
                let Some(beam) = &live[r] else { continue };
                let edges = fsm.edges(s);
                if beam.finished {
                    // cbs.py's log_probs_after_end: only the EOS, at log p 0
                    for (to, _) in edges.iter().filter(|(_, ws)| ws.contains(cfg.eos)) {
                        cands[*to].push((beam.score, (r, cfg.eos, 0.0)));
                    }
                    continue;
                }
                let row = &logits[r * v..(r + 1) * v];
                let lse = log_sum_exp(row);
                // a state takes at most `beams` words from one beam: the best `beams` of its row
                // past the words an edge excludes are enough
                let most_excluded = edges.iter().map(|(_, ws)| if let Words::AllBut(x) = ws { x.len() } else { 0 }).max().unwrap_or(0);
                let best = top_entries(row, beams + most_excluded);
                for (to, words) in edges {
                    let mut push = |w: u32| {
                        let l = (row[w as usize] as f64 - lse) as f32;
                        if l > f32::NEG_INFINITY {
                            cands[*to].push((beam.score + l, (r, w, l)));
                        }
                    };
                    match words {
                        Words::Only(ws) => ws.iter().for_each(|&w| push(w)),
                        Words::AllBut(x) => best.iter().map(|&(_, w)| w as u32).filter(|w| !x.contains(w)).take(beams).for_each(push),
                    }
                }
            }
            for (s, c) in cands.iter().enumerate() {
                for (b, &(score, (r, w, l))) in top_n(c, beams).iter().enumerate() {
                    let row = i * k + s * beams + b;
                    let mut beam = live[r].clone().expect("a candidate comes from a live beam");
                    if !beam.finished {
                        beam.logprobs.push(l);
                        beam.finished = w == cfg.eos;
                        if !beam.finished {
                            beam.tokens.push(w);
                        }
                    }
                    beam.score = score;
                    next[row] = Some(beam);
                    src[row] = r;
                    next_tokens[row] = w;
                }
            }
        }
        // after the first step every row still holds the [CLS] alone: nothing to move
        if t > 0 {
            reorder(st, &src)?;
        }
        live = next;
        tokens = next_tokens;
    }
    Ok((0..images).map(|i| select(&live[i * k..(i + 1) * k], &fsms[i], constraints[i].len(), min_satisfy, beams, cfg)).collect())
}

/// `select_best_beam_with_constraints`: the best beam of each accepting main state, normalised by
/// its length, the best of those.
fn select(live: &[Option<Beam>], fsm: &Fsm, c: usize, min_satisfy: usize, beams: usize, cfg: &SearchConfig) -> Constrained {
    let norm = |b: &Beam| b.score / ((b.tokens.len() + 1) as f32).powf(cfg.length_penalty);
    // per main state: its best beam (beam 0: the states' beams are in score order) and its score
    let heads: Vec<(usize, &Beam, f32)> =
        (0..fsm.main_states()).filter_map(|s| live[s * beams].as_ref().map(|b| (s.count_ones() as usize, b, norm(b)))).collect();
    let pick = |need: usize| {
        heads.iter().filter(|h| h.0 >= need).fold(None, |best: Option<&(usize, &Beam, f32)>, h| match best {
            Some(b) if b.2 >= h.2 => Some(b),
            _ => Some(h),
        })
    };
    let need = c.min(min_satisfy);
    let (chosen, accepted) = match pick(need) {
        Some(h) => (Some(h), true),
        None => (heads.iter().map(|h| h.0).max().and_then(pick), false),
    };
    match chosen {
        Some(&(satisfied, b, score)) => {
            Constrained { hypothesis: Hypothesis { tokens: b.tokens.clone(), logprobs: b.logprobs.clone(), score, finished: b.finished }, satisfied, accepted }
        }
        // every word of every step was masked (-inf): nothing was generated
        None => Constrained {
            hypothesis: Hypothesis { tokens: Vec::new(), logprobs: Vec::new(), score: f32::NEG_INFINITY, finished: false },
            satisfied: 0,
            accepted: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::beam::beam_search;
    use super::super::fsm::{cbs_rows, cbs_states};
    use super::super::log_softmax;
    use super::super::mock::{hashed, Mock, Model};
    use super::*;

    const EOS: u32 = 2;
    fn cfg(max_len: usize) -> SearchConfig {
        SearchConfig { bos: 0, eos: EOS, pad: 1, max_len, length_penalty: 1.0 }
    }

    /// Whether the constraint's tokens occur consecutively in the caption.
    fn mentions(tokens: &[u32], c: &Constraint) -> bool {
        tokens.windows(c.slots.len()).any(|w| w.iter().zip(&c.slots).all(|(t, forms)| forms.contains(t)))
    }

    /// cbs.py's answer by enumerating every caption of up to `max_len` words with every path of
    /// the FSM: per state the caption with the highest raw sum (f32, summed in the search's
    /// order), then the accepting state whose caption has the best sum / (words + 1). Also
    /// returns how many (caption, path) pairs a state ever holds: beams at least that many keep
    /// everything.
    fn brute_force(model: &Model, image: usize, cons: &[Constraint], min_satisfy: usize, c: &SearchConfig) -> ((Vec<u32>, f32), usize) {
        struct E<'a> {
            model: &'a Model,
            fsm: Fsm,
            best: Vec<Option<(f32, Vec<u32>)>>,
            seen: Vec<usize>,
        }
        fn record(e: &mut E, s: usize, sum: f32, tokens: &[u32]) {
            e.seen[s] += 1;
            if e.best[s].as_ref().is_none_or(|b| sum > b.0) {
                e.best[s] = Some((sum, tokens.to_vec()));
            }
        }
        fn go(e: &mut E, image: usize, c: &SearchConfig, past: &mut Vec<u32>, states: &[usize], sum: f32) {
            let lp = log_softmax(&(e.model)(image, past));
            let words = past.len() - 1;
            for &s in states {
                for s2 in e.fsm.next(s, c.eos) {
                    record(e, s2, sum + lp[c.eos as usize], &past[1..]);
                }
            }
            for w in (0..lp.len() as u32).filter(|&w| w != c.eos) {
                let next: Vec<usize> = states.iter().flat_map(|&s| e.fsm.next(s, w)).collect();
                past.push(w);
                for &s in &next {
                    e.seen[s] += 1;
                    if words + 1 == c.max_len {
                        record(e, s, sum + lp[w as usize], &past[1..]);
                    }
                }
                if words + 1 < c.max_len {
                    go(e, image, c, past, &next, sum + lp[w as usize]);
                }
                past.pop();
            }
        }
        let fsm = Fsm::new(cons);
        let n = fsm.states();
        let mut e = E { model, fsm, best: vec![None; n], seen: vec![0; n] };
        go(&mut e, image, c, &mut vec![c.bos], &[0], 0.0);
        let need = cons.len().min(min_satisfy);
        let mut best: Option<(Vec<u32>, f32)> = None;
        for s in (0..1usize << cons.len()).filter(|s| s.count_ones() as usize >= need) {
            if let Some((sum, t)) = &e.best[s] {
                let score = sum / (t.len() + 1) as f32;
                if best.as_ref().is_none_or(|b| score > b.1) {
                    best = Some((t.clone(), score));
                }
            }
        }
        (best.unwrap(), e.seen.into_iter().max().unwrap())
    }

    #[test]
    fn enough_beams_find_the_brute_force_best() {
        // vocabulary 4 (three words and the EOS), 3 words; A = word 0, B = words 1 3; two images,
        // so each reads its own first step
        let cons = vec![Constraint::new(&[0]), Constraint::new(&[1, 3])];
        let c = cfg(3);
        let beams = 64;
        let k = cbs_states(&cons).unwrap() * beams;
        for min_satisfy in [0, 1, 2] {
            for seed in 0..12 {
                let mut st = Mock::new(2, k, hashed(seed, 4, 2.5));
                let got = constrained_beam_search(&mut st, 2, &[cons.clone(), cons.clone()], min_satisfy, beams, &c).unwrap();
                for (i, g) in got.iter().enumerate() {
                    let ((tokens, score), seen) = brute_force(&st.model, i, &cons, min_satisfy, &c);
                    assert!(seen <= beams, "{seen} > {beams}");
                    assert_eq!(g.hypothesis.tokens, tokens, "min {min_satisfy} seed {seed} image {i}");
                    assert!((g.hypothesis.score - score).abs() < 1e-5);
                    assert!(g.accepted && g.satisfied >= min_satisfy.min(2));
                    let sum: f32 = g.hypothesis.logprobs.iter().sum();
                    assert!((g.hypothesis.score - sum / (tokens.len() + 1) as f32).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn captions_satisfy_the_constraints() {
        // realistic beams: 3 constraints, one of two tokens and one with two forms; at least 2 met
        let cons = vec![Constraint::new(&[3]), Constraint::new(&[5, 6]), Constraint::with_forms(vec![vec![7, 4]])];
        let (beams, c) = (3, cfg(8));
        let k = cbs_rows(3, beams);
        let (mut all, mut wrong) = (0, 0);
        for seed in 0..20 {
            let mut st = Mock::new(2, k, hashed(seed, 9, 3.0));
            for g in constrained_beam_search(&mut st, 2, &[cons.clone(), cons.clone()], 2, beams, &c).unwrap() {
                let met = cons.iter().filter(|x| mentions(&g.hypothesis.tokens, x)).count();
                assert!(g.accepted && g.satisfied >= 2 && met >= g.satisfied, "seed {seed}: {g:?}");
                all += (met == 3) as usize;
            }
            // unconstrained, the same model rarely mentions two of them
            let mut st = Mock::new(2, beams, hashed(seed, 9, 3.0));
            for h in beam_search(&mut st, 2, beams, &c).unwrap() {
                wrong += (cons.iter().filter(|x| mentions(&h.tokens, x)).count() < 2) as usize;
            }
        }
        assert!(wrong > 10 && all > 0, "{wrong} {all}");
    }

    #[test]
    fn constraints_the_model_prefers_give_plain_beam_search() {
        // a sure caption 5 6 7 over random logits elsewhere
        let sure: Model = Box::new(|i, past: &[u32]| {
            let mut l = hashed(9, 9, 1.0)(i, past);
            let next = match &past[1..] {
                [] => 5,
                [5] => 6,
                [5, 6] => 7,
                [5, 6, 7] => EOS as usize,
                _ => return l,
            };
            l[next] += 6.0;
            l
        });
        let (beams, c) = (3, cfg(8));
        let mut st = Mock::new(1, beams, sure);
        let plain = beam_search(&mut st, 1, beams, &c).unwrap().remove(0);
        assert_eq!(plain.tokens, vec![5, 6, 7]);
        for cons in [vec![], vec![Constraint::new(&[5])], vec![Constraint::new(&[7]), Constraint::new(&[5, 6])]] {
            let k = cbs_states(&cons).unwrap() * beams;
            let model = std::mem::replace(&mut st.model, Box::new(|_, _| Vec::new()));
            let mut cst = Mock::new(1, k, model);
            let got = constrained_beam_search(&mut cst, 1, std::slice::from_ref(&cons), 2, beams, &c).unwrap().remove(0);
            assert_eq!(got.hypothesis.tokens, plain.tokens, "{cons:?}");
            assert!((got.hypothesis.score - plain.score).abs() < 1e-5 && got.satisfied == cons.len() && got.accepted);
            st.model = cst.model;
        }
    }

    #[test]
    fn a_plan_that_ignores_reorders_gives_wrong_captions() {
        let cons = vec![Constraint::new(&[0]), Constraint::new(&[1, 3])];
        let c = cfg(3);
        let k = cbs_states(&cons).unwrap() * 64;
        let wrong = (0..12)
            .filter(|&seed| {
                let mut st = Mock::new(1, k, hashed(seed, 4, 2.5));
                st.ignore_reorder = true;
                let got = constrained_beam_search(&mut st, 1, std::slice::from_ref(&cons), 2, 64, &c).unwrap().remove(0);
                got.hypothesis.tokens != brute_force(&st.model, 0, &cons, 2, &c).0 .0
            })
            .count();
        assert!(wrong > 3, "{wrong}");
    }

    #[test]
    fn unreachable_constraints_fall_back_to_the_most_satisfied_state() {
        // B needs 3 words and only 2 fit: the best caption with A alone
        let cons = vec![Constraint::new(&[3]), Constraint::new(&[4, 5, 6])];
        let k = cbs_states(&cons).unwrap() * 2;
        let mut st = Mock::new(1, k, hashed(1, 8, 1.0));
        let g = constrained_beam_search(&mut st, 1, &[cons], 2, 2, &cfg(2)).unwrap().remove(0);
        assert_eq!((g.accepted, g.satisfied), (false, 1));
        assert!(g.hypothesis.tokens.contains(&3));
    }

    #[test]
    fn rows_and_bad_inputs() {
        assert_eq!((cbs_rows(0, 5), cbs_rows(1, 5), cbs_rows(2, 5), cbs_rows(3, 5)), (5, 25, 80, 220));
        let long = Constraint::new(&[10, 11, 12, 13]);
        assert_eq!(cbs_states(&[long.clone(), long.clone(), long.clone()]).unwrap() * 5, cbs_rows(3, 5));
        let c = cfg(4);
        let one = vec![vec![Constraint::new(&[3])]];
        let run = |images: usize, rows: usize, cons: &[Vec<Constraint>], beams: usize| {
            let mut st = Mock::new(1, rows, hashed(0, 6, 1.0));
            constrained_beam_search(&mut st, images, cons, 2, beams, &c).map(|_| ())
        };
        assert!(run(1, 4, &one, 2).is_ok());
        assert!(run(1, 4, &one, 0).is_err(), "zero beams");
        assert!(run(1, 3, &one, 2).is_err(), "rows not a multiple of beams");
        assert!(run(1, 2, &one, 2).is_err(), "fewer rows than states × beams");
        assert!(run(2, 4, &one, 2).is_err(), "constraints for 1 of 2 images");
        assert!(run(3, 4, &[one[0].clone(), one[0].clone(), one[0].clone()], 1).is_err(), "4 rows are not 3 images");
        let four: Vec<Constraint> = (0..4).map(|w| Constraint::new(&[w + 3])).collect();
        assert!(run(1, 80, &[four], 1).is_err() && cbs_states(&vec![Constraint::new(&[3]); 4]).is_err(), "4 constraints");
        assert!(run(1, 4, &[vec![Constraint::new(&[])]], 2).is_err(), "an empty constraint");
        assert!(run(1, 4, &[vec![Constraint::with_forms(vec![vec![3], vec![]])]], 2).is_err(), "a token with no form");
        assert!(run(1, 4, &[vec![Constraint::new(&[EOS])]], 2).is_err(), "the EOS as a constraint");
        assert!(run(1, 4, &[vec![Constraint::new(&[6])]], 2).is_err(), "outside the vocabulary");
        assert!(run(0, 4, &[], 2).is_err());
    }
}
