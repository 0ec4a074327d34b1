//! Training: the optimizer over the parameter arenas, the LR schedule, checkpoints with optimizer
//! state, the loss plot, and the pre-training loop.
pub mod bench;
pub mod optim;
pub mod plot;
pub mod pretrain;
pub mod scaler;
pub mod schedule;
pub mod state;

pub use optim::Optimizer;
pub use pretrain::{train, Summary, TrainArgs};
