//! `vlp-engine train`: Oscar pre-training (masked-token + contrastive loss) with AdamW, warm-up +
//! linear decay, clipping, gradient accumulation, dropout, periodic evaluation, metrics.jsonl, a
//! loss-curve PNG, and atomic checkpoints that resume bit-for-bit (batches and dropout masks are
//! functions of (seed, step, micro-batch), and every kernel sums in a fixed order).
use crate::ops::matmul::Precision;
use super::optim::Optimizer;
use super::scaler::{LossScaler, MIN_SCALE};
use super::{plot, schedule, state};
use crate::data::pretrain::{Contrast, PretrainData, Sampler};
use crate::data::{store, synth, Tok};
use crate::gpu::{DType, Gpu, Readback, Recorder};
use crate::model::{checkpoint, plan, Config, Layout, ParamSet};
use crate::ops::elementwise::{acc_into, fill};
use crate::ops::optim::AdamWConfig;
use crate::util::Rng;
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TrainArgs {
    pub config: String,
    /// A store directory; None generates the synthetic world into OUT/data.
    pub data: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f32,
    pub warmup: usize,
    pub weight_decay: f32,
    pub max_grad_norm: f32,
    pub text_len: usize,
    pub regions: usize,
    pub three_way: bool,
    pub eval_every: usize,
    pub eval_batches: usize,
    pub save_every: usize,
    pub log_every: usize,
    pub out: PathBuf,
    pub resume: bool,
    pub seed: u64,
    pub synth_images: usize,
    pub progress: bool,
    /// Testing aid: poison a parameter with NaN before this step.
    pub inject_nan_at: Option<usize>,
    /// What the matmuls compute their products in; F16 brings dynamic loss scaling.
    pub precision: Precision,
    /// F16 only: the first loss scale (default 2^16, as GradScaler).
    pub loss_scale: Option<f32>,
}

