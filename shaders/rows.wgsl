// rows.wgsl — copies rows between segmented layouts, with optional dropout and accumulation.
// Entry point: copy_rows. Logical row r = (b, t) with b = r / seg, t = r % seg reads source row
// b * src_stride + t and writes destination row b * dst_stride + t: it places [B, T, H] text and
// [B, R, H] region embeddings into the [B, T+R, H] sequence, and (with strides swapped) takes the
// gradient back out. Dropout uses the logical index r * cols + c in both directions, so forward and
// backward draw the same mask. One thread per element.

struct Params {
    rows: u32, cols: u32, seg: u32, src_off: u32,
    src_stride: u32, dst_off: u32, dst_stride: u32, threshold: u32,
    stream: u32, keep_scale: f32, acc: f32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> seed: array<u32>;

@compute @workgroup_size(256, 1, 1)
fn copy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = lin_wg(wid, nwg) * 256u + lid.x;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let b = r / p.seg;
    let t = r % p.seg;
    var v = src[p.src_off + (b * p.src_stride + t) * p.cols + c];
    if (p.threshold != 0u) {
        v = select(0.0, v * p.keep_scale, keep_mask(seed[0], p.stream, i, p.threshold));
    }
    let o = p.dst_off + (b * p.dst_stride + t) * p.cols + c;
    if (p.acc != 0.0) { v += p.acc * dst[o]; }
    dst[o] = v;
}
