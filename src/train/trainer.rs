//! `vlp-engine train`: one step loop for every task — micro-batches, AdamW with warm-up + linear
//! decay, clipping, dropout, f16 loss scaling, periodic evaluation, metrics.jsonl, a loss-curve PNG,
//! and atomic checkpoints that resume bit for bit (batches and dropout masks are functions of
//! (seed, step, micro-batch), and every kernel sums in a fixed order). What is trained comes from
//! the task (`tasks::Task`): its batches, its head, its metrics.
use super::args::{check_flags, run_flags, TrainArgs};
use super::best::{Best, KeepBest};
use super::optim::Optimizer;
use super::scaler::{LossScaler, MIN_SCALE};
use super::{plot, schedule, state};
use crate::data::pretrain::PretrainData;
use crate::data::{store, synth, Tok};
use crate::gpu::{DType, Gpu, Readback, Recorder};
use crate::model::{checkpoint, Config, Head, Mode, ParamLayout, ParamSet, Step};
use crate::ops::elementwise::{acc_into, fill};
use crate::ops::matmul::Precision;
use crate::ops::optim::AdamWConfig;
use crate::tasks::{self, Task};
use crate::util::Rng;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub start_step: usize,
    pub steps: usize,
    /// Names of the loss parts (e.g. mtl_loss, contrastive_loss).
    pub parts: Vec<String>,
    /// (step, loss, parts) at every logged step.
    pub losses: Vec<(usize, f32, Vec<f32>)>,
    /// The last evaluation's metrics.
    pub eval: Option<BTreeMap<String, f32>>,
    pub seq_per_s: f64,
    pub params: usize,
    /// With --keep-best: the evaluation OUT/best holds.
    pub best: Option<Best>,
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

/// The checkpoint file of `--init` (a model directory or a file) and the config it implies.
fn init_source(a: &TrainArgs) -> (Option<PathBuf>, String) {
    let Some(init) = &a.init else { return (None, a.config.clone().unwrap_or_else(|| "tiny".into())) };
    if init.is_dir() {
        let cfg = a.config.clone().unwrap_or_else(|| init.join("config.json").display().to_string());
        (Some(init.join("model.safetensors")), cfg)
    } else {
        (Some(init.clone()), a.config.clone().unwrap_or_else(|| "tiny".into()))
    }
}

