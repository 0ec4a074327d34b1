//! Evaluation metrics on the host: image-text retrieval R@K from a score matrix, VQA accuracy as
//! the official evaluator computes it, caption metrics as pycocoevalcap computes them, and the
//! `score` command over answer and caption files. Knows nothing of
//! GPUs or models: callers hand it scores and strings.
pub mod caption;
pub mod retrieval;
pub mod score;
pub mod vqa;

pub use caption::{caption_scores, tokenize, CaptionScores, CiderD};
pub use retrieval::{retrieval_metrics, RetrievalMetrics};
pub use vqa::{question_accuracy, soft_score, vqa_accuracy};