impl Default for TrainArgs {
    fn default() -> Self {
        TrainArgs {
            config: "tiny".into(), data: None, tokenizer: None, init: None, steps: 300, batch_size: 16, grad_accum: 1, lr: 1e-3,
            warmup: 30, weight_decay: 0.01, max_grad_norm: 1.0, text_len: 32, regions: 6, three_way: false, eval_every: 100,
            eval_batches: 4, save_every: 100, log_every: 10, out: PathBuf::from("runs/pretrain"), resume: false, seed: 42,
            synth_images: 2000, progress: true, inject_nan_at: None, precision: Precision::F32, loss_scale: None,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Eval {
    pub val_loss: f32,
    pub val_mtl_acc: f32,
    pub val_contrastive_acc: f32,
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub start_step: usize,
    pub steps: usize,
    /// (step, loss, mtl_loss, contrastive_loss) at every logged step.
    pub losses: Vec<(usize, f32, f32, f32)>,
    pub eval: Option<Eval>,
    pub seq_per_s: f64,
    pub params: usize,
}

/// SplitMix of (seed, a, b): independent streams for data, dropout and evaluation.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut r = Rng::new(seed ^ a.wrapping_mul(0x9E3779B97F4A7C15) ^ b.wrapping_mul(0xC2B2AE3D27D4EB4F));
    r.next_u64()
}

fn prepare_data(a: &TrainArgs, feature_dim: usize) -> Result<PathBuf> {
    if let Some(d) = &a.data {
        return Ok(d.clone());
    }
    let dir = a.out.join("data");
    if !dir.join("captions.jsonl").exists() {
        eprintln!("generating the synthetic world: {} images, feature dim {feature_dim} -> {}", a.synth_images, dir.display());
        let w = synth::generate(a.synth_images, a.seed, feature_dim)?;
        let tok = Tok::train(&w.corpus(), 1000)?;
        store::write_world(&dir, &w, &tok)?;
    }
    Ok(dir)
}

pub fn train(gpu: &Gpu, a: &TrainArgs) -> Result<Summary> {
    if a.steps == 0 || a.batch_size == 0 || a.grad_accum == 0 {
        return Err(Error::Other("--steps, --batch-size and --grad-accum must be positive".into()));
    }
    if let Some(s) = a.loss_scale {
        if a.precision != Precision::F16 || !(s.is_finite() && s >= MIN_SCALE) {
            return Err(Error::Other(format!("--loss-scale {s}: needs --precision f16 and a finite value >= {MIN_SCALE}")));
        }
    }
    if a.text_len < 4 {
        return Err(Error::Other(format!("--text-len {} leaves no room to mask: [CLS] caption [SEP] tags [SEP] needs at least 4", a.text_len)));
    }
    let preset = Config::preset(&a.config).is_some();
    let mut cfg = Config::load(&a.config)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::Other(format!("{}: {e}", a.out.display())))?;
    let data_dir = prepare_data(a, cfg.img_feature_dim)?;
    let tok_path = a.tokenizer.clone().unwrap_or_else(|| data_dir.join("tokenizer.json"));
    let tok = Tok::load(&tok_path)?;
    let data = PretrainData::load(&data_dir, &tok)?;
    if preset {
        // a preset adapts to the data: its vocabulary and feature width
        cfg.vocab_size = tok.vocab_size();
        cfg.img_feature_dim = data.feature_dim;
    } else if cfg.img_feature_dim != data.feature_dim || cfg.vocab_size < tok.vocab_size() {
        return Err(Error::Other(format!(
            "config {} (img_feature_dim {}, vocab {}) does not fit the data (feature dim {}) and tokenizer ({} tokens)",
            a.config, cfg.img_feature_dim, cfg.vocab_size, data.feature_dim, tok.vocab_size()
        )));
    }
    cfg.num_contrast_classes = if a.three_way { 3 } else { 2 };
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(a.text_len);
    cfg.validate().map_err(Error::Other)?;

    let layout = Arc::new(Layout::for_config(&cfg, gpu.max_binding_bytes())?);
    let params = ParamSet::zeros(gpu, layout.clone(), "params")?;
    let grads = ParamSet::zeros(gpu, layout.clone(), "grads")?;
    params.init(gpu, a.seed)?;
    if let Some(init) = &a.init {
        let r = checkpoint::load(gpu, &params, init)?;
        eprintln!("init from {}: {} loaded, {} initialised, {} ignored", init.display(), r.loaded.len(), r.initialized.len(), r.ignored.len());
    }
    let adam = AdamWConfig { max_grad_norm: a.max_grad_norm, ..Default::default() };
    let opt = Optimizer::new(gpu, &params, &grads, adam, a.weight_decay)?;
    let contrast = if a.three_way { Contrast::ThreeWay } else { Contrast::TwoWay };
    let train_s = Sampler::new(&data, &tok, "train", a.batch_size, a.text_len, a.regions, contrast, cfg.vocab_size)?;
    let val_s = Sampler::new(&data, &tok, "val", a.batch_size, a.text_len, a.regions, contrast, cfg.vocab_size).ok();
    let f16 = a.precision == Precision::F16;
    let mut scaler = if f16 { LossScaler::new() } else { LossScaler::off() };
    if let (true, Some(s)) = (f16, a.loss_scale) {
        scaler.scale = s;
    }
    let step = plan(gpu, &cfg, &params, Some(&grads), train_s.shape, true, scaler.scale / a.grad_accum as f32, a.precision)?;
    let eval = match &val_s { Some(v) => Some(plan(gpu, &cfg, &params, None, v.shape, false, 1.0, a.precision)?), None => None };
    let loss_acc = gpu.zeros("loss_acc", &[8], DType::F32)?;
    let start_loss = fill(gpu, &loss_acc, 0.0)?;
    let add_loss = acc_into(gpu, 1.0 / a.grad_accum as f32, &step.acts.losses, 1.0, &loss_acc)?;
    // reused every logged step: the steady-state step allocates nothing
    let (mut rb_loss, mut rb_clip) = (Readback::new(gpu, 32)?, Readback::new(gpu, 16)?);

    let ckpt = a.out.join("checkpoint.safetensors");
    let mut start = 0;
    if a.resume && ckpt.exists() {
        let r = state::load(gpu, &ckpt, &cfg, &params, &opt.m, &opt.v)?;
        if r.seed != a.seed {
            return Err(Error::Other(format!("{}: written with --seed {}, resuming with --seed {}", ckpt.display(), r.seed, a.seed)));
        }
        start = r.step;
        if let (true, Some((scale, clean))) = (f16, r.loss_scale) {
            scaler.restore(scale, clean);
            step.set_loss_scale(gpu, scale / a.grad_accum as f32);
        }
        eprintln!("resuming from {} at step {start}", ckpt.display());
    }
    let metrics_path = a.out.join("metrics.jsonl");
    let kept = if start > 0 { keep_metrics_until(&metrics_path, start)? } else { String::new() };
    crate::util::atomic_write(&metrics_path, kept.as_bytes()).map_err(|e| Error::Other(e.to_string()))?;
    let mut metrics = std::fs::OpenOptions::new().append(true).open(&metrics_path).map_err(|e| Error::Other(e.to_string()))?;

    let nparams = layout.numel();
    eprintln!(
        "{} | params {:.2}M | batch {}x{} (text {} + regions {}) | steps {} | memory: params {} MiB, grads {} MiB, adam {} MiB, activations {} MiB",
        gpu.summary(), nparams as f64 / 1e6, a.batch_size, a.grad_accum, a.text_len, a.regions, a.steps,
        params.bytes() >> 20, grads.bytes() >> 20, opt.state_bytes() >> 20, (step.act_bytes + step.grad_act_bytes) >> 20
    );
    let bar = progress_bar(a, start);
    let mut summary = Summary { start_step: start, steps: a.steps, params: nparams, ..Default::default() };
    let (mut t_log, mut seqs_since) = (Instant::now(), 0usize);
    let (mut total_seqs, mut total_time) = (0usize, 0f64);
    for s in start + 1..=a.steps {
        if a.inject_nan_at == Some(s) {
            let name = &layout.specs[0].name;
            let t = params.get(name)?;
            gpu.write_f32(&t.view(0, &[1])?, &[f32::NAN])?;
        }
        for micro in 0..a.grad_accum {
            let mut rng = Rng::new(mix(a.seed, s as u64, micro as u64));
            let b = train_s.batch(&mut rng);
            step.inputs.upload(gpu, &train_s.shape, &cfg, &b)?;
            gpu.write_u32(&step.inputs.seed, &[mix(a.seed, s as u64, 1000 + micro as u64) as u32])?;
            let mut rec = Recorder::new(gpu);
            if micro == 0 {
                rec.run(opt.zero_grads.iter().chain([&start_loss]));
            }
            rec.run(step.forward.iter().chain(&step.backward).chain([&add_loss]));
            rec.submit();
        }
        let lr = schedule::lr_at(s, a.steps, a.warmup, a.lr);
        opt.adamw.set_step_scaled(gpu, lr, s as u32, 1.0 / scaler.scale)?;
        seqs_since += a.batch_size * a.grad_accum;
        let do_eval = a.eval_every > 0 && (s % a.eval_every == 0 || s == a.steps) && eval.is_some();
        let do_save = s == a.steps || (a.save_every > 0 && s % a.save_every == 0);
        let do_log = s % a.log_every.max(1) == 0 || s == start + 1 || do_eval || do_save;
        // the f16 path reads the skip flag every step to adjust the loss scale
        let read_clip = do_log || f16;
        let mut rec = Recorder::new(gpu);
        rec.run(&opt.adamw.dispatches);
        if do_log {
            rec.readback(&mut rb_loss, &loss_acc);
        }
        if read_clip {
            rec.readback(&mut rb_clip, &opt.adamw.clip);
        }
        rec.submit();
        let mut skipped = false;
        let mut norm = 0.0;
        if read_clip {
            if do_log {
                rb_loss.start();
            }
            rb_clip.start();
            let clip: Vec<f32> = bytemuck::pod_collect_to_vec(&rb_clip.wait(gpu)?);
            norm = clip[0];
            skipped = clip[2] != 0.0;
            let used = scaler.scale;
            if let Some(new) = if f16 { scaler.update(skipped) } else { None } {
                step.set_loss_scale(gpu, new / a.grad_accum as f32);
                if skipped {
                    bar.suspend(|| eprintln!("step {s}: gradients overflowed at loss scale {used}; step skipped, scale -> {new}"));
                }
                if new < MIN_SCALE {
                    bar.abandon();
                    return Err(Error::Other(format!("step {s}: gradients are not finite even at loss scale {used}; the f16 path cannot train this model (try --precision f32)")));
                }
            }
        }
        if do_log {
            let l: Vec<f32> = bytemuck::pod_collect_to_vec(&rb_loss.wait(gpu)?);
            let (mtl, con) = (l[2], l[6]);
            let loss = mtl + con;
            // a skipped f16 step (gradients overflowed) is expected now and then; a non-finite loss
            // is fatal in both precisions: no loss scale fixes the forward pass
            if !loss.is_finite() || (!norm.is_finite() && !(f16 && skipped)) {
                bar.abandon();
                let last = if ckpt.exists() { format!("the last good checkpoint is {}", ckpt.display()) } else { "no checkpoint was written".into() };
                return Err(Error::Other(format!("loss became {loss} (masked-token {mtl}, contrastive {con}, grad norm {norm}) at step {s}; stopping; {last}")));
            }
            let dt = t_log.elapsed().as_secs_f64();
            let sps = seqs_since as f64 / dt.max(1e-9);
            if s > start + 1 {
                total_seqs += seqs_since;
                total_time += dt;
            }
            let mut line = serde_json::json!({"step": s, "loss": loss, "mtl_loss": mtl, "contrastive_loss": con, "lr": lr, "seq_per_s": sps, "grad_norm": norm});
            if f16 {
                line["loss_scale"] = scaler.scale.into();
                line["skipped"] = skipped.into();
            }
            if do_eval {
                let e = evaluate(gpu, &cfg, eval.as_ref().unwrap(), val_s.as_ref().unwrap(), a)?;
                line["val_loss"] = e.val_loss.into();
                line["val_mtl_acc"] = e.val_mtl_acc.into();
                line["val_contrastive_acc"] = e.val_contrastive_acc.into();
                bar.suspend(|| eprintln!("step {s}: val loss {:.4}, masked-token acc {:.3}, contrastive acc {:.3}", e.val_loss, e.val_mtl_acc, e.val_contrastive_acc));
                summary.eval = Some(e);
            }
            writeln!(metrics, "{line}").map_err(|e| Error::Other(e.to_string()))?;
            summary.losses.push((s, loss, mtl, con));
            bar.set_message(format!("loss {loss:.4} (mtl {mtl:.3} con {con:.3}) lr {lr:.2e} {sps:.1} seq/s"));
            seqs_since = 0;
            t_log = Instant::now();
            if do_save {
                state::save(gpu, &ckpt, &cfg, &params, &opt.m, &opt.v, s, a.seed, f16.then(|| scaler.state()))?;
            }
        }
        bar.set_position(s as u64);
    }
    bar.finish();
    summary.seq_per_s = if total_time > 0.0 { total_seqs as f64 / total_time } else { 0.0 };
    finish(gpu, a, &cfg, &params, &tok, &summary)?;
    Ok(summary)
}

fn progress_bar(a: &TrainArgs, start: usize) -> indicatif::ProgressBar {
    if !a.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(a.steps as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} ETA {eta}").unwrap());
    bar.set_position(start as u64);
    bar
}

fn keep_metrics_until(path: &Path, step: usize) -> Result<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s as usize <= step))
        .map(|l| format!("{l}\n"))
        .collect())
}

