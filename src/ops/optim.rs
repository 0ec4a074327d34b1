//! Global gradient norm with clipping, and AdamW as pytorch_transformers implements it (Oscar's
//! optimiser; see shaders/optim.wgsl). Parameters are updated per contiguous range ("group"), each
//! with its own weight decay, so an arena laid out as [decayed..., not decayed...] takes two
//! dispatches. lr and the bias-corrected step size live in a GPU buffer written once per step:
//! the prepared dispatches never change.
use super::reduce::{sumsq_partial, sumsq_parts};
use super::{check_len, grid_elems};
use crate::gpu::{Access, DType, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Clip the global gradient norm to this; <= 0 turns clipping off (Oscar's default -1).
    pub max_grad_norm: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, max_grad_norm: 1.0 }
    }
}

/// One contiguous range of parameters with its gradient and moments (views of equal length).
pub struct ParamGroup<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub m: &'a Tensor,
    pub v: &'a Tensor,
    pub weight_decay: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    p_off: u32,
    g_off: u32,
    m_off: u32,
    v_off: u32,
    nparts: u32,
    _p0: u32,
    _p1: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
    max_norm: f32,
    _p2: u32,
    _p3: u32,
    _p4: u32,
}
super::uniform_layout!(Params { n, p_off, g_off, m_off, v_off, nparts, _p0, _p1, beta1, beta2, eps, wd, max_norm, _p2, _p3, _p4 });

const BINDS: &[Access] = &[Access::Uniform, Access::ReadWrite, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::Read, Access::ReadWrite];

/// The optimizer step as prepared dispatches: sums of squares per group, the norm and clip
/// coefficient, then one AdamW dispatch per group.
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub dispatches: Vec<Dispatch>,
    /// [lr, step_size], written by `set_step`.
    pub state: Tensor,
    /// [global grad norm before clipping, clip coefficient], written by the GPU.
    pub clip: Tensor,
    pub partials: Tensor,
}

impl AdamW {
    pub fn new(gpu: &Gpu, cfg: AdamWConfig, groups: &[ParamGroup]) -> Result<AdamW> {
        let nparts: usize = groups.iter().map(|g| sumsq_parts(g.grad.numel())).sum();
        let partials = gpu.zeros("grad-norm-partials", &[nparts.max(1)], DType::F32)?;
        let state = gpu.upload_f32("adamw-state", &[4], &[0.0, 0.0, 1.0, 0.0])?;
        let clip = gpu.upload_f32("grad-clip", &[4], &[0.0, 1.0, 0.0, 0.0])?;
        let mut dispatches = Vec::new();
        let mut off = 0;
        for g in groups {
            dispatches.push(sumsq_partial(gpu, g.grad, &partials, off)?);
            off += sumsq_parts(g.grad.numel());
        }
        let base = Params { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, max_norm: cfg.max_grad_norm, nparts: nparts as u32, ..Default::default() };
        let dw = gpu.dummy_write();
        let finalize = KernelSpec::new("optim", "norm_finalize", BINDS);
        dispatches.push(Dispatch::new(gpu, &finalize, &base, &[dw, &partials, dw, dw, &state, &clip], [1, 1, 1])?);
        let spec = KernelSpec::new("optim", "adamw", BINDS);
        for g in groups {
            let n = g.param.numel();
            for (w, t) in [("grad", g.grad), ("m", g.m), ("v", g.v)] {
                check_len("adamw", w, t, n)?;
            }
            let p = Params { n: n as u32, p_off: g.param.off(), g_off: g.grad.off(), m_off: g.m.off(), v_off: g.v.off(), wd: g.weight_decay, ..base };
            dispatches.push(Dispatch::new(gpu, &spec, &p, &[g.param, g.grad, g.m, g.v, &state, &clip], grid_elems(n))?.cost(12.0 * n as f64, 28.0 * n as f64));
        }
        Ok(AdamW { cfg, dispatches, state, clip, partials })
    }

    /// lr for this step and the bias correction for step t (1-based).
    pub fn set_step(&self, gpu: &Gpu, lr: f32, t: u32) -> Result<()> {
        self.set_step_scaled(gpu, lr, t, 1.0)
    }
    /// For gradients multiplied by a loss scale S: `inv_scale` = 1/S undoes it before clipping.
    pub fn set_step_scaled(&self, gpu: &Gpu, lr: f32, t: u32, inv_scale: f32) -> Result<()> {
        gpu.write_f32(&self.state, &[lr, step_size(&self.cfg, lr, t), inv_scale, 0.0])
    }
}

/// lr * sqrt(1 - b2^t) / (1 - b1^t), in f64 then rounded, as PyTorch computes it in Python floats.
pub fn step_size(cfg: &AdamWConfig, lr: f32, t: u32) -> f32 {
    let bc1 = 1.0 - (cfg.beta1 as f64).powi(t as i32);
    let bc2 = 1.0 - (cfg.beta2 as f64).powi(t as i32);
    (lr as f64 * bc2.sqrt() / bc1) as f32
}

