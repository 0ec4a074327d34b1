//! Cross-entropy fused with log-softmax, with an ignore index, mean over non-ignored rows
//! (shaders/cross_entropy.wgsl). The forward keeps each row's log-sum-exp so the backward
//! recomputes softmax without storing it; the vocabulary (30522 for BERT) is walked by one
//! 256-thread workgroup per row.
use super::{check_len, grid_rows};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    x_off: u32,
    l_off: u32,
    st_off: u32,
    out_off: u32,
    dx_off: u32,
    ignore: i32,
    dscale: f32,
    smoothing: f32,
    w_off: u32,
    weighted: u32,
}
super::uniform_layout!(Params { rows, vocab, x_off, l_off, st_off, out_off, dx_off, ignore, dscale, smoothing, w_off, weighted });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite, Access::Read];

/// One cross-entropy loss: logits [rows, vocab], labels i32 [rows], optional per-row weights [rows]
/// (multiplying each row's loss and gradient; the mean stays over the count of valid rows).
/// Scratch `stats` [rows, 3]; result `out` [3] = (sum, count, mean).
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropy {
    pub rows: usize,
    pub vocab: usize,
    pub ignore_index: i32,
    /// Label smoothing e in [0, 1): the target is 1 - e, every other class e/(V-1), and the loss
    /// is KL(target || softmax) as Oscar's captioning loss; 0 is plain cross-entropy.
    pub smoothing: f32,
}

impl CrossEntropy {
    fn params(&self, logits: &Tensor, labels: &Tensor, stats: &Tensor, out: &Tensor, weights: Option<&Tensor>) -> Result<Params> {
        const OP: &str = "cross_entropy";
        if let Some(w) = weights {
            check_len(OP, "weights", w, self.rows)?;
        }
        check_len(OP, "logits", logits, self.rows * self.vocab)?;
        check_len(OP, "labels", labels, self.rows)?;
        check_len(OP, "stats", stats, 3 * self.rows)?;
        check_len(OP, "out", out, 3)?;
        Ok(Params {
            rows: self.rows as u32,
            vocab: self.vocab as u32,
            x_off: logits.off(),
            l_off: labels.off(),
            st_off: stats.off(),
            out_off: out.off(),
            ignore: self.ignore_index,
            smoothing: self.smoothing,
            w_off: weights.map_or(0, |w| w.off()),
            weighted: weights.is_some() as u32,
            ..Default::default()
        })
    }

    /// [per-row loss, mean over valid rows into out].
    pub fn forward(&self, gpu: &Gpu, logits: &Tensor, labels: &Tensor, stats: &Tensor, out: &Tensor) -> Result<Vec<Dispatch>> {
        self.forward_weighted(gpu, logits, labels, stats, out, None)
    }

    /// `forward` with each row's loss multiplied by `weights[r]`.
    pub fn forward_weighted(
        &self,
        gpu: &Gpu,
        logits: &Tensor,
        labels: &Tensor,
        stats: &Tensor,
        out: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<Vec<Dispatch>> {
        let p = self.params(logits, labels, stats, out, weights)?;
        let d = gpu.dummy_write();
        // an unweighted kernel never reads binding 6; the logits stand in for it
        let w = weights.unwrap_or(logits);
        let n = (self.rows * self.vocab) as f64;
        Ok(vec![
            Dispatch::new(gpu, &KernelSpec::new("cross_entropy", "ce_fwd", BINDS), &p, &[logits, labels, stats, d, d, w], grid_rows(self.rows))?
                .cost(3.0 * n, 8.0 * n),
            Dispatch::new(gpu, &KernelSpec::new("cross_entropy", "ce_reduce", BINDS), &p, &[logits, labels, stats, out, d, w], [1, 1, 1])?,
        ])
    }

    /// dlogits = (softmax - onehot) * dscale / count (dscale: upstream gradient or loss scale).
    pub fn backward(&self, gpu: &Gpu, logits: &Tensor, labels: &Tensor, stats: &Tensor, out: &Tensor, dlogits: &Tensor, dscale: f32) -> Result<Dispatch> {
        self.backward_weighted(gpu, logits, labels, stats, out, dlogits, dscale, None)
    }

    /// `backward` with each row's gradient multiplied by `weights[r]`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_weighted(
        &self,
        gpu: &Gpu,
        logits: &Tensor,
        labels: &Tensor,
        stats: &Tensor,
        out: &Tensor,
        dlogits: &Tensor,
        dscale: f32,
        weights: Option<&Tensor>,
    ) -> Result<Dispatch> {
        let mut p = self.params(logits, labels, stats, out, weights)?;
        check_len("cross_entropy_backward", "dlogits", dlogits, self.rows * self.vocab)?;
        p.dx_off = dlogits.off();
        p.dscale = dscale;
        let w = weights.unwrap_or(logits);
        let n = (self.rows * self.vocab) as f64;
        Ok(Dispatch::new(gpu, &KernelSpec::new("cross_entropy", "ce_bwd", BINDS), &p, &[logits, labels, stats, out, dlogits, w], grid_rows(self.rows))?
            .cost(3.0 * n, 8.0 * n))
    }
}

