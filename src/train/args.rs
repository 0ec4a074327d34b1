//! The flags of `vlp-engine train`, defined once: clap reads them, `Default` is what clap gives
//! for no flags, and the trainer takes the struct as it is.
use crate::ops::matmul::Precision;
use std::path::PathBuf;

/// `--warmup` when not given.
pub const DEFAULT_WARMUP: usize = 30;

impl TrainArgs {
    /// The warm-up the run uses: `warmup`, with the default capped at `steps`.
    pub fn warmup_steps(&self) -> usize {
        if self.warmup == DEFAULT_WARMUP {
            self.warmup.min(self.steps)
        } else {
            self.warmup
        }
    }
}

pub fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "f32" | "fp32" => Ok(Precision::F32),
        "f16" | "fp16" => Ok(Precision::F16),
        other => Err(format!("'{other}': expected f32 or f16")),
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// What to train: pretrain (masked-token + contrastive), retrieval (image-text matching, a
    /// 2-way classifier on pooled [CLS]), vqa (soft-score BCE over an answer vocabulary), gqa
    /// (cross-entropy on the answer), nlvr2 (a statement about two images, the pair head), caption
    /// (seq2seq masked-token training of the caption LM head).
    #[arg(long, default_value = "pretrain", value_parser = ["pretrain", "retrieval", "vqa", "gqa", "nlvr2", "caption"])]
    pub task: String,
    /// Caption: positions of `[CLS] caption [SEP]` (Oscar's max_seq_a_length, 40 with --text-len 70);
    /// the tags follow at this position.
    #[arg(long, default_value_t = 24)]
    pub caption_len: usize,
    /// Caption: label smoothing of the masked-token loss (VinVL 0.1).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub label_smoothing: f32,
    /// Caption: the share of captions whose masked tokens are drawn first from the words that are
    /// also the image's tags (object-aware masking; 0 = Oscar's uniform choice). Those are the
    /// tokens a captioner learns to copy from the tags: at a few thousand steps a tiny model does
    /// not learn it from uniform masking (README, "Captioning").
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub mask_tag_words: f32,
    /// Caption: self-critical training (CIDEr-D reward against a greedy baseline) of a captioning
    /// model (--init); --batch-size counts images.
    #[arg(long)]
    pub scst: bool,
    /// SCST: captions sampled per image (Oscar 5).
    #[arg(long, default_value_t = 5)]
    pub scst_samples: usize,
    /// SCST: the reward baseline, Oscar's `baseline_type`: greedy (the greedy caption's reward) or
    /// sample (the mean reward of the image's other samples).
    #[arg(long, default_value = "greedy", value_parser = ["greedy", "sample"])]
    pub scst_baseline: String,
    /// SCST: how the captions of an image are drawn: sample (multinomial, Oscar) or beam (the
    /// --scst-samples best of a beam search with as many beams, as the Meshed-Memory Transformer;
    /// they stay near the captions that greedy and beam decoding return).
    #[arg(long, default_value = "sample", value_parser = ["sample", "beam"])]
    pub scst_sampler: String,
    /// SCST: Oscar's max_gen_length of the sampled captions ([CLS] included).
    #[arg(long, default_value_t = 20)]
    pub scst_max_gen_length: usize,
    /// SCST: score the reward without Oscar's final "<eos>" token on every candidate and
    /// reference, i.e. as `score` and `eval` compute CIDEr-D.
    #[arg(long)]
    pub scst_no_eos: bool,
    /// VQA/GQA: answers seen fewer times than this in the training split are left out of the
    /// answer vocabulary.
    #[arg(long, default_value_t = 1)]
    pub min_answer_count: usize,
    /// NLVR2: width of the pair MLP's hidden layer, in multiples of the hidden size (Oscar-B 3).
    #[arg(long, default_value_t = 3)]
    pub pair_scale: usize,
    /// NLVR2: each image's object tags after the statement (Oscar's `--use_label_seq`; its
    /// released commands leave tags out, so this is off by default).
    #[arg(long)]
    pub pair_tags: bool,
    /// tiny | base | large | path to a BERT/Oscar config.json (or its directory). Default: the
    /// config.json of an --init model directory, else tiny.
    #[arg(long)]
    pub config: Option<String>,
    /// Store directory (images.jsonl, captions.jsonl, features.safetensors); default: the synthetic
    /// world, generated into OUT/data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// tokenizer.json or vocab.txt (default: DATA/tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Initial weights: a model directory or a safetensors file (ours, converted Oscar, or Hugging
    /// Face BERT); parameters it lacks (e.g. a new task's head) are freshly initialised, and the
    /// trainer says which.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// With --init: ignore tensors of the checkpoint that are not parameters of the model (by
    /// default they are an error; the pre-training head `cls.*` is always ignored by a fine-tuning
    /// head).
    #[arg(long)]
    pub allow_unexpected: bool,
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Sequences (pre-training) or positive examples (retrieval: each with one negative) per micro-batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f32,
    /// Linear learning-rate warm-up steps. The default is capped at --steps; any other value
    /// beyond --steps is an error.
    #[arg(long, default_value_t = DEFAULT_WARMUP)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub weight_decay: f32,
    /// Global gradient-norm clip; <= 0 turns it off.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub max_grad_norm: f32,
    /// Text tokens per sequence ([CLS] caption [SEP] tags [SEP] + padding).
    #[arg(long, default_value_t = 32)]
    pub text_len: usize,
    /// Region slots per sequence.
    #[arg(long, default_value_t = 6)]
    pub regions: usize,
    /// An empty tag segment everywhere (`[CLS] text [SEP] [SEP]`): the ablation of Oscar's object tags.
    #[arg(long)]
    pub no_tags: bool,
    /// Oscar+ 3-way contrastive loss instead of vanilla Oscar's 2-way (pre-training).
    #[arg(long)]
    pub three_way: bool,
    /// Dropout of the fine-tuning head (pre-training uses the config's dropout only).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub head_dropout: f32,
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    #[arg(long, default_value_t = 4)]
    pub eval_batches: usize,
    /// Keep OUT/best: the model of the evaluation (the starting one included) with the best value
    /// of this metric, e.g. val_cider_d (SCST), val_accuracy; a metric ending in "loss" is better
    /// lower. Oscar selects its captioner by validation CIDEr this way.
    #[arg(long, value_name = "METRIC")]
    pub keep_best: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub save_every: usize,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[arg(long, default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Images in the generated synthetic world.
    #[arg(long, default_value_t = 2000)]
    pub synth_images: usize,
    /// f32, or f16: matmul products in f16 with f32 accumulation (cooperative matrices where the
    /// adapter has them), f32 master weights and activations, dynamic loss scaling.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    pub precision: Precision,
    /// With --precision f16: the first loss scale (default 65536; halved on overflow, doubled
    /// after 2000 clean steps).
    #[arg(long, allow_negative_numbers = true)]
    pub loss_scale: Option<f32>,
    /// Show a progress bar.
    #[arg(skip = true)]
    pub progress: bool,
    /// Testing aid: poison a parameter with NaN before this step.
    #[arg(long, hide = true)]
    pub inject_nan_at: Option<usize>,
}

impl Default for TrainArgs {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: TrainArgs,
        }
        <Wrap as clap::Parser>::parse_from(["train"]).a
    }
}

