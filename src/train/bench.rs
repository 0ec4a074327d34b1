//! `vlp-engine bench`: steady-state timing of the full Oscar step (forward, masked-token +
//! contrastive losses, backward, AdamW) on random inputs, with FLOPs counted two ways (the analytic
//! model formula shared with tools/torch_baseline.py, and the sum over our dispatches), memory by
//! kind, and an optional per-kernel profile from GPU timestamps.
use super::optim::Optimizer;
use crate::gpu::{Gpu, ProfileRow, Profiler, Recorder};
use crate::model::{Batch, Config, Head, Labels, Mode, ParamLayout, ParamSet, Shape, Step};
use crate::ops::matmul::Precision;
use crate::ops::optim::AdamWConfig;
use crate::util::Rng;
use crate::{Error, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchArgs {
    pub config: String,
    pub batch: usize,
    pub text: usize,
    pub regions: usize,
    pub train: bool,
    pub steps: usize,
    pub warmup: usize,
    pub profile: bool,
    pub precision: Precision,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub adapter: String,
    pub config: String,
    pub mode: String,
    /// "f32", or "f16 (cooperative matrix)" / "f16 (fp32 kernels, f16-rounded operands)".
    pub precision: String,
    pub batch: usize,
    pub text: usize,
    pub regions: usize,
    pub masked_per_seq: f64,
    pub ms_per_step: f64,
    pub seq_per_s: f64,
    pub model_flops_per_step: f64,
    pub counted_flops_per_step: f64,
    pub tflops: f64,
    pub first_step_after_s: f64,
    pub bytes_params: u64,
    pub bytes_grads: u64,
    pub bytes_optimizer: u64,
    pub bytes_activations: u64,
    pub bytes_other: u64,
    pub bytes_allocated: u64,
    pub profile: Vec<(String, f64, f64, f64, f64)>,
}

/// The analytic FLOPs of one sequence's forward pass (matmuls only, as tools/torch_baseline.py):
/// region projection, per layer QKV/O (8SH^2), attention (4S^2H), FFN (4SHF), pooler + contrastive
/// head, and the masked-token head at `masked` positions (transform 2H^2 + decoder 2HV each).
pub fn forward_flops(c: &Config, text: usize, regions: usize, masked: f64) -> f64 {
    let (h, f, v, s) = (c.hidden_size as f64, c.intermediate_size as f64, c.vocab_size as f64, (text + regions) as f64);
    let layer = 8.0 * s * h * h + 4.0 * s * s * h + 4.0 * s * h * f;
    2.0 * regions as f64 * c.img_feature_dim as f64 * h
        + c.num_hidden_layers as f64 * layer
        + 2.0 * h * h
        + 2.0 * h * c.num_contrast_classes as f64
        + masked * (2.0 * h * h + 2.0 * h * v)
}

fn random_batch(c: &Config, s: &Shape, rng: &mut Rng, masked_per_seq: usize) -> Batch {
    let (bt, sq) = (s.batch * s.text, s.seq());
    let lo = if c.vocab_size > 2000 { 1000 } else { 0 };
    let mut b = Batch {
        // above BERT's special and rare tokens when the vocabulary has them (a small one: any id)
        input_ids: (0..bt).map(|_| (lo + rng.below(c.vocab_size - lo)) as u32).collect(),
        type_ids: (0..bt).map(|i| ((i % s.text) >= s.text / 2) as u32).collect(),
        pos_ids: (0..bt).map(|i| (i % s.text) as u32).collect(),
        // uniform, not normal: 13M Box-Muller draws at batch 128 would delay the first step
        img: (0..s.batch * s.regions * c.img_feature_dim).map(|_| rng.uniform() * 2.0 - 1.0).collect(),
        mask: vec![1.0; s.rows()],
        ..Default::default()
    };
    let contrast_labels = (0..s.batch).map(|_| rng.below(c.num_contrast_classes) as i32).collect();
    let (mut mlm_pos, mut mlm_labels) = (Vec::new(), Vec::new());
    for bi in 0..s.batch {
        for k in 0..masked_per_seq {
            mlm_pos.push((bi * sq + 1 + k * (s.text - 1) / masked_per_seq) as u32);
            mlm_labels.push(rng.below(c.vocab_size) as i32);
        }
    }
    mlm_pos.resize(s.masked, 0);
    mlm_labels.resize(s.masked, -1);
    b.labels = Labels::Pretrain { mlm_pos, mlm_labels, contrast_labels };
    b
}

pub fn bench(gpu: &Gpu, a: &BenchArgs, launched: Instant) -> Result<BenchResult> {
    if a.text < 4 || a.batch == 0 {
        return Err(Error::Other("bench needs --text >= 4 and --batch >= 1".into()));
    }
    if a.steps == 0 {
        return Err(Error::Other("bench --steps 0: at least one timed step is needed".into()));
    }
    let mut cfg = Config::load(&a.config)?;
    if Config::preset(&a.config).is_some() {
        cfg.max_position_embeddings = cfg.max_position_embeddings.max(a.text);
    } else if cfg.max_position_embeddings < a.text {
        return Err(Error::Other(format!("bench --text {} is longer than max_position_embeddings {} of {}", a.text, cfg.max_position_embeddings, a.config)));
    }
    // Oscar masks 15 % of text tokens; the capacity is fixed per shape, so every slot is used here
    let masked_per_seq = ((0.15 * a.text as f64).round() as usize).max(1);
    let shape = Shape { batch: a.batch, text: a.text, regions: a.regions, masked: a.batch * masked_per_seq, mask3d: false };
    let before = gpu.allocated.load(Ordering::Relaxed);
    let layout = Arc::new(ParamLayout::for_model(&cfg, &Head::Pretrain, gpu.max_binding_bytes())?);
    let params = ParamSet::zeros(gpu, layout.clone(), "params")?;
    params.init(gpu, 1)?;
    let grads = if a.train { Some(ParamSet::zeros(gpu, layout.clone(), "grads")?) } else { None };
    let opt = match &grads {
        Some(g) => Some(Optimizer::new(gpu, &params, g, AdamWConfig::default(), 0.01)?),
        None => None,
    };
    // the f16 path's first loss scale; with random weights a step may overflow and be skipped,
    // which costs the same time as one that is not
    let scale = if a.precision == Precision::F16 { super::scaler::LossScaler::new().scale } else { 1.0 };
    let mode = if a.train { Mode::Train { dropout: true } } else { Mode::Eval };
    let step = Step::new(gpu, &cfg, &params, grads.as_ref(), &Head::Pretrain, shape, mode, scale, a.precision)?;
    step.upload(gpu, &cfg, &random_batch(&cfg, &shape, &mut Rng::new(7), masked_per_seq))?;
    gpu.write_u32(&step.inputs.dropout_seed, &[1])?;
    if let Some(o) = &opt {
        o.adamw.set_step_scaled(gpu, 1e-5, 1, 1.0 / scale)?;
    }
    let list: Vec<&crate::gpu::Dispatch> = match &opt {
        Some(o) => o.micro_batch(&step, true).chain(&o.adamw.dispatches).collect(),
        None => step.forward.iter().collect(),
    };
    let first_step_after_s = launched.elapsed().as_secs_f64();
    let run = |n: usize| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            let mut r = Recorder::new(gpu);
            r.run(list.iter().copied());
            r.submit();
        }
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(a.warmup.max(1))?;
    let secs = run(a.steps.max(1))?;
    let ms = 1e3 * secs / a.steps.max(1) as f64;
    let fwd = forward_flops(&cfg, a.text, a.regions, masked_per_seq as f64) * a.batch as f64;
    let model_flops = if a.train { 3.0 * fwd } else { fwd };
    // matmul dispatches only, like the analytic formula (elementwise and optimizer work excluded)
    let counted: f64 = list.iter().filter(|d| d.name().starts_with("matmul")).map(|d| d.flops).sum();
    let mut profile = Vec::new();
    if a.profile {
        let mut prof = Profiler::new(gpu, list.len() as u32 + 8)?;
        if !prof.enabled() {
            eprintln!("note: the adapter has no TIMESTAMP_QUERY; no per-kernel profile");
        }
        let mut r = Recorder::with_profiler(gpu, &mut prof);
        r.run(list.iter().copied());
        r.submit();
        profile = aggregate(prof.collect(gpu)?);
    }
    let bytes_params = params.bytes();
    let bytes_grads = grads.as_ref().map_or(0, |g| g.bytes());
    let bytes_optimizer = opt.as_ref().map_or(0, |o| o.state_bytes());
    let bytes_activations = step.act_bytes + step.grad_act_bytes;
    let bytes_allocated = gpu.allocated.load(Ordering::Relaxed) - before;
    Ok(BenchResult {
        adapter: gpu.summary(),
        config: a.config.clone(),
        mode: if a.train { "train" } else { "infer" }.into(),
        precision: match a.precision {
            Precision::F32 => "f32".into(),
            Precision::F16 if crate::ops::matmul_coop::usable(gpu) => "f16 (cooperative matrix)".into(),
            Precision::F16 => "f16 (fp32 kernels, f16-rounded operands)".into(),
        },
        batch: a.batch,
        text: a.text,
        regions: a.regions,
        masked_per_seq: masked_per_seq as f64,
        ms_per_step: ms,
        seq_per_s: a.batch as f64 * 1e3 / ms,
        model_flops_per_step: model_flops,
        counted_flops_per_step: counted,
        tflops: model_flops / (ms * 1e-3) / 1e12,
        first_step_after_s,
        bytes_params,
        bytes_grads,
        bytes_optimizer,
        bytes_activations,
        bytes_other: bytes_allocated.saturating_sub(bytes_params + bytes_grads + bytes_optimizer + bytes_activations),
        bytes_allocated,
        profile,
    })
}

