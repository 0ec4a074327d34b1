//! Caption metrics equal to the COCO caption evaluation code, pycocoevalcap 1.2 (PyPI; the
//! tylin/coco-caption scorers ported to Python 3): PTB tokenisation ([`ptb`]), BLEU-1..4
//! ([`bleu`]), ROUGE-L ([`rouge`]) and CIDEr-D ([`cider`]), each reimplemented with its quirks;
//! `tests/fixtures/caption/` holds the numbers pycocoevalcap itself gives on hand-made sets
//! (`tools/caption_refs.py`), which the tests compare against. METEOR and SPICE are Java programs;
//! `tools/caption_java_metrics.py` runs them through pycocoevalcap when it is installed.
//!
//! The pipeline is pycocoevalcap's: every caption goes through the PTB tokenizer (references and
//! candidates separately, in image order), the tokenised strings are split on whitespace for BLEU
//! and CIDEr and on single spaces for ROUGE-L, and the scorers see one candidate and ≥ 1
//! references per image.
pub mod bleu;
pub mod cider;
mod pattern;
pub mod ptb;
pub mod rouge;

pub use cider::{cider_d, CiderD};
pub use ptb::{ptb_line, ptb_lines};

use crate::{Error, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// The words BLEU and CIDEr see for a tokenised line: Python's `str.split()`.
pub fn py_split(line: &str) -> Vec<String> {
    line.split(ptb::py_space).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// The tokens ROUGE-L sees for a tokenised line: Python's `str.split(" ")` (an empty line is one
/// empty token).
pub fn rouge_tokens(line: &str) -> Vec<String> {
    line.split(' ').map(str::to_string).collect()
}

/// One caption as BLEU and CIDEr see it after pycocoevalcap's PTB tokenisation: lower-cased PTB
/// tokens without punctuation, e.g. `"A man's hat (red)."` -> `a man 's hat -lrb- red -rrb-`.
pub fn tokenize(s: &str) -> Vec<String> {
    py_split(&ptb_line(s))
}

/// The n-grams of `words` for n = 1..=max as (n-gram joined by spaces, n − 1, count), in the order
/// `precook` inserts them into its dict: by n, then by first position.
pub(crate) fn ngrams<S: AsRef<str>>(words: &[S], max: usize) -> Vec<(String, usize, usize)> {
    let mut out: Vec<(String, usize, usize)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for k in 1..=max {
        for win in words.windows(k) {
            let g = win.iter().map(|w| w.as_ref()).collect::<Vec<_>>().join(" ");
            match at.get(&g) {
                Some(&i) => out[i].2 += 1,
                None => {
                    at.insert(g.clone(), out.len());
                    out.push((g, k - 1, 1));
                }
            }
        }
    }
    out
}

/// numpy's sum of a float64 array (pairwise: 8 accumulators per block of up to 128), which
/// `np.mean` divides by the count.
fn np_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, x| s + x)
    } else if n <= 128 {
        let mut r: [f64; 8] = a[..8].try_into().unwrap();
        let blocks = n - n % 8;
        for chunk in a[8..blocks].chunks_exact(8) {
            for (acc, x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[blocks..] {
            res += x;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        np_sum(&a[..half]) + np_sum(&a[half..])
    }
}

pub(crate) fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// The `score --task caption` numbers, named and scaled as pycocoevalcap reports them (fractions;
/// CIDEr on its ×10 scale, e.g. 1.05).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaptionScores {
    #[serde(rename = "BLEU-1")]
    pub bleu1: f64,
    #[serde(rename = "BLEU-2")]
    pub bleu2: f64,
    #[serde(rename = "BLEU-3")]
    pub bleu3: f64,
    #[serde(rename = "BLEU-4")]
    pub bleu4: f64,
    #[serde(rename = "ROUGE-L")]
    pub rouge_l: f64,
    #[serde(rename = "CIDEr")]
    pub cider: f64,
    pub images: usize,
    /// Per image, in the order of the references: pycocoevalcap's `Rouge().compute_score` and
    /// `Cider().compute_score` second values (the corpus numbers are their means). Not in the
    /// JSON summary; `score --per-image` writes them.
    #[serde(skip)]
    pub rouge_l_per_image: Vec<f64>,
    #[serde(skip)]
    pub cider_per_image: Vec<f64>,
}

/// pycocoevalcap's BLEU-1..4, ROUGE-L and CIDEr(-D) of `cands` (image id, caption) against `refs`
/// (image id, its reference captions), both raw text: they are PTB-tokenised here. The two must
/// cover the same images, each once, every image with at least one reference. Images are taken in
/// the order of `refs`.
pub fn caption_scores(refs: &[(String, Vec<String>)], cands: &[(String, String)]) -> Result<CaptionScores> {
    let fail = |m: String| Err(Error::Other(format!("caption scores: {m}")));
    if refs.is_empty() {
        return fail("no images".into());
    }
    let mut seen = HashSet::new();
    for (id, r) in refs {
        if !seen.insert(id.as_str()) {
            return fail(format!("image '{id}' has two reference entries"));
        }
        if r.is_empty() {
            return fail(format!("image '{id}' has no reference captions"));
        }
    }
    let mut cand: HashMap<&str, &str> = HashMap::new();
    for (id, c) in cands {
        if !seen.contains(id.as_str()) {
            return fail(format!("candidate for unknown image '{id}'"));
        }
        if cand.insert(id, c).is_some() {
            return fail(format!("image '{id}' has two candidates"));
        }
    }
    if let Some((id, _)) = refs.iter().find(|(id, _)| !cand.contains_key(id.as_str())) {
        return fail(format!("no candidate for image '{id}'"));
    }
    // tokenised as pycocoevalcap does: all references in one run, all candidates in another
    let mut ref_lines = ptb_lines(&refs.iter().flat_map(|(_, r)| r.iter().map(String::as_str)).collect::<Vec<_>>()).into_iter();
    let ref_lines: Vec<Vec<String>> = refs.iter().map(|(_, r)| ref_lines.by_ref().take(r.len()).collect()).collect();
    let cand_lines = ptb_lines(&refs.iter().map(|(id, _)| cand[id.as_str()]).collect::<Vec<_>>());
    Ok(scores_of_lines(&ref_lines, &cand_lines))
}

/// The scores of captions already tokenised as pycocoevalcap's tokenizer returns them (one string
/// per caption, tokens separated by spaces): what its scorers compute from `gts` and `res`.
pub fn scores_of_lines(refs: &[Vec<String>], cands: &[String]) -> CaptionScores {
    let words = |l: &String| py_split(l);
    let ref_words: Vec<Vec<Vec<String>>> = refs.iter().map(|r| r.iter().map(words).collect()).collect();
    let cand_words: Vec<Vec<String>> = cands.iter().map(words).collect();
    let b = bleu::bleu(&ref_words, &cand_words);
    let ref_toks: Vec<Vec<Vec<String>>> = refs.iter().map(|r| r.iter().map(|l| rouge_tokens(l)).collect()).collect();
    let cand_toks: Vec<Vec<String>> = cands.iter().map(|l| rouge_tokens(l)).collect();
    let (rouge_l, rouge_l_per_image) = rouge::rouge_l(&ref_toks, &cand_toks);
    let (cider, cider_per_image) = cider_d(&ref_words, &cand_words);
    CaptionScores { bleu1: b[0], bleu2: b[1], bleu3: b[2], bleu4: b[3], rouge_l, cider, images: cands.len(), rouge_l_per_image, cider_per_image }
}

#[cfg(test)]
mod tests;
