//! BLEU-1..4 as pycocoevalcap's `bleu/bleu_scorer.py` computes it for `Bleu(4)`:
//! `compute_score(option="closest")`, corpus level.
//!
//! Per image: the candidate's n-gram counts clipped by the largest count of that n-gram in any one
//! reference (`correct`), the number of candidate n-grams (`guess` = max(0, len − n + 1)), and the
//! reference length closest to the candidate's (a tie goes to the shorter reference). Over the
//! corpus the four sums and the two lengths are added up, then BLEU-n = (∏ₖ≤ₙ (correctₖ + 1e-15) /
//! (guessₖ + 1e-9))^(1/n), times exp(1 − 1/ratio) when ratio = (testlen + 1e-15) / (reflen + 1e-9)
//! is below 1. The epsilons (`tiny`, `small`) and the order of the float operations are theirs, so
//! the results agree to the last bit or so. (The per-image scores it also returns are not the
//! reported numbers and are not computed here.)
use super::ngrams;
use std::collections::HashMap;

pub const N: usize = 4;
const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// The statistics `cook_test` keeps for one image.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BleuStats {
    pub testlen: usize,
    /// The closest reference length.
    pub reflen: usize,
    pub guess: [usize; N],
    pub correct: [usize; N],
}

/// One image's statistics: candidate words against reference word lists.
pub fn image_stats<S: AsRef<str>>(cand: &[S], refs: &[Vec<S>]) -> BleuStats {
    let mut max_counts: HashMap<String, usize> = HashMap::new();
    for r in refs {
        for (g, _, c) in ngrams(r, N) {
            let m = max_counts.entry(g).or_insert(0);
            *m = (*m).max(c);
        }
    }
    let testlen = cand.len();
    // min((abs(l - testlen), l) for l in reflen)[1]
    let reflen = refs.iter().map(|r| r.len()).min_by_key(|&l| (l.abs_diff(testlen), l)).unwrap_or(0);
    let mut s = BleuStats { testlen, reflen, ..Default::default() };
    for k in 0..N {
        s.guess[k] = (testlen + 1).saturating_sub(k + 1);
    }
    for (g, k, c) in ngrams(cand, N) {
        s.correct[k] += c.min(max_counts.get(&g).copied().unwrap_or(0));
    }
    s
}

/// Corpus BLEU-1..4 from per-image statistics, as `BleuScorer.compute_score`.
pub fn corpus_bleu(stats: &[BleuStats]) -> [f64; N] {
    let (mut testlen, mut reflen) = (0usize, 0usize);
    let (mut guess, mut correct) = ([0usize; N], [0usize; N]);
    for s in stats {
        testlen += s.testlen;
        reflen += s.reflen;
        for k in 0..N {
            guess[k] += s.guess[k];
            correct[k] += s.correct[k];
        }
    }
    let mut bleus = [0.0; N];
    let mut bleu = 1.0f64;
    for k in 0..N {
        bleu *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        bleus[k] = bleu.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (testlen as f64 + TINY) / (reflen as f64 + SMALL);
    if ratio < 1.0 {
        for b in &mut bleus {
            *b *= (1.0 - 1.0 / ratio).exp();
        }
    }
    bleus
}

/// Corpus BLEU-1..4 of tokenised candidates (one per image) against tokenised references.
pub fn bleu<S: AsRef<str>>(refs: &[Vec<Vec<S>>], cands: &[Vec<S>]) -> [f64; N] {
    let stats: Vec<BleuStats> = cands.iter().zip(refs).map(|(c, r)| image_stats(c, r)).collect();
    corpus_bleu(&stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn one_image_by_hand() {
        // candidate "the cat sat on the mat" (6 words) against "the cat is on the mat" (6) and
        // "a cat sat on a mat" (6)
        let s = image_stats(&w("the cat sat on the mat"), &[w("the cat is on the mat"), w("a cat sat on a mat")]);
        // unigrams: the×2 (max ref count 2), cat, sat, on, mat: all 6 match
        // bigrams: the-cat, cat-sat, sat-on, on-the, the-mat: all in some ref: 5
        // trigrams: the-cat-sat no, cat-sat-on yes, sat-on-the no, on-the-mat yes: 2
        // 4-grams: the-cat-sat-on no, cat-sat-on-the no, sat-on-the-mat no: 0
        assert_eq!(s, BleuStats { testlen: 6, reflen: 6, guess: [6, 5, 4, 3], correct: [6, 5, 2, 0] });
        let b = corpus_bleu(&[s]);
        let p = [(6.0 + TINY) / (6.0 + SMALL), (5.0 + TINY) / (5.0 + SMALL), (2.0 + TINY) / (4.0 + SMALL), (0.0 + TINY) / (3.0 + SMALL)];
        assert!((b[0] - 1.0).abs() < 1e-9);
        assert!((b[1] - 1.0).abs() < 1e-9);
        assert!((b[2] - 0.5f64.powf(1.0 / 3.0)).abs() < 1e-9);
        // equal lengths still pay a brevity penalty of exp(1 - 1/ratio) ≈ 1 - 1.7e-10: the
        // epsilons make ratio = (6 + 1e-15) / (6 + 1e-9) < 1 (pycocoevalcap's numbers carry it too)
        let bp = (1.0 - (6.0 + SMALL) / (6.0 + TINY)).exp();
        assert!(bp < 1.0);
        assert!((b[2] - (p[0] * p[1] * p[2]).powf(1.0 / 3.0) * bp).abs() < 1e-15);
        assert!(b[2] < 0.5f64.powf(1.0 / 3.0) * (1.0 - 3e-10));
        // no 4-gram match: (1e-15 / 3)^(1/4) * 0.5^(1/4), tiny but not zero
        assert!((b[3] - (0.5 * 1e-15 / 3.0f64).powf(0.25)).abs() < 1e-12, "{}", b[3]);
    }

    #[test]
    fn brevity_penalty_and_closest_length() {
        // a 2-word candidate, refs of 3 and 1 words: both 1 away, the shorter (1) is taken: no penalty
        let s = image_stats(&w("a dog"), &[w("a big dog"), w("dog")]);
        assert_eq!(s.reflen, 1);
        // against a 4-word ref only: ratio 2/4, penalty exp(1 - 2) on every order
        let s = image_stats(&w("a dog"), &[w("a big brown dog")]);
        assert_eq!((s.reflen, s.correct, s.guess), (4, [2, 0, 0, 0], [2, 1, 0, 0]));
        let b = corpus_bleu(&[s]);
        assert!((b[0] - (-1.0f64).exp()).abs() < 1e-9, "{}", b[0]);
        // clipping: "the the the" against "the cat": 1 of 3 unigrams
        let s = image_stats(&w("the the the"), &[w("the cat")]);
        assert_eq!(s.correct[0], 1);
        // corpus level: sums first, then the ratio (not a mean of per-image scores)
        let a = image_stats(&w("a b c d"), &[w("a b c d")]);
        let b2 = image_stats(&w("x"), &[w("y z")]);
        let c = corpus_bleu(&[a, b2]);
        let ratio: f64 = (5.0 + TINY) / (6.0 + SMALL);
        assert!((c[0] - (4.0 + TINY) / (5.0 + SMALL) * (1.0 - 1.0 / ratio).exp()).abs() < 1e-12);
    }
}
