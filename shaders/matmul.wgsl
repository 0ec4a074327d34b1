// matmul.wgsl — C = alpha * op(A) op(B) (+ bias) (+ GELU/tanh) (+ beta * C), batched and strided.
// Entry point: `matmul`. Transposes are strides: A(m,k) = a[a_off + b1*a_bs1 + b2*a_bs2 + m*a_rs +
// k*a_cs], likewise B(k,n) and C(m,n) (C's column stride is 1). Two batch levels (b1, b2) cover
// [batch, heads] views of [B, T, H] activations without copies.
// Thread mapping: workgroup 16x16 computes a 64x64 tile of C; each thread owns the 4x4 block at
// rows 4ty.., cols 4tx.. as 4 vec4 accumulators, fed per k by one vec4 of A and one of B from
// k-major workgroup memory (2 shared loads per 16 FMAs). K in steps of 16.
// grid = (ceil(N/64), ceil(M/64), batch1*batch2).
// Overrides: HAS_BIAS adds bias[bias_off + n]; STORE_PRE writes the value before the activation to
// `pre` (same layout as C, for the GELU backward); ACT 0 none, 1 GELU (erf), 2 tanh. ROUND_F16
// rounds A and B to f16 as they are staged: the f16 path's products (matmul_coop.wgsl) computed
// in fp32, for adapters without cooperative matrices and as the oracle for that kernel.
// Split-K (k_chunk > 0, unbatched only): workgroup layer z sums k in [z*k_chunk, (z+1)*k_chunk) and
// writes alpha * its partial product, raw, to slice z of C (a scratch [splits, m, n], c_bs1 = m*n);
// `splitk_reduce` then sums the slices into the real C with the epilogue. For long K and few
// output tiles (the masked-token decoder's input gradient: 80 x 64 x 30522 is one 128 tile).
// The backward of a matmul is two more matmuls (dA = dC op(B)^T, dB = op(A)^T dC), see ops/matmul.rs.

override HAS_BIAS: bool = false;
override STORE_PRE: bool = false;
override ACT: u32 = 0u;
override ROUND_F16: bool = false;
// matmul128 only, set by the launcher when the operand is contiguous along k (A) or n (B) with
// offsets and strides that are multiples of 4: each thread reads its share as one vec4
override A_VEC: bool = false;
override B_VEC: bool = false;

// x rounded to the nearest f16 (ties to even), kept as f32, with integer arithmetic (on lavapipe
// pack2x16float/unpack2x16float made the whole kernel 2x slower): normal range by rounding the
// mantissa to 10 bits, f16's subnormal range to multiples of 2^-24, and beyond 65504 +-inf as a
// real conversion gives.
fn round_f16(x: f32) -> f32 {
    let ax = abs(x);
    if (ax >= 65520.0) { return bitcast<f32>(select(0x7f800000u, 0xff800000u, x < 0.0)); }
    if (ax < 6.103515625e-5) { return round(x * 16777216.0) * 5.9604644775390625e-8; }
    let u = bitcast<u32>(x);
    return bitcast<f32>((u + 0x0fffu + ((u >> 13u) & 1u)) & 0xffffe000u);
}

