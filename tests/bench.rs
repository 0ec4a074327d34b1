//! `vlp-engine bench` runs on any adapter, its memory report is right kind by kind (checked
//! against an analytic parameter count and against allocations measured here, not against its
//! own remainder), its analytic FLOPs match the sum counted over our dispatches, and --profile
//! returns kernel rows.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use vlp_engine::gpu::Gpu;
use vlp_engine::model::{Config, Head, Mode, ParamLayout, ParamSet, Shape, Step};
use vlp_engine::ops::matmul::Precision;
use vlp_engine::ops::optim::AdamWConfig;
use vlp_engine::train::bench::{bench, forward_flops, BenchArgs};
use vlp_engine::train::Optimizer;

/// Oscar's parameter count from the architecture (BERT + region projection + pre-training heads),
/// written out here independently of `model::params::specs`.
fn oscar_params(c: &Config) -> usize {
    let (h, f, v, d) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.img_feature_dim);
    let lin = |o: usize, i: usize| o * i + o;
    let ln = 2 * h;
    let embeddings = v * h + c.max_position_embeddings * h + c.type_vocab_size * h + ln;
    let image = lin(h, d) + if c.use_img_layernorm { ln } else { 0 };
    let layer = 4 * lin(h, h) + ln + lin(f, h) + lin(h, f) + ln;
    let pooler = lin(h, h);
    // masked-token head: transform + LayerNorm + output bias (the decoder is tied to the word
    // embeddings); contrastive head on the pooled [CLS]
    let mlm = lin(h, h) + ln + v;
    let contrastive = lin(c.num_contrast_classes, h);
    embeddings + image + c.num_hidden_layers * layer + pooler + mlm + contrastive
}

/// Bytes `f` allocates on `gpu`, by the device's allocation counter.
fn measured<T>(gpu: &Gpu, f: impl FnOnce() -> T) -> (T, u64) {
    let before = gpu.allocated.load(Ordering::Relaxed);
    let t = f();
    (t, gpu.allocated.load(Ordering::Relaxed) - before)
}