pub fn train(gpu: &Gpu, a: &TrainArgs) -> Result<Summary> {
    check_flags(a)?;
    if let Some(s) = a.loss_scale {
        if a.precision != Precision::F16 || !(s.is_finite() && s >= MIN_SCALE) {
            return Err(Error::Other(format!("--loss-scale {s}: needs --precision f16 and a finite value >= {MIN_SCALE}")));
        }
    }
    if a.text_len < 4 {
        return Err(Error::Other(format!("--text-len {} leaves no room to mask: [CLS] caption [SEP] tags [SEP] needs at least 4", a.text_len)));
    }
    if !(0.0..1.0).contains(&a.head_dropout) {
        return Err(Error::Other(format!("--head-dropout {} must be in [0, 1)", a.head_dropout)));
    }
    let ckpt = a.out.join("checkpoint.safetensors");
    if a.resume && !ckpt.exists() {
        return Err(Error::Other(format!("--resume: there is no checkpoint {} to resume from (run without --resume to start)", ckpt.display())));
    }
    let (init_file, config) = init_source(a);
    let preset = Config::preset(&config).is_some();
    let mut cfg = Config::load(&config)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::Other(format!("{}: {e}", a.out.display())))?;
    let _lock = crate::util::DirLock::acquire(&a.out, "train")?;
    for d in [a.out.clone(), a.out.join("model")] {
        for f in crate::util::remove_stale_temps(&d) {
            eprintln!("removed {}, left by an interrupted run", f.display());
        }
    }
    let data_dir = prepare_data(a, cfg.img_feature_dim)?;
    let tok_path = a.tokenizer.clone().unwrap_or_else(|| data_dir.join("tokenizer.json"));
    let tok = Tok::load(&tok_path)?;
    let mut data = PretrainData::load(&data_dir, &tok)?;
    if a.no_tags {
        data.clear_tags();
    }
    let task: Box<dyn Task + '_> = match a.task.as_str() {
        "pretrain" => Box::new(tasks::pretrain::Pretrain::new(&data, &tok, a.batch_size, a.text_len, a.regions, a.three_way, cfg_vocab(preset, &cfg, &tok))?),
        "retrieval" => Box::new(tasks::retrieval::Retrieval::new(&data, &tok, a.batch_size, a.text_len, a.regions, a.head_dropout)?),
        "vqa" | "gqa" => Box::new(tasks::qa::Qa::load(
            &data_dir,
            &data,
            &tok,
            a.task == "vqa",
            None,
            a.min_answer_count,
            a.batch_size,
            a.text_len,
            a.regions,
            a.head_dropout,
        )?),
        "nlvr2" => {
            let mut t = tasks::nlvr2::Nlvr2::load(&data_dir, &data, &tok, a.batch_size, a.text_len, a.regions, a.pair_scale, a.head_dropout)?;
            t.tags = a.pair_tags;
            Box::new(t)
        }
        "caption" => {
            let layout = tasks::caption::CaptionLayout { caption_len: a.caption_len, text_len: a.text_len, regions: a.regions };
            if a.scst {
                let texts = crate::data::store::caption_texts(&data_dir)?;
                let mut t = tasks::scst::Scst::new(&data, &tok, &texts, layout, a.batch_size, a.scst_samples, a.scst_max_gen_length, !a.scst_no_eos)?;
                t.sample_baseline = a.scst_baseline == "sample";
                t.beam_samples = a.scst_sampler == "beam";
                Box::new(t)
            } else {
                Box::new(
                    tasks::caption::Captioning::new(&data, &tok, a.batch_size, layout, a.label_smoothing, cfg_vocab(preset, &cfg, &tok))?
                        .mask_tag_words(a.mask_tag_words)?,
                )
            }
        }
        t => return Err(Error::Other(format!("--task {t}: expected pretrain, retrieval, vqa, gqa, nlvr2 or caption"))),
    };
    if preset {
        // a preset adapts to the data: its vocabulary, feature width and text length
        cfg.vocab_size = tok.id_bound();
        cfg.img_feature_dim = task.feature_dim();
        cfg.max_position_embeddings = cfg.max_position_embeddings.max(a.text_len);
    } else if cfg.vocab_size < tok.id_bound() {
        tok.check_fits(cfg.vocab_size, Path::new(&config))?;
    } else if cfg.img_feature_dim != task.feature_dim() {
        return Err(Error::Other(format!(
            "config {config} (img_feature_dim {}, vocab {}) does not fit the data (feature dim {}) and tokenizer ({} tokens)",
            cfg.img_feature_dim,
            cfg.vocab_size,
            task.feature_dim(),
            tok.id_bound()
        )));
    } else if cfg.max_position_embeddings < a.text_len {
        return Err(Error::Other(format!(
            "--text-len {} is longer than max_position_embeddings {} of config {config}: shorten --text-len",
            a.text_len, cfg.max_position_embeddings
        )));
    }
    if a.task == "pretrain" {
        cfg.num_contrast_classes = if a.three_way { 3 } else { 2 };
    }
    cfg.validate().map_err(Error::Other)?;
    let head = task.head(&cfg);
    run(gpu, a, &cfg, &head, task.as_ref(), &tok, init_file.as_deref())
}

fn cfg_vocab(preset: bool, cfg: &Config, tok: &Tok) -> usize {
    if preset {
        tok.id_bound()
    } else {
        cfg.vocab_size
    }
}

