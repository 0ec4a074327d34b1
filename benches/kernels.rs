//! Kernel benchmarks at Oscar-B shapes. Each sample records `iters` copies of a prepared dispatch
//! list into one command buffer, submits once and waits, so submission overhead is amortised and
//! the time is GPU time plus one round trip. Throughput "elem/s" is FLOP/s for compute-bound
//! kernels (matmul, attention) and the bytes/s line for memory-bound ones.
//!
//! Shapes scale with the batch: VLP_BENCH_BATCH (default 128 on GPUs, 1 on CPU adapters such as
//! lavapipe). Tokens per sequence = 70 text + 50 regions = 120.
//!   cargo bench --bench kernels                 # all
//!   cargo bench --bench kernels -- matmul       # one group
//!   VLP_BENCH_LARGE=1 cargo bench --bench kernels -- 4096   # 4096^3 on a CPU adapter too
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};
use vlp_engine::gpu::{DType, Dispatch, Gpu, GpuOptions, Recorder, Tensor};
use vlp_engine::ops::attention::{Attention, MaskKind, Seq};
use vlp_engine::ops::cross_entropy::CrossEntropy;
use vlp_engine::ops::matmul::{matmul, Layout, MatmulDesc, Precision, Tile};
use vlp_engine::ops::{layernorm, softmax};

const TOKENS: usize = 120;

struct Ctx {
    gpu: Gpu,
    batch: usize,
    cpu_adapter: bool,
}

