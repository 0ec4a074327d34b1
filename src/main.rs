//! vlp-engine: a thin CLI over the library.
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vlp_engine::gpu::{self, Backend, Gpu, GpuOptions};
use vlp_engine::ops::matmul::Precision;

#[derive(Parser)]
#[command(name = "vlp-engine", version, about = "Oscar vision-language pre-training on any GPU (wgpu + WGSL)")]
struct Cli {
    /// GPU backend: vulkan, metal, dx12, gl or any.
    #[arg(long, global = true, env = "VLP_BACKEND", default_value = "any")]
    backend: String,
    /// Adapter index (see `info`) or a name substring.
    #[arg(long, global = true, env = "VLP_ADAPTER")]
    adapter: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List adapters, their limits and features, and which one would be used.
    Info,
    /// Run the encoder on texts and write their last hidden states to a safetensors file.
    Embed(EmbedArgs),
    /// Pre-train Oscar (masked-token + contrastive) or fine-tune it (--task); with no flags, pre-train
    /// a tiny model on the synthetic world.
    Train(vlp_engine::train::TrainArgs),
    /// Generate the synthetic world (images, region features, tags, captions, VQA, NLVR2, tokenizer).
    Synth(SynthArgs),
    /// Time steady-state Oscar steps (forward, losses, backward, AdamW) on random inputs.
    Bench(BenchCli),
    /// Import Oscar's released TSV features, label TSVs and captions into a store directory.
    Convert(ConvertArgs),
    /// Turn a folder of PNG/JPEG images into a store without a detector: each image resized to a
    /// square and cut into G×G patches, one region per patch (RGB pixels in [-1, 1] + 6 box numbers).
    ConvertImages(ConvertImagesArgs),
    /// Score answer files without a model: `--task vqa` prints the official VQA accuracy (percent),
    /// `--task caption` pycocoevalcap's BLEU-1..4, ROUGE-L and CIDEr.
    Score(ScoreArgs),
    /// Evaluate a fine-tuned model on a store's split: retrieval R@K, VQA (official accuracy), GQA,
    /// NLVR2, captioning (BLEU, ROUGE-L, CIDEr-D of the decoded captions).
    Eval(vlp_engine::apps::evaluate::EvalArgs),
    /// Caption store images (--image) or image files (--image-file): beam search, greedy or sampling.
    Caption(vlp_engine::apps::caption::CaptionArgs),
    /// Rank a store's images for a sentence (--query), or its captions for an image (--image).
    Retrieve(vlp_engine::apps::query::QueryArgs),
    /// Answer a question about a store image (--image) or an image file (--image-file).
    Answer(vlp_engine::apps::query::QueryArgs),
    /// Append VQA v2, GQA, NLVR2 or COCO captions, in their own formats, to an existing store.
    Import(vlp_engine::data::formats::import::ImportArgs),
}

