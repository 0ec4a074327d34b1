enable f16;
enable wgpu_cooperative_matrix;
// matmul_coop.wgsl — the `matmul` contract (matmul.wgsl: strides, two batch levels, bias / pre /
// GELU / tanh / beta epilogue) on cooperative matrices: f16 products, f32 accumulation.
// Entry point: `matmul_coop`. Compiled only where the adapter has EXPERIMENTAL_COOPERATIVE_MATRIX
// with 16x16x16 f16 -> f32 and subgroups of 32 (NVIDIA); ops/matmul_coop.rs checks it against the
// fp32 kernel on first use and falls back if they disagree.
// Thread mapping: 128 threads = 4 subgroups of 32 compute a 64x64 tile of C; subgroup s owns the
// 32x32 quadrant (s / 2, s % 2) as 2x2 accumulators of 16x16. K goes in steps of 32: the
// workgroup reads the A (64x32) and B (32x64) tiles from f32 storage with the operands' own
// strides, rounds them to f16 into workgroup memory (rows padded by 16 bytes, so the matrix
// loads hit distinct banks), and each subgroup multiplies from there. The accumulators go through
// workgroup memory once more so the epilogue can be done per element with bounds checks.
// grid = (ceil(N/64), ceil(M/64), batch1*batch2).
// (wgpu-notes: storage names `A`/`B`/`C` would shadow the matrix roles; coopStoreT wants its
// index in a `let`.)

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

const SA: u32 = 40u; // row stride of the staged A tile [64 m][32 k + 8]
const SB: u32 = 72u; // row stride of the staged B tile [32 k][64 n + 8]
const SC: u32 = 68u; // row stride of the accumulator tile [64 m][64 n + 4]
var<workgroup> ta: array<f16, 2560>;  // 64 * SA
var<workgroup> tb: array<f16, 2304>;  // 32 * SB
var<workgroup> tcc: array<f32, 4352>; // 64 * SC

@compute @workgroup_size(128, 1, 1)
fn matmul_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32,
               @builtin(subgroup_id) sid: u32) {
    let b1 = wid.z / p.batch2;
    let b2 = wid.z % p.batch2;
    let abase = p.a_off + b1 * p.a_bs1 + b2 * p.a_bs2;
    let bbase = p.b_off + b1 * p.b_bs1 + b2 * p.b_bs2;
    let cbase = b1 * p.c_bs1 + b2 * p.c_bs2;
    let m0 = wid.y * 64u;
    let n0 = wid.x * 64u;
    let wm = (sid / 2u) * 32u;
    let wn = (sid % 2u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    // consecutive threads walk the contiguous dimension of each operand (a uniform branch)
    let a_k_fast = p.a_cs == 1u;
    let b_n_fast = p.b_cs == 1u;
    for (var k0 = 0u; k0 < p.k; k0 += 32u) {
        for (var r = 0u; r < 16u; r++) {
            let e = tid + 128u * r;
            var am = e / 32u;
            var ak = e % 32u;
            if (!a_k_fast) { am = e % 64u; ak = e / 64u; }
            var av = 0.0;
            if (m0 + am < p.m && k0 + ak < p.k) { av = a[abase + (m0 + am) * p.a_rs + (k0 + ak) * p.a_cs]; }
            ta[am * SA + ak] = f16(av);
            var bn = e % 64u;
            var bk = e / 64u;
            if (!b_n_fast) { bk = e % 32u; bn = e / 32u; }
            var bv = 0.0;
            if (n0 + bn < p.n && k0 + bk < p.k) { bv = b[bbase + (k0 + bk) * p.b_rs + (n0 + bn) * p.b_cs]; }
            tb[bk * SB + bn] = f16(bv);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk += 16u) {
            let ia0 = wm * SA + kk;
            let ia1 = (wm + 16u) * SA + kk;
            let ib0 = kk * SB + wn;
            let ib1 = kk * SB + wn + 16u;
            let fa0 = coopLoadT<coop_mat16x16<f16, A>>(&ta[ia0], SA);
            let fa1 = coopLoadT<coop_mat16x16<f16, A>>(&ta[ia1], SA);
            let fb0 = coopLoadT<coop_mat16x16<f16, B>>(&tb[ib0], SB);
            let fb1 = coopLoadT<coop_mat16x16<f16, B>>(&tb[ib1], SB);
            c00 = coopMultiplyAdd(fa0, fb0, c00);
            c01 = coopMultiplyAdd(fa0, fb1, c01);
            c10 = coopMultiplyAdd(fa1, fb0, c10);
            c11 = coopMultiplyAdd(fa1, fb1, c11);
        }
        workgroupBarrier();
    }
    let i00 = wm * SC + wn;
    let i01 = wm * SC + wn + 16u;
    let i10 = (wm + 16u) * SC + wn;
    let i11 = (wm + 16u) * SC + wn + 16u;
    coopStoreT(c00, &tcc[i00], SC);
    coopStoreT(c01, &tcc[i01], SC);
    coopStoreT(c10, &tcc[i10], SC);
    coopStoreT(c11, &tcc[i11], SC);
    workgroupBarrier();
    for (var r = 0u; r < 32u; r++) {
        let e = tid + 128u * r;
        let row = m0 + e / 64u;
        let col = n0 + e % 64u;
        if (row >= p.m || col >= p.n) { continue; }
        let ci = cbase + row * p.c_rs + col;
        var v = p.alpha * tcc[(e / 64u) * SC + e % 64u];
        if (HAS_BIAS) { v += bias[p.bias_off + col]; }
        if (STORE_PRE) { pre[p.pre_off + ci] = v; }
        if (ACT == 1u) { v = gelu_f32(v); } else if (ACT == 2u) { v = tanh_f32(v); }
        if (p.beta != 0.0) { v += p.beta * c[p.c_off + ci]; }
        c[p.c_off + ci] = v;
    }
}
