// layernorm.wgsl — LayerNorm over the last dimension (TF style: eps inside the sqrt) and its backward.
// Entry points:
//   ln_fwd: y = (x - mean) * rstd * gamma + beta; saves (mean, rstd) per row in `stats` [rows, 2].
//     One workgroup of 64 threads per row (256 spent most of their time in the reduction: on
//     lavapipe 64 threads doubled the throughput at 120x768, 32 were no better).
//   ln_bwd_dx: dx = acc * dx + rstd * (dxh - mean(dxh) - xhat * mean(dxh * xhat)), dxh = dy * gamma.
//     Same mapping. `acc` (0 or 1) lets a residual branch add its gradient into an existing one.
//   ln_bwd_params: dgamma += sum_rows(dy * xhat), dbeta += sum_rows(dy) (scaled by `acc` first).
//     Workgroup = 64 columns x 4 row lanes; each lane sums rows lane, lane+4, ... in a fixed order,
//     so results are deterministic.
// Bindings are shared by all three entry points (unused ones get dummies).

struct Params {
    rows: u32, cols: u32, x_off: u32, y_off: u32,
    g_off: u32, b_off: u32, st_off: u32, dy_off: u32,
    eps: f32, acc: f32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;     // y (fwd), dx (bwd_dx), dgamma (bwd_params)
@group(0) @binding(6) var<storage, read_write> stats: array<f32>; // written by fwd, read by bwd
@group(0) @binding(7) var<storage, read_write> dbeta: array<f32>; // bwd_params only

const WG: u32 = 64u;
fn reduce_sum(v: f32, t: u32) -> f32 { return wg_reduce(v, t, WG, false); }

@compute @workgroup_size(64, 1, 1)
fn ln_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; }
    let t = lid.x;
    let xb = p.x_off + r * p.cols;
    var s = 0.0;
    for (var j = t; j < p.cols; j += WG) { s += x[xb + j]; }
    let mean = reduce_sum(s, t) / f32(p.cols);
    // Two passes over the row: exact variance, no catastrophic cancellation.
    var v = 0.0;
    for (var j = t; j < p.cols; j += WG) { let d = x[xb + j] - mean; v += d * d; }
    let rstd = inverseSqrt(reduce_sum(v, t) / f32(p.cols) + p.eps);
    for (var j = t; j < p.cols; j += WG) {
        y[p.y_off + r * p.cols + j] = (x[xb + j] - mean) * rstd * gamma[p.g_off + j] + beta[p.b_off + j];
    }
    if (t == 0u) {
        stats[p.st_off + 2u * r] = mean;
        stats[p.st_off + 2u * r + 1u] = rstd;
    }
}

@compute @workgroup_size(64, 1, 1)
fn ln_bwd_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; }
    let t = lid.x;
    let xb = p.x_off + r * p.cols;
    let gb = p.dy_off + r * p.cols;
    let mean = stats[p.st_off + 2u * r];
    let rstd = stats[p.st_off + 2u * r + 1u];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var j = t; j < p.cols; j += WG) {
        let dxh = dy[gb + j] * gamma[p.g_off + j];
        s1 += dxh;
        s2 += dxh * (x[xb + j] - mean) * rstd;
    }
    let m1 = reduce_sum(s1, t) / f32(p.cols);
    let m2 = reduce_sum(s2, t) / f32(p.cols);
    for (var j = t; j < p.cols; j += WG) {
        let xh = (x[xb + j] - mean) * rstd;
        let dxh = dy[gb + j] * gamma[p.g_off + j];
        let o = p.y_off + r * p.cols + j;
        var v = rstd * (dxh - m1 - xh * m2);
        if (p.acc != 0.0) { v += p.acc * y[o]; }
        y[o] = v;
    }
}

var<workgroup> red: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

@compute @workgroup_size(64, 4, 1)
fn ln_bwd_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * 64u + lid.x;
    let lane = lid.y;
    var sg = 0.0;
    var sb = 0.0;
    if (c < p.cols) {
        for (var r = lane; r < p.rows; r += 4u) {
            let mean = stats[p.st_off + 2u * r];
            let rstd = stats[p.st_off + 2u * r + 1u];
            let g = dy[p.dy_off + r * p.cols + c];
            sg += g * (x[p.x_off + r * p.cols + c] - mean) * rstd;
            sb += g;
        }
    }
    let slot = lid.y * 64u + lid.x;
    red[slot] = sg;
    red2[slot] = sb;
    workgroupBarrier();
    if (lane == 0u && c < p.cols) {
        let tg = ((red[lid.x] + red[64u + lid.x]) + (red[128u + lid.x] + red[192u + lid.x]));
        let tb = ((red2[lid.x] + red2[64u + lid.x]) + (red2[128u + lid.x] + red2[192u + lid.x]));
        var og = tg;
        var ob = tb;
        if (p.acc != 0.0) {
            og += p.acc * y[p.y_off + c];
            ob += p.acc * dbeta[p.b_off + c];
        }
        y[p.y_off + c] = og;
        dbeta[p.b_off + c] = ob;
    }
}
