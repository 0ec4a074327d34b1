// cross_entropy.wgsl — softmax cross-entropy with an ignore index, fused with log-softmax, mean over
// the rows that are not ignored (PyTorch's CrossEntropyLoss(ignore_index=...)).
// Entry points:
//   ce_fwd: per row (one workgroup of 256 threads striding over the vocabulary, any size: 30522 ok):
//     stats[r] = (lse, loss, valid) with loss = lse - x[label]; with label smoothing e > 0 (the
//     captioning loss, KL(smoothed one-hot || softmax): target 1 - e, every other word e/(V-1)),
//     loss = lse - (1-e) x[label] - e/(V-1) (sum(x) - x[label]) + sum q log q.
//   ce_reduce: one workgroup; out = (sum loss, count, mean loss) in a fixed summation order.
//   ce_bwd: per row: dx = (softmax(x) - q) * dscale / count, q the (smoothed) one-hot; ignored rows get 0.
// e = 0 takes exactly the unsmoothed arithmetic (bit for bit what it was before smoothing existed).
// weighted = 1: row r's loss and gradient are multiplied by weights[w_off + r] (self-critical
// training: one reward-derived weight per sampled caption, negative weights included); the mean is
// still over the count of valid rows, so the caller folds the count into its weights.
// Labels are i32; label == ignore or outside [0, vocab) counts as ignored.

struct Params {
    rows: u32, vocab: u32, x_off: u32, l_off: u32,
    st_off: u32, out_off: u32, dx_off: u32, ignore: i32,
    dscale: f32, smoothing: f32, w_off: u32, weighted: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>; // [rows, 3]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // [3]
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read> weights: array<f32>;    // [rows] when weighted

fn weight_of(r: u32) -> f32 {
    if (p.weighted == 0u) { return 1.0; }
    return weights[p.w_off + r];
}

const WG: u32 = 256u;
fn reduce(v: f32, t: u32, is_max: bool) -> f32 { return wg_reduce(v, t, WG, is_max); }

fn label_of(r: u32) -> i32 {
    let l = labels[p.l_off + r];
    if (l == p.ignore || l < 0 || u32(l) >= p.vocab) { return -1; }
    return l;
}

@compute @workgroup_size(256, 1, 1)
fn ce_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; }
    let t = lid.x;
    let xb = p.x_off + r * p.vocab;
    var mx = -3.0e38;
    for (var j = t; j < p.vocab; j += WG) { mx = max(mx, x[xb + j]); }
    mx = reduce(mx, t, true);
    var s = 0.0;
    for (var j = t; j < p.vocab; j += WG) { s += exp(x[xb + j] - mx); }
    s = reduce(s, t, false);
    var sx = 0.0;
    if (p.smoothing > 0.0) {
        for (var j = t; j < p.vocab; j += WG) { sx += x[xb + j]; }
        sx = reduce(sx, t, false);
    }
    if (t == 0u) {
        let lse = mx + log(s);
        let l = label_of(r);
        let o = p.st_off + 3u * r;
        stats[o] = lse;
        if (l >= 0) {
            let xl = x[xb + u32(l)];
            if (p.smoothing > 0.0) {
                let e = p.smoothing;
                let eo = e / f32(max(p.vocab, 2u) - 1u);
                // sum q log q, the constant that makes this Oscar's KL value (0 log 0 = 0)
                let qlogq = select(0.0, (1.0 - e) * log(1.0 - e), e < 1.0) + e * log(eo);
                stats[o + 1u] = (lse - (1.0 - e) * xl - eo * (sx - xl) + qlogq) * weight_of(r);
            } else {
                stats[o + 1u] = (lse - xl) * weight_of(r);
            }
            stats[o + 2u] = 1.0;
        } else {
            stats[o + 1u] = 0.0;
            stats[o + 2u] = 0.0;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn ce_reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var s = 0.0;
    var c = 0.0;
    for (var r = t; r < p.rows; r += WG) {
        s += stats[p.st_off + 3u * r + 1u];
        c += stats[p.st_off + 3u * r + 2u];
    }
    s = reduce(s, t, false);
    c = reduce(c, t, false);
    if (t == 0u) {
        out[p.out_off] = s;
        out[p.out_off + 1u] = c;
        out[p.out_off + 2u] = s / max(c, 1.0);
    }
}

@compute @workgroup_size(256, 1, 1)
fn ce_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; }
    let t = lid.x;
    let xb = p.x_off + r * p.vocab;
    let db = p.dx_off + r * p.vocab;
    let l = label_of(r);
    if (l < 0) {
        for (var j = t; j < p.vocab; j += WG) { dx[db + j] = 0.0; }
        return;
    }
    let lse = stats[p.st_off + 3u * r];
    let g = p.dscale / max(out[p.out_off + 1u], 1.0) * weight_of(r);
    let q_on = 1.0 - p.smoothing;
    let q_off = select(0.0, p.smoothing / f32(max(p.vocab, 2u) - 1u), p.smoothing > 0.0);
    for (var j = t; j < p.vocab; j += WG) {
        var v = exp(x[xb + j] - lse);
        v -= select(q_off, q_on, j == u32(l));
        dx[db + j] = v * g;
    }
}
