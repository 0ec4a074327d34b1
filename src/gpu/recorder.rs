//! Recording many dispatches into one command buffer, asynchronous readback, and GPU timestamps.
//! wgpu inserts the barriers between dispatches of one compute pass itself (it tracks storage
//! buffer usage), so a whole forward pass can be one pass and one submit.
use super::device::Gpu;
use super::kernel::Dispatch;
use super::tensor::Tensor;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

pub struct Recorder<'a> {
    gpu: &'a Gpu,
    enc: wgpu::CommandEncoder,
    prof: Option<&'a mut Profiler>,
}

impl<'a> Recorder<'a> {
    pub fn new(gpu: &'a Gpu) -> Self {
        let enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        Recorder { gpu, enc, prof: None }
    }

    /// Every dispatch gets its own pass with begin/end timestamps (only when the adapter has
    /// TIMESTAMP_QUERY; otherwise this records normally and the profile stays empty).
    pub fn with_profiler(gpu: &'a Gpu, prof: &'a mut Profiler) -> Self {
        let mut r = Recorder::new(gpu);
        r.prof = Some(prof);
        r
    }

    /// Records dispatches in order into one compute pass (or timed passes when profiling).
    pub fn run<'d>(&mut self, list: impl IntoIterator<Item = &'d Dispatch>) {
        if let Some(p) = self.prof.as_deref_mut().filter(|p| p.query.is_some()) {
            for d in list {
                // past the profiler's capacity, dispatches still run, just untimed
                let slot = p.next_slot(d);
                let q = p.query.as_ref().unwrap();
                let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: slot.map(|i| wgpu::ComputePassTimestampWrites {
                        query_set: q,
                        beginning_of_pass_write_index: Some(2 * i),
                        end_of_pass_write_index: Some(2 * i + 1),
                    }),
                });
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
            return;
        }
        let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        for d in list {
            pass.set_pipeline(&d.kernel.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
    }

    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.numel() != dst.numel() {
            return Err(Error::Shape { op: "copy", msg: format!("{:?} -> {:?}", src.shape, dst.shape) });
        }
        self.enc.copy_buffer_to_buffer(&src.buf, src.offset as u64 * 4, &dst.buf, dst.offset as u64 * 4, src.bytes());
        Ok(())
    }

    pub fn clear(&mut self, t: &Tensor) {
        self.enc.clear_buffer(&t.buf, t.offset as u64 * 4, Some(t.bytes()));
    }

    pub fn readback(&mut self, rb: &mut Readback, t: &Tensor) {
        rb.record(&mut self.enc, t);
    }

    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        &mut self.enc
    }

    pub fn submit(mut self) -> wgpu::SubmissionIndex {
        if let Some(p) = self.prof.as_deref_mut() {
            p.resolve(&mut self.enc);
        }
        self.gpu.queue.submit([self.enc.finish()])
    }
}

impl Gpu {
    /// Records, submits and waits; for tests and one-off work.
    pub fn run<'d>(&self, list: impl IntoIterator<Item = &'d Dispatch>) -> Result<()> {
        let mut r = Recorder::new(self);
        r.run(list);
        r.submit();
        self.wait()
    }
}

/// A reusable staging buffer: record a copy, submit, `start`, then `try_read` (non-blocking) or
/// `wait`. The training loop reads its loss scalars this way every N steps without stalling.
pub struct Readback {
    staging: wgpu::Buffer,
    len: u64,
    state: Arc<Mutex<Option<std::result::Result<(), String>>>>,
}