/// The step loop for any task.
pub fn run(gpu: &Gpu, a: &TrainArgs, cfg: &Config, head: &Head, task: &dyn Task, tok: &Tok, init: Option<&Path>) -> Result<Summary> {
    if a.scst && a.task != "caption" {
        return Err(Error::Other(format!("--scst is self-critical caption training: it needs --task caption, not --task {}", a.task)));
    }
    let layout = Arc::new(ParamLayout::for_model(cfg, head, gpu.max_binding_bytes())?);
    let params = ParamSet::zeros(gpu, layout.clone(), "params")?;
    let grads = ParamSet::zeros(gpu, layout.clone(), "grads")?;
    params.init(gpu, a.seed)?;
    // a head bias not loaded from --init starts at the task's prior (e.g. the answers' log prior)
    let mut fresh_bias = true;
    if let Some(init) = init {
        let r = checkpoint::load_with(gpu, &params, init, checkpoint::LoadOptions { allow_unexpected: a.allow_unexpected })?;
        eprintln!("init from {}: {} loaded, {} initialised, {} ignored", init.display(), r.loaded.len(), r.initialized.len(), r.ignored.len());
        let fresh: Vec<&String> = r.initialized.iter().filter(|n| head.specs(cfg).iter().any(|(h, _)| h == *n)).collect();
        if !fresh.is_empty() {
            eprintln!(
                "the {} head is not in {}: freshly initialised ({})",
                head.name(),
                init.display(),
                fresh.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        fresh_bias = r.initialized.iter().any(|n| n == "classifier.bias");
    }
    if let Some(bias) = task.head_bias() {
        if fresh_bias && layout.index.contains_key("classifier.bias") {
            gpu.write_f32(&params.get("classifier.bias")?, &bias)?;
            eprintln!("classifier.bias starts at the log prior of the {} training labels", bias.len());
        }
    }
    let adam = AdamWConfig { max_grad_norm: a.max_grad_norm, ..Default::default() };
    let opt = Optimizer::new(gpu, &params, &grads, adam, a.weight_decay)?;
    let f16 = a.precision == Precision::F16;
    let mut scaler = if f16 { LossScaler::new() } else { LossScaler::off() };
    if let (true, Some(s)) = (f16, a.loss_scale) {
        scaler.scale = s;
    }
    let shape = task.train_shape();
    let step =
        Step::new(gpu, cfg, &params, Some(&grads), head, shape, Mode::Train { dropout: task.dropout() }, scaler.scale / a.grad_accum as f32, a.precision)?;
    let eval = match task.eval_shape() {
        Some(s) => Some(Step::new(gpu, cfg, &params, None, head, s, Mode::Eval, 1.0, a.precision)?),
        None => None,
    };
    let n_loss = step.losses().numel();
    let loss_acc = gpu.zeros("loss_acc", &[n_loss], DType::F32)?;
    let start_loss = fill(gpu, &loss_acc, 0.0)?;
    let add_loss = acc_into(gpu, 1.0 / a.grad_accum as f32, step.losses(), 1.0, &loss_acc)?;
    // reused every logged step: the steady-state step allocates nothing
    let (mut rb_loss, mut rb_clip) = (Readback::new(gpu, 4 * n_loss as u64)?, Readback::new(gpu, 16)?);

    let ckpt = a.out.join("checkpoint.safetensors");
    let flags = run_flags(a);
    let mut start = 0;
    if a.resume {
        if !ckpt.exists() {
            return Err(Error::Other(format!("--resume: there is no checkpoint {} to resume from (run without --resume to start)", ckpt.display())));
        }
        let r = state::load(gpu, &ckpt, cfg, &params, &opt.m, &opt.v, &flags, a.steps)?;
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
    let seqs = shape.batch;
    eprintln!(
        "{} | {} | params {:.2}M | batch {}x{} (text {} + regions {}) | steps {} | memory: params {} MiB, grads {} MiB, adam {} MiB, activations {} MiB",
        gpu.summary(),
        head.name(),
        nparams as f64 / 1e6,
        seqs,
        a.grad_accum,
        shape.text,
        shape.regions,
        a.steps,
        params.bytes() >> 20,
        grads.bytes() >> 20,
        opt.state_bytes() >> 20,
        (step.act_bytes + step.grad_act_bytes) >> 20
    );
    let mut keep_best = match &a.keep_best {
        Some(m) if eval.is_none() => return Err(Error::Other(format!("--keep-best {m}: the {} task has no validation split here to evaluate on", a.task))),
        Some(m) => Some(KeepBest::new(&a.out, m, a.resume)?),
        None => None,
    };
    task.prepare(gpu, cfg, &params)?;
    let files = task.model_files();
    if let Some(kb) = keep_best.as_mut() {
        // the starting parameters compete too: a run that never beats them keeps them
        let m = task.evaluate(gpu, cfg, eval.as_ref().unwrap(), a.seed, a.eval_batches)?;
        eprintln!("step {start} (start): {}", metrics_text(&m));
        offer_best(gpu, kb, start, &m, cfg, head, &params, tok, &files)?;
    }
    let parts = head.loss_parts();
    let bar = progress_bar(a, start);
    let mut summary =
        Summary { start_step: start, steps: a.steps, params: nparams, parts: parts.iter().map(|p| p.0.to_string()).collect(), ..Default::default() };
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
            let b = task.train_batch_on(gpu, cfg, &params, &mut rng)?;
            step.upload(gpu, cfg, &b)?;
            gpu.write_u32(&step.inputs.dropout_seed, &[mix(a.seed, s as u64, 1000 + micro as u64) as u32])?;
            let mut rec = Recorder::new(gpu);
            rec.run((micro == 0).then_some(&start_loss).into_iter().chain(opt.micro_batch(&step, micro == 0)).chain([&add_loss]));
            rec.submit();
        }
        let lr = schedule::lr_at(s, a.steps, a.warmup_steps(), a.lr);
        opt.adamw.set_step_scaled(gpu, lr, s as u32, 1.0 / scaler.scale)?;
        seqs_since += seqs * a.grad_accum;
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
                    return Err(Error::Other(format!(
                        "step {s}: gradients are not finite even at loss scale {used}; the f16 path cannot train this model (try --precision f32)"
                    )));
                }
            }
        }
        if do_log {
            let l: Vec<f32> = bytemuck::pod_collect_to_vec(&rb_loss.wait(gpu)?);
            let vals: Vec<f32> = parts.iter().map(|&(_, i)| l[i]).collect();
            let loss = tasks::loss_of(head, &l);
            let parts_text = parts.iter().zip(&vals).map(|(p, v)| format!("{} {v}", p.0)).collect::<Vec<_>>().join(", ");
            // a skipped f16 step (gradients overflowed) is expected now and then; a non-finite loss
            // is fatal in both precisions: no loss scale fixes the forward pass
            if !loss.is_finite() || (!norm.is_finite() && !(f16 && skipped)) {
                bar.abandon();
                let last = if ckpt.exists() { format!("the last good checkpoint is {}", ckpt.display()) } else { "no checkpoint was written".into() };
                return Err(Error::Other(format!("loss became {loss} ({parts_text}, grad norm {norm}) at step {s}; stopping; {last}")));
            }
            let dt = t_log.elapsed().as_secs_f64();
            let sps = seqs_since as f64 / dt.max(1e-9);
            if s > start + 1 {
                total_seqs += seqs_since;
                total_time += dt;
            }
            let mut line = serde_json::json!({"step": s, "loss": loss});
            if parts.len() > 1 {
                for (p, v) in parts.iter().zip(&vals) {
                    line[p.0] = (*v).into();
                }
            }
            line["lr"] = lr.into();
            line["seq_per_s"] = sps.into();
            line["grad_norm"] = norm.into();
            if f16 {
                line["loss_scale"] = scaler.scale.into();
                line["skipped"] = skipped.into();
            }
            for (k, v) in task.step_metrics() {
                line[k.as_str()] = v.into();
            }
            if do_eval {
                let m = task.evaluate(gpu, cfg, eval.as_ref().unwrap(), a.seed, a.eval_batches)?;
                for (k, v) in &m {
                    line[k.as_str()] = (*v).into();
                }
                bar.suspend(|| eprintln!("step {s}: {}", metrics_text(&m)));
                if let Some(kb) = keep_best.as_mut() {
                    bar.suspend(|| offer_best(gpu, kb, s, &m, cfg, head, &params, tok, &files))?;
                }
                summary.eval = Some(m.into_iter().collect());
            }
            writeln!(metrics, "{line}").map_err(|e| Error::Other(e.to_string()))?;
            bar.set_message(format!(
                "loss {loss:.4} ({}) lr {lr:.2e} {sps:.1} seq/s",
                parts.iter().zip(&vals).map(|(p, v)| format!("{} {v:.3}", p.0.trim_end_matches("_loss"))).collect::<Vec<_>>().join(" ")
            ));
            summary.losses.push((s, loss, vals));
            seqs_since = 0;
            t_log = Instant::now();
            if do_save {
                state::save(gpu, &ckpt, cfg, &params, &opt.m, &opt.v, s, a.seed, f16.then(|| scaler.state()), &flags)?;
            }
        }
        bar.set_position(s as u64);
    }
    bar.finish();
    summary.seq_per_s = if total_time > 0.0 { total_seqs as f64 / total_time } else { 0.0 };
    summary.best = keep_best.and_then(|kb| kb.best);
    finish(gpu, a, cfg, head, &params, tok, task.title(), &files, &summary)?;
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

