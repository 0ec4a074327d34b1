//! The GPU runtime: device, typed buffers, pipelines, prepared dispatches, recording, readback and
//! timestamps. Knows nothing about what the tensors mean.
pub mod device;
pub mod kernel;
pub mod recorder;
pub mod shaders;
pub mod tensor;

pub use device::{Backend, Gpu, GpuOptions};
pub use kernel::{grid, Access, Dispatch, Kernel, KernelSpec};
pub use recorder::{ProfileRow, Profiler, Readback, Recorder};
pub use tensor::{DType, Tensor};