/// The flags that make a run the same run: written into each training checkpoint and compared by
/// `--resume` (with --seed and the model config, checked apart).
pub fn run_flags(a: &TrainArgs) -> Vec<(&'static str, String)> {
    let precision = match a.precision {
        Precision::F32 => "f32",
        Precision::F16 => "f16",
    };
    let mut flags = vec![
        ("--task", a.task.clone()),
        ("--steps", a.steps.to_string()),
        ("--batch-size", a.batch_size.to_string()),
        ("--grad-accum", a.grad_accum.to_string()),
        ("--text-len", a.text_len.to_string()),
        ("--regions", a.regions.to_string()),
        ("--precision", precision.to_string()),
        ("--lr", a.lr.to_string()),
        ("--warmup", a.warmup_steps().to_string()),
        ("--weight-decay", a.weight_decay.to_string()),
        ("--max-grad-norm", a.max_grad_norm.to_string()),
        ("--three-way", a.three_way.to_string()),
        ("--no-tags", a.no_tags.to_string()),
        ("--head-dropout", a.head_dropout.to_string()),
    ];
    if a.task == "nlvr2" {
        flags.push(("--pair-scale", a.pair_scale.to_string()));
        flags.push(("--pair-tags", a.pair_tags.to_string()));
    }
    if a.task == "caption" {
        flags.push(("--caption-len", a.caption_len.to_string()));
        flags.push(("--label-smoothing", a.label_smoothing.to_string()));
        flags.push(("--mask-tag-words", a.mask_tag_words.to_string()));
        flags.push(("--scst", a.scst.to_string()));
        if a.scst {
            flags.push(("--scst-samples", a.scst_samples.to_string()));
            flags.push(("--scst-baseline", a.scst_baseline.clone()));
            flags.push(("--scst-sampler", a.scst_sampler.clone()));
            flags.push(("--scst-max-gen-length", a.scst_max_gen_length.to_string()));
            flags.push(("--scst-no-eos", a.scst_no_eos.to_string()));
        }
    }
    flags
}

