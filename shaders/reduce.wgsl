// reduce.wgsl — deterministic reductions (fixed summation order, no atomics).
// Entry points:
//   colsum: out[c] = acc * out[c] + sum_r x[r * rs + c] (bias gradients; rs > cols reads a column
//     block of a wider buffer, e.g. one of Q/K/V in a fused [rows, 3H] gradient). Workgroup = 64 columns x 4 row
//     lanes; lane l sums rows l, l+4, ...; the 4 lane sums are added in a fixed order.
//   sum: out[0] = alpha * sum_i x[i]. One workgroup of 256 threads (losses: small n).
//   sumsq_partial: part[w] = sum of x[i]^2 over chunk w (grid = ceil(n / chunk)). With
//     norm_finalize in optim.wgsl this is the global gradient norm.

struct Params {
    rows: u32, cols: u32, x_off: u32, o_off: u32,
    alpha: f32, acc: f32, chunk: u32, rs: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 256>;

fn reduce256(v: f32, t: u32) -> f32 { return wg_reduce(v, t, 256u, false); }

@compute @workgroup_size(64, 4, 1)
fn colsum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * 64u + lid.x;
    var s = 0.0;
    if (c < p.cols) {
        for (var r = lid.y; r < p.rows; r += 4u) { s += x[p.x_off + r * p.rs + c]; }
    }
    red[lid.y * 64u + lid.x] = s;
    workgroupBarrier();
    if (lid.y == 0u && c < p.cols) {
        let t = (red[lid.x] + red[64u + lid.x]) + (red[128u + lid.x] + red[192u + lid.x]);
        let o = p.o_off + c;
        var v = t;
        if (p.acc != 0.0) { v += p.acc * out[o]; }
        out[o] = v;
    }
}

@compute @workgroup_size(256, 1, 1)
fn sum(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < p.rows; i += 256u) { s += x[p.x_off + i]; }
    s = reduce256(s, lid.x);
    if (lid.x == 0u) { out[p.o_off] = p.alpha * s; }
}

@compute @workgroup_size(256, 1, 1)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = lin_wg(wid, nwg);
    let start = w * p.chunk;
    let end = min(start + p.chunk, p.rows);
    var s = 0.0;
    for (var i = start + lid.x; i < end; i += 256u) { let v = x[p.x_off + i]; s += v * v; }
    s = reduce256(s, lid.x);
    if (lid.x == 0u) { out[p.o_off + w] = s; }
}