struct Params {
    m: u32, n: u32, k: u32, batch2: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs1: u32,
    a_bs2: u32, b_off: u32, b_rs: u32, b_cs: u32,
    b_bs1: u32, b_bs2: u32, c_off: u32, c_rs: u32,
    c_bs1: u32, c_bs2: u32, bias_off: u32, pre_off: u32,
    alpha: f32, beta: f32, k_chunk: u32, splits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;
// a and b again as vec4s, for matmul128's 16-byte loads (A_VEC / B_VEC)
@group(0) @binding(6) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> b4: array<vec4<f32>>;

// What workgroup layer z works on: the operands' base offsets and its k range. Layer z is a
// (batch1, batch2) pair, or with split-K a k range and scratch slice z.
struct Split { abase: u32, bbase: u32, cbase: u32, kb: u32, ke: u32 }

fn split(z: u32) -> Split {
    var b1 = z;
    var b2 = 0u;
    var kb = 0u;
    var ke = p.k;
    if (p.k_chunk == 0u) {
        b1 = z / p.batch2;
        b2 = z % p.batch2;
    } else {
        kb = z * p.k_chunk;
        ke = min(p.k, kb + p.k_chunk);
    }
    return Split(p.a_off + b1 * p.a_bs1 + b2 * p.a_bs2, p.b_off + b1 * p.b_bs1 + b2 * p.b_bs2, b1 * p.c_bs1 + b2 * p.c_bs2, kb, ke);
}

// Which (k, group of 4 rows) of A and (k, group of 4 columns) of B thread `tid` stages, for a
// K step of `tk` and 256 / tk groups: consecutive threads walk each operand's contiguous
// dimension so global reads coalesce (k for row-major A and for B = W^T, rows for A^T, columns
// for row-major B). Returns (ak, ag, bk, bg).
fn stage_map(tid: u32, tk: u32) -> vec4<u32> {
    let groups = 256u / tk;
    let a_m_fast = p.a_rs == 1u && p.a_cs != 1u;
    let b_n_fast = p.b_cs == 1u && p.b_rs != 1u;
    return vec4<u32>(select(tid % tk, tid / groups, a_m_fast), select(tid / tk, tid % groups, a_m_fast),
                     select(tid % tk, tid / groups, b_n_fast), select(tid / tk, tid % groups, b_n_fast));
}

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> sa: array<vec4<f32>, 256>; // [TK][16]: 4 consecutive rows of A at one k
var<workgroup> sb: array<vec4<f32>, 256>; // [TK][16]: 4 consecutive columns of B at one k

@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let sp = split(wid.z);
    let abase = sp.abase;
    let bbase = sp.bbase;
    let cbase = sp.cbase;
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    let st = stage_map(tid, TK);
    let ak = st.x;
    let ag = st.y;
    let bk = st.z;
    let bg = st.w;
    for (var k0 = sp.kb; k0 < sp.ke; k0 += TK) {
        let ke = sp.ke;
        let ka = k0 + ak;
        let r = m0 + ag * 4u;
        sa[ak * 16u + ag] = vec4<f32>(load_a(abase, r, ka, ke), load_a(abase, r + 1u, ka, ke), load_a(abase, r + 2u, ka, ke), load_a(abase, r + 3u, ka, ke));
        let kb = k0 + bk;
        let c = n0 + bg * 4u;
        sb[bk * 16u + bg] = vec4<f32>(load_b(bbase, kb, c, ke), load_b(bbase, kb, c + 1u, ke), load_b(bbase, kb, c + 2u, ke), load_b(bbase, kb, c + 3u, ke));
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = sa[kk * 16u + lid.y];
            let bv = sb[kk * 16u + lid.x];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = m0 + lid.y * 4u + i;
        if (row >= p.m) { continue; }
        let v4 = acc[i];
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + lid.x * 4u + j;
            if (col >= p.n) { continue; }
            let ci = cbase + row * p.c_rs + col;
            var v = p.alpha * v4[j];
            if (p.k_chunk != 0u) { c[p.c_off + ci] = v; continue; }
            if (HAS_BIAS) { v += bias[p.bias_off + col]; }
            if (STORE_PRE) { pre[p.pre_off + ci] = v; }
            if (ACT == 1u) { v = gelu_f32(v); } else if (ACT == 2u) { v = tanh_f32(v); }
            if (p.beta != 0.0) { v += p.beta * c[p.c_off + ci]; }
            c[p.c_off + ci] = v;
        }
    }
}

// matmul128 — the same contract as `matmul`, register-tiled for large problems: a workgroup of
// 16x16 threads computes a 128x128 tile of C; each thread owns 8x8 outputs, rows ty*4 + {0..3} and
// 64 + ty*4 + {0..3}, columns likewise, held as 16 vec4 accumulators (no dynamically indexed
// registers). K goes in steps of 8 through workgroup memory, k-major so each thread reads its 8 A
// values and 8 B values as four vec4s. 8 + 8 shared loads feed 64 FMAs (the 64x64 kernel: 8 for 16).
// grid = (ceil(N/128), ceil(M/128), batch1*batch2). Auto picks it unless padding costs > 15 %.
// A_VEC / B_VEC: the operand is read with 16-byte loads through the vec4 views at bindings 6/7
// (scalar loads where a vec4 would cross an edge); the launcher sets them when alignment allows.
// The epilogue is written out again here on purpose: moving it into a shared function cost 2-4 % on
// lavapipe at 1024^3 for both kernels (measured back to back, cargo bench --bench kernels).
const T2: u32 = 128u;
const TK2: u32 = 8u;
var<workgroup> sa2: array<vec4<f32>, 256>; // [TK2][T2 / 4]
var<workgroup> sb2: array<vec4<f32>, 256>;