fn ctx() -> Ctx {
    let gpu = Gpu::default_device().expect("no GPU adapter");
    let cpu_adapter = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let batch = std::env::var("VLP_BENCH_BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(if cpu_adapter { 1 } else { 128 });
    eprintln!("bench device: {} — batch {batch}", gpu.summary());
    Ctx { gpu, batch, cpu_adapter }
}

fn filled(g: &Gpu, n: usize) -> Tensor {
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    g.upload_f32("bench", &[n], &v).unwrap()
}

fn time(g: &Gpu, list: &[Dispatch], iters: u64) -> Duration {
    let mut rec = Recorder::new(g);
    for _ in 0..iters {
        rec.run(list);
    }
    let t = Instant::now();
    rec.submit();
    g.wait().unwrap();
    t.elapsed()
}

fn bench_list(c: &mut Criterion, g: &Gpu, group: &str, id: String, work: Throughput, list: Vec<Dispatch>) {
    let mut grp = c.benchmark_group(group);
    grp.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    grp.throughput(work);
    g.run(&list).unwrap(); // compile + first touch outside the timing
    grp.bench_function(BenchmarkId::from_parameter(id), |b| b.iter_custom(|iters| time(g, &list, iters)));
    grp.finish();
}

fn matmuls(c: &mut Criterion) {
    let cx = ctx();
    let g = &cx.gpu;
    let rows = cx.batch * TOKENS;
    // (label, m, n, k, layout): NT = x W^T (forward), NN = dy W (input gradient), TN = dy^T x
    // (weight gradient, K = rows)
    let mut shapes = vec![
        ("qkv/out-proj", rows, 768, 768, "NT"),
        ("ffn-up", rows, 3072, 768, "NT"),
        ("ffn-down", rows, 768, 3072, "NT"),
        ("ffn-up dx", rows, 768, 3072, "NN"),
        ("ffn-up dW", 3072, 768, rows, "TN"),
        ("square", 1024, 1024, 1024, "NN"),
    ];
    // 4096^3 takes 16-40 s per multiply on lavapipe: on CPU adapters only with VLP_BENCH_LARGE=1
    if !cx.cpu_adapter || std::env::var("VLP_BENCH_LARGE").is_ok() {
        shapes.push(("square", 4096, 4096, 4096, "NN"));
    }
    // The same kernel with wgpu's runtime bounds checks kept, next to the default device's modules
    // (trusted on GPUs in release builds, checked on CPU adapters; VLP_SHADER_CHECKS=0 makes them
    // trusted there too).
    let checked = Gpu::new(&GpuOptions { shader_checks: Some(true), ..GpuOptions::default() }).unwrap();
    for (label, m, n, k, layout) in shapes {
        // each kernel variant side by side, so a regression in either shows
        // "f16": the f16 path's kernel: cooperative matrices where the adapter has them, else
        // the 128 tile rounding its operands to f16
        let f16 = if vlp_engine::ops::matmul_coop::usable(g) { "f16-coop" } else { "f16-rounded-tile128" };
        let variants = [
            (Tile::T64, "tile64", g, Precision::F32),
            (Tile::T128, "tile128", g, Precision::F32),
            (Tile::T128, "tile128-checked", &checked, Precision::F32),
            (Tile::T128, f16, g, Precision::F16),
        ];
        for (tile, tname, dev, precision) in variants {
            let (a, b, cc) = (filled(dev, m * k), filled(dev, k * n), dev.zeros("c", &[m * n], DType::F32).unwrap());
            let mut d = MatmulDesc::new(m, n, k);
            d.tile = tile;
            d.precision = precision;
            match layout {
                "NT" => d.b = Layout::rm(n, k).t(),
                "TN" => d.a = Layout::rm(k, m).t(),
                _ => {}
            }
            let disp = matmul(dev, &d, &a, &b, &cc, None, None).unwrap();
            bench_list(c, dev, "matmul (elem = FLOP)", format!("{tname} {label} {m}x{n}x{k}"), Throughput::Elements(d.flops() as u64), vec![disp]);
        }
    }
}

/// Few rows: a decode step (2 rows per sequence, beam 5) through Oscar-B's linears and the tiny
/// and base vocabulary projections, on the 64 tile and on the small-M kernel side by side.
fn matmuls_small_m(c: &mut Criterion) {
    let cx = ctx();
    let g = &cx.gpu;
    for (label, m, n, k) in [("vocab tiny", 10, 30522, 64), ("qkv/out-proj", 10, 768, 768), ("ffn-up", 10, 3072, 768), ("vocab base", 10, 30522, 768)] {
        for (tile, tname) in [(Tile::T64, "tile64"), (Tile::Small, "small")] {
            let (a, b, cc) = (filled(g, m * k), filled(g, k * n), g.zeros("c", &[m * n], DType::F32).unwrap());
            let d = MatmulDesc { tile, b: Layout::rm(n, k).t(), ..MatmulDesc::new(m, n, k) };
            let disp = matmul(g, &d, &a, &b, &cc, None, None).unwrap();
            bench_list(c, g, "matmul small M (elem = FLOP)", format!("{tname} {label} {m}x{n}x{k}"), Throughput::Elements(d.flops() as u64), vec![disp]);
        }
    }
}

fn attention(c: &mut Criterion) {
    let cx = ctx();
    let g = &cx.gpu;
    let a = Attention {
        batch: cx.batch,
        tq: TOKENS,
        tk: TOKENS,
        heads: 12,
        head_dim: 64,
        mask: MaskKind::Padding,
        p_drop: 0.1,
        stream: 1,
        precision: Precision::F32,
    };
    let h = 768;
    let qkv = filled(g, cx.batch * TOKENS * 3 * h);
    let ctxt = g.zeros("ctx", &[cx.batch * TOKENS * h], DType::F32).unwrap();
    let mask = g.upload_f32("mask", &[cx.batch * TOKENS], &vec![1.0; cx.batch * TOKENS]).unwrap();
    let seed = g.upload_u32("seed", &[1], &[1]).unwrap();
    let z = |n| g.zeros("s", &[n], DType::F32).unwrap();
    let (s, p, pd) = (z(a.score_len()), z(a.score_len()), z(a.score_len()));
    let (q, k, v) = (Seq::new(&qkv, 0, 3 * h), Seq::new(&qkv, h, 3 * h), Seq::new(&qkv, 2 * h, 3 * h));
    let list = a.forward(g, q, k, v, Seq::new(&ctxt, 0, h), Some(&mask), &s, &p, &pd, &seed).unwrap();
    let flops = 4.0 * (cx.batch * 12 * TOKENS * TOKENS * 64) as f64;
    bench_list(c, g, "attention_fwd (elem = FLOP)", format!("{}x12x{TOKENS}x64", cx.batch), Throughput::Elements(flops as u64), list);
    let dctx = filled(g, cx.batch * TOKENS * h);
    let dqkv = g.zeros("dqkv", &[cx.batch * TOKENS * 3 * h], DType::F32).unwrap();
    let (dq, dk, dv) = (Seq::new(&dqkv, 0, 3 * h), Seq::new(&dqkv, h, 3 * h), Seq::new(&dqkv, 2 * h, 3 * h));
    let list = a.backward(g, q, k, v, Seq::new(&dctx, 0, h), dq, dk, dv, &p, &pd, &s, &seed).unwrap();
    bench_list(c, g, "attention_bwd (elem = FLOP)", format!("{}x12x{TOKENS}x64", cx.batch), Throughput::Elements(2 * flops as u64), list);
}

fn rowwise(c: &mut Criterion) {
    let cx = ctx();
    let g = &cx.gpu;
    let rows = cx.batch * TOKENS;
    let (x, y) = (filled(g, rows * 768), g.zeros("y", &[rows * 768], DType::F32).unwrap());
    let (gm, bt, st) = (filled(g, 768), filled(g, 768), g.zeros("st", &[2 * rows], DType::F32).unwrap());
    let bytes = Throughput::Bytes(8 * (rows * 768) as u64);
    let ln = layernorm::layernorm(g, &x, &gm, &bt, &y, &st, rows, 768, 1e-12).unwrap();
    bench_list(c, g, "layernorm_fwd (bytes)", format!("{rows}x768"), bytes.clone(), vec![ln]);
    let sm = softmax::softmax(g, &x, &y, rows, 768).unwrap();
    bench_list(c, g, "softmax_fwd (bytes)", format!("{rows}x768"), bytes, vec![sm]);
    // masked-token positions: ~15 % of 35 caption+tag tokens per sequence
    let lrows = (cx.batch * 6).max(1);
    let vocab = 30522;
    let logits = filled(g, lrows * vocab);
    let labels = g.upload_i32("labels", &[lrows], &(0..lrows as i32).map(|i| i * 97 % vocab as i32).collect::<Vec<_>>()).unwrap();
    let (stats, out, dl) =
        (g.zeros("st", &[3 * lrows], DType::F32).unwrap(), g.zeros("o", &[3], DType::F32).unwrap(), g.zeros("dl", &[lrows * vocab], DType::F32).unwrap());
    let ce = CrossEntropy { rows: lrows, vocab, ignore_index: -1, smoothing: 0.0 };
    let mut list = ce.forward(g, &logits, &labels, &stats, &out).unwrap();
    list.push(ce.backward(g, &logits, &labels, &stats, &out, &dl, 1.0).unwrap());
    bench_list(c, g, "cross_entropy_fwd_bwd (bytes)", format!("{lrows}x{vocab}"), Throughput::Bytes(12 * (lrows * vocab) as u64), list);
}

criterion_group!(benches, matmuls, matmuls_small_m, attention, rowwise);
criterion_main!(benches);
