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

pub use beam::{beam_search, beam_search_n};
pub use cbs::{constrained_beam_search, Constrained};
pub use fsm::{cbs_rows, cbs_states, Constraint, MAX_CONSTRAINTS, MAX_CONSTRAINT_TOKENS};
pub use greedy::{greedy, sample};

/// What a search drives: a decode plan holding `rows()` sequences, each with its own cache.
/// Rows are grouped per image: rows [i*k, (i+1)*k) belong to image i (k = beams, samples, or CBS
/// states × beams) and hold its context, so after the first step, where every row was fed the
/// [CLS], they are all alike and the searches do not reorder them.
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

/// log Σ exp(row): the log-softmax of x is x minus this. Every live row of every step needs it
/// over the whole vocabulary, and libm's exp made it most of a search's time, so the exponentials
/// are `exp_neg` in 8 independent f32 lanes, which an optimised build vectorises (twice libm's
/// f64 exp's speed, measured at opt-level 3), each lane summed in f64 per block of 64 values.
fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for block in row.chunks(64) {
        let mut lanes = [0f32; 8];
        let mut chunks = block.chunks_exact(8);
        for c in &mut chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l += exp_neg(x - m);
            }
        }
        sum += chunks.remainder().iter().map(|&x| exp_neg(x - m) as f64).sum::<f64>();
        sum += lanes.iter().map(|&l| l as f64).sum::<f64>();
    }
    m as f64 + sum.ln()
}

/// e^x for x ≤ 0 (x - max, or -inf) to about 2e-7 relative: x = n ln2 + r with |r| ≤ ln2 / 2,
/// e^r by its Taylor series to r^7 / 7!, times 2^n written in the exponent bits. Branch- and
/// call-free so that it vectorises; below -87 it gives e^-87 (1.6e-38) rather than 0.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 × 2^23: adding it rounds to an integer, which then sits in the low mantissa bits
    const MAGIC: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let k = x * std::f32::consts::LOG2_E + MAGIC;
    let n = k - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let e = (k.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32) + 127;
    p * f32::from_bits((e as u32) << 23)
}

/// Log-softmax of one row (-inf entries stay -inf).
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(row);
    row.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// The `m` largest entries of a row as (value, index), largest first and the lower index first
/// on ties, in one pass through a small sorted buffer: beams only ever need a few of a row's
/// 30522 words, so no row is sorted or copied.
fn top_entries(row: &[f32], m: usize) -> Vec<(f32, usize)> {
    let mut top: Vec<(f32, usize)> = Vec::with_capacity(m + 1);
    if m == 0 {
        return top;
    }
    for (i, &x) in row.iter().enumerate() {
        if top.len() == m && x <= top[m - 1].0 {
            continue;
        }
        // after the equal values: the earlier index stays first
        let pos = top.partition_point(|&(y, _)| y >= x);
        top.insert(pos, (x, i));
        top.truncate(m);
    }
    top
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
    fn exp_neg_is_exp() {
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            worst = worst.max(((exp_neg(x) as f64) / (x as f64).exp() - 1.0).abs());
        }
        assert!(worst < 5e-7, "{worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-100.0) < 2e-38 && exp_neg(f32::NEG_INFINITY) < 2e-38);
        let row: Vec<f32> = (0..30522).map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0).collect();
        let exact = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&row) - exact).abs() < 1e-6);
    }

    #[test]
    fn top_n_is_ordered_and_stable_on_ties() {
        let v = [(1.0, 'a'), (3.0, 'b'), (1.0, 'c'), (3.0, 'd'), (2.0, 'e')];
        let names = |n| top_n(&v, n).iter().map(|x| x.1).collect::<String>();
        assert_eq!((names(3), names(4), names(9), names(0)), ("bde".into(), "bdea".into(), "bdeac".into(), String::new()));
        assert_eq!(argmax(&[0.0, 2.0, 2.0]), 1);
        let row = [1.0, 3.0, 1.0, 3.0, 2.0, f32::NEG_INFINITY];
        assert_eq!(top_entries(&row, 3), vec![(3.0, 1), (3.0, 3), (2.0, 4)]);
        assert_eq!(top_entries(&row, 4), vec![(3.0, 1), (3.0, 3), (2.0, 4), (1.0, 0)]);
        assert_eq!(top_entries(&row, 9).len(), 6);
        assert!(top_entries(&row, 0).is_empty());
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
