//! Data: tokenizer and Oscar input layout (the synthetic world, stores and batch builders follow).
pub mod convert;
pub mod features;
pub mod formats;
pub mod images;
pub mod pretrain;
pub mod store;
pub mod synth;
pub mod tokenizer;

pub use tokenizer::{TextInput, Tok, Truncation};
