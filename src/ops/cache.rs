//! Key/value cache writes for the decode plan (shaders/cache.wgsl): rows of a strided source (the
//! K or V columns of a fused [n, 3H] QKV buffer) scattered to cache rows named by a u32 index
//! buffer, so the position a step writes at is data, not a rebuilt dispatch. It has no backward:
//! decoding does not train. Reordering beams gathers whole cache rows with `embedding::gather`.
use super::{check_len, grid_elems};
use crate::ensure_shape;
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    src_off: u32,
    src_rs: u32,
    dst_off: u32,
    dst_rs: u32,
    idx_off: u32,
    dst_rows: u32,
}
super::uniform_layout!(Params { rows, cols, src_off, src_rs, dst_off, dst_rs, idx_off, dst_rows });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];

/// Rows of a matrix: element (r, c) at `off + r * rs + c` of `t`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub rs: usize,
}

/// dst row idx[r] = src row r, for r < rows, `cols` columns; `dst_rows` rows fit in `dst`.
pub fn scatter_rows(gpu: &Gpu, src: Rows, idx: &Tensor, dst: Rows, rows: usize, cols: usize, dst_rows: usize) -> Result<Dispatch> {
    ensure_shape!("scatter_rows", rows * cols > 0 && cols <= src.rs && cols <= dst.rs, "rows {rows}, cols {cols}, strides {} / {}", src.rs, dst.rs);
    check_len("scatter_rows", "src", src.t, src.off + (rows - 1) * src.rs + cols)?;
    check_len("scatter_rows", "idx", idx, rows)?;
    check_len("scatter_rows", "dst", dst.t, dst.off + (dst_rows - 1) * dst.rs + cols)?;
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        src_off: src.t.off() + src.off as u32,
        src_rs: src.rs as u32,
        dst_off: dst.t.off() + dst.off as u32,
        dst_rs: dst.rs as u32,
        idx_off: idx.off(),
        dst_rows: dst_rows as u32,
    };
    Ok(Dispatch::new(gpu, &KernelSpec::new("cache", "scatter_rows", BINDS), &p, &[src.t, idx, dst.t], grid_elems(rows * cols))?
        .cost(0.0, 8.0 * (rows * cols) as f64))
}

pub mod cpu {
    /// The reference: dst[idx[r] * dst_rs + c] = src[r * src_rs + c]; out-of-range rows dropped.
    pub fn scatter_rows(src: &[f32], src_rs: usize, idx: &[u32], dst: &mut [f32], dst_rs: usize, cols: usize, dst_rows: usize) {
        for (r, &d) in idx.iter().enumerate() {
            if (d as usize) < dst_rows {
                for c in 0..cols {
                    dst[d as usize * dst_rs + c] = src[r * src_rs + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::*;

    #[test]
    fn scatter_rows_matches_cpu_with_strides_offsets_and_a_bad_index() {
        let g = gpu();
        let (rows, cols, src_rs, dst_rs, dst_rows) = (7, 33, 3 * 33, 40, 13);
        let mut r = Rng::new(5);
        let src = r.vec(rows * src_rs, 1.0);
        let mut idx: Vec<u32> = vec![12, 0, 5, 3, 9, 1, 7];
        idx[4] = 99; // out of range: dropped by both
        let before = r.vec(dst_rows * dst_rs, 1.0);
        let s = g.upload_f32("src", &[src.len()], &src).unwrap();
        let it = g.upload_u32("idx", &[rows], &idx).unwrap();
        let d = g.upload_f32("dst", &[before.len()], &before).unwrap();
        // the K columns (offset 33) of a fused QKV-like source
        let disp = scatter_rows(g, Rows { t: &s, off: 33, rs: src_rs }, &it, Rows { t: &d, off: 0, rs: dst_rs }, rows, cols, dst_rows).unwrap();
        g.run([&disp]).unwrap();
        let mut want = before.clone();
        cpu::scatter_rows(&src[33..], src_rs, &idx, &mut want, dst_rs, cols, dst_rows);
        assert_ne!(want, before, "the reference wrote nothing");
        assert_eq!(g.read_f32(&d).unwrap(), want);
    }
}
