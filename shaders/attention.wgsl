// attention.wgsl — the row-wise middle of attention, fused: mask + softmax + dropout, and its
// backward. The two products around it (S = scale Q K^T, ctx = Pd V, and their gradients) are
// strided batched matmuls (ops/attention.rs).
// Entry points:
//   attn_softmax_fwd: P = softmax(S + (1 - mask) * -10000), Pd = dropout(P). One workgroup (64
//     threads) per score row (b, h, i); threads stride over the tk columns.
//   attn_softmax_bwd: dS = P * (dP - sum(P * dP)) with dP = dropout_bwd(dPd); in place on `g`
//     (holds dPd on entry, dS on exit). Same mapping.
// mask_mode: 0 none, 1 2-D padding mask [B, tk], 2 3-D mask [B, tq, tk]; 1 = attend.
// Dropout: element (row r, col j) keeps when rng(seed, stream, r * tk + j) >= threshold.

struct Params {
    rows: u32, tq: u32, tk: u32, heads: u32,
    mask_mode: u32, s_off: u32, p_off: u32, pd_off: u32,
    mask_off: u32, threshold: u32, stream: u32, g_off: u32,
    keep_scale: f32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> g: array<f32>;
@group(0) @binding(5) var<storage, read> seed: array<u32>;

const WG: u32 = 64u;

fn reduce_max(v: f32, t: u32) -> f32 { return wg_reduce(v, t, WG, true); }
fn reduce_sum(v: f32, t: u32) -> f32 { return wg_reduce(v, t, WG, false); }

fn mask_bias(r: u32, j: u32) -> f32 {
    if (p.mask_mode == 0u) { return 0.0; }
    let b = r / (p.heads * p.tq);
    var m = 0.0;
    if (p.mask_mode == 1u) {
        m = mask[p.mask_off + b * p.tk + j];
    } else {
        let i = r % p.tq;
        m = mask[p.mask_off + (b * p.tq + i) * p.tk + j];
    }
    return (1.0 - m) * -10000.0;
}

@compute @workgroup_size(64, 1, 1)
fn attn_softmax_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; } // uniform per workgroup, so barriers stay uniform
    let t = lid.x;
    let base = r * p.tk;
    var mx = -3.0e38;
    for (var j = t; j < p.tk; j += WG) {
        mx = max(mx, s[p.s_off + base + j] + mask_bias(r, j));
    }
    mx = reduce_max(mx, t);
    var sum = 0.0;
    for (var j = t; j < p.tk; j += WG) {
        sum += exp(s[p.s_off + base + j] + mask_bias(r, j) - mx);
    }
    sum = reduce_sum(sum, t);
    let inv = 1.0 / sum;
    let sd = seed[0];
    for (var j = t; j < p.tk; j += WG) {
        let pv = exp(s[p.s_off + base + j] + mask_bias(r, j) - mx) * inv;
        probs[p.p_off + base + j] = pv;
        var dv = pv;
        if (p.threshold != 0u) {
            dv = select(0.0, pv * p.keep_scale, keep_mask(sd, p.stream, base + j, p.threshold));
        }
        g[p.pd_off + base + j] = dv;
    }
}

// Here `probs` is only read; it stays read_write so both entry points share one layout.
@compute @workgroup_size(64, 1, 1)
fn attn_softmax_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; }
    let t = lid.x;
    let base = r * p.tk;
    let sd = seed[0];
    var dot = 0.0;
    for (var j = t; j < p.tk; j += WG) {
        var dp = g[p.g_off + base + j];
        if (p.threshold != 0u) {
            dp = select(0.0, dp * p.keep_scale, keep_mask(sd, p.stream, base + j, p.threshold));
        }
        dot += dp * probs[p.p_off + base + j];
    }
    dot = reduce_sum(dot, t);
    for (var j = t; j < p.tk; j += WG) {
        var dp = g[p.g_off + base + j];
        if (p.threshold != 0u) {
            dp = select(0.0, dp * p.keep_scale, keep_mask(sd, p.stream, base + j, p.threshold));
        }
        g[p.g_off + base + j] = probs[p.p_off + base + j] * (dp - dot);
    }
}
