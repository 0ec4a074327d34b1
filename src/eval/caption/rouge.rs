//! ROUGE-L as pycocoevalcap's `rouge/rouge.py`: for each reference the longest common
//! subsequence with the candidate gives a precision (LCS / candidate length) and a recall (LCS /
//! reference length); the best precision and the best recall over the references (each maximised
//! on its own) make F = (1 + β²)·P·R / (R + β²·P) with β = 1.2; the reported score is the mean
//! over images (numpy's mean).
//!
//! rouge.py splits the tokenised captions with `split(" ")`, not `split()`: an empty caption is
//! one empty token, and a token holding a no-break space (`2 1/2` after PTB tokenisation) stays
//! one token. [`super::rouge_tokens`] gives that split; the functions here take tokens.
use super::np_mean;

pub const BETA: f64 = 1.2;

/// Length of the longest common subsequence (`my_lcs`).
pub fn lcs<S: AsRef<str>>(a: &[S], b: &[S]) -> usize {
    let (long, short) = if a.len() < b.len() { (b, a) } else { (a, b) };
    let mut prev = vec![0usize; short.len() + 1];
    let mut cur = prev.clone();
    for x in long {
        for (j, y) in short.iter().enumerate() {
            cur[j + 1] = if x.as_ref() == y.as_ref() { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[short.len()]
}

/// One image's ROUGE-L (`Rouge.calc_score`); `refs` must not be empty.
pub fn image_rouge_l<S: AsRef<str>>(cand: &[S], refs: &[Vec<S>]) -> f64 {
    assert!(!refs.is_empty(), "ROUGE-L of a candidate with no references");
    let (mut prec_max, mut rec_max) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for r in refs {
        let l = lcs(r, cand) as f64;
        // Python divides by the lengths as floats; an empty list would raise there, and cannot
        // come from split(" ")
        prec_max = prec_max.max(l / cand.len() as f64);
        rec_max = rec_max.max(l / r.len() as f64);
    }
    let b2 = BETA.powf(2.0);
    if prec_max != 0.0 && rec_max != 0.0 {
        ((1.0 + b2) * prec_max * rec_max) / (rec_max + b2 * prec_max)
    } else {
        0.0
    }
}

/// Mean ROUGE-L over images, and the per-image scores.
pub fn rouge_l<S: AsRef<str>>(refs: &[Vec<Vec<S>>], cands: &[Vec<S>]) -> (f64, Vec<f64>) {
    let per: Vec<f64> = cands.iter().zip(refs).map(|(c, r)| image_rouge_l(c, r)).collect();
    (np_mean(&per), per)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    #[test]
    fn by_hand() {
        assert_eq!(lcs(&w("a b c d e"), &w("a c e f")), 3);
        assert_eq!(lcs(&w("x"), &w("a b")), 0);
        // candidate "a man rides a horse" (5) vs "a man is riding a horse" (6): LCS a man a horse = 4
        let s = image_rouge_l(&w("a man rides a horse"), &[w("a man is riding a horse")]);
        let (p, r) = (4.0 / 5.0, 4.0 / 6.0);
        let b2 = 1.2f64 * 1.2;
        assert!((s - (1.0 + b2) * p * r / (r + b2 * p)).abs() < 1e-12, "{s}");
        // precision and recall are maximised separately, over different references
        let s = image_rouge_l(&w("a b"), &[w("a b c d"), w("a")]);
        // best P: 2/2 (first ref); best R: 1/1 (second ref)
        assert!((s - 1.0).abs() < 1e-12, "{s}");
        // an empty caption is one empty token: no overlap with words
        assert_eq!(image_rouge_l(&w(""), &[w("a dog")]), 0.0);
        assert_eq!(image_rouge_l(&w("a dog"), &[w("")]), 0.0);
        assert_eq!(image_rouge_l(&w(""), &[w("")]), 1.0);
        let (m, per) = rouge_l(&[vec![w("a b")], vec![w("c")]], &[w("a b"), w("d")]);
        assert_eq!(per, vec![1.0, 0.0]);
        assert_eq!(m, 0.5);
    }
}
