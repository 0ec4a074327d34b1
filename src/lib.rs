//! vlp-engine: Oscar (Object-Semantics Aligned Pre-training) on wgpu with hand-written WGSL kernels.
//!
//! Layers, each using only those above it: `gpu` (device, buffers, pipelines, dispatch), `ops`
//! (one module per kernel family: launcher, backward, CPU reference, tests).
pub mod data;
pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod train;
pub mod util;

pub use error::{Error, Result};
