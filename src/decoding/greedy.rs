//! Greedy decoding and multinomial sampling: Oscar's `_generate_no_beam_search`
//! (oscar/modeling/modeling_utils.py). One row per caption; every row is fed every step, a row
//! that has emitted the EOS is fed the pad token and its caption no longer changes; the search ends
//! when every row has finished or at `max_len`, where the EOS is forced.
use super::{argmax, bad, check_rows, log_softmax, run_step, Hypothesis, SearchConfig, Stepper};
use crate::util::Rng;
use crate::Result;

/// Greedy decoding, one row per image: the argmax at every step (the first on ties).
/// `score` is the mean log p over the generated positions, as Oscar returns it.
pub fn greedy<S: Stepper + ?Sized>(st: &mut S, images: usize, cfg: &SearchConfig) -> Result<Vec<Hypothesis>> {
    cfg.check("greedy")?;
    check_rows("greedy", st, images, 1, "rows per image")?;
    decode("greedy", st, cfg, |_, logits| {
        let w = argmax(logits);
        (w as u32, log_softmax(logits)[w])
    })
}

/// Multinomial sampling, `n` rows per image (self-critical training draws 5). Each step divides
/// the logits by `temperature`, keeps the `top_k` largest (0 keeps all; ties with the k-th are
/// kept, as Oscar's `top_k_top_p_filtering`), and draws from their softmax. `logprobs` are under
/// that scaled, filtered distribution, as Oscar's, and `score` is their mean: the length-averaged
/// log-probability SCST weighs by the reward. Draws come from `rng`, one per unfinished row and
/// step in row order, so a seed fixes the result.
pub fn sample<S: Stepper + ?Sized>(
    st: &mut S,
    images: usize,
    n: usize,
    temperature: f32,
    top_k: usize,
    rng: &mut Rng,
    cfg: &SearchConfig,
) -> Result<Vec<Hypothesis>> {
    cfg.check("sample")?;
    check_rows("sample", st, images, n, "samples per image")?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(bad("sample", format!("temperature must be positive and finite, got {temperature}")));
    }
    decode("sample", st, cfg, |_, logits| {
        let filtered = filter(logits, temperature, top_k);
        let logp = log_softmax(&filtered);
        let w = draw(&logp, rng);
        (w as u32, logp[w])
    })
}

/// Temperature, then top-k: every logit below the k-th largest becomes -inf.
fn filter(logits: &[f32], temperature: f32, top_k: usize) -> Vec<f32> {
    let mut x: Vec<f32> = logits.iter().map(|&l| if temperature != 1.0 { l / temperature } else { l }).collect();
    if top_k > 0 && top_k < x.len() {
        let mut sorted = x.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[top_k - 1];
        for l in x.iter_mut().filter(|l| **l < kth) {
            *l = f32::NEG_INFINITY;
        }
    }
    x
}

/// Inverse-CDF draw from log-probabilities (in f64, so no token of positive probability is lost
/// to rounding at the top of the CDF).
fn draw(logp: &[f32], rng: &mut Rng) -> usize {
    let u = rng.uniform_f64();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &l) in logp.iter().enumerate() {
        if l == f32::NEG_INFINITY {
            continue;
        }
        acc += (l as f64).exp();
        last = i;
        if u < acc {
            return i;
        }
    }
    // the probabilities summed to slightly under 1 and u fell above them
    last
}

/// The loop both share: `pick(row, logits)` chooses a row's token and its log p.
fn decode<S: Stepper + ?Sized>(op: &'static str, st: &mut S, cfg: &SearchConfig, mut pick: impl FnMut(usize, &[f32]) -> (u32, f32)) -> Result<Vec<Hypothesis>> {
    let rows = st.rows();
    let mut hyps = vec![Hypothesis { tokens: Vec::new(), logprobs: Vec::new(), score: 0.0, finished: false }; rows];
    let mut tokens = vec![cfg.bos; rows];
    let mut vocab = None;
    for t in 0..cfg.max_len {
        let logits = run_step(op, st, t, &tokens, &mut vocab, cfg)?;
        let v = logits.len() / rows;
        let last = t + 1 == cfg.max_len;
        for (r, h) in hyps.iter_mut().enumerate() {
            if h.finished {
                tokens[r] = cfg.pad;
                continue;
            }
            let (w, lp) = pick(r, &logits[r * v..(r + 1) * v]);
            h.logprobs.push(lp);
            if w == cfg.eos {
                h.finished = true;
            } else if !last {
                h.tokens.push(w);
            }
            // at max_len Oscar overwrites the chosen token with the EOS but keeps its log p
            tokens[r] = w;
        }
        if hyps.iter().all(|h| h.finished) {
            break;
        }
    }
    for h in &mut hyps {
        h.score = (h.logprobs.iter().map(|&l| l as f64).sum::<f64>() / h.logprobs.len() as f64) as f32;
    }
    Ok(hyps)
}

