//! Segmented row copies (shaders/rows.wgsl): place [B, T, H] text and [B, R, H] region embeddings
//! into the [B, T+R, H] sequence (with the embedding dropout fused) and take gradients back out.
//! The backward of `place` is `take` with the same segment, stride, p and stream.
use super::{check_len, dropout_threshold, grid_elems};
use crate::ensure_shape;
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    seg: u32,
    src_off: u32,
    src_stride: u32,
    dst_off: u32,
    dst_stride: u32,
    threshold: u32,
    stream: u32,
    keep_scale: f32,
    acc: f32,
    _p0: u32,
}
super::uniform_layout!(Params { rows, cols, seg, src_off, src_stride, dst_off, dst_stride, threshold, stream, keep_scale, acc, _p0 });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::ReadWrite, Access::Read];

/// A segment of `seg` rows per batch element, at row `at` of every `stride`-row block of the sequence.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub batch: usize,
    pub seg: usize,
    pub stride: usize,
    pub at: usize,
    pub cols: usize,
}

fn launch(
    gpu: &Gpu,
    s: &Segment,
    src: &Tensor,
    src_off: usize,
    src_stride: usize,
    dst: &Tensor,
    dst_off: usize,
    dst_stride: usize,
    seed: &Tensor,
    p: f32,
    stream: u32,
    acc: bool,
) -> Result<Dispatch> {
    ensure_shape!("rows", s.at + s.seg <= s.stride && s.batch * s.seg * s.cols > 0, "segment {:?} does not fit", s);
    let (threshold, keep_scale) = dropout_threshold(p);
    let n = s.batch * s.seg * s.cols;
    check_len("rows", "src", src, src_off + ((s.batch - 1) * src_stride + s.seg) * s.cols)?;
    check_len("rows", "dst", dst, dst_off + ((s.batch - 1) * dst_stride + s.seg) * s.cols)?;
    let prm = Params {
        rows: (s.batch * s.seg) as u32,
        cols: s.cols as u32,
        seg: s.seg as u32,
        src_off: src.off() + src_off as u32,
        src_stride: src_stride as u32,
        dst_off: dst.off() + dst_off as u32,
        dst_stride: dst_stride as u32,
        threshold,
        stream,
        keep_scale,
        acc: acc as u32 as f32,
        _p0: 0,
    };
    Ok(Dispatch::new(gpu, &KernelSpec::new("rows", "copy_rows", BINDS), &prm, &[src, dst, seed], grid_elems(n))?.cost(0.0, 8.0 * n as f64))
}

/// seq[b, at + t] = dropout(part[b, t]): part [B, seg, cols] into seq [B, stride, cols].
pub fn place(gpu: &Gpu, s: &Segment, part: &Tensor, seq: &Tensor, seed: &Tensor, p: f32, stream: u32) -> Result<Dispatch> {
    launch(gpu, s, part, 0, s.seg, seq, s.at * s.cols, s.stride, seed, p, stream, false)
}

/// dpart[b, t] (+)= dropout(dseq[b, at + t]): the backward of `place`.
pub fn take(gpu: &Gpu, s: &Segment, dseq: &Tensor, dpart: &Tensor, seed: &Tensor, p: f32, stream: u32, accumulate: bool) -> Result<Dispatch> {
    launch(gpu, s, dseq, s.at * s.cols, s.stride, dpart, 0, s.seg, seed, p, stream, accumulate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn place_then_take_round_trips_with_the_same_dropout_mask() {
        let g = gpu();
        let (b, t, r, h) = (3, 5, 4, 7);
        let s = t + r;
        let mut rng = Rng::new(80);
        let text: Vec<f32> = rng.vec(b * t * h, 1.0).iter().map(|v| v + 2.0).collect();
        let img = rng.vec(b * r * h, 1.0);
        let (tt, it) = (g.upload_f32("t", &[b * t * h], &text).unwrap(), g.upload_f32("i", &[b * r * h], &img).unwrap());
        let seq = g.zeros("seq", &[b * s * h], DType::F32).unwrap();
        let seed = g.upload_u32("seed", &[1], &[5]).unwrap();
        let st = Segment { batch: b, seg: t, stride: s, at: 0, cols: h };
        let si = Segment { batch: b, seg: r, stride: s, at: t, cols: h };
        g.run([&place(g, &st, &tt, &seq, &seed, 0.2, 3).unwrap(), &place(g, &si, &it, &seq, &seed, 0.0, 4).unwrap()]).unwrap();
        let got = g.read_f32(&seq).unwrap();
        let dropped = crate::ops::dropout::cpu::dropout(&text, 5, 0.2, 3);
        for bb in 0..b {
            for k in 0..t * h {
                assert_eq!(got[bb * s * h + k], dropped[bb * t * h + k], "text b{bb} k{k}");
            }
            for k in 0..r * h {
                assert_eq!(got[(bb * s + t) * h + k], img[bb * r * h + k], "img b{bb} k{k}");
            }
        }
        // backward of the text placement on dseq = seq: mask applied twice, scale twice
        let back = g.zeros("back", &[b * t * h], DType::F32).unwrap();
        g.run([&take(g, &st, &seq, &back, &seed, 0.2, 3, false).unwrap()]).unwrap();
        let want = crate::ops::dropout::cpu::dropout(&dropped, 5, 0.2, 3);
        assert_close("take", &g.read_f32(&back).unwrap(), &want, 1e-6, 1e-6);
    }
}