fn round4(v: vec4<f32>) -> vec4<f32> {
    if (ROUND_F16) { return vec4<f32>(round_f16(v.x), round_f16(v.y), round_f16(v.z), round_f16(v.w)); }
    return v;
}

fn load_a(abase: u32, row: u32, k: u32, ke: u32) -> f32 {
    if (row < p.m && k < ke) {
        let v = a[abase + row * p.a_rs + k * p.a_cs];
        if (ROUND_F16) { return round_f16(v); }
        return v;
    }
    return 0.0;
}

fn load_b(bbase: u32, k: u32, col: u32, ke: u32) -> f32 {
    if (col < p.n && k < ke) {
        let v = b[bbase + k * p.b_rs + col * p.b_cs];
        if (ROUND_F16) { return round_f16(v); }
        return v;
    }
    return 0.0;
}

@compute @workgroup_size(16, 16, 1)
fn matmul128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let sp = split(wid.z);
    let abase = sp.abase;
    let bbase = sp.bbase;
    let cbase = sp.cbase;
    let m0 = wid.y * T2;
    let n0 = wid.x * T2;
    let tid = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    // a thread stages 4 consecutive rows (A) or columns (B) at one k: 32 groups x 8 k per tile
    let st = stage_map(tid, TK2);
    let ak = st.x;
    let ag = st.y;
    let bk = st.z;
    let bg = st.w;
    for (var k0 = sp.kb; k0 < sp.ke; k0 += TK2) {
        let ke = sp.ke;
        let ka = k0 + ak;
        let r = m0 + ag * 4u;
        if (A_VEC) {
            // row tid/2, k0 + 4*(tid%2) .. +3 in one read; scattered into the k-major tile
            let row = tid / 2u;
            let kq = k0 + 4u * (tid % 2u);
            let rr = m0 + row;
            var v: vec4<f32>;
            if (rr < p.m && kq + 3u < ke) {
                v = round4(a4[(abase + rr * p.a_rs + kq) / 4u]);
            } else {
                v = vec4<f32>(load_a(abase, rr, kq, ke), load_a(abase, rr, kq + 1u, ke), load_a(abase, rr, kq + 2u, ke), load_a(abase, rr, kq + 3u, ke));
            }
            for (var j = 0u; j < 4u; j++) { sa2[(4u * (tid % 2u) + j) * 32u + row / 4u][row % 4u] = v[j]; }
        } else {
            sa2[ak * 32u + ag] = vec4<f32>(load_a(abase, r, ka, ke), load_a(abase, r + 1u, ka, ke), load_a(abase, r + 2u, ka, ke), load_a(abase, r + 3u, ka, ke));
        }
        if (B_VEC) {
            // k0 + tid/32, columns 4*(tid%32) .. +3 in one read
            let kv = k0 + tid / 32u;
            let cv = n0 + 4u * (tid % 32u);
            var v: vec4<f32>;
            if (kv < ke && cv + 3u < p.n) {
                v = round4(b4[(bbase + kv * p.b_rs + cv) / 4u]);
            } else {
                v = vec4<f32>(load_b(bbase, kv, cv, ke), load_b(bbase, kv, cv + 1u, ke), load_b(bbase, kv, cv + 2u, ke), load_b(bbase, kv, cv + 3u, ke));
            }
            sb2[tid] = v;
        } else {
            let kb = k0 + bk;
            let c = n0 + bg * 4u;
            sb2[bk * 32u + bg] = vec4<f32>(load_b(bbase, kb, c, ke), load_b(bbase, kb, c + 1u, ke), load_b(bbase, kb, c + 2u, ke), load_b(bbase, kb, c + 3u, ke));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK2; kk++) {
            let a0 = sa2[kk * 32u + lid.y];
            let a1 = sa2[kk * 32u + 16u + lid.y];
            let bv0 = sb2[kk * 32u + lid.x];
            let bv1 = sb2[kk * 32u + 16u + lid.x];
            acc[0] += a0.x * bv0; acc[1] += a0.x * bv1;
            acc[2] += a0.y * bv0; acc[3] += a0.y * bv1;
            acc[4] += a0.z * bv0; acc[5] += a0.z * bv1;
            acc[6] += a0.w * bv0; acc[7] += a0.w * bv1;
            acc[8] += a1.x * bv0; acc[9] += a1.x * bv1;
            acc[10] += a1.y * bv0; acc[11] += a1.y * bv1;
            acc[12] += a1.z * bv0; acc[13] += a1.z * bv1;
            acc[14] += a1.w * bv0; acc[15] += a1.w * bv1;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let row = m0 + select(lid.y * 4u + i, 64u + lid.y * 4u + (i - 4u), i >= 4u);
        if (row >= p.m) { continue; }
        for (var h = 0u; h < 2u; h++) {
            let v4 = acc[i * 2u + h];
            for (var j = 0u; j < 4u; j++) {
                let col = n0 + h * 64u + lid.x * 4u + j;
                if (col >= p.n) { continue; }
                let ci = cbase + row * p.c_rs + col;
                var v = p.alpha * v4[j];
                if (p.k_chunk != 0u) { c[p.c_off + ci] = v; continue; }
                if (HAS_BIAS) { v += bias[p.bias_off + col]; }
                if (STORE_PRE) { pre[p.pre_off + ci] = v; }
                if (ACT == 1u) { v = gelu_f32(v); } else if (ACT == 2u) { v = tanh_f32(v); }
                if (p.beta != 0.0) { v += p.beta * c[p.c_off + ci]; }
                c[p.c_off + ci] = v;
            }
        }
    }
}

