//! Training: optimizer over the parameter arenas (and, later, loops, schedules, checkpoints).
pub mod optim;

pub use optim::Optimizer;