#[derive(clap::Args)]
struct ConvertImagesArgs {
    /// Directory of .png / .jpg / .jpeg files (not recursed; other files are skipped); the image id is the file stem.
    #[arg(long)]
    images: PathBuf,
    /// Store directory: created, or added to as one more split.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Patches per side G (G² regions per image).
    #[arg(long, default_value_t = vlp_engine::data::images::DEFAULT_GRID)]
    grid: usize,
    /// Side S of the square each image is resized to, a multiple of G (default G·8, so 8×8-pixel
    /// patches; img_feature_dim = 3·(S/G)² + 6).
    #[arg(long)]
    size: Option<usize>,
    /// Tags: a JSON object {image id: "tag string"} or lines `id<TAB>tags`; without it tags are empty.
    #[arg(long)]
    tags: Option<PathBuf>,
    /// Captions: JSON list or JSON lines of {image_id, caption}.
    #[arg(long)]
    captions: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ScoreArgs {
    #[arg(long, value_parser = ["vqa", "caption"])]
    task: String,
    /// vqa: question id -> list of human answers (or a VQA annotations file); caption: image id ->
    /// list of reference captions (or a COCO captions annotations file).
    #[arg(long)]
    refs: PathBuf,
    /// vqa: question id -> predicted answer (or a VQA results list); caption: image id -> caption
    /// (or a COCO results list of {image_id, caption}).
    #[arg(long)]
    cands: PathBuf,
    /// caption: also write image id -> {"ROUGE-L", "CIDEr"} (pycocoevalcap's per-image scores) to
    /// this JSON file.
    #[arg(long)]
    per_image: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Feature TSV (`key \t {num_boxes, features}` or `key \t N \t base64`).
    #[arg(long)]
    features: PathBuf,
    /// Label / prediction TSV with detector classes (the tags).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Captions: JSON list or JSON lines of {image_id, caption}.
    #[arg(long)]
    captions: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct BenchCli {
    #[arg(long, default_value = "base")]
    config: String,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 70)]
    text: usize,
    #[arg(long, default_value_t = 50)]
    regions: usize,
    /// train (forward + backward + AdamW), infer (forward only), or decode (caption tokens/s with
    /// the key/value cache vs recomputing the prefix; --text is then the tag slots, --batch the
    /// sequences, --steps the timed decodes of --length tokens).
    #[arg(long, default_value = "train", value_parser = ["train", "infer", "decode"])]
    mode: String,
    /// decode: tokens per caption.
    #[arg(long, default_value_t = 20)]
    length: usize,
    /// f32, or f16: matmul products in f16 with f32 accumulation (cooperative matrices where the
    /// adapter has them), f32 storage, loss scaling.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    precision: String,
    /// Timed steps (after --warmup untimed ones).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Per-kernel table from GPU timestamps.
    #[arg(long)]
    profile: bool,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SynthArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    images: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Region feature width: 2048-d appearance + 6 box numbers by default, as Oscar's.
    #[arg(long, default_value_t = 2054)]
    feature_dim: usize,
    /// Object classes, the first N of the world's 12 (fewer: words bind to tags in fewer steps).
    #[arg(long, default_value_t = 12)]
    classes: usize,
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// Model directory: config.json, model.safetensors, tokenizer.json or vocab.txt.
    #[arg(long)]
    model: PathBuf,
    /// A text to encode; repeat for several (written as input_ids.i, hidden.i, pooled.i in order).
    #[arg(long)]
    text: Vec<String>,
    /// A file of texts, one per line (after any --text).
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Texts per forward pass (one plan for all of them).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Object tags for the second segment ([CLS] text [SEP] tags [SEP]).
    #[arg(long)]
    tags: Option<String>,
    /// Region features: a safetensors file with one [R, img_feature_dim] tensor per image id.
    #[arg(long, requires = "image")]
    features: Option<PathBuf>,
    /// The image id (tensor name) in --features.
    #[arg(long, requires = "features")]
    image: Option<String>,
    #[arg(long)]
    out: PathBuf,
    /// Ignore tensors of the checkpoint that are not parameters of the model (default: an error).
    #[arg(long)]
    allow_unexpected: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let backend: Backend = cli.backend.parse()?;
    let opts = GpuOptions { backend, adapter: cli.adapter.clone(), ..GpuOptions::default() };
    match cli.cmd {
        Cmd::Info => info(&opts),
        Cmd::Embed(a) => embed(&opts, a),
        Cmd::Train(a) => train(&opts, a),
        Cmd::Synth(a) => synth(a),
        Cmd::Bench(a) => bench(&opts, a),
        Cmd::Eval(a) => {
            let g = Gpu::new(&opts)?;
            let r = vlp_engine::apps::evaluate::evaluate(&g, &a, true)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::Caption(a) => {
            let g = Gpu::new(&opts)?;
            let caps = vlp_engine::apps::caption::caption(&g, &a)?;
            if a.json {
                let mut o = serde_json::Map::new();
                for (id, c) in caps {
                    match o.get_mut(&id) {
                        Some(serde_json::Value::Array(v)) => v.push(c.into()),
                        Some(v) => *v = serde_json::Value::Array(vec![v.take(), c.into()]),
                        None => {
                            o.insert(id, c.into());
                        }
                    }
                }
                println!("{}", serde_json::Value::Object(o));
            } else {
                for (id, c) in caps {
                    println!("{id}\t{c}");
                }
            }
            Ok(())
        }
        Cmd::Retrieve(a) => {
            let g = Gpu::new(&opts)?;
            for (k, (what, p)) in vlp_engine::apps::query::retrieve(&g, &a)?.iter().enumerate() {
                println!("{:>3}. {p:.4}  {what}", k + 1);
            }
            Ok(())
        }
        Cmd::Answer(a) => {
            let g = Gpu::new(&opts)?;
            for (k, (what, p)) in vlp_engine::apps::query::answer(&g, &a)?.iter().enumerate() {
                println!("{:>3}. {p:.4}  {what}", k + 1);
            }
            Ok(())
        }
        Cmd::Import(a) => {
            let r = vlp_engine::data::formats::import::run(&a)?;
            let vocab = r.vocab.map(|n| format!(", answer vocabulary {n}")).unwrap_or_default();
            println!("{}: {} records appended ({} skipped: images not in the store){vocab}", r.file.display(), r.records, r.skipped);
            Ok(())
        }
        Cmd::Score(a) => {
            println!("{}", vlp_engine::eval::score::score(&a.task, &a.refs, &a.cands, a.per_image.as_deref())?);
            Ok(())
        }
        Cmd::Convert(a) => {
            let n = vlp_engine::data::convert::convert(&a.features, a.labels.as_deref(), &a.captions, &a.split, &a.out)?;
            println!("{}: {n} images (split {})", a.out.display(), a.split);
            Ok(())
        }
        Cmd::ConvertImages(a) => {
            let p = vlp_engine::data::images::Patches::new(a.grid, a.size)?;
            let n = vlp_engine::data::images::convert_images(&a.images, &a.out, &a.split, p, a.tags.as_deref(), a.captions.as_deref())?;
            println!(
                "{}: {n} images (split {}), {} regions of {} features each ({}x{} patches of {} px)",
                a.out.display(),
                a.split,
                p.regions(),
                p.feature_dim(),
                p.grid,
                p.grid,
                p.patch()
            );
            Ok(())
        }
    }
}

fn bench(opts: &GpuOptions, c: BenchCli) -> Result<()> {
    use vlp_engine::train::bench::{bench, print, BenchArgs};
    let launched = std::time::Instant::now();
    let g = Gpu::new(opts)?;
    if c.mode == "decode" {
        let r = vlp_engine::train::bench_decode::bench_decode(&g, &c.config, c.batch, c.text, c.regions, c.length, c.steps)?;
        if c.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{} | {} | {} sequences x {} tokens, {} tags + {} regions", r.adapter, r.config, r.sequences, r.length, r.tags, r.regions);
            println!("with the key/value cache  {:>10.1} tokens/s", r.cached_tokens_per_s);
            println!("recomputing the prefix    {:>10.1} tokens/s", r.recompute_tokens_per_s);
            println!("speed-up                  {:>10.2}x", r.speedup);
        }
        return Ok(());
    }
    let a = BenchArgs {
        config: c.config,
        batch: c.batch,
        text: c.text,
        regions: c.regions,
        train: c.mode == "train",
        steps: c.steps,
        warmup: c.warmup,
        profile: c.profile,
        precision: parse_precision(&c.precision)?,
    };
    let r = bench(&g, &a, launched)?;
    if c.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print(&r);
    }
    Ok(())
}

