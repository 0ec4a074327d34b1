//! Instance, adapter and device creation. We always ask for the adapter's real limits (wgpu would
//! otherwise hand out WebGPU's defaults: 128 MiB bindings, 16 KiB workgroup memory) and for every
//! optional feature we know how to use, so later code can pick fast paths from `Gpu::features`.
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which backend to open. `Any` lets wgpu choose; CI asks for Vulkan so a missing driver fails
/// loudly instead of silently falling back to GL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Vulkan,
    Metal,
    Dx12,
    Gl,
    Any,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Backend::Vulkan,
            "metal" => Backend::Metal,
            "dx12" | "d3d12" => Backend::Dx12,
            "gl" | "gles" | "opengl" => Backend::Gl,
            "any" | "" => Backend::Any,
            other => return Err(Error::UnknownBackend(other.to_string())),
        })
    }
}

impl Backend {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
            Backend::Any => wgpu::Backends::all(),
        }
    }
}

/// How to choose the device. `Default` reads `VLP_BACKEND` and `VLP_ADAPTER`.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    pub backend: Backend,
    /// Adapter index (as listed by `vlp-engine info`) or a case-insensitive name substring.
    pub adapter: Option<String>,
    /// Keep wgpu's runtime bounds checks in shader modules. `None` (default): kept in debug builds
    /// (the tests) and on CPU adapters, where trusted modules measured 2-5 % slower on lavapipe;
    /// dropped for GPUs in release builds (every kernel guards its own indices). `VLP_SHADER_CHECKS=1`
    /// or `=0` sets it.
    pub shader_checks: Option<bool>,
    /// Use cooperative matrices for f16 matmuls where the adapter has them (`VLP_COOP=0` turns
    /// them off, e.g. to measure the fallback).
    pub cooperative_matrix: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        let backend = std::env::var("VLP_BACKEND").ok().and_then(|s| s.parse().ok()).unwrap_or(Backend::Any);
        let adapter = std::env::var("VLP_ADAPTER").ok().filter(|s| !s.is_empty());
        let shader_checks = match std::env::var("VLP_SHADER_CHECKS").ok().as_deref() {
            Some("1") | Some("true") => Some(true),
            Some("0") | Some("false") => Some(false),
            _ => None,
        };
        let cooperative_matrix = std::env::var("VLP_COOP").map_or(true, |v| v != "0");
        GpuOptions { backend, adapter, shader_checks, cooperative_matrix }
    }
}

/// Optional features we use when present; never required.
pub fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
}

pub struct Gpu {
    pub info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Whether shader modules keep wgpu's runtime bounds checks (see `GpuOptions::shader_checks`).
    pub shader_checks: bool,
    /// The adapter multiplies 16x16x16 f16 cooperative matrices into f32 in subgroups of 32, the
    /// shape shaders/matmul_coop.wgsl is written for (NVIDIA over Vulkan). `ops::matmul` still
    /// checks that kernel against the fp32 one before first use (`coop_verified`).
    pub coop16: bool,
    pub(crate) coop_verified: std::sync::OnceLock<bool>,
    pub(crate) pipelines: Mutex<HashMap<String, Arc<super::kernel::Kernel>>>,
    pub(crate) layouts: Mutex<HashMap<Vec<super::kernel::Access>, Arc<wgpu::BindGroupLayout>>>,
    /// Errors wgpu reports outside an error scope; surfaced by `Gpu::check`.
    pub(crate) uncaptured: Arc<Mutex<Vec<String>>>,
    /// Stand-ins for unused bindings: one read-only, one writable (a buffer may not be bound both
    /// ways in one dispatch).
    dummies: std::sync::OnceLock<(super::Tensor, super::Tensor)>,
    /// Bytes of every storage buffer created through `Gpu::buffer` (never decremented: a gauge of
    /// what a process allocated, for the memory report of `vlp-engine bench`).
    pub allocated: std::sync::atomic::AtomicU64,
}

fn device_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

pub fn instance(backend: Backend) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backend.backends();
    wgpu::Instance::new(desc)
}

/// All adapters of a backend, best first (discrete, integrated, virtual, other, CPU).
pub fn list_adapters(backend: Backend) -> Vec<wgpu::Adapter> {
    let inst = instance(backend);
    let mut v = pollster::block_on(inst.enumerate_adapters(backend.backends()));
    v.sort_by_key(|a| device_rank(a.get_info().device_type));
    v
}

