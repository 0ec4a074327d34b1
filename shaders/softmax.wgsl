// softmax.wgsl — row softmax over the last dimension and its backward.
// Entry points:
//   softmax_fwd: y = softmax(x) per row.
//   softmax_bwd: dx = y * (dy - sum(y * dy)) per row (needs only the forward output).
// Thread mapping: one workgroup of 256 threads per row, striding over columns (rows of any length).

struct Params {
    rows: u32, cols: u32, x_off: u32, y_off: u32,
    dy_off: u32, dx_off: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;   // x (fwd) or y (bwd)
@group(0) @binding(2) var<storage, read> dy: array<f32>;  // unused by fwd
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // y (fwd) or dx (bwd)

const WG: u32 = 256u;
fn reduce(v: f32, t: u32, is_max: bool) -> f32 { return wg_reduce(v, t, WG, is_max); }

@compute @workgroup_size(256, 1, 1)
fn softmax_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; }
    let t = lid.x;
    let xb = p.x_off + r * p.cols;
    var mx = -3.0e38;
    for (var j = t; j < p.cols; j += WG) { mx = max(mx, x[xb + j]); }
    mx = reduce(mx, t, true);
    var sum = 0.0;
    for (var j = t; j < p.cols; j += WG) { sum += exp(x[xb + j] - mx); }
    sum = reduce(sum, t, false);
    let inv = 1.0 / sum;
    for (var j = t; j < p.cols; j += WG) { out[p.y_off + r * p.cols + j] = exp(x[xb + j] - mx) * inv; }
}

@compute @workgroup_size(256, 1, 1)
fn softmax_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = lin_wg(wid, nwg);
    if (r >= p.rows) { return; }
    let t = lid.x;
    let yb = p.y_off + r * p.cols;
    let gb = p.dy_off + r * p.cols;
    var dot = 0.0;
    for (var j = t; j < p.cols; j += WG) { dot += x[yb + j] * dy[gb + j]; }
    dot = reduce(dot, t, false);
    for (var j = t; j < p.cols; j += WG) { out[p.dx_off + r * p.cols + j] = x[yb + j] * (dy[gb + j] - dot); }
}
