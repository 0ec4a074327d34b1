//! vlp-engine: a thin CLI over the library.
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let backend: Backend = cli.backend.parse()?;
    let opts = GpuOptions { backend, adapter: cli.adapter.clone() };
    match cli.cmd {
        Cmd::Info => info(&opts),
    }
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
