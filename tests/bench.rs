//! `vlp-engine bench` runs on any adapter, its memory report adds up to what was allocated, its
//! analytic FLOPs match the sum counted over our dispatches, and --profile returns kernel rows.
use std::time::Instant;
use vlp_engine::gpu::Gpu;
use vlp_engine::model::Config;
use vlp_engine::ops::matmul::Precision;
use vlp_engine::train::bench::{bench, forward_flops, BenchArgs};

#[test]
fn bench_reports_consistent_flops_and_memory() {
    let gpu = Gpu::default_device().unwrap();
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
    let parts = r.bytes_params + r.bytes_grads + r.bytes_optimizer + r.bytes_activations + r.bytes_other;
    assert_eq!(parts, r.bytes_allocated);
    assert_eq!(r.bytes_grads, r.bytes_params);
    assert_eq!(r.bytes_optimizer, 2 * r.bytes_params);
    assert!(r.bytes_other < r.bytes_allocated / 10, "unaccounted {} of {}", r.bytes_other, r.bytes_allocated);
    if gpu.has(wgpu::Features::TIMESTAMP_QUERY) {
        assert!(r.profile.iter().any(|p| p.0.starts_with("matmul::")), "{:?}", r.profile);
    }
    // the FLOP formula itself: BERT-base, 120 tokens, ~ 2 * 85M params * 120 tokens + attention
    let c = Config::preset("base").unwrap();
    let f = forward_flops(&c, 70, 50, 0.0);
    assert!((2.0e10..2.6e10).contains(&f), "{f}");
}
