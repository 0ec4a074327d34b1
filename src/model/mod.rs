//! The Oscar model on the runtime: config, named parameters in arenas, checkpoints, the encoder and
//! its heads, and plans per mode (train, forward-only, decode) over buffers planned once per shape.
//! The model takes arrays (`Batch`); it does not tokenize.
pub mod acts;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod encoder;
pub mod heads;
pub mod params;
pub mod step;

pub use batch::{Batch, Labels, Shape};
pub use config::Config;
pub use heads::{ClassLoss, Head};
pub use params::{ParamLayout, ParamSet};
pub use step::{Mode, Step};