impl Readback {
    pub fn new(gpu: &Gpu, bytes: u64) -> Result<Readback> {
        if bytes > gpu.limits.max_buffer_size {
            return Err(Error::TooLarge { label: "readback".into(), bytes, limit: gpu.limits.max_buffer_size, what: "buffer" });
        }
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Readback { staging, len: 0, state: Arc::new(Mutex::new(None)) })
    }

    pub fn record(&mut self, enc: &mut wgpu::CommandEncoder, t: &Tensor) {
        self.len = t.bytes().min(self.staging.size());
        if self.len > 0 {
            enc.copy_buffer_to_buffer(&t.buf, t.offset as u64 * 4, &self.staging, 0, self.len);
        }
    }

    /// Call after the submit that contains the copy.
    pub fn start(&mut self) {
        *self.state.lock().unwrap() = None;
        let st = self.state.clone();
        self.staging.map_async(wgpu::MapMode::Read, 0..self.len.max(4), move |r| {
            *st.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
        });
    }

    /// Non-blocking: Some(bytes) once the GPU is done.
    pub fn try_read(&mut self, gpu: &Gpu) -> Result<Option<Vec<u8>>> {
        let _ = gpu.device.poll(wgpu::PollType::Poll);
        self.take()
    }

    pub fn wait(&mut self, gpu: &Gpu) -> Result<Vec<u8>> {
        // Another thread polling the same device can consume the wake-up before our map callback
        // has run, so poll until *our* callback has fired (bounded, so a lost device is an error).
        let start = std::time::Instant::now();
        loop {
            gpu.device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(std::time::Duration::from_secs(1)) }).ok();
            gpu.check("readback")?;
            if let Some(bytes) = self.take()? {
                return Ok(bytes);
            }
            if start.elapsed() > std::time::Duration::from_secs(600) {
                return Err(Error::Readback("GPU did not finish within 600 s".into()));
            }
            std::thread::yield_now();
        }
    }

    fn take(&mut self) -> Result<Option<Vec<u8>>> {
        let st = self.state.lock().unwrap().take();
        match st {
            None => Ok(None),
            Some(Err(e)) => Err(Error::Readback(e)),
            Some(Ok(())) => {
                let out = {
                    let view = self.staging.get_mapped_range(0..self.len.max(4)).map_err(|e| Error::Readback(e.to_string()))?;
                    view[..self.len as usize].to_vec()
                };
                self.staging.unmap();
                Ok(Some(out))
            }
        }
    }
}

/// GPU timestamp profiler: one query pair per dispatch, resolved at submit.
pub struct Profiler {
    query: Option<wgpu::QuerySet>,
    resolve: Option<wgpu::Buffer>,
    readback: Option<Readback>,
    names: Vec<(String, f64, f64)>,
    capacity: u32,
    period_ns: f64,
}

/// One row of a profile: kernel name, GPU time, and its counted work.
#[derive(Clone, Debug)]
pub struct ProfileRow {
    pub name: String,
    pub ns: f64,
    pub flops: f64,
    pub bytes: f64,
}

impl Profiler {
    pub fn new(gpu: &Gpu, capacity: u32) -> Result<Profiler> {
        let capacity = capacity.min(4096);
        if !gpu.has(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(Profiler { query: None, resolve: None, readback: None, names: vec![], capacity, period_ns: 1.0 });
        }
        let query = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count: 2 * capacity });
        let bytes = 16 * capacity as u64;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile-resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(Profiler {
            query: Some(query),
            resolve: Some(resolve),
            readback: Some(Readback::new(gpu, bytes)?),
            names: vec![],
            capacity,
            period_ns: gpu.queue.get_timestamp_period() as f64,
        })
    }

    pub fn enabled(&self) -> bool {
        self.query.is_some()
    }

    fn next_slot(&mut self, d: &Dispatch) -> Option<u32> {
        if self.names.len() as u32 >= self.capacity {
            return None;
        }
        self.names.push((d.name().to_string(), d.flops, d.bytes));
        Some(self.names.len() as u32 - 1)
    }

    fn resolve(&mut self, enc: &mut wgpu::CommandEncoder) {
        let (Some(q), Some(res), Some(rb)) = (&self.query, &self.resolve, &mut self.readback) else { return };
        let n = self.names.len() as u32;
        if n == 0 {
            return;
        }
        enc.resolve_query_set(q, 0..2 * n, res, 0);
        rb.len = 16 * n as u64;
        enc.copy_buffer_to_buffer(res, 0, &rb.staging, 0, rb.len);
    }

    /// Waits for the profiled submit and returns one row per dispatch, in recording order.
    pub fn collect(&mut self, gpu: &Gpu) -> Result<Vec<ProfileRow>> {
        let Some(rb) = self.readback.as_mut() else { return Ok(vec![]) };
        if self.names.is_empty() {
            return Ok(vec![]);
        }
        rb.start();
        let bytes = rb.wait(gpu)?;
        let ts: &[u64] = bytemuck::cast_slice(&bytes);
        let rows = self
            .names
            .drain(..)
            .enumerate()
            .map(|(i, (name, flops, bytes))| ProfileRow { name, ns: ts[2 * i + 1].saturating_sub(ts[2 * i]) as f64 * self.period_ns, flops, bytes })
            .collect();
        Ok(rows)
    }
}
