//! The optimizer over the model's arenas: zeroing gradients, global-norm clipping and AdamW with
//! Oscar's weight-decay rule, one AdamW dispatch per (arena, decay flag) run.
use crate::gpu::{Dispatch, Gpu};
use crate::model::{ParamSet, Step};
use crate::ops::elementwise::fill;
use crate::ops::optim::{AdamW, AdamWConfig, ParamGroup};
use crate::Result;

pub struct Optimizer {
    pub adamw: AdamW,
    pub m: ParamSet,
    pub v: ParamSet,
    /// Fills every gradient arena with zeros: run before the first micro-batch of a step.
    pub zero_grads: Vec<Dispatch>,
}

impl Optimizer {
    pub fn new(gpu: &Gpu, params: &ParamSet, grads: &ParamSet, cfg: AdamWConfig, weight_decay: f32) -> Result<Optimizer> {
        let m = ParamSet::zeros(gpu, params.layout.clone(), "adam_m")?;
        let v = ParamSet::zeros(gpu, params.layout.clone(), "adam_v")?;
        let runs = params.layout.runs();
        let views = |s: &ParamSet| -> Result<Vec<_>> { runs.iter().map(|&(a, off, n, _)| s.arenas[a].view(off, &[n])).collect() };
        let (pv, gv, mv, vv) = (views(params)?, views(grads)?, views(&m)?, views(&v)?);
        let groups: Vec<ParamGroup> = (0..runs.len())
            .map(|i| ParamGroup { param: &pv[i], grad: &gv[i], m: &mv[i], v: &vv[i], weight_decay: if runs[i].3 { weight_decay } else { 0.0 } })
            .collect();
        let adamw = AdamW::new(gpu, cfg, &groups)?;
        let zero_grads = grads.arenas.iter().map(|t| fill(gpu, t, 0.0)).collect::<Result<_>>()?;
        Ok(Optimizer { adamw, m, v, zero_grads })
    }

    /// The one assembly of a training micro-batch: zeroed gradients (on the first micro-batch of a
    /// step), the forward and the backward. AdamW (`adamw.dispatches`) follows the last one.
    pub fn micro_batch<'a>(&'a self, step: &'a Step, first: bool) -> impl Iterator<Item = &'a Dispatch> {
        self.zero_grads.iter().filter(move |_| first).chain(&step.forward).chain(&step.backward)
    }

    pub fn state_bytes(&self) -> u64 {
        self.m.bytes() + self.v.bytes()
    }
}