// matmul_small — the same contract for few rows: the decode step's 2 rows per sequence and the
// masked rows' vocabulary projection, where the 64 tile would compute 64 rows for 2-16 real ones.
// No workgroup memory and no barriers: thread x of a 64-thread workgroup owns an 8-row tile at
// columns n0 + x + 64j, j < 4 (8 vec4 accumulators, one per row, over its 4 columns) and walks k
// four at a time, reading its 4 B columns and the 8 A rows (the same for every thread of the
// workgroup, so they come from cache) as vec4s along k: 16-byte loads through bindings 6/7 where
// the launcher found the operand k-contiguous and aligned (A_VEC; BK_VEC for B = W^T, the Linear
// layout), else scalars. Each A vec4 feeds 4 columns. On lavapipe each barrier costs about a
// microsecond per 8 invocations, which made a staged version no faster than the 64 tile
// (docs/performance.md). grid = (ceil(N/256), ceil(M/8), batch1*batch2). Auto picks it when its
// padded work is at most half the 64 tile's (M <= 32 for wide N). The epilogue is written out
// again, as in matmul128 and for the same reason.
override BK_VEC: bool = false;
const TSM: u32 = 8u;

fn a_k4(abase: u32, row: u32, k: u32, ke: u32) -> vec4<f32> {
    if (A_VEC && row < p.m) { return round4(a4[(abase + row * p.a_rs + k) / 4u]); }
    return vec4<f32>(load_a(abase, row, k, ke), load_a(abase, row, k + 1u, ke), load_a(abase, row, k + 2u, ke), load_a(abase, row, k + 3u, ke));
}

fn b_k4(bbase: u32, k: u32, col: u32, ke: u32) -> vec4<f32> {
    if (BK_VEC) {
        if (col < p.n) { return round4(b4[(bbase + k + col * p.b_cs) / 4u]); }
        return vec4<f32>(0.0);
    }
    return vec4<f32>(load_b(bbase, k, col, ke), load_b(bbase, k + 1u, col, ke), load_b(bbase, k + 2u, col, ke), load_b(bbase, k + 3u, col, ke));
}

// row r's contribution over 4 k to the thread's 4 columns
fn dot4(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
}

