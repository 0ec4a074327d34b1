//! Evaluation metrics on the host: image-text retrieval R@K from a score matrix, VQA accuracy as
//! the official evaluator computes it, and the `score` command over answer files. Knows nothing of
//! GPUs or models: callers hand it scores and strings.
pub mod caption;
pub mod retrieval;
pub mod score;
pub mod vqa;

pub use retrieval::{retrieval_metrics, RetrievalMetrics};
pub use vqa::{question_accuracy, soft_score, vqa_accuracy};
