// matmul.wgsl — C = alpha * op(A) op(B) (+ bias) (+ GELU/tanh) (+ beta * C), batched and strided.
// Entry point: `matmul`. Transposes are strides: A(m,k) = a[a_off + b1*a_bs1 + b2*a_bs2 + m*a_rs +
// k*a_cs], likewise B(k,n) and C(m,n) (C's column stride is 1). Two batch levels (b1, b2) cover
// [batch, heads] views of [B, T, H] activations without copies.
// Thread mapping: workgroup 16x16 computes a 64x64 tile of C; each thread owns a 4x4 block at
// rows ty + 16i, cols tx + 16j (strided so neighbours store neighbouring columns). K in steps of 16
// through workgroup memory. grid = (ceil(N/64), ceil(M/64), batch1*batch2).
// Overrides: HAS_BIAS adds bias[bias_off + n]; STORE_PRE writes the value before the activation to
// `pre` (same layout as C, for the GELU backward); ACT 0 none, 1 GELU (erf), 2 tanh.
// The backward of a matmul is two more matmuls (dA = dC op(B)^T, dB = op(A)^T dC), see ops/matmul.rs.

override HAS_BIAS: bool = false;
override STORE_PRE: bool = false;
override ACT: u32 = 0u;

struct Params {
    m: u32, n: u32, k: u32, batch2: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs1: u32,
    a_bs2: u32, b_off: u32, b_rs: u32, b_cs: u32,
    b_bs1: u32, b_bs2: u32, c_off: u32, c_rs: u32,
    c_bs1: u32, c_bs2: u32, bias_off: u32, pre_off: u32,
    alpha: f32, beta: f32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> sa: array<f32, 1024>; // [TK][TILE], k-major
var<workgroup> sb: array<f32, 1024>; // [TK][TILE]

@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b1 = wid.z / p.batch2;
    let b2 = wid.z % p.batch2;
    let abase = p.a_off + b1 * p.a_bs1 + b2 * p.a_bs2;
    let bbase = p.b_off + b1 * p.b_bs1 + b2 * p.b_bs2;
    let cbase = b1 * p.c_bs1 + b2 * p.c_bs2;
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var r = 0u; r < 4u; r++) {
            let e = tid + 256u * r;
            // A tile: consecutive threads walk k, which is contiguous for row-major A.
            let ak = e % TK;
            let am = e / TK;
            var av = 0.0;
            if (m0 + am < p.m && k0 + ak < p.k) {
                av = a[abase + (m0 + am) * p.a_rs + (k0 + ak) * p.a_cs];
            }
            sa[ak * TILE + am] = av;
            // B tile: consecutive threads walk n.
            let bn = e % TILE;
            let bk = e / TILE;
            var bv = 0.0;
            if (n0 + bn < p.n && k0 + bk < p.k) {
                bv = b[bbase + (k0 + bk) * p.b_rs + (n0 + bn) * p.b_cs];
            }
            sb[bk * TILE + bn] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av4: array<f32, 4>;
            var bv4: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av4[i] = sa[kk * TILE + lid.y + 16u * i];
                bv4[i] = sb[kk * TILE + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] += av4[i] * bv4[j];
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = m0 + lid.y + 16u * i;
        if (row >= p.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + lid.x + 16u * j;
            if (col >= p.n) { continue; }
            let ci = cbase + row * p.c_rs + col;
            var v = p.alpha * acc[i * 4u + j];
            if (HAS_BIAS) { v += bias[p.bias_off + col]; }
            if (STORE_PRE) { pre[p.pre_off + ci] = v; }
            if (ACT == 1u) { v = gelu_f32(v); } else if (ACT == 2u) { v = tanh_f32(v); }
            if (p.beta != 0.0) { v += p.beta * c[p.c_off + ci]; }
            c[p.c_off + ci] = v;
        }
    }
}
