//! CIDEr-D as pycocoevalcap's `cider/cider_scorer.py` computes it (its "CIDEr" is the D variant:
//! clipped n-gram weights and a length penalty), n = 1..4, σ = 6, scaled by 10.
//!
//! Each caption becomes, per n, a TF-IDF vector: term frequency × (log(#images) − log(max(1, df))),
//! df counting the images whose references contain the n-gram. Per reference the candidate scores,
//! per n, Σ min(v_cand, v_ref)·v_ref / (‖v_cand‖·‖v_ref‖) (the norms only divide when both are
//! non-zero) times exp(−δ²/2σ²). δ is the difference of the *bigram* counts (`length` is only
//! incremented for n == 2 in `counts2vec`), kept as written; it equals the difference of the word
//! counts whenever both captions have a word, and otherwise every similarity is 0 anyway, so the
//! quirk never shows in a score. The image's score is the mean over n,
//! divided by the number of references, times 10; the corpus score the mean over images.
//!
//! [`cider_d`] takes the document frequencies from the references of the evaluated set, as
//! pycocoevalcap does; [`CiderD`] takes them once from a reference corpus and then scores single
//! candidates (self-critical training rewards). Sums run in the order Python's dicts iterate
//! (first occurrence), and the powers are `np.e ** x`, to stay within an ulp or so of it.
use super::{ngrams, np_mean};
use std::collections::{HashMap, HashSet};

pub const N: usize = 4;
pub const SIGMA: f64 = 6.0;

/// A caption's vectors (`counts2vec`): per n the weighted n-grams in first-occurrence order, the
/// norms and the bigram count.
struct Vecs {
    grams: [Vec<(String, f64)>; N],
    lookup: [HashMap<String, f64>; N],
    norm: [f64; N],
    length: usize,
}

/// Document frequencies and log corpus size: what the scores depend on besides the captions.
#[derive(Clone, Debug)]
pub struct CiderD {
    df: HashMap<String, f64>,
    ref_len: f64,
    images: usize,
}

impl CiderD {
    /// Document frequencies from a reference corpus: `refs[i]` are image i's tokenised references.
    pub fn new<S: AsRef<str>>(refs: &[Vec<Vec<S>>]) -> CiderD {
        let mut df: HashMap<String, f64> = HashMap::new();
        for image in refs {
            let seen: HashSet<String> = image.iter().flat_map(|r| ngrams(r, N)).map(|(g, _, _)| g).collect();
            for g in seen {
                *df.entry(g).or_insert(0.0) += 1.0;
            }
        }
        // np.log(float(len(self.crefs)))
        CiderD { df, ref_len: (refs.len() as f64).ln(), images: refs.len() }
    }

    /// Number of images the document frequencies were counted over.
    pub fn images(&self) -> usize {
        self.images
    }

    fn vecs<S: AsRef<str>>(&self, words: &[S]) -> Vecs {
        let mut v = Vecs { grams: Default::default(), lookup: Default::default(), norm: [0.0; N], length: 0 };
        for (g, k, tf) in ngrams(words, N) {
            let df = self.df.get(&g).copied().unwrap_or(0.0).max(1.0).ln();
            let x = tf as f64 * (self.ref_len - df);
            v.norm[k] += x.powf(2.0);
            if k == 1 {
                v.length += tf;
            }
            v.lookup[k].insert(g.clone(), x);
            v.grams[k].push((g, x));
        }
        v.norm = v.norm.map(f64::sqrt);
        v
    }

    fn sim(hyp: &Vecs, r: &Vecs) -> [f64; N] {
        let delta = hyp.length as f64 - r.length as f64;
        std::array::from_fn(|n| {
            let mut val = 0.0;
            for (g, x) in &hyp.grams[n] {
                let y = r.lookup[n].get(g).copied().unwrap_or(0.0);
                // vrama91: added clipping
                val += x.min(y) * y;
            }
            if hyp.norm[n] != 0.0 && r.norm[n] != 0.0 {
                val /= hyp.norm[n] * r.norm[n];
            }
            val * std::f64::consts::E.powf(-delta.powf(2.0) / (2.0 * SIGMA.powf(2.0)))
        })
    }

