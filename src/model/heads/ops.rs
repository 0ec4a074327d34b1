//! The classifier and pair layers on the pooled [CLS] vector (docs/oscar.md §3), forward and backward:
//! - `ClassifierHead`: dropout → Linear(H, n) — retrieval (n = 2), VQA (n = 3129, BCE scaled by
//!   the number of answers) and GQA (n = #answers, CE). Parameters `classifier.weight/bias`.
//! - `PairHead` (NLVR2): the pooled vectors of a pair's two sequences side by side [B, 2H] →
//!   dropout → Linear(2H, sH) → ReLU → [LayerNorm(sH) when use_img_layernorm] → Linear(sH, 2).
//!   Parameters `classifier.0.*`, (`classifier.2.*` LayerNorm), and `classifier.2|3.*`.
//! The pair's rows 2i and 2i+1 of the pooled [2B, H] buffer are adjacent, so [B, 2H] is a free view.
use crate::gpu::{DType, Dispatch, Gpu, Tensor};
use crate::ops::matmul::{Act, Linear};
use crate::ops::{dropout, elementwise, layernorm};
use crate::Result;

#[derive(Clone, Copy, Debug)]
pub struct ClassifierHead {
    pub rows: usize,
    pub hidden: usize,
    pub classes: usize,
    pub p_drop: f32,
    pub stream: u32,
}

impl ClassifierHead {
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        vec![("classifier.weight".into(), vec![self.classes, self.hidden]), ("classifier.bias".into(), vec![self.classes])]
    }
    fn lin(&self) -> Linear {
        Linear::new(self.rows, self.hidden, self.classes)
    }
    /// [dropped = dropout(pooled), logits = dropped W^T + b]
    pub fn forward(&self, gpu: &Gpu, pooled: &Tensor, w: &Tensor, b: &Tensor, dropped: &Tensor, logits: &Tensor, seed: &Tensor) -> Result<Vec<Dispatch>> {
        Ok(vec![
            dropout::dropout(gpu, pooled, dropped, seed, self.p_drop, self.stream, false)?,
            self.lin().forward(gpu, dropped, w, Some(b), logits, Act::None, None)?,
        ])
    }
    /// [dW += .., db += .., scratch = dlogits W, dpooled (+)= dropout(scratch)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        dropped: &Tensor,
        w: &Tensor,
        dlogits: &Tensor,
        scratch: &Tensor,
        dpooled: &Tensor,
        dw: &Tensor,
        db: &Tensor,
        seed: &Tensor,
        accumulate: bool,
    ) -> Result<Vec<Dispatch>> {
        let mut v = self.lin().backward(gpu, dropped, w, dlogits, Some(scratch), dw, Some(db), false)?;
        v.push(dropout::dropout_backward(gpu, scratch, dpooled, seed, self.p_drop, self.stream, accumulate)?);
        Ok(v)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PairHead {
    pub pairs: usize,
    pub hidden: usize,
    pub scale: usize,
    /// LayerNorm eps when the config has use_img_layernorm.
    pub layer_norm: Option<f32>,
    pub p_drop: f32,
    pub stream: u32,
}

/// Buffers of the pair head for one batch size.
pub struct PairActs {
    pub dropped: Tensor,
    pub z1: Tensor,
    pub r: Tensor,
    pub rl: Tensor,
    pub stats: Tensor,
    pub logits: Tensor,
    pub d_r: Tensor,
    pub d_z1: Tensor,
    pub d_in: Tensor,
}

impl PairHead {
    fn width(&self) -> usize {
        self.scale * self.hidden
    }
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        let (w, h2) = (self.width(), 2 * self.hidden);
        let mut v = vec![("classifier.0.weight".into(), vec![w, h2]), ("classifier.0.bias".into(), vec![w])];
        let last = if self.layer_norm.is_some() {
            v.push(("classifier.2.weight".into(), vec![w]));
            v.push(("classifier.2.bias".into(), vec![w]));
            3
        } else {
            2
        };
        v.push((format!("classifier.{last}.weight"), vec![2, w]));
        v.push((format!("classifier.{last}.bias"), vec![2]));
        v
    }
    pub fn acts(&self, gpu: &Gpu) -> Result<PairActs> {
        let (p, w, h2) = (self.pairs, self.width(), 2 * self.hidden);
        let z = |n: &str, len: usize| gpu.zeros(n, &[len], DType::F32);
        Ok(PairActs {
            dropped: z("pair.dropped", p * h2)?,
            z1: z("pair.z1", p * w)?,
            r: z("pair.relu", p * w)?,
            rl: z("pair.ln", p * w)?,
            stats: z("pair.ln_stats", 2 * p)?,
            logits: z("pair.logits", 2 * p)?,
            d_r: z("pair.d_relu", p * w)?,
            d_z1: z("pair.d_z1", p * w)?,
            d_in: z("pair.d_in", p * h2)?,
        })
    }
    fn l1(&self) -> Linear {
        Linear::new(self.pairs, 2 * self.hidden, self.width())
    }
    fn l2(&self) -> Linear {
        Linear::new(self.pairs, self.width(), 2)
    }
    /// `w` holds the parameters in `params()` order; `pooled` is [2 * pairs, H].
    pub fn forward(&self, gpu: &Gpu, pooled: &Tensor, w: &[Tensor], a: &PairActs, seed: &Tensor) -> Result<Vec<Dispatch>> {
        let mut v = vec![dropout::dropout(gpu, pooled, &a.dropped, seed, self.p_drop, self.stream, false)?];
        v.push(self.l1().forward(gpu, &a.dropped, &w[0], Some(&w[1]), &a.z1, Act::None, None)?);
        v.push(elementwise::relu(gpu, &a.z1, &a.r)?);
        let (x2, k) = match self.layer_norm {
            Some(eps) => {
                v.push(layernorm::layernorm(gpu, &a.r, &w[2], &w[3], &a.rl, &a.stats, self.pairs, self.width(), eps)?);
                (&a.rl, 4)
            }
            None => (&a.r, 2),
        };
        v.push(self.l2().forward(gpu, x2, &w[k], Some(&w[k + 1]), &a.logits, Act::None, None)?);
        Ok(v)
    }
    /// Gradients into `dw` (same order as `w`, accumulated) and `dpooled` [2 * pairs, H].
    pub fn backward(
        &self,
        gpu: &Gpu,
        w: &[Tensor],
        dw: &[Tensor],
        a: &PairActs,
        dlogits: &Tensor,
        dpooled: &Tensor,
        seed: &Tensor,
        accumulate: bool,
    ) -> Result<Vec<Dispatch>> {
        let k = if self.layer_norm.is_some() { 4 } else { 2 };
        let x2 = if self.layer_norm.is_some() { &a.rl } else { &a.r };
        // d_z1 first receives the gradient of the layer after the ReLU, then the ReLU's
        let after = if self.layer_norm.is_some() { &a.d_z1 } else { &a.d_r };
        let mut v = self.l2().backward(gpu, x2, &w[k], dlogits, Some(after), &dw[k], Some(&dw[k + 1]), false)?;
        if self.layer_norm.is_some() {
            v.extend(layernorm::layernorm_backward(gpu, &a.r, &w[2], &a.stats, &a.d_z1, &a.d_r, &dw[2], &dw[3], self.pairs, self.width(), false)?);
        }
        v.push(elementwise::relu_backward(gpu, &a.z1, &a.d_r, &a.d_z1, false)?);
        v.extend(self.l1().backward(gpu, &a.dropped, &w[0], &a.d_z1, Some(&a.d_in), &dw[0], Some(&dw[1]), false)?);
        v.push(dropout::dropout_backward(gpu, &a.d_in, dpooled, seed, self.p_drop, self.stream, accumulate)?);
        Ok(v)
    }
}