/// Flag values that cannot make a sensible run, refused before anything is read or written.
pub fn check_flags(a: &TrainArgs) -> crate::Result<()> {
    let bad = |flag: &str, v: &dyn std::fmt::Display, why: &str| Err(crate::Error::Other(format!("{flag} {v}: {why}")));
    for (flag, v) in [("--steps", a.steps), ("--batch-size", a.batch_size), ("--grad-accum", a.grad_accum)] {
        if v == 0 {
            return bad(flag, &v, "must be at least 1");
        }
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return bad("--lr", &a.lr, "the learning rate must be a finite number > 0");
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        return bad("--weight-decay", &a.weight_decay, "must be a finite number >= 0");
    }
    if a.max_grad_norm.is_nan() {
        return bad("--max-grad-norm", &a.max_grad_norm, "must be a number (<= 0 turns clipping off)");
    }
    if a.warmup_steps() > a.steps {
        return bad("--warmup", &a.warmup, &format!("longer than the run (--steps {}); the learning rate would never reach --lr", a.steps));
    }
    if let (Some(m), 0) = (&a.keep_best, a.eval_every) {
        return Err(crate::Error::Other(format!("--keep-best {m} selects among the evaluations, but --eval-every 0 turns them off")));
    }
    // NLVR2's flags elsewhere would be silently ignored
    if a.task != "nlvr2" {
        let d = TrainArgs::default();
        if let Some((flag, _)) = [("--pair-tags", a.pair_tags != d.pair_tags), ("--pair-scale", a.pair_scale != d.pair_scale)].iter().find(|g| g.1) {
            return Err(crate::Error::Other(format!("{flag} is an NLVR2 flag (the pair head): it needs --task nlvr2, not --task {}", a.task)));
        }
    }
    // a self-critical flag without --scst would quietly train with cross-entropy instead
    if !a.scst {
        let d = TrainArgs::default();
        let given = [
            ("--scst-samples", a.scst_samples != d.scst_samples),
            ("--scst-baseline", a.scst_baseline != d.scst_baseline),
            ("--scst-sampler", a.scst_sampler != d.scst_sampler),
            ("--scst-max-gen-length", a.scst_max_gen_length != d.scst_max_gen_length),
            ("--scst-no-eos", a.scst_no_eos != d.scst_no_eos),
        ];
        if let Some((flag, _)) = given.iter().find(|g| g.1) {
            return Err(crate::Error::Other(format!("{flag} is a self-critical training flag: add --scst (and --task caption --init CAPTION_MODEL)")));
        }
    }
    Ok(())
}
