//! The Oscar model on the runtime: config, named parameters in arenas, checkpoints, and the
//! forward and backward passes over activation buffers planned once per batch shape.
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod embed;
pub mod heads;
pub mod oscar;
pub mod params;
pub mod plan;

pub use config::Config;
pub use batch::{Batch, Shape};
pub use oscar::{plan, Step};
pub use params::{Layout, ParamSet};