/// Plain-loop references.
pub mod cpu {
    use crate::ops::matmul::{cpu::matmul, Linear};
    use crate::ops::{dropout::cpu::dropout, elementwise::cpu as ew, layernorm::cpu as ln};

    pub fn linear(l: &Linear, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; l.rows * l.out];
        let mut d = l.fwd_desc();
        d.bias_off = Some(0);
        matmul(&d, x, w, &mut y, Some(b), None);
        y
    }

    /// Logits of the pair head; `w` in `PairHead::params()` order.
    pub fn pair_forward(h: &super::PairHead, pooled: &[f32], w: &[Vec<f32>], seed: u32) -> Vec<f32> {
        let x = dropout(pooled, seed, h.p_drop, h.stream);
        let z1 = linear(&h.l1(), &x, &w[0], &w[1]);
        let mut r = ew::relu(&z1);
        let mut k = 2;
        if let Some(eps) = h.layer_norm {
            r = ln::layernorm(&r, &w[2], &w[3], h.width(), eps).0;
            k = 4;
        }
        linear(&h.l2(), &r, &w[k], &w[k + 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn pair_head_gpu_matches_cpu_and_finite_differences() {
        let g = gpu();
        for ln in [None, Some(1e-5f32)] {
            let h = PairHead { pairs: 3, hidden: 5, scale: 3, layer_norm: ln, p_drop: 0.1, stream: 9 };
            let mut r = Rng::new(90);
            let pooled = r.vec(2 * 3 * 5, 1.0);
            let ws: Vec<Vec<f32>> = h
                .params()
                .iter()
                .map(|(n, s)| {
                    let n_el: usize = s.iter().product();
                    if n.ends_with("2.weight") && ln.is_some() {
                        r.vec(n_el, 0.2).iter().map(|v| v + 1.0).collect()
                    } else {
                        r.vec(n_el, 0.5)
                    }
                })
                .collect();
            let dl = r.vec(3 * 2, 1.0);
            let seed = 17u32;
            // finite differences of sum(dl * logits) w.r.t. pooled and the first weight
            let f = |p: &[f32], w0: &[f32]| {
                let mut w = ws.clone();
                w[0] = w0.to_vec();
                dot(&cpu::pair_forward(&h, p, &w, seed), &dl)
            };
            let n_pooled = numeric_grad(&pooled, 1e-3, |p| f(p, &ws[0]));
            let n_w0 = numeric_grad(&ws[0], 1e-3, |w0| f(&pooled, w0));
            // GPU
            let up = |n: &str, v: &[f32]| g.upload_f32(n, &[v.len()], v).unwrap();
            let wt: Vec<Tensor> = ws.iter().map(|v| up("w", v)).collect();
            let dwt: Vec<Tensor> = ws.iter().map(|v| g.zeros("dw", &[v.len()], DType::F32).unwrap()).collect();
            let (pt, dlt, sd) = (up("pooled", &pooled), up("dl", &dl), g.upload_u32("seed", &[1], &[seed]).unwrap());
            let dp = g.zeros("dp", &[pooled.len()], DType::F32).unwrap();
            let a = h.acts(g).unwrap();
            let mut list = h.forward(g, &pt, &wt, &a, &sd).unwrap();
            list.extend(h.backward(g, &wt, &dwt, &a, &dlt, &dp, &sd, false).unwrap());
            g.run(&list).unwrap();
            assert_close("pair logits", &g.read_f32(&a.logits).unwrap(), &cpu::pair_forward(&h, &pooled, &ws, seed), 1e-5, 1e-4);
            assert_close("pair dpooled vs fd", &g.read_f32(&dp).unwrap(), &n_pooled, 2e-3, 2e-3);
            assert_close("pair dW1 vs fd", &g.read_f32(&dwt[0]).unwrap(), &n_w0, 2e-3, 2e-3);
        }
    }

    #[test]
    fn classifier_head_backward_matches_finite_differences() {
        let g = gpu();
        let h = ClassifierHead { rows: 4, hidden: 6, classes: 7, p_drop: 0.2, stream: 3 };
        let mut r = Rng::new(91);
        let (pooled, w, b, dl) = (r.vec(24, 1.0), r.vec(42, 0.5), r.vec(7, 0.5), r.vec(28, 1.0));
        let seed = 5u32;
        let fwd = |p: &[f32], w: &[f32]| cpu::linear(&h.lin(), &crate::ops::dropout::cpu::dropout(p, seed, h.p_drop, h.stream), w, &b);
        let n_p = numeric_grad(&pooled, 1e-3, |p| dot(&fwd(p, &w), &dl));
        let n_w = numeric_grad(&w, 1e-3, |wv| dot(&fwd(&pooled, wv), &dl));
        let up = |n: &str, v: &[f32]| g.upload_f32(n, &[v.len()], v).unwrap();
        let (pt, wt, bt, dlt, sd) = (up("p", &pooled), up("w", &w), up("b", &b), up("dl", &dl), g.upload_u32("s", &[1], &[seed]).unwrap());
        let z = |n: &str, k: usize| g.zeros(n, &[k], DType::F32).unwrap();
        let (dr, lg, sc, dp, dw, db) = (z("d", 24), z("l", 28), z("s", 24), z("dp", 24), z("dw", 42), z("db", 7));
        let mut list = h.forward(g, &pt, &wt, &bt, &dr, &lg, &sd).unwrap();
        list.extend(h.backward(g, &dr, &wt, &dlt, &sc, &dp, &dw, &db, &sd, false).unwrap());
        g.run(&list).unwrap();
        assert_close("logits", &g.read_f32(&lg).unwrap(), &fwd(&pooled, &w), 1e-5, 1e-4);
        assert_close("dpooled vs fd", &g.read_f32(&dp).unwrap(), &n_p, 2e-3, 2e-3);
        assert_close("dW vs fd", &g.read_f32(&dw).unwrap(), &n_w, 2e-3, 2e-3);
    }
}
