//! Mock steppers for the search tests. Each row keeps the tokens it was fed (its "cache") and its
//! logits are a function of its image and that whole past, so a search that reorders wrongly, or
//! not at all, reads the wrong logits.
use super::Stepper;
use crate::util::Rng;
use crate::Result;

/// Logits of the next token for an image and a row's past ([CLS] first).
pub type Model = Box<dyn Fn(usize, &[u32]) -> Vec<f32>>;

pub struct Mock {
    /// Rows per image.
    pub k: usize,
    pub hist: Vec<Vec<u32>>,
    pub model: Model,
    /// The tokens fed at every step, and the number of (non-identity) reorders.
    pub fed: Vec<Vec<u32>>,
    pub reorders: usize,
    /// Drops every reorder: a plan whose cache never moves.
    pub ignore_reorder: bool,
}

impl Mock {
    pub fn new(images: usize, k: usize, model: Model) -> Mock {
        Mock { k, hist: vec![Vec::new(); images * k], model, fed: Vec::new(), reorders: 0, ignore_reorder: false }
    }
    pub fn steps(&self) -> usize {
        self.fed.len()
    }
}

impl Stepper for Mock {
    fn rows(&self) -> usize {
        self.hist.len()
    }
    fn step(&mut self, t: usize, tokens: &[u32]) -> Result<Vec<f32>> {
        assert_eq!(tokens.len(), self.rows(), "one token per row");
        let mut out = Vec::new();
        for (r, h) in self.hist.iter_mut().enumerate() {
            // every row advances one caption position per step
            assert_eq!(h.len(), t, "row {r} is fed position {t} after {} positions", h.len());
            h.push(tokens[r]);
            out.extend((self.model)(r / self.k, h));
        }
        self.fed.push(tokens.to_vec());
        Ok(out)
    }
    fn reorder(&mut self, src: &[usize]) -> Result<()> {
        assert_eq!(src.len(), self.rows());
        assert!(src.iter().enumerate().any(|(r, &s)| r != s), "identity reorders are skipped");
        for (r, &s) in src.iter().enumerate() {
            assert_eq!(r / self.k, s / self.k, "row {r} takes the cache of row {s}, another image's");
        }
        self.reorders += 1;
        if !self.ignore_reorder {
            self.hist = src.iter().map(|&s| self.hist[s].clone()).collect();
        }
        Ok(())
    }
}

/// Logits drawn uniformly from [-scale, scale] by a hash of (seed, image, past): every past is a
/// different state of the model.
pub fn hashed(seed: u64, vocab: usize, scale: f32) -> Model {
    Box::new(move |image, past| {
        let mut h = seed ^ (image as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for &w in past {
            h = Rng::new(h ^ w as u64).next_u64();
        }
        let mut rng = Rng::new(h);
        (0..vocab).map(|_| (rng.uniform() * 2.0 - 1.0) * scale).collect()
    })
}

/// The same logits for every row and past.
pub fn fixed(logits: Vec<f32>) -> Model {
    Box::new(move |_, _| logits.clone())
}