fn synth(a: SynthArgs) -> Result<()> {
    use vlp_engine::data::{store, synth, Tok};
    let w = synth::generate_with_classes(a.images, a.seed, a.feature_dim, a.classes)?;
    let tok = Tok::train(&w.corpus(), 1000)?;
    store::write_world(&a.out, &w, &tok)?;
    println!(
        "{}: {} images, {} captions, {} questions, {} statements, vocabulary {}",
        a.out.display(),
        w.images.len(),
        w.captions.len(),
        w.questions.len(),
        w.statements.len(),
        tok.vocab_size()
    );
    Ok(())
}

fn train(opts: &GpuOptions, a: vlp_engine::train::TrainArgs) -> Result<()> {
    let g = Gpu::new(opts)?;
    let s = vlp_engine::train::train(&g, &a)?;
    let (first, last) = (s.losses.first().cloned().unwrap_or_default(), s.losses.last().cloned().unwrap_or_default());
    println!("done: steps {}..{} of {} | params {:.2}M", s.start_step + 1, s.steps, s.steps, s.params as f64 / 1e6);
    let parts: Vec<String> = s
        .parts
        .iter()
        .enumerate()
        .filter(|_| s.parts.len() > 1)
        .map(|(k, n)| format!("{n} {:.4} -> {:.4}", first.2.get(k).copied().unwrap_or(0.0), last.2.get(k).copied().unwrap_or(0.0)))
        .collect();
    println!("loss {:.4} -> {:.4}{}", first.1, last.1, if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) });
    if let Some(e) = &s.eval {
        println!("validation: {}", e.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", "));
    }
    if let Some(b) = &s.best {
        println!("best: {} {:.4} at step {} | model {}", b.metric, b.value, b.step, vlp_engine::train::best::KeepBest::dir(&a.out).display());
    }
    println!(
        "throughput {:.1} sequences/s | metrics {}/metrics.jsonl, plot {}/loss.png, model {}/model",
        s.seq_per_s,
        a.out.display(),
        a.out.display(),
        a.out.display()
    );
    Ok(())
}

