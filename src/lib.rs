//! vlp-engine: Oscar (Object-Semantics Aligned Pre-training) on wgpu with hand-written WGSL kernels.
//!
//! Layers, each using only the ones below it (docs: ../README.md and docs/): `gpu` (device,
//! buffers, pipelines, dispatch), `ops` (one module per kernel family: launcher, backward, CPU
//! reference, tests), `model` (encoder, heads, plans per mode), `data` (tokenizer, stores,
//! importers, synthetic world), `tasks` (batches, head and metrics per task), `train` (one step loop
//! for every task), `apps` (embed and the coming retrieve/answer/caption over a model directory).
pub mod apps;
pub mod data;
pub mod decoding;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod tasks;
pub mod tensorfile;
pub mod train;
pub mod util;

pub use error::{Error, Result};
