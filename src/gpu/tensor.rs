//! Typed views on GPU buffers. A `Tensor` is (buffer, element offset, shape, dtype); arenas are one
//! buffer with many views, so kernels always bind whole buffers and take element offsets as
//! parameters (no 256-byte binding-offset alignment to satisfy).
use super::device::Gpu;
use crate::error::{Error, Result};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    U32,
}

impl DType {
    pub fn size(self) -> usize {
        4
    }
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub buf: Arc<wgpu::Buffer>,
    /// Offset into `buf`, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    pub fn off(&self) -> u32 {
        self.offset as u32
    }
    /// A view of `shape` starting `offset` elements into this tensor.
    pub fn view(&self, offset: usize, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if offset + n > self.numel() {
            return Err(Error::Shape { op: "view", msg: format!("view of {n} elements at {offset} exceeds tensor of {} elements", self.numel()) });
        }
        Ok(Tensor { buf: self.buf.clone(), offset: self.offset + offset, shape: shape.to_vec(), dtype: self.dtype })
    }
    /// The same elements under another shape.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::Shape { op: "reshape", msg: format!("{:?} -> {:?}", self.shape, shape) });
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }
    pub fn same_buffer(&self, o: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &o.buf)
    }
}

impl Gpu {
    /// Creates a zero-filled storage buffer. Sizes over the adapter's binding limit are an error
    /// naming the buffer, never a wgpu validation panic.
    pub fn buffer(&self, label: &str, bytes: u64) -> Result<Arc<wgpu::Buffer>> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge { label: label.to_string(), bytes, limit, what: "storage binding" });
        }
        // Zero-size buffers are legal in wgpu but cannot be bound; keep at least one element.
        let size = bytes.max(4).div_ceil(4) * 4;
        let before = self.allocated.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        // out of device memory is an error saying so (not a later "buffer is invalid")
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.allocated.fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
            return Err(Error::OutOfMemory { label: label.to_string(), bytes: size, allocated: before, msg: e.to_string() });
        }
        Ok(Arc::new(buf))
    }

    pub fn zeros(&self, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let buf = self.buffer(label, (n * dtype.size()) as u64)?;
        Ok(Tensor { buf, offset: 0, shape: shape.to_vec(), dtype })
    }

    pub fn upload_f32(&self, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = self.zeros(label, shape, DType::F32)?;
        self.write_f32(&t, data)?;
        Ok(t)
    }

    pub fn upload_i32(&self, label: &str, shape: &[usize], data: &[i32]) -> Result<Tensor> {
        let t = self.zeros(label, shape, DType::I32)?;
        self.write_raw(&t, bytemuck::cast_slice(data))?;
        Ok(t)
    }

    pub fn upload_u32(&self, label: &str, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        let t = self.zeros(label, shape, DType::U32)?;
        self.write_raw(&t, bytemuck::cast_slice(data))?;
        Ok(t)
    }

    pub fn write_f32(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        self.write_raw(t, bytemuck::cast_slice(data))
    }

    pub fn write_i32(&self, t: &Tensor, data: &[i32]) -> Result<()> {
        self.write_raw(t, bytemuck::cast_slice(data))
    }

    pub fn write_u32(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        self.write_raw(t, bytemuck::cast_slice(data))
    }

    /// Queue write: goes through wgpu's staging belt, ordered before the next submit.
    pub fn write_raw(&self, t: &Tensor, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > t.bytes() {
            return Err(Error::Shape { op: "write", msg: format!("{} bytes into a tensor of {} bytes {:?}", bytes.len(), t.bytes(), t.shape) });
        }
        if !bytes.is_empty() {
            self.queue.write_buffer(&t.buf, (t.offset * t.dtype.size()) as u64, bytes);
        }
        Ok(())
    }

    /// Blocking readback (tests, checkpoints). The training loop uses `Readback` instead.
    pub fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_raw(t)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    pub fn read_i32(&self, t: &Tensor) -> Result<Vec<i32>> {
        let bytes = self.read_raw(t)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    pub fn read_raw(&self, t: &Tensor) -> Result<Vec<u8>> {
        let mut rb = super::recorder::Readback::new(self, t.bytes())?;
        let mut enc = self.device.create_command_encoder(&Default::default());
        rb.record(&mut enc, t);
        self.queue.submit([enc.finish()]);
        rb.start();
        rb.wait(self)
    }
}