fn embed(opts: &GpuOptions, a: EmbedArgs) -> Result<()> {
    use safetensors::Dtype;
    use vlp_engine::apps::{embed::embed_many, ModelDir};
    let g = Gpu::new(opts)?;
    let opts = vlp_engine::model::checkpoint::LoadOptions { allow_unexpected: a.allow_unexpected };
    let m = ModelDir::load_with(&g, &a.model, opts).with_context(|| format!("loading model from {}", a.model.display()))?;
    if !m.report.initialized.is_empty() {
        eprintln!("note: {} tensors not in the checkpoint were initialised (e.g. {})", m.report.initialized.len(), m.report.initialized[0]);
    }
    let has_pooler = !m.report.initialized.iter().any(|n| n.starts_with("bert.pooler"));
    let regions = match (&a.features, &a.image) {
        (Some(f), Some(id)) => Some(vlp_engine::data::store::read_image_features(f, id, m.cfg.img_feature_dim)?),
        _ => None,
    };
    let mut texts = a.text.clone();
    if let Some(f) = &a.texts {
        let body = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(|l| l.to_string()));
    }
    anyhow::ensure!(!texts.is_empty(), "no texts: give --text or --texts FILE");
    let bar = indicatif::ProgressBar::new(texts.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} texts {per_sec} ETA {eta}").unwrap());
    let t0 = std::time::Instant::now();
    let embs = embed_many(&g, &m, &texts, a.tags.as_deref(), regions.as_deref(), a.batch, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let mut out: Vec<vlp_engine::tensorfile::Named> = Vec::new();
    for (i, e) in embs.iter().enumerate() {
        let t = e.input_ids.len();
        let ids: Vec<i32> = e.input_ids.iter().map(|&x| x as i32).collect();
        out.push((format!("input_ids.{i}"), Dtype::I32, vec![t], bytemuck::cast_slice(&ids).to_vec()));
        out.push((format!("hidden.{i}"), Dtype::F32, vec![t, m.cfg.hidden_size], bytemuck::cast_slice(&e.hidden).to_vec()));
        if !e.region_hidden.is_empty() {
            let r = e.region_hidden.len() / m.cfg.hidden_size;
            out.push((format!("region_hidden.{i}"), Dtype::F32, vec![r, m.cfg.hidden_size], bytemuck::cast_slice(&e.region_hidden).to_vec()));
        }
        if has_pooler {
            out.push((format!("pooled.{i}"), Dtype::F32, vec![m.cfg.hidden_size], bytemuck::cast_slice(&e.pooled).to_vec()));
        }
    }
    vlp_engine::tensorfile::write(&a.out, &out, None)?;
    eprintln!("wrote {} texts to {} ({:.1} texts/s, batch {})", texts.len(), a.out.display(), texts.len() as f64 / secs.max(1e-9), a.batch);
    Ok(())
}

fn parse_precision(s: &str) -> Result<Precision> {
    vlp_engine::train::args::parse_precision(s).map_err(|e| anyhow::anyhow!("--precision {e}"))
}

fn info(opts: &GpuOptions) -> Result<()> {
    let adapters = gpu::device::list_adapters(opts.backend);
    if adapters.is_empty() {
        println!("no adapters for backend {:?}", opts.backend);
    }
    for (i, a) in adapters.iter().enumerate() {
        let inf = a.get_info();
        let l = a.limits();
        let f = a.features();
        println!("[{i}] {} — {:?}, {:?}, driver: {} {}", inf.name, inf.backend, inf.device_type, inf.driver, inf.driver_info);
        println!(
            "    limits: storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, invocations/workgroup {}, storage buffers/stage {}, workgroups/dim {}, subgroup size {}..{}",
            l.max_storage_buffer_binding_size as u64 >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroups_per_dimension,
            inf.subgroup_min_size,
            inf.subgroup_max_size,
        );
        let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
        println!(
            "    features: f16 {}, subgroups {}, timestamps {}, cooperative matrix {}",
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::SUBGROUP),
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
        );
        for p in a.cooperative_matrix_properties() {
            println!("    cooperative matrix {}x{}x{} {:?} -> {:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type);
        }
    }
    let g = Gpu::new(opts).context("opening the selected adapter")?;
    println!("would use: {}", g.summary());
    if g.coop16 {
        // the check --precision f16 runs before its first matmul, here with its number
        match vlp_engine::ops::matmul_coop::self_check(&g) {
            Ok(e) => println!(
                "f16 matmuls: cooperative matrices, self-check max relative difference to fp32+f16 rounding {e:.2e} ({})",
                if vlp_engine::ops::matmul_coop::usable(&g) { "used" } else { "NOT used" }
            ),
            Err(e) => println!("f16 matmuls: cooperative-matrix kernel failed ({e}); the fp32 kernels with f16 rounding are used"),
        }
    } else {
        println!("f16 matmuls: fp32 kernels with f16-rounded operands (no 16x16x16 f16 cooperative matrices in subgroups of 32)");
    }
    Ok(())
}