@compute @workgroup_size(64, 1, 1)
fn matmul_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let sp = split(wid.z);
    let m0 = wid.y * TSM;
    let c0 = wid.x * 256u + lid.x;
    if (c0 >= p.n) { return; }
    let ab = sp.abase;
    let bb = sp.bbase;
    let ke = sp.ke;
    let two = p.m - m0 > 4u;
    var r0 = vec4<f32>(0.0); var r1 = vec4<f32>(0.0); var r2 = vec4<f32>(0.0); var r3 = vec4<f32>(0.0);
    var r4 = vec4<f32>(0.0); var r5 = vec4<f32>(0.0); var r6 = vec4<f32>(0.0); var r7 = vec4<f32>(0.0);
    var k = sp.kb;
    loop {
        if (k >= ke) { break; }
        if (k % 4u == 0u && k + 3u < ke) {
            let b0 = b_k4(bb, k, c0, ke);
            let b1 = b_k4(bb, k, c0 + 64u, ke);
            let b2 = b_k4(bb, k, c0 + 128u, ke);
            let b3 = b_k4(bb, k, c0 + 192u, ke);
            r0 += dot4(a_k4(ab, m0, k, ke), b0, b1, b2, b3);
            r1 += dot4(a_k4(ab, m0 + 1u, k, ke), b0, b1, b2, b3);
            r2 += dot4(a_k4(ab, m0 + 2u, k, ke), b0, b1, b2, b3);
            r3 += dot4(a_k4(ab, m0 + 3u, k, ke), b0, b1, b2, b3);
            if (two) {
                r4 += dot4(a_k4(ab, m0 + 4u, k, ke), b0, b1, b2, b3);
                r5 += dot4(a_k4(ab, m0 + 5u, k, ke), b0, b1, b2, b3);
                r6 += dot4(a_k4(ab, m0 + 6u, k, ke), b0, b1, b2, b3);
                r7 += dot4(a_k4(ab, m0 + 7u, k, ke), b0, b1, b2, b3);
            }
            k += 4u;
        } else {
            let bs = vec4<f32>(load_b(bb, k, c0, ke), load_b(bb, k, c0 + 64u, ke), load_b(bb, k, c0 + 128u, ke), load_b(bb, k, c0 + 192u, ke));
            r0 += load_a(ab, m0, k, ke) * bs;
            r1 += load_a(ab, m0 + 1u, k, ke) * bs;
            r2 += load_a(ab, m0 + 2u, k, ke) * bs;
            r3 += load_a(ab, m0 + 3u, k, ke) * bs;
            if (two) {
                r4 += load_a(ab, m0 + 4u, k, ke) * bs;
                r5 += load_a(ab, m0 + 5u, k, ke) * bs;
                r6 += load_a(ab, m0 + 6u, k, ke) * bs;
                r7 += load_a(ab, m0 + 7u, k, ke) * bs;
            }
            k += 1u;
        }
    }
    let rows = array<vec4<f32>, 8>(r0, r1, r2, r3, r4, r5, r6, r7);
    for (var i = 0u; i < TSM; i++) {
        let row = m0 + i;
        if (row >= p.m) { return; }
        for (var j = 0u; j < 4u; j++) {
            let col = c0 + 64u * j;
            if (col >= p.n) { continue; }
            let ci = sp.cbase + row * p.c_rs + col;
            var v = p.alpha * rows[i][j];
            if (p.k_chunk != 0u) { c[p.c_off + ci] = v; continue; }
            if (HAS_BIAS) { v += bias[p.bias_off + col]; }
            if (STORE_PRE) { pre[p.pre_off + ci] = v; }
            if (ACT == 1u) { v = gelu_f32(v); } else if (ACT == 2u) { v = tanh_f32(v); }
            if (p.beta != 0.0) { v += p.beta * c[p.c_off + ci]; }
            c[p.c_off + ci] = v;
        }
    }
}

// splitk_reduce — C = sum over the `splits` slices of the scratch (bound as `a`, [splits, m, n])
// with the usual epilogue (bias, pre, activation, beta). One thread per element of C, 256 per
// workgroup, grid = grid(ceil(m*n / 256)).
@compute @workgroup_size(256, 1, 1)
fn splitk_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = lin_wg(wid, nwg) * 256u + lid.x;
    let mn = p.m * p.n;
    if (i >= mn) { return; }
    let row = i / p.n;
    let col = i % p.n;
    var v = 0.0;
    for (var z = 0u; z < p.splits; z++) { v += a[p.a_off + z * mn + i]; }
    let ci = row * p.c_rs + col;
    if (HAS_BIAS) { v += bias[p.bias_off + col]; }
    if (STORE_PRE) { pre[p.pre_off + ci] = v; }
    if (ACT == 1u) { v = gelu_f32(v); } else if (ACT == 2u) { v = tanh_f32(v); }
    if (p.beta != 0.0) { v += p.beta * c[p.c_off + ci]; }
    c[p.c_off + ci] = v;
}
