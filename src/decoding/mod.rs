//! Caption search (docs/oscar.md §5) as host logic over a `Stepper`: greedy decoding and
//! multinomial sampling (`greedy.rs`, Oscar's `_generate_no_beam_search`), beam search
//! (`beam.rs`, Oscar's `_generate_beam_search`) and NoCaps' constrained beam search (`cbs.rs` over
//! the finite-state machine of `fsm.rs`, Oscar's `oscar/utils/cbs.py`).
//!
//! The searches never touch the GPU: they see next-token logits, choose tokens, and tell the
//! stepper which row's cache each row continues from. So every rule of Oscar's search is tested
//! here on the CPU against mock models (brute-force enumeration included), and the decode plan
//! (`model::decode`) only has to implement the three methods of `Stepper`.
//!
//! Lengths: `SearchConfig::max_len` counts generated positions, the final EOS included. Oscar's
//! `max_gen_length` (its `max_length`) also counts the [CLS] it starts from, so Oscar's 20 is
//! `max_len` 19 (`SearchConfig::oscar`): at most 18 words and the EOS, the caption plan's
//! positions 0..=19 ([CLS] at 0, the last MASK at 19).
use crate::{Error, Result};

mod beam;
mod cbs;
mod fsm;
mod greedy;
#[cfg(test)]
mod mock;
#[cfg(test)]
mod oscar;

pub use beam::beam_search;
pub use cbs::{cbs_rows, cbs_states, constrained_beam_search, Constrained, Constraint, MAX_CONSTRAINTS, MAX_CONSTRAINT_TOKENS};
pub use greedy::{greedy, sample};

/// What a search drives: a decode plan holding `rows()` sequences, each with its own cache.
/// Rows are grouped per image: rows [i*k, (i+1)*k) belong to image i (k = beams, samples, or CBS
/// states × beams).
pub trait Stepper {
    fn rows(&self) -> usize;
    /// Feeds tokens[r] at caption position t (t = 0 is [CLS]) to every row and returns the
    /// next-token logits [rows, vocab] (row-major) read at the MASK after it.
    fn step(&mut self, t: usize, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Row r takes over the cache (the whole past) of row src[r].
    fn reorder(&mut self, src: &[usize]) -> Result<()>;
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchConfig {
    /// The token every caption starts from ([CLS]).
    pub bos: u32,
    /// The token that ends a caption ([SEP], the paper's "[STOP]").
    pub eos: u32,
    /// Fed to rows that have nothing left to decode (finished rows, finished images, unused CBS
    /// rows); Oscar feeds [PAD]. Their logits are ignored.
    pub pad: u32,
    /// Generated positions, EOS included (Oscar's max_gen_length minus one, see the module doc).
    pub max_len: usize,
    /// Exponent of the length in beam scores, sum log p / len^length_penalty (Oscar: 1).
    pub length_penalty: f32,
}

impl SearchConfig {
    /// Oscar's test settings for a `--max_gen_length` (20 in every published command): its
    /// length counts the [CLS], ours does not; length penalty 1.
    pub fn oscar(bos: u32, eos: u32, pad: u32, max_gen_length: usize) -> SearchConfig {
        SearchConfig { bos, eos, pad, max_len: max_gen_length.saturating_sub(1), length_penalty: 1.0 }
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.max_len == 0 {
            return Err(bad(op, "max_len must be at least 1 (the EOS)".into()));
        }
        // Oscar asserts length_penalty > 0; the early-stopping bound of beam search needs it too
        if !(self.length_penalty > 0.0 && self.length_penalty.is_finite()) {
            return Err(bad(op, format!("length_penalty must be positive and finite, got {}", self.length_penalty)));
        }
        Ok(())
    }
}

/// One caption.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated ids, without the BOS and without the final EOS.
    pub tokens: Vec<u32>,
    /// log p of each generated position: the tokens, then the EOS when one ends the caption. At
    /// `max_len` Oscar forces the EOS but keeps the log p of the token the search chose there (it
    /// overwrites the token, not its score), and so do we: then `finished` is false and the last
    /// entry is that token's. Constrained beam search forces nothing: an unfinished CBS caption has
    /// `max_len` tokens and as many entries.
    pub logprobs: Vec<f32>,
    /// Greedy and sampling: the mean of `logprobs` (what Oscar returns, and what SCST weighs).
    /// Beam search and CBS: sum(logprobs) / len^length_penalty with len = logprobs.len() for beam
    /// search (Oscar counts the BOS and not the EOS, which is as many) and tokens.len() + 1 for CBS.
    pub score: f32,
    /// True when the model emitted the EOS itself; false when the caption was cut at `max_len`.
    pub finished: bool,
}

fn bad(op: &'static str, msg: String) -> Error {
    Error::Shape { op, msg }
}

/// Checks that the stepper holds `images` groups of `k` rows.
fn check_rows<S: Stepper + ?Sized>(op: &'static str, st: &S, images: usize, k: usize, what: &str) -> Result<()> {
    if images == 0 {
        return Err(bad(op, "no images".into()));
    }
    if k == 0 {
        return Err(bad(op, format!("{what} must be at least 1")));
    }
    if st.rows() != images * k {
        return Err(bad(op, format!("the stepper has {} rows, {images} images × {k} ({what}) need {}", st.rows(), images * k)));
    }
    Ok(())
}

/// Runs one step and checks its logits: [rows, vocab] with the vocabulary of earlier steps, the
/// EOS inside it, and no NaN or +inf (-inf is a masked token); every row has a finite entry so
/// its log-softmax exists. Returns the logits and the vocabulary size.
fn run_step<S: Stepper + ?Sized>(op: &'static str, st: &mut S, t: usize, tokens: &[u32], vocab: &mut Option<usize>, cfg: &SearchConfig) -> Result<Vec<f32>> {
    let rows = st.rows();
    let logits = st.step(t, tokens)?;
    if logits.is_empty() || logits.len() % rows != 0 {
        return Err(bad(op, format!("step {t} returned {} logits for {rows} rows", logits.len())));
    }
    let v = logits.len() / rows;
    match *vocab {
        Some(want) if want != v => return Err(bad(op, format!("step {t} returned a vocabulary of {v}, earlier steps {want}"))),
        _ => *vocab = Some(v),
    }
    // two tokens at least: with one, beam search could not keep `beams` continuations
    if v < 2 || cfg.eos as usize >= v {
        return Err(bad(op, format!("vocabulary {v} must hold at least 2 tokens and the EOS {}", cfg.eos)));
    }
    for (r, row) in logits.chunks(v).enumerate() {
        if row.iter().any(|x| x.is_nan() || *x == f32::INFINITY) || !row.iter().any(|x| x.is_finite()) {
            return Err(bad(op, format!("step {t}: the logits of row {r} hold NaN or +inf, or no finite value")));
        }
    }
    Ok(logits)
}

/// Log-softmax of one row (summed in f64; -inf entries stay -inf).
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = m as f64 + row.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>().ln();
    row.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// Index of the largest entry, the first on ties (as torch.argmax).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// The `n` best of `items` by score, best first; ties go to the earlier item, so the order is
/// deterministic (torch.topk leaves it unspecified).
fn top_n<T: Copy>(items: &[(f32, T)], n: usize) -> Vec<(f32, T)> {
    let n = n.min(items.len());
    if n == 0 {
        return Vec::new();
    }
    let cmp = |a: &usize, b: &usize| items[*b].0.total_cmp(&items[*a].0).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..items.len()).collect();
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| items[i]).collect()
}