pub mod cpu {
    use super::*;
    /// Global norm and clip coefficient over several gradient slices (torch.nn.utils.clip_grad_norm_).
    pub fn clip_coef(grads: &[&[f32]], max_norm: f32) -> (f32, f32) {
        let norm = grads.iter().flat_map(|g| g.iter()).map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let c = max_norm as f64 / (norm + 1e-6);
        (norm as f32, if max_norm > 0.0 && c < 1.0 { c as f32 } else { 1.0 })
    }
    pub fn adamw(cfg: &AdamWConfig, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f32, t: u32, wd: f32, coef: f32) {
        let ss = step_size(cfg, lr, t);
        for i in 0..p.len() {
            let gi = g[i] * coef;
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
            p[i] -= ss * m[i] / (v[i].sqrt() + cfg.eps);
            p[i] -= lr * wd * p[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn three_steps_match_cpu_with_clipping_and_two_decay_groups() {
        let gp = gpu();
        let mut r = Rng::new(70);
        // one arena: [decayed 300 | not decayed 20000] (the second spans several norm chunks)
        let (n1, n2) = (300, 20_000);
        let n = n1 + n2;
        let mut p = r.vec(n, 1.0);
        let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
        let pt = gp.upload_f32("p", &[n], &p).unwrap();
        let gt = gp.zeros("g", &[n], DType::F32).unwrap();
        let mt = gp.zeros("m", &[n], DType::F32).unwrap();
        let vt = gp.zeros("v", &[n], DType::F32).unwrap();
        let views = |t: &Tensor| (t.view(0, &[n1]).unwrap(), t.view(n1, &[n2]).unwrap());
        let ((p1, p2), (g1, g2), (m1, m2), (v1, v2)) = (views(&pt), views(&gt), views(&mt), views(&vt));
        let cfg = AdamWConfig { max_grad_norm: 5.0, ..Default::default() };
        let opt = AdamW::new(
            gp,
            cfg,
            &[
                ParamGroup { param: &p1, grad: &g1, m: &m1, v: &v1, weight_decay: 0.01 },
                ParamGroup { param: &p2, grad: &g2, m: &m2, v: &v2, weight_decay: 0.0 },
            ],
        )
        .unwrap();
        for t in 1..=3u32 {
            let g = r.vec(n, 0.5); // norm ~ 0.5 * sqrt(n/3) ~ 41 > 5: clipping is active
            gp.write_f32(&gt, &g).unwrap();
            let lr = 1e-3 * t as f32;
            opt.set_step(gp, lr, t).unwrap();
            gp.run(&opt.dispatches).unwrap();
            let (norm, coef) = cpu::clip_coef(&[&g], cfg.max_grad_norm);
            assert!(coef < 1.0);
            let (a, b) = p.split_at_mut(n1);
            let (ma, mb) = m.split_at_mut(n1);
            let (va, vb) = v.split_at_mut(n1);
            cpu::adamw(&cfg, a, &g[..n1], ma, va, lr, t, 0.01, coef);
            cpu::adamw(&cfg, b, &g[n1..], mb, vb, lr, t, 0.0, coef);
            let clip = gp.read_f32(&opt.clip).unwrap();
            assert!((clip[0] - norm).abs() < 1e-4 * norm, "norm {} vs {norm}", clip[0]);
            assert!((clip[1] - coef).abs() < 1e-5, "coef {} vs {coef}", clip[1]);
            assert_close("params", &gp.read_f32(&pt).unwrap(), &p, 1e-6, 1e-5);
            assert_close("m", &gp.read_f32(&mt).unwrap(), &m, 1e-7, 1e-5);
            assert_close("v", &gp.read_f32(&vt).unwrap(), &v, 1e-9, 1e-5);
        }
    }

    #[test]
    fn loss_scaled_gradients_are_unscaled_and_overflow_skips_the_step() {
        let gp = gpu();
        let mut r = Rng::new(71);
        let n = 5000;
        let p0 = r.vec(n, 1.0);
        let g = r.vec(n, 0.5);
        let cfg = AdamWConfig { max_grad_norm: 5.0, ..Default::default() };
        let scale = 4096.0f32;
        let run = |grads: &[f32], inv: f32| {
            let (pt, gt) = (gp.upload_f32("p", &[n], &p0).unwrap(), gp.upload_f32("g", &[n], grads).unwrap());
            let (mt, vt) = (gp.zeros("m", &[n], DType::F32).unwrap(), gp.zeros("v", &[n], DType::F32).unwrap());
            let opt = AdamW::new(gp, cfg, &[ParamGroup { param: &pt, grad: &gt, m: &mt, v: &vt, weight_decay: 0.01 }]).unwrap();
            opt.set_step_scaled(gp, 1e-3, 1, inv).unwrap();
            gp.run(&opt.dispatches).unwrap();
            (gp.read_f32(&pt).unwrap(), gp.read_f32(&mt).unwrap(), gp.read_f32(&opt.clip).unwrap())
        };
        let (want, _, clip) = run(&g, 1.0);
        let scaled: Vec<f32> = g.iter().map(|x| x * scale).collect();
        let (got, _, sclip) = run(&scaled, 1.0 / scale);
        assert_close("params after a loss-scaled step", &got, &want, 1e-6, 1e-5);
        assert!((sclip[0] - clip[0]).abs() < 1e-4 * clip[0] && sclip[2] == 0.0, "unscaled norm {} vs {}", sclip[0], clip[0]);
        // one inf (an f16 overflow) or NaN: flagged, and parameters and moments stay as they were
        for bad in [f32::INFINITY, f32::NAN] {
            let mut gb = scaled.clone();
            gb[1234] = bad;
            let (p, m, c) = run(&gb, 1.0 / scale);
            assert_eq!(c[2], 1.0, "skip flag for a {bad} gradient");
            assert_eq!(p, p0, "parameters changed on a skipped step");
            assert!(m.iter().all(|&x| x == 0.0), "moments changed on a skipped step");
        }
    }
}