/// The model directory (for the applications and as `--init`) and the loss curve.
fn finish(
    gpu: &Gpu,
    a: &TrainArgs,
    cfg: &Config,
    head: &Head,
    params: &ParamSet,
    tok: &Tok,
    title: &str,
    files: &[(String, String)],
    s: &Summary,
) -> Result<()> {
    write_model(gpu, &a.out.join("model"), a.steps, cfg, head, params, tok, files)?;
    let mut series = vec![("loss".to_string(), s.losses.iter().map(|x| (x.0 as f64, x.1 as f64)).collect::<Vec<_>>())];
    if s.parts.len() > 1 {
        for (k, name) in s.parts.iter().enumerate() {
            series.push((
                name.trim_end_matches("_loss").replace("mtl", "masked-token").to_string(),
                s.losses.iter().map(|x| (x.0 as f64, x.2[k] as f64)).collect(),
            ));
        }
    }
    let refs: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let png = a.out.join("loss.png");
    if let Err(e) = plot::loss_curve(&png, title, &refs) {
        eprintln!("note: no loss plot ({e})");
    }
    Ok(())
}

/// "name value, ..." of an evaluation, as the log lines print it.
fn metrics_text(m: &[(String, f32)]) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

/// A model directory (for the applications and as `--init`): the parameters (their step in the
/// metadata), config, head, tokenizer and the task's files.
fn write_model(gpu: &Gpu, mdir: &Path, step: usize, cfg: &Config, head: &Head, params: &ParamSet, tok: &Tok, files: &[(String, String)]) -> Result<()> {
    let mut meta = std::collections::HashMap::new();
    meta.insert("step".into(), step.to_string());
    checkpoint::save(gpu, params, &mdir.join("model.safetensors"), meta)?;
    crate::util::atomic_write(&mdir.join("config.json"), cfg.to_json().as_bytes()).map_err(|e| Error::Other(e.to_string()))?;
    let head_json = serde_json::to_string_pretty(head).map_err(|e| Error::Other(e.to_string()))?;
    crate::util::atomic_write(&mdir.join("head.json"), head_json.as_bytes()).map_err(|e| Error::Other(e.to_string()))?;
    tok.save(&mdir.join("tokenizer.json"))?;
    for (name, body) in files {
        crate::util::atomic_write(&mdir.join(name), body.as_bytes()).map_err(|e| Error::Other(format!("{}: {e}", mdir.join(name).display())))?;
    }
    Ok(())
}

/// --keep-best: writes OUT/best when the evaluation `m` at `step` beats the best so far.
#[allow(clippy::too_many_arguments)]
fn offer_best(
    gpu: &Gpu,
    kb: &mut KeepBest,
    step: usize,
    m: &[(String, f32)],
    cfg: &Config,
    head: &Head,
    params: &ParamSet,
    tok: &Tok,
    files: &[(String, String)],
) -> Result<()> {
    if let Some(b) = kb.offer(step, m)? {
        let msg = format!("new best {} {:.4} at step {step}", b.metric, b.value);
        kb.commit(b, |dir| write_model(gpu, dir, step, cfg, head, params, tok, files))?;
        eprintln!("{msg}: {}", kb.best_dir().display());
    }
    Ok(())
}