/// Masked-token and contrastive accuracy on fixed validation batches (dropout off).
fn evaluate(gpu: &Gpu, cfg: &Config, ev: &crate::model::Step, vs: &Sampler, a: &TrainArgs) -> Result<Eval> {
    let (mut loss, mut mtl_ok, mut mtl_n, mut con_ok, mut con_n) = (0f64, 0usize, 0usize, 0usize, 0usize);
    for i in 0..a.eval_batches.max(1) {
        let b = vs.batch(&mut Rng::new(mix(a.seed, 0xE7A1, i as u64)));
        ev.inputs.upload(gpu, &vs.shape, cfg, &b)?;
        gpu.run(&ev.forward)?;
        let l = gpu.read_f32(&ev.acts.losses)?;
        loss += (l[2] + l[6]) as f64;
        let logits = gpu.read_f32(&ev.acts.logits)?;
        for (k, &lab) in b.mlm_labels.iter().enumerate() {
            if lab >= 0 {
                mtl_n += 1;
                mtl_ok += (argmax(&logits[k * cfg.vocab_size..(k + 1) * cfg.vocab_size]) == lab as usize) as usize;
            }
        }
        let clog = gpu.read_f32(&ev.acts.clog)?;
        let c = cfg.num_contrast_classes;
        for (k, &lab) in b.con_labels.iter().enumerate() {
            con_n += 1;
            con_ok += (argmax(&clog[k * c..(k + 1) * c]) == lab as usize) as usize;
        }
    }
    let n = a.eval_batches.max(1) as f64;
    Ok(Eval { val_loss: (loss / n) as f32, val_mtl_acc: mtl_ok as f32 / mtl_n.max(1) as f32, val_contrastive_acc: con_ok as f32 / con_n.max(1) as f32 })
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
}

/// The model directory (for `embed` and fine-tuning) and the loss curve.
fn finish(gpu: &Gpu, a: &TrainArgs, cfg: &Config, params: &ParamSet, tok: &Tok, s: &Summary) -> Result<()> {
    let mdir = a.out.join("model");
    let mut meta = std::collections::HashMap::new();
    meta.insert("step".into(), a.steps.to_string());
    checkpoint::save(gpu, params, &mdir.join("model.safetensors"), meta)?;
    crate::util::atomic_write(&mdir.join("config.json"), cfg.to_json().as_bytes()).map_err(|e| Error::Other(e.to_string()))?;
    tok.save(&mdir.join("tokenizer.json"))?;
    let series = |f: fn(&(usize, f32, f32, f32)) -> f32| s.losses.iter().map(|x| (x.0 as f64, f(x) as f64)).collect::<Vec<_>>();
    let png = a.out.join("loss.png");
    if let Err(e) = plot::loss_curve(&png, "Oscar pre-training", &[("loss", series(|x| x.1)), ("masked-token", series(|x| x.2)), ("contrastive", series(|x| x.3))]) {
        eprintln!("note: no loss plot ({e})");
    }
    Ok(())
}