/// Tells the stepper to reorder, unless every row keeps its own cache.
fn reorder<S: Stepper + ?Sized>(st: &mut S, src: &[usize]) -> Result<()> {
    if src.iter().enumerate().all(|(r, &s)| r == s) {
        return Ok(());
    }
    st.reorder(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises_and_keeps_masked_tokens() {
        let l = log_softmax(&[1.0, 2.0, f32::NEG_INFINITY, 0.5]);
        let s: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        assert!((s - 1.0).abs() < 1e-6, "{s}");
        assert_eq!(l[2], f32::NEG_INFINITY);
        assert!((l[1] - l[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_n_is_ordered_and_stable_on_ties() {
        let v = [(1.0, 'a'), (3.0, 'b'), (1.0, 'c'), (3.0, 'd'), (2.0, 'e')];
        let names = |n| top_n(&v, n).iter().map(|x| x.1).collect::<String>();
        assert_eq!((names(3), names(4), names(9), names(0)), ("bde".into(), "bdea".into(), "bdeac".into(), String::new()));
        assert_eq!(argmax(&[0.0, 2.0, 2.0]), 1);
    }

    #[test]
    fn oscar_config_counts_the_cls() {
        let c = SearchConfig::oscar(101, 102, 0, 20);
        assert_eq!((c.max_len, c.length_penalty), (19, 1.0));
        assert!(SearchConfig { max_len: 0, ..c.clone() }.check("t").is_err());
        assert!(SearchConfig { length_penalty: 0.0, ..c.clone() }.check("t").is_err());
        assert!(SearchConfig { length_penalty: f32::NAN, ..c }.check("t").is_err());
    }
}