    /// CIDEr-D of one tokenised candidate against its tokenised references (×10 scale, as
    /// pycocoevalcap reports it); `refs` must not be empty.
    pub fn score<S: AsRef<str>>(&self, cand: &[S], refs: &[Vec<S>]) -> f64 {
        // pycocoevalcap asserts this too; the mean over no references would be NaN, a poor reward
        assert!(!refs.is_empty(), "CIDEr-D of a candidate with no references");
        let hyp = self.vecs(cand);
        let mut score = [0.0; N];
        for r in refs {
            let s = Self::sim(&hyp, &self.vecs(r));
            for n in 0..N {
                score[n] += s[n];
            }
        }
        let mut avg = np_mean(&score);
        avg /= refs.len() as f64;
        avg * 10.0
    }
}

/// Corpus CIDEr-D with the document frequencies of these references (`Cider().compute_score`):
/// the mean, and the per-image scores.
pub fn cider_d<S: AsRef<str>>(refs: &[Vec<Vec<S>>], cands: &[Vec<S>]) -> (f64, Vec<f64>) {
    let c = CiderD::new(refs);
    let per: Vec<f64> = cands.iter().zip(refs).map(|(h, r)| c.score(h, r)).collect();
    (np_mean(&per), per)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn by_hand() {
        // two images; image 0's refs share "a dog" with its candidate
        let refs = vec![vec![w("a dog runs"), w("a dog")], vec![w("a cat")]];
        let c = CiderD::new(&refs);
        assert_eq!(c.images(), 2);
        // df: "a" 2 images -> idf log2 - log2 = 0; "dog" 1 image -> log2 - 0; "a cat" etc. 1
        let l2 = 2f64.ln();
        // candidate "a dog" vs ref "a dog": unigram vectors [a:0, dog:l2] both: cos 1 (0·0 + l2·l2)/(l2·l2);
        // bigram "a dog" (df 1): cos 1; 3-, 4-grams: none -> 0; same length: no penalty
        // vs ref "a dog runs": unigrams: cand [0, l2], ref [a 0, dog l2, runs l2]: l2² / (l2 · √2 l2) = 1/√2;
        // bigrams: cand ["a dog" l2], ref ["a dog" l2, "dog runs" l2]: 1/√2; bigram counts 1 vs 2: δ = -1
        let pen = std::f64::consts::E.powf(-1.0 / 72.0);
        let s = c.score(&w("a dog"), &refs[0]);
        let expect = ((1.0 + 1.0) / 4.0 + (2.0 / 2f64.sqrt() * pen) / 4.0) / 2.0 * 10.0;
        assert!((s - expect).abs() < 1e-12, "{s} vs {expect}");
        // clipping: "dog dog" against the one ref "a dog": unigram min(2·l2, l2)·l2 / (2·l2 · l2) = 0.5
        // (1 without the clipping); bigram "dog dog" is not in the ref: 0; same bigram count
        let clipped = c.score(&w("dog dog"), &[w("a dog")]);
        assert!((clipped - 0.5 / 4.0 * 10.0).abs() < 1e-12, "{clipped}");
        let _ = l2;
        // nothing in common: 0
        assert_eq!(c.score(&w("blue sky"), &refs[1]), 0.0);
        assert!(std::panic::catch_unwind(|| c.score(&w("a"), &[])).is_err());
        // the corpus function is the mean over images with df from those refs
        let (m, per) = cider_d(&refs, &[w("a dog"), w("a cat")]);
        assert_eq!(per[0], s);
        assert!((m - (per[0] + per[1]) / 2.0).abs() < 1e-15);
    }
}
