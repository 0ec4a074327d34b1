// bce.wgsl — binary cross-entropy with logits (PyTorch's BCEWithLogitsLoss), numerically stable.
// Entry points (one thread per element):
//   bce_fwd: l[i] = max(x, 0) - x * y + log(1 + exp(-|x|)); the caller sums l with reduce.wgsl's
//     `sum` and a scale (1/n for the mean; VQA's n_answers/n = 1/rows).
//   bce_bwd: dx[i] = (sigmoid(x) - y) * scale.

struct Params {
    n: u32, x_off: u32, y_off: u32, o_off: u32,
    scale: f32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn bce_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = lin_wg(wid, nwg) * 256u + lid.x;
    if (i >= p.n) { return; }
    let v = x[p.x_off + i];
    let t = y[p.y_off + i];
    o[p.o_off + i] = max(v, 0.0) - v * t + log(1.0 + exp(-abs(v)));
}

@compute @workgroup_size(256, 1, 1)
fn bce_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = lin_wg(wid, nwg) * 256u + lid.x;
    if (i >= p.n) { return; }
    let v = x[p.x_off + i];
    // sigmoid without overflow for large |v|
    let e = exp(-abs(v));
    let s = select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
    o[p.o_off + i] = (s - y[p.y_off + i]) * p.scale;
}
