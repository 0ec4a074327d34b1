// optim.wgsl — gradient clipping and AdamW, as pytorch_transformers' AdamW (Oscar's optimiser):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= step_size * m / (sqrt(v) + eps),  step_size = lr * sqrt(1 - b2^t) / (1 - b1^t)
//   p -= lr * wd * p        (decoupled weight decay, after the Adam update)
// Entry points:
//   norm_finalize: one workgroup; clip = (norm, coef, skip) from the partial sums of squares.
//     Gradients arrive multiplied by the loss scale (1 on the fp32 path); norm is the unscaled
//     norm, coef = inv_scale * (max_norm / (norm + 1e-6) when max_norm > 0 and that is < 1, else 1)
//     as clip_grad_norm_. A non-finite norm (an f16 overflow, or a NaN) sets skip = 1.
//   adamw: one thread per element of a contiguous range; g = grad * coef; nothing changes when
//     skip is set (GradScaler's skipped step). `state` = (lr, step_size, inv_scale) is written by
//     the host each step, so the dispatch itself never changes.

struct Params {
    n: u32, p_off: u32, g_off: u32, m_off: u32,
    v_off: u32, nparts: u32, _p0: u32, _p1: u32,
    beta1: f32, beta2: f32, eps: f32, wd: f32,
    max_norm: f32, _p2: u32, _p3: u32, _p4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;    // grads (adamw) or partial sums (finalize)
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> m2: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<f32>;    // [lr, step_size, inv_scale, 0]
@group(0) @binding(6) var<storage, read_write> clip: array<f32>; // [norm, coef, skip, 0]

// inf or NaN, by the exponent bits: a float comparison may be folded away by a compiler that
// assumes finite math.
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(256, 1, 1)
fn norm_finalize(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var s = 0.0;
    for (var i = t; i < p.nparts; i += 256u) { s += grad[i]; }
    let total = wg_reduce(s, t, 256u, false);
    if (t == 0u) {
        let inv_scale = state[2];
        let norm = sqrt(total) * inv_scale;
        var coef = 1.0;
        if (p.max_norm > 0.0) {
            let c = p.max_norm / (norm + 1e-6);
            if (c < 1.0) { coef = c; }
        }
        clip[0] = norm;
        clip[1] = coef * inv_scale;
        clip[2] = select(0.0, 1.0, non_finite(total));
    }
}

@compute @workgroup_size(256, 1, 1)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = lin_wg(wid, nwg) * 256u + lid.x;
    if (i >= p.n || clip[2] != 0.0) { return; }
    let lr = state[0];
    let step_size = state[1];
    let g = grad[p.g_off + i] * clip[1];
    let m = p.beta1 * m1[p.m_off + i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * m2[p.v_off + i] + (1.0 - p.beta2) * g * g;
    m1[p.m_off + i] = m;
    m2[p.v_off + i] = v;
    var w = param[p.p_off + i];
    w = w - step_size * m / (sqrt(v) + p.eps);
    w = w - lr * p.wd * w;
    param[p.p_off + i] = w;
}