/// Per kernel name: (name, total ms, share of the step, GFLOP/s, GB/s), slowest first.
fn aggregate(rows: Vec<ProfileRow>) -> Vec<(String, f64, f64, f64, f64)> {
    let total: f64 = rows.iter().map(|r| r.ns).sum::<f64>().max(1.0);
    let mut by: std::collections::BTreeMap<String, (f64, f64, f64)> = Default::default();
    for r in rows {
        let e = by.entry(r.name).or_default();
        e.0 += r.ns;
        e.1 += r.flops;
        e.2 += r.bytes;
    }
    let mut v: Vec<_> = by.into_iter().map(|(n, (ns, f, b))| (n, ns / 1e6, ns / total, f / ns.max(1.0), b / ns.max(1.0))).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

pub fn print(r: &BenchResult) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("adapter: {}", r.adapter);
    println!(
        "Oscar {} {} step, {}, batch {} x (text {} + regions {}), {} masked tokens per sequence",
        r.config, r.mode, r.precision, r.batch, r.text, r.regions, r.masked_per_seq
    );
    println!(
        "  {:.2} ms/step, {:.1} sequences/s, {:.3} TFLOP/s (model FLOPs {:.3e}/step; counted over our matmul dispatches {:.3e})",
        r.ms_per_step, r.seq_per_s, r.tflops, r.model_flops_per_step, r.counted_flops_per_step
    );
    println!("  first step started {:.2} s after launch", r.first_step_after_s);
    println!(
        "  GPU memory: params {:.1} MiB, grads {:.1} MiB, optimizer {:.1} MiB, activations {:.1} MiB, other {:.1} MiB = {:.1} MiB allocated",
        mib(r.bytes_params),
        mib(r.bytes_grads),
        mib(r.bytes_optimizer),
        mib(r.bytes_activations),
        mib(r.bytes_other),
        mib(r.bytes_allocated)
    );
    if !r.profile.is_empty() {
        println!("  {:<36} {:>9} {:>7} {:>10} {:>9}", "kernel", "ms", "share", "GFLOP/s", "GB/s");
        for (n, ms, share, gf, gb) in &r.profile {
            println!("  {:<36} {:>9.3} {:>6.1}% {:>10.1} {:>9.1}", n, ms, 100.0 * share, gf, gb);
        }
    }
}