#[cfg(test)]
mod tests {
    use super::super::mock::{fixed, hashed, Mock};
    use super::*;

    const EOS: u32 = 2;
    fn cfg(max_len: usize) -> SearchConfig {
        SearchConfig { bos: 0, eos: EOS, pad: 1, max_len, length_penalty: 1.0 }
    }

    /// The argmax chain of `model` for one image, straight from the model.
    fn chain(model: &dyn Fn(usize, &[u32]) -> Vec<f32>, image: usize, c: &SearchConfig) -> Hypothesis {
        let mut past = vec![c.bos];
        let mut h = Hypothesis { tokens: Vec::new(), logprobs: Vec::new(), score: 0.0, finished: false };
        for t in 0..c.max_len {
            let l = model(image, &past);
            let w = argmax(&l);
            h.logprobs.push(log_softmax(&l)[w]);
            if w as u32 == c.eos {
                h.finished = true;
                break;
            }
            if t + 1 < c.max_len {
                h.tokens.push(w as u32);
            }
            past.push(w as u32);
        }
        h.score = h.logprobs.iter().sum::<f32>() / h.logprobs.len() as f32;
        h
    }

    #[test]
    fn greedy_is_the_argmax_chain_and_freezes_finished_rows() {
        let c = cfg(6);
        let (mut ended, mut cut) = (0, 0);
        for seed in 0..40 {
            let mut st = Mock::new(3, 1, hashed(seed, 5, 3.0));
            let got = greedy(&mut st, 3, &c).unwrap();
            for (i, g) in got.iter().enumerate() {
                let want = chain(&hashed(seed, 5, 3.0), i, &c);
                assert_eq!((&g.tokens, g.finished), (&want.tokens, want.finished), "seed {seed} image {i}");
                assert!((g.score - want.score).abs() < 1e-5 && g.logprobs.len() == want.logprobs.len());
                // a finished row is fed the pad token from then on
                for (t, fed) in st.fed.iter().enumerate().skip(g.logprobs.len() + 1) {
                    assert_eq!(fed[i], c.pad, "seed {seed} image {i} step {t}");
                }
                if g.finished {
                    ended += 1
                } else {
                    cut += 1
                }
            }
            // the search stops once every row has finished
            let longest = got.iter().map(|g| g.logprobs.len()).max().unwrap();
            assert_eq!(st.steps(), longest);
        }
        assert!(ended > 10 && cut > 10, "both endings are exercised: {ended} {cut}");
    }

    #[test]
    fn greedy_forces_eos_at_max_len_with_the_chosen_tokens_logprob() {
        // token 3 always wins: never an EOS
        let mut st = Mock::new(1, 1, fixed(vec![0.0, 0.0, 1.0, 3.0]));
        let h = greedy(&mut st, 1, &cfg(4)).unwrap().remove(0);
        let lp = log_softmax(&[0.0, 0.0, 1.0, 3.0])[3];
        assert_eq!((h.tokens, h.finished, st.steps()), (vec![3, 3, 3], false, 4));
        assert_eq!(h.logprobs, vec![lp; 4]);
        assert!((h.score - lp).abs() < 1e-6);
    }

    fn first_tokens(logits: Vec<f32>, n: usize, temperature: f32, top_k: usize, seed: u64) -> (Vec<usize>, Vec<Hypothesis>) {
        let v = logits.len();
        let mut st = Mock::new(1, n, fixed(logits));
        let hyps = sample(&mut st, 1, n, temperature, top_k, &mut Rng::new(seed), &cfg(2)).unwrap();
        let mut counts = vec![0; v];
        for h in &hyps {
            counts[*h.tokens.first().unwrap_or(&EOS) as usize] += 1;
        }
        (counts, hyps)
    }

    fn chi2(counts: &[usize], probs: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        counts.iter().zip(probs).filter(|(_, &p)| p > 0.0).map(|(&c, &p)| (c as f64 - n as f64 * p).powi(2) / (n as f64 * p)).sum()
    }

    fn softmax(x: &[f32]) -> Vec<f64> {
        log_softmax(x).iter().map(|&l| (l as f64).exp()).collect()
    }

