//! Training: the flags, the one step loop for every task, the optimizer over the parameter arenas,
//! the LR schedule, checkpoints with optimizer state, f16 loss scaling, the loss plot; and `bench`.
pub mod args;
pub mod bench;
pub mod bench_decode;
pub mod best;
pub mod optim;
pub mod plot;
pub mod scaler;
pub mod schedule;
pub mod state;
pub mod trainer;

pub use args::TrainArgs;
pub use optim::Optimizer;
pub use trainer::{train, Summary};
