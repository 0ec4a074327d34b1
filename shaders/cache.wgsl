// cache.wgsl — writes rows into a key/value cache at rows named by an index buffer.
// Entry point: scatter_rows. Thread i = (r, c) copies src[src_off + r * src_rs + c] to
// dst[dst_off + idx[r] * dst_rs + c]. The decode plan's dispatches are prepared once: which cache
// rows a step writes (the growing prefix position) lives in `idx`, rewritten on the GPU buffer per
// step, so nothing is rebuilt. One thread per element. (Reordering beams is a gather:
// embedding.wgsl's `gather` with the source-row index.)

struct Params {
    rows: u32, cols: u32, src_off: u32, src_rs: u32,
    dst_off: u32, dst_rs: u32, idx_off: u32, dst_rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn scatter_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = lin_wg(wid, nwg) * 256u + lid.x;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let d = idx[p.idx_off + r];
    // a bad index is dropped, never written out of bounds (the host checks indices too)
    if (d >= p.dst_rows) { return; }
    dst[p.dst_off + d * p.dst_rs + c] = src[p.src_off + r * p.src_rs + c];
}
