//! One error type for the library; the CLI wraps it in anyhow with context.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("no GPU adapter found for backend '{backend}'{hint}")]
    NoAdapter { backend: String, hint: String },
    #[error("adapter selection '{0}' matches no adapter (see `vlp-engine info`)")]
    AdapterNotFound(String),
    #[error("unknown backend '{0}' (expected vulkan, metal, dx12, gl or any)")]
    UnknownBackend(String),
    #[error("device request failed: {0}")]
    Device(String),
    #[error("buffer '{label}' needs {bytes} bytes but the adapter allows at most {limit} bytes per {what}")]
    TooLarge { label: String, bytes: u64, limit: u64, what: &'static str },
    #[error(
        "out of GPU memory: buffer '{label}' ({} MiB) after {} MiB allocated ({msg}); shrink --batch-size, --text-len or --regions, use --grad-accum for the same batch, or a smaller config",
        bytes >> 20, allocated >> 20
    )]
    OutOfMemory { label: String, bytes: u64, allocated: u64, msg: String },
    #[error("shape error in {op}: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error("GPU validation error in {context}: {msg}")]
    Validation { context: String, msg: String },
    #[error("GPU readback failed: {0}")]
    Readback(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shape check helper: `ensure!(op, cond, "...")` returns a Shape error naming the op.
#[macro_export]
macro_rules! ensure_shape {
    ($op:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::error::Error::Shape { op: $op, msg: format!($($fmt)+) });
        }
    };
}
