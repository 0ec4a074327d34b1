// common.wgsl — prepended to every kernel file by src/gpu/shaders.rs (WGSL has no #include).
// Holds the exact-erf GELU, the counter-based dropout RNG and the 2-D grid index helper; the CPU
// references in src/ops mirror these bit for bit where it matters (the RNG).

// Linear workgroup index for grids split over x and y (see gpu::kernel::grid).
fn lin_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, below f32 resolution of the GELU result).
fn erf_f32(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let y = 1.0 - poly * exp(-ax * ax);
    return select(-y, y, x >= 0.0);
}

// GELU, exact erf form as BERT: x * Phi(x).
fn gelu_f32(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752));
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x).
fn gelu_grad_f32(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_f32(x * 0.70710678118654752));
    let pdf = 0.3989422804014327 * exp(-0.5 * x * x);
    return cdf + x * pdf;
}

// lowbias32 (Chris Wellons): a well-mixed bijection on u32.
fn hash_u32(x: u32) -> u32 {
    var v = x;
    v = v ^ (v >> 16u);
    v = v * 0x7feb352du;
    v = v ^ (v >> 15u);
    v = v * 0x846ca68bu;
    v = v ^ (v >> 16u);
    return v;
}

// Counter-based RNG: the same (seed, stream, index) always gives the same bits, so the backward
// pass regenerates the forward dropout mask instead of storing it.
fn rng_u32(seed: u32, stream: u32, idx: u32) -> u32 {
    return hash_u32(idx ^ hash_u32(stream ^ hash_u32(seed)));
}

// Keep an element when its bits are >= threshold (threshold = floor(p_drop * 2^32)).
fn keep_mask(seed: u32, stream: u32, idx: u32, threshold: u32) -> bool {
    return rng_u32(seed, stream, idx) >= threshold;
}

// tanh that cannot overflow to NaN for large |x| (some drivers compute (e^2x-1)/(e^2x+1)).
fn tanh_f32(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= 0.0);
}

// Workgroup tree reduction (sum or max) over the first n lanes, n a power of two <= 256; every
// lane gets the result. Shared by the row kernels (softmax, attention, layernorm, losses, norms).
var<workgroup> wg_red: array<f32, 256>;

fn wg_reduce(v: f32, t: u32, n: u32, is_max: bool) -> f32 {
    wg_red[t] = v;
    workgroupBarrier();
    for (var o = n / 2u; o > 0u; o = o >> 1u) {
        if (t < o) {
            wg_red[t] = select(wg_red[t] + wg_red[t + o], max(wg_red[t], wg_red[t + o]), is_max);
        }
        workgroupBarrier();
    }
    let r = wg_red[0];
    workgroupBarrier();
    return r;
}