fn pick_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter> {
    let adapters = list_adapters(opts.backend);
    if adapters.is_empty() {
        let hint = if cfg!(target_os = "linux") {
            "; on Linux without a GPU install Mesa's software Vulkan: apt-get install mesa-vulkan-drivers".to_string()
        } else {
            String::new()
        };
        return Err(Error::NoAdapter { backend: format!("{:?}", opts.backend).to_lowercase(), hint });
    }
    match &opts.adapter {
        None => Ok(adapters.into_iter().next().unwrap()),
        Some(sel) => {
            if let Ok(i) = sel.parse::<usize>() {
                return adapters.into_iter().nth(i).ok_or_else(|| Error::AdapterNotFound(sel.clone()));
            }
            let s = sel.to_lowercase();
            adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&s)).ok_or_else(|| Error::AdapterNotFound(sel.clone()))
        }
    }
}

/// 16x16x16, f16 inputs, f32 accumulator, in subgroups of exactly 32 lanes (the kernel assigns
/// one 32x32 quadrant per subgroup of a 128-thread workgroup).
fn coop16_supported(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo, features: wgpu::Features) -> bool {
    use wgpu::CooperativeScalarType as T;
    if !adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        || !features.contains(wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP)
        || info.subgroup_min_size != 32
        || info.subgroup_max_size != 32
    {
        return false;
    }
    adapter.cooperative_matrix_properties().iter().any(|p| (p.m_size, p.n_size, p.k_size) == (16, 16, 16) && p.ab_type == T::F16 && p.cr_type == T::F32)
}

impl Gpu {
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        let adapter = pick_adapter(opts)?;
        let info = adapter.get_info();
        let shader_checks = opts.shader_checks.unwrap_or(cfg!(debug_assertions) || info.device_type == wgpu::DeviceType::Cpu);
        let limits = adapter.limits();
        let mut features = adapter.features() & wanted_features();
        let coop16 = opts.cooperative_matrix && coop16_supported(&adapter, &info, features);
        if coop16 {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vlp-engine"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: wgpu marks cooperative matrices experimental (its implementation may have
            // bugs); we ask for them only where the adapter lists the exact shape we use, and the
            // one kernel that uses them is verified against the fp32 kernel before it is trusted.
            experimental_features: if coop16 { unsafe { wgpu::ExperimentalFeatures::enabled() } } else { wgpu::ExperimentalFeatures::disabled() },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Device(e.to_string()))?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        Ok(Gpu {
            info,
            device,
            queue,
            limits,
            features,
            shader_checks,
            coop16,
            coop_verified: std::sync::OnceLock::new(),
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            uncaptured,
            dummies: std::sync::OnceLock::new(),
            allocated: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The default device (`VLP_BACKEND`, `VLP_ADAPTER`).
    pub fn default_device() -> Result<Gpu> {
        Gpu::new(&GpuOptions::default())
    }

    fn dummies(&self) -> &(super::Tensor, super::Tensor) {
        self.dummies.get_or_init(|| {
            let r = self.zeros("dummy-read", &[4], super::DType::F32).expect("16-byte buffer");
            let w = self.zeros("dummy-write", &[4], super::DType::F32).expect("16-byte buffer");
            (r, w)
        })
    }
    pub fn dummy_read(&self) -> &super::Tensor {
        &self.dummies().0
    }
    pub fn dummy_write(&self) -> &super::Tensor {
        &self.dummies().1
    }

    pub fn has(&self, f: wgpu::Features) -> bool {
        self.features.contains(f)
    }

    /// Largest buffer we may bind as one storage binding (we always bind whole buffers).
    pub fn max_binding_bytes(&self) -> u64 {
        (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size)
    }

    /// Turns errors wgpu reported asynchronously into a Result, so callers see them at a known point.
    pub fn check(&self, context: &str) -> Result<()> {
        let mut errs = self.uncaptured.lock().unwrap();
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("; ");
        errs.clear();
        Err(Error::Validation { context: context.to_string(), msg })
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None }).map_err(|e| Error::Device(e.to_string()))?;
        self.check("queue")
    }

    pub fn summary(&self) -> String {
        format!("{} ({:?}, {:?}, driver {} {})", self.info.name, self.info.backend, self.info.device_type, self.info.driver, self.info.driver_info)
    }
}