/// Rewrites the gradient scale of a prepared `backward` dispatch (a changing loss scale) without
/// rebuilding it.
pub fn set_dscale(gpu: &Gpu, backward: &Dispatch, dscale: f32) {
    gpu.queue.write_buffer(&backward.params, std::mem::offset_of!(Params, dscale) as u64, bytemuck::bytes_of(&dscale));
}

pub mod cpu {
    fn valid(l: i32, ignore: i32, vocab: usize) -> bool {
        l != ignore && l >= 0 && (l as usize) < vocab
    }
    /// Mean loss over valid rows (0 when none).
    pub fn forward(logits: &[f32], labels: &[i32], vocab: usize, ignore: i32) -> f64 {
        forward_smoothed(logits, labels, vocab, ignore, 0.0)
    }
    /// The smoothed target q (1 - e on the label, e/(V-1) elsewhere) of one row.
    fn target(l: usize, vocab: usize, e: f64) -> impl Fn(usize) -> f64 {
        move |j| {
            if j == l {
                1.0 - e
            } else if e > 0.0 {
                e / (vocab.max(2) - 1) as f64
            } else {
                0.0
            }
        }
    }
    /// Mean over valid rows of KL(q || softmax) = sum_j q_j (log q_j - log p_j), 0 log 0 = 0.
    pub fn forward_smoothed(logits: &[f32], labels: &[i32], vocab: usize, ignore: i32, e: f32) -> f64 {
        forward_weighted(logits, labels, vocab, ignore, e, None)
    }
    /// `forward_smoothed` with row r's loss multiplied by `w[r]` (mean still over the valid count).
    pub fn forward_weighted(logits: &[f32], labels: &[i32], vocab: usize, ignore: i32, e: f32, w: Option<&[f32]>) -> f64 {
        let (mut s, mut c) = (0f64, 0f64);
        for (r, (row, &l)) in logits.chunks(vocab).zip(labels).enumerate() {
            if !valid(l, ignore, vocab) {
                continue;
            }
            let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = mx + row.iter().map(|v| (*v as f64 - mx).exp()).sum::<f64>().ln();
            let q = target(l as usize, vocab, e as f64);
            let wr = w.map_or(1.0, |w| w[r] as f64);
            s += wr * (0..vocab).map(|j| if q(j) > 0.0 { q(j) * (q(j).ln() - (row[j] as f64 - lse)) } else { 0.0 }).sum::<f64>();
            c += 1.0;
        }
        s / c.max(1.0)
    }
    pub fn backward(logits: &[f32], labels: &[i32], vocab: usize, ignore: i32, dscale: f32) -> Vec<f32> {
        backward_smoothed(logits, labels, vocab, ignore, dscale, 0.0)
    }
    pub fn backward_smoothed(logits: &[f32], labels: &[i32], vocab: usize, ignore: i32, dscale: f32, e: f32) -> Vec<f32> {
        backward_weighted(logits, labels, vocab, ignore, dscale, e, None)
    }
    pub fn backward_weighted(logits: &[f32], labels: &[i32], vocab: usize, ignore: i32, dscale: f32, e: f32, w: Option<&[f32]>) -> Vec<f32> {
        let count = labels.iter().filter(|&&l| valid(l, ignore, vocab)).count().max(1) as f64;
        let mut d = vec![0f32; logits.len()];
        for (r, ((row, &l), dr)) in logits.chunks(vocab).zip(labels).zip(d.chunks_mut(vocab)).enumerate() {
            if !valid(l, ignore, vocab) {
                continue;
            }
            let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|v| (*v as f64 - mx).exp()).sum();
            let q = target(l as usize, vocab, e as f64);
            for (j, o) in dr.iter_mut().enumerate() {
                let p = (row[j] as f64 - mx).exp() / z - q(j);
                *o = (p * dscale as f64 / count * w.map_or(1.0, |w| w[r] as f64)) as f32;
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let mut r = Rng::new(50);
        let (vocab, labels) = (6, [2, -1, 5, 0]);
        let x = r.vec(4 * vocab, 3.0);
        let n = numeric_grad(&x, 1e-3, |v| cpu::forward(v, &labels, vocab, -1));
        assert_close("ce fd", &cpu::backward(&x, &labels, vocab, -1, 1.0), &n, 1e-4, 1e-3);
        let n = numeric_grad(&x, 1e-3, |v| cpu::forward_smoothed(v, &labels, vocab, -1, 0.1));
        assert_close("smoothed ce fd", &cpu::backward_smoothed(&x, &labels, vocab, -1, 1.0, 0.1), &n, 1e-4, 1e-3);
        // smoothing moves the loss: the test would not see a kernel that ignores it
        assert!((cpu::forward_smoothed(&x, &labels, vocab, -1, 0.1) - cpu::forward(&x, &labels, vocab, -1)).abs() > 1e-3);
        let w = [0.5f32, 3.0, -1.5, 2.0];
        let n = numeric_grad(&x, 1e-3, |v| cpu::forward_weighted(v, &labels, vocab, -1, 0.1, Some(&w)));
        assert_close("weighted ce fd", &cpu::backward_weighted(&x, &labels, vocab, -1, 1.0, 0.1, Some(&w)), &n, 1e-4, 1e-3);
    }

    #[test]
    fn gpu_weighted_rows_match_cpu_and_unit_weights_change_nothing() {
        let g = gpu();
        let mut r = Rng::new(52);
        for &(rows, vocab, e) in &[(6usize, 7usize, 0.0f32), (9, 3001, 0.1)] {
            let x = r.vec(rows * vocab, 6.0);
            let labels: Vec<i32> = (0..rows).map(|i| if i == 2 { -1 } else { r.below(vocab) as i32 }).collect();
            let ce = CrossEntropy { rows, vocab, ignore_index: -1, smoothing: e };
            let run = |w: Option<&[f32]>| {
                let xt = g.upload_f32("logits", &[rows, vocab], &x).unwrap();
                let lt = g.upload_i32("labels", &[rows], &labels).unwrap();
                let wt = w.map(|w| g.upload_f32("weights", &[rows], w).unwrap());
                let st = g.zeros("stats", &[rows, 3], DType::F32).unwrap();
                let out = g.zeros("out", &[3], DType::F32).unwrap();
                let dx = g.zeros("dx", &[rows, vocab], DType::F32).unwrap();
                let mut list = ce.forward_weighted(g, &xt, &lt, &st, &out, wt.as_ref()).unwrap();
                list.push(ce.backward_weighted(g, &xt, &lt, &st, &out, &dx, 2.0, wt.as_ref()).unwrap());
                g.run(&list).unwrap();
                (g.read_f32(&out).unwrap(), g.read_f32(&dx).unwrap())
            };
            // negative weights too: a sample worse than the greedy baseline is pushed down
            let w: Vec<f32> = (0..rows).map(|i| [1.5f32, -0.75, 9.0, 0.25, -2.0, 0.0][i % 6]).collect();
            let (out, dx) = run(Some(&w));
            let want = cpu::forward_weighted(&x, &labels, vocab, -1, e, Some(&w));
            assert!((out[2] as f64 - want).abs() < 1e-4 * want.abs().max(1.0), "weighted loss {} vs {want}", out[2]);
            assert_close("weighted dlogits", &dx, &cpu::backward_weighted(&x, &labels, vocab, -1, 2.0, e, Some(&w)), 1e-6, 1e-4);
            let unweighted = cpu::forward_smoothed(&x, &labels, vocab, -1, e);
            assert!((want - unweighted).abs() > 1e-3, "the weights must move the loss");
            // all-ones weights are bit-identical to no weights
            assert_eq!(run(Some(&vec![1.0; rows])), run(None));
        }
    }

    #[test]
    fn gpu_matches_cpu_at_bert_vocabulary() {
        let g = gpu();
        let mut r = Rng::new(51);
        for &(rows, vocab, e) in &[(1usize, 1usize, 0.0f32), (5, 7, 0.0), (9, 30522, 0.0), (5, 7, 0.1), (9, 30522, 0.1)] {
            let x = r.vec(rows * vocab, 8.0);
            // one ignored row (-1), the rest in range
            let labels: Vec<i32> = (0..rows).map(|i| if i == 1 { -1 } else { r.below(vocab) as i32 }).collect();
            let ce = CrossEntropy { rows, vocab, ignore_index: -1, smoothing: e };
            let xt = g.upload_f32("logits", &[rows, vocab], &x).unwrap();
            let lt = g.upload_i32("labels", &[rows], &labels).unwrap();
            let st = g.zeros("stats", &[rows, 3], DType::F32).unwrap();
            let out = g.zeros("out", &[3], DType::F32).unwrap();
            let dx = g.zeros("dx", &[rows, vocab], DType::F32).unwrap();
            let mut list = ce.forward(g, &xt, &lt, &st, &out).unwrap();
            list.push(ce.backward(g, &xt, &lt, &st, &out, &dx, 2.0).unwrap());
            g.run(&list).unwrap();
            let got = g.read_f32(&out).unwrap();
            let want = cpu::forward_smoothed(&x, &labels, vocab, -1, e);
            let valid = labels.iter().filter(|&&l| l >= 0).count();
            assert_eq!(got[1] as usize, valid, "count of valid rows");
            assert!((got[2] as f64 - want).abs() < 1e-4 * want.abs().max(1.0), "loss {} vs {want}", got[2]);
            assert_close("ce dlogits", &g.read_f32(&dx).unwrap(), &cpu::backward_smoothed(&x, &labels, vocab, -1, 2.0, e), 1e-6, 1e-4);
        }
    }
}
