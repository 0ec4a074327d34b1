//! vlp-engine: a thin CLI over the library.
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vlp_engine::gpu::{self, Backend, Gpu, GpuOptions};

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
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// Model directory: config.json, model.safetensors, tokenizer.json or vocab.txt.
    #[arg(long)]
    model: PathBuf,
    /// A text to encode; repeat for several (written as input_ids.i, hidden.i, pooled.i in order).
    #[arg(long, required = true)]
    text: Vec<String>,
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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let backend: Backend = cli.backend.parse()?;
    let opts = GpuOptions { backend, adapter: cli.adapter.clone() };
    match cli.cmd {
        Cmd::Info => info(&opts),
        Cmd::Embed(a) => embed(&opts, a),
    }
}

fn embed(opts: &GpuOptions, a: EmbedArgs) -> Result<()> {
    use safetensors::{tensor::TensorView, Dtype};
    use vlp_engine::model::embed::{embed, LoadedModel};
    let g = Gpu::new(opts)?;
    let m = LoadedModel::load(&g, &a.model).with_context(|| format!("loading model from {}", a.model.display()))?;
    if !m.report.initialized.is_empty() {
        eprintln!("note: {} tensors not in the checkpoint were initialised (e.g. {})", m.report.initialized.len(), m.report.initialized[0]);
    }
    let has_pooler = !m.report.initialized.iter().any(|n| n.starts_with("bert.pooler"));
    let regions = match (&a.features, &a.image) {
        (Some(f), Some(id)) => Some(vlp_engine::data::store::read_image_features(f, id, m.cfg.img_feature_dim)?),
        _ => None,
    };
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, text) in a.text.iter().enumerate() {
        let e = embed(&g, &m, text, a.tags.as_deref(), regions.as_deref())?;
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
    let views: Vec<(String, TensorView)> = out.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let bytes = safetensors::serialize(views, None)?;
    vlp_engine::util::atomic_write(&a.out, &bytes).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("wrote {} texts to {}", a.text.len(), a.out.display());
    Ok(())
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
    }
    let g = Gpu::new(opts).context("opening the selected adapter")?;
    println!("would use: {}", g.summary());
    Ok(())
}
