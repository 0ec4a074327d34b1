//! Pipelines and prepared dispatches. A `Kernel` is a compiled entry point with an explicit bind
//! group layout (binding 0 = uniform parameters, then storage buffers in order). A `Dispatch` is a
//! kernel plus its bind group, parameter buffer and grid: made once, replayed every step, so the
//! steady-state training step creates no buffers, bind groups or pipelines.
use super::device::Gpu;
use super::tensor::Tensor;
use crate::error::{Error, Result};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// What to compile: a shader file (see `gpu::shaders`), an entry point, its bindings and the values
/// of its `override` constants.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub shader: &'static str,
    pub entry: &'static str,
    pub binds: &'static [Access],
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelSpec {
    pub fn new(shader: &'static str, entry: &'static str, binds: &'static [Access]) -> Self {
        KernelSpec { shader, entry, binds, constants: Vec::new() }
    }
    pub fn constant(mut self, name: &'static str, v: f64) -> Self {
        self.constants.push((name, v));
        self
    }
    fn key(&self) -> String {
        format!("{}::{}{:?}", self.shader, self.entry, self.constants)
    }
}

pub struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: Arc<wgpu::BindGroupLayout>,
    pub binds: &'static [Access],
}

impl Gpu {
    fn bind_layout(&self, binds: &[Access]) -> Arc<wgpu::BindGroupLayout> {
        let mut cache = self.layouts.lock().unwrap();
        if let Some(l) = cache.get(binds) {
            return l.clone();
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = binds
            .iter()
            .enumerate()
            .map(|(i, a)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match a {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let l = Arc::new(self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries }));
        cache.insert(binds.to_vec(), l.clone());
        l
    }

    /// Compiles (once) and returns the pipeline for `spec`. Compilation errors come back as
    /// `Error::Validation` naming the shader and entry point.
    pub fn kernel(&self, spec: &KernelSpec) -> Result<Arc<Kernel>> {
        let key = spec.key();
        if let Some(k) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(k.clone());
        }
        let src = super::shaders::full_source(spec.shader).ok_or_else(|| Error::Other(format!("unknown shader '{}'", spec.shader)))?;
        let layout = self.bind_layout(spec.binds);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor { label: Some(spec.shader), source: wgpu::ShaderSource::Wgsl(src.into()) };
        let module = if self.shader_checks {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel bounds-checks its own indices against the sizes in its parameters,
            // launchers check those sizes against the bound tensors (ops::check_len), and loops are
            // bounded by those parameters; the same kernels pass the tests with wgpu's checks on.
            // Integer-division guards stay: a zero divisor would be a launcher bug, not UB.
            let mut checks = wgpu::ShaderRuntimeChecks::unchecked();
            checks.int_div_checks = true;
            unsafe { self.device.create_shader_module_trusted(desc, checks) }
        };
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: None, bind_group_layouts: &[Some(&layout)], immediate_size: 0 });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &spec.constants.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
                // Our kernels write workgroup memory before reading it; zeroing it costs time.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Validation { context: key, msg: e.to_string() });
        }
        let k = Arc::new(Kernel { name: format!("{}::{}", spec.shader, spec.entry), pipeline, layout, binds: spec.binds });
        self.pipelines.lock().unwrap().insert(key, k.clone());
        Ok(k)
    }
}

/// Splits a 1-D workgroup count over x and y so it stays under the per-dimension limit (65535).
/// Kernels rebuild the linear index as `wid.x + wid.y * nwg.x`.
pub fn grid(groups: u32) -> [u32; 3] {
    const MAX: u32 = 65535;
    if groups <= MAX {
        [groups.max(1), 1, 1]
    } else {
        [MAX, groups.div_ceil(MAX), 1]
    }
}

/// A kernel ready to run: pipeline, bind group, parameter buffer, grid, and what it costs
/// (for the profiler's FLOP/s and bytes/s columns).
pub struct Dispatch {
    pub kernel: Arc<Kernel>,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    pub params: wgpu::Buffer,
    pub flops: f64,
    pub bytes: f64,
}

impl Dispatch {
    pub fn new<P: bytemuck::Pod>(gpu: &Gpu, spec: &KernelSpec, params: &P, tensors: &[&Tensor], groups: [u32; 3]) -> Result<Dispatch> {
        if tensors.len() + 1 != spec.binds.len() {
            return Err(Error::Other(format!("{}::{} takes {} buffers, got {}", spec.shader, spec.entry, spec.binds.len() - 1, tensors.len())));
        }
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::TooLarge {
                label: format!("{}::{} grid {:?}", spec.shader, spec.entry, groups),
                bytes: *groups.iter().max().unwrap() as u64,
                limit: max as u64,
                what: "dispatch dimension (workgroups)",
            });
        }
        // WebGPU forbids one buffer bound read-only and writable in the same dispatch; say which.
        for (i, t) in tensors.iter().enumerate() {
            for (j, u) in tensors.iter().enumerate() {
                if spec.binds[i + 1] == Access::Read && spec.binds[j + 1] == Access::ReadWrite && t.same_buffer(u) {
                    return Err(Error::Other(format!(
                        "{}::{}: buffer {:?} is bound both read-only (binding {}) and writable (binding {})",
                        spec.shader,
                        spec.entry,
                        t.buf,
                        i + 1,
                        j + 1
                    )));
                }
            }
        }
        let kernel = gpu.kernel(spec)?;
        let bytes = bytemuck::bytes_of(params);
        let pbuf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: (bytes.len() as u64).max(16).div_ceil(16) * 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.queue.write_buffer(&pbuf, 0, bytes);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: pbuf.as_entire_binding() }];
        for (i, t) in tensors.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: t.buf.as_entire_binding() });
        }
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &kernel.layout, entries: &entries });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Validation { context: kernel.name.clone(), msg: e.to_string() });
        }
        Ok(Dispatch { kernel, bind_group, groups, params: pbuf, flops: 0.0, bytes: 0.0 })
    }

    pub fn cost(mut self, flops: f64, bytes: f64) -> Self {
        self.flops = flops;
        self.bytes = bytes;
        self
    }

    pub fn name(&self) -> &str {
        &self.kernel.name
    }
}
