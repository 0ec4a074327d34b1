// embedding.wgsl — row gather and its deterministic backward.
// Entry points:
//   gather: out[r, c] = acc * out[r, c] + table[ids[r], c]. acc = 1 sums word + position + type
//     embeddings into one buffer. Ids outside [0, vocab) read as a zero row (the host validates
//     ids before upload; this only keeps a bad id from reading out of bounds). One thread per element.
//   scatter_add: dtable[id, c] += sum of dout[r, c] over the rows r with ids[r] = id, in increasing r.
//     No atomics: the host builds a CSR index (ops/embedding.rs, EmbeddingGradIndex) laid out as
//     idx = [U, start[0..=U] (padded to N+1), rows[N], uniq[N]]; one workgroup per unique id
//     (x/y grid) and column block of 64 (z). Workgroups past U exit, so the grid is fixed per shape.

struct Params {
    rows: u32, cols: u32, vocab: u32, ids_off: u32,
    tab_off: u32, out_off: u32, acc: f32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;   // ids (gather) or the CSR index (scatter)
@group(0) @binding(2) var<storage, read> src: array<f32>;   // table (gather) or dout (scatter)
@group(0) @binding(3) var<storage, read_write> dst: array<f32>; // out (gather) or dtable (scatter)

@compute @workgroup_size(256, 1, 1)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = lin_wg(wid, nwg) * 256u + lid.x;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let id = ids[p.ids_off + r];
    var v = 0.0;
    if (id < p.vocab) { v = src[p.tab_off + id * p.cols + c]; }
    let o = p.out_off + i;
    if (p.acc != 0.0) { v += p.acc * dst[o]; }
    dst[o] = v;
}

@compute @workgroup_size(64, 1, 1)
fn scatter_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let u = wid.x + wid.y * nwg.x;
    let n = p.rows;
    let base = p.ids_off;
    if (u >= ids[base]) { return; }
    let c = wid.z * 64u + lid.x;
    if (c >= p.cols) { return; }
    let start = ids[base + 1u + u];
    let end = ids[base + 2u + u];
    let id = ids[base + n + 2u + n + u];
    var s = 0.0;
    for (var k = start; k < end; k++) {
        let r = ids[base + n + 2u + k];
        s += src[p.out_off + r * p.cols + c];
    }
    let o = p.tab_off + id * p.cols + c;
    dst[o] = dst[o] + s;
}