#[test]
fn bench_reports_consistent_flops_and_memory() {
    let gpu = Gpu::default_device().unwrap();
    // the shared dummy bindings are made on first use; make them now so they are not counted below
    let _ = (gpu.dummy_read(), gpu.dummy_write());
    let a = BenchArgs { config: "tiny".into(), batch: 2, text: 12, regions: 3, train: true, steps: 1, warmup: 1, profile: true, precision: Precision::F32 };
    // the f16 path runs the same step (on lavapipe through the fp32 kernels with f16 rounding)
    let h = bench(&gpu, &BenchArgs { precision: Precision::F16, profile: false, ..a.clone() }, Instant::now()).unwrap();
    assert!(h.precision.starts_with("f16") && h.ms_per_step > 0.0, "{}", h.precision);
    let r = bench(&gpu, &a, Instant::now()).unwrap();
    assert_eq!(r.precision, "f32");
    assert_eq!(h.counted_flops_per_step, r.counted_flops_per_step);
    assert!(r.ms_per_step > 0.0 && r.seq_per_s > 0.0);
    // our matmuls skip the region projection's input gradient (features need none): within 5 %
    let rel = (r.counted_flops_per_step - r.model_flops_per_step).abs() / r.model_flops_per_step;
    assert!(rel < 0.05, "model {} vs counted {}", r.model_flops_per_step, r.counted_flops_per_step);
    if gpu.has(wgpu::Features::TIMESTAMP_QUERY) {
        assert!(r.profile.iter().any(|p| p.0.starts_with("matmul::")), "{:?}", r.profile);
    }

    // Memory, kind by kind. Parameters, gradients and the two AdamW moments are 4 bytes per
    // parameter each, and the parameter count is the architecture's.
    let c = Config::preset("tiny").unwrap();
    let n = oscar_params(&c);
    let layout = Arc::new(ParamLayout::for_model(&c, &Head::Pretrain, gpu.max_binding_bytes()).unwrap());
    assert_eq!(layout.numel(), n, "parameter layout vs the architecture's count");
    assert_eq!(r.bytes_params, 4 * n as u64);
    assert_eq!(r.bytes_grads, 4 * n as u64);
    assert_eq!(r.bytes_optimizer, 8 * n as u64);
    // Activations and inputs: plan the same shape here and measure what it allocates.
    let shape = Shape { batch: a.batch, text: a.text, regions: a.regions, masked: a.batch * r.masked_per_seq as usize, mask3d: false };
    let params = ParamSet::zeros(&gpu, layout.clone(), "p").unwrap();
    let grads = ParamSet::zeros(&gpu, layout.clone(), "g").unwrap();
    let (opt, opt_bytes) = measured(&gpu, || Optimizer::new(&gpu, &params, &grads, AdamWConfig::default(), 0.01).unwrap());
    assert_eq!(opt.state_bytes(), 8 * n as u64);
    let opt_scratch = opt_bytes - 8 * n as u64; // grad-norm partials, lr and clip scalars
    let (step, planned) =
        measured(&gpu, || Step::new(&gpu, &c, &params, Some(&grads), &Head::Pretrain, shape, Mode::Train { dropout: true }, 1.0, Precision::F32).unwrap());
    let inputs = step.input_bytes;
    assert!(inputs > 0);
    assert_eq!(step.act_bytes + step.grad_act_bytes, planned - inputs, "the plan's own count vs what it allocated");
    assert_eq!(r.bytes_activations, planned - inputs);
    // ... and at least what the backward pass must keep: per layer Q/K/V, the attention
    // probabilities, the FFN pre-activation and the layer input; the masked-token logits; and in
    // the backward pass the FFN-sized and hidden-sized gradients.
    let (rows, hh, ff) = (shape.rows(), c.hidden_size, c.intermediate_size);
    let kept = c.num_hidden_layers * (rows * 3 * hh + shape.batch * c.num_attention_heads * shape.seq() * shape.seq() + rows * ff + rows * hh)
        + shape.masked * c.vocab_size;
    assert!(step.act_bytes >= 4 * kept as u64, "forward activations {} < {} needed", step.act_bytes, 4 * kept);
    assert!(step.grad_act_bytes >= 4 * (rows * (ff + hh)) as u64, "gradient activations {}", step.grad_act_bytes);
    // "other" is what no kind claims: the inputs and the optimizer's scratch, nothing else, so a
    // kind counted twice (other would be 0) or an allocation counted nowhere fails here
    let kinds = r.bytes_params + r.bytes_grads + r.bytes_optimizer + r.bytes_activations;
    assert!(kinds <= r.bytes_allocated, "kinds {kinds} > allocated {}", r.bytes_allocated);
    assert_eq!(r.bytes_other, r.bytes_allocated - kinds);
    assert_eq!(r.bytes_other, inputs + opt_scratch, "unaccounted memory: other {} vs inputs {inputs} + optimizer scratch {opt_scratch}", r.bytes_other);
    assert!(r.bytes_other < r.bytes_allocated / 50, "other {} of {}", r.bytes_other, r.bytes_allocated);

    // forward-only: no gradients, no optimizer, the Eval plan's activations (one layer's buffers
    // shared by all layers, so fewer than the training forward keeps)
    let i = bench(&gpu, &BenchArgs { train: false, profile: false, ..a.clone() }, Instant::now()).unwrap();
    assert_eq!((i.bytes_params, i.bytes_grads, i.bytes_optimizer), (4 * n as u64, 0, 0));
    let (eval, eval_planned) = measured(&gpu, || Step::new(&gpu, &c, &params, None, &Head::Pretrain, shape, Mode::Eval, 1.0, Precision::F32).unwrap());
    assert_eq!(eval.act_bytes + eval.input_bytes, eval_planned, "the Eval plan's own count vs what it allocated");
    assert_eq!(i.bytes_activations, eval.act_bytes);
    assert!(eval.act_bytes < step.act_bytes, "Eval activations {} not below Train's {}", eval.act_bytes, step.act_bytes);
    assert_eq!(i.bytes_other, eval.input_bytes, "forward-only: other {} vs inputs {}", i.bytes_other, eval.input_bytes);
    assert_eq!(i.bytes_allocated, i.bytes_params + i.bytes_activations + eval.input_bytes);

    // the FLOP formula itself: BERT-base, 120 tokens, ~ 2 * 85M params * 120 tokens + attention
    let c = Config::preset("base").unwrap();
    let f = forward_flops(&c, 70, 50, 0.0);
    assert!((2.0e10..2.6e10).contains(&f), "{f}");
}