    #[test]
    fn sampling_frequencies_follow_the_softmax() {
        let logits = vec![0.5, -1.0, 0.0, 1.5, 1.0];
        let n = 20000;
        // temperature 1, no filter; chi-square with 4 degrees of freedom: 18.5 is p = 0.001
        let (counts, hyps) = first_tokens(logits.clone(), n, 1.0, 0, 7);
        assert!(chi2(&counts, &softmax(&logits)) < 18.5, "{counts:?}");
        // the log p of every chosen token is its softmax's, and the score their mean
        let lsm = log_softmax(&logits);
        for h in &hyps {
            let w = *h.tokens.first().unwrap_or(&EOS) as usize;
            assert!((h.logprobs[0] - lsm[w]).abs() < 1e-6);
            assert!((h.score - h.logprobs.iter().sum::<f32>() / h.logprobs.len() as f32).abs() < 1e-6);
        }
        // temperature 2 flattens: the distribution of logits / 2
        let (counts, _) = first_tokens(logits.clone(), n, 2.0, 0, 8);
        let half: Vec<f32> = logits.iter().map(|l| l / 2.0).collect();
        assert!(chi2(&counts, &softmax(&half)) < 18.5, "{counts:?}");
        assert!(chi2(&counts, &softmax(&logits)) > 100.0, "and differs from temperature 1");
        // a tiny temperature is the argmax
        let (counts, _) = first_tokens(logits.clone(), 500, 0.01, 0, 9);
        assert_eq!(counts[3], 500);
        // top-k 2 keeps tokens 3 and 4 only, renormalised, and the log p is under that filter
        let (counts, hyps) = first_tokens(logits.clone(), n, 1.0, 2, 10);
        let p = softmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, 1.5, 1.0]);
        assert_eq!(counts[0] + counts[1] + counts[2], 0);
        assert!(chi2(&counts, &p) < 10.8, "{counts:?}"); // 1 degree of freedom, p = 0.001
        let h = hyps.iter().find(|h| h.tokens.first() == Some(&4)).unwrap();
        assert!((h.logprobs[0] as f64 - p[4].ln()).abs() < 1e-6);
        // top-k keeps ties with the k-th value
        let (counts, _) = first_tokens(vec![1.0, 0.0, 1.0, 1.0, -1.0], 3000, 1.0, 2, 11);
        assert!(counts[0] > 800 && counts[2] > 800 && counts[3] > 800 && counts[1] + counts[4] == 0, "{counts:?}");
    }

    #[test]
    fn sampling_is_deterministic_from_a_seed_and_follows_each_rows_past() {
        let c = cfg(8);
        let run = |seed| {
            let mut st = Mock::new(2, 4, hashed(3, 6, 2.0));
            sample(&mut st, 2, 4, 1.0, 0, &mut Rng::new(seed), &c).unwrap()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // every caption's log p are those of its own past under the model
        let model = hashed(3, 6, 2.0);
        for (r, h) in run(5).iter().enumerate() {
            let mut past = vec![c.bos];
            let ended = h.tokens.iter().copied().chain(h.finished.then_some(EOS));
            for (t, w) in ended.enumerate() {
                assert!((h.logprobs[t] - log_softmax(&model(r / 4, &past))[w as usize]).abs() < 1e-6);
                past.push(w);
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = cfg(4);
        let mut st = Mock::new(3, 1, hashed(0, 5, 1.0));
        assert!(greedy(&mut st, 2, &c).is_err(), "3 rows are not 2 images");
        assert!(greedy(&mut st, 0, &c).is_err());
        assert!(greedy(&mut st, 3, &SearchConfig { max_len: 0, ..c.clone() }).is_err());
        assert!(greedy(&mut st, 3, &SearchConfig { eos: 5, ..c.clone() }).is_err(), "EOS outside the vocabulary");
        let mut rng = Rng::new(0);
        assert!(sample(&mut st, 3, 0, 1.0, 0, &mut rng, &c).is_err(), "zero samples");
        assert!(sample(&mut st, 1, 2, 1.0, 0, &mut rng, &c).is_err(), "3 rows are not 1 × 2");
        assert!(sample(&mut st, 3, 1, 0.0, 0, &mut rng, &c).is_err(), "temperature 0");
        assert!(sample(&mut st, 3, 1, f32::NAN, 0, &mut rng, &c).is_err());
        let mut nan = Mock::new(1, 1, fixed(vec![0.0, f32::NAN, 1.0]));
        assert!(greedy(&mut nan, 1, &c).is_err());
        let mut masked = Mock::new(1, 1, fixed(vec![f32::NEG_INFINITY; 3]));
        assert!(greedy(&mut masked, 1, &c).is_err());
        let mut ragged = Mock::new(2, 1, Box::new(|i, _| vec![0.0; 3 + i]));
        assert!(greedy(&mut ragged, 2, &c).is_err());
    }
}
