//! Embedding lookup and its deterministic backward (shaders/embedding.wgsl). The backward needs no
//! atomics: the host, which built the batch and knows the ids, also builds a CSR index grouping
//! rows by id (`EmbeddingGradIndex`); the GPU sums each id's rows in increasing row order.
use super::check_len;
use crate::ensure_shape;
use crate::gpu::{grid, Access, Dispatch, Gpu, KernelSpec, Tensor};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    vocab: u32,
    ids_off: u32,
    tab_off: u32,
    out_off: u32,
    acc: f32,
    _p0: u32,
}
super::uniform_layout!(Params { rows, cols, vocab, ids_off, tab_off, out_off, acc, _p0 });

const BINDS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];

/// out[r] (+)= table[ids[r]] for r < rows; table [vocab, cols], ids u32 or i32 [rows].
pub fn gather(gpu: &Gpu, ids: &Tensor, table: &Tensor, out: &Tensor, rows: usize, vocab: usize, cols: usize, accumulate: bool) -> Result<Dispatch> {
    check_len("embedding", "ids", ids, rows)?;
    check_len("embedding", "table", table, vocab * cols)?;
    check_len("embedding", "out", out, rows * cols)?;
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        vocab: vocab as u32,
        ids_off: ids.off(),
        tab_off: table.off(),
        out_off: out.off(),
        acc: accumulate as u32 as f32,
        _p0: 0,
    };
    Ok(Dispatch::new(gpu, &KernelSpec::new("embedding", "gather", BINDS), &p, &[ids, table, out], super::grid_elems(rows * cols))?
        .cost(0.0, 8.0 * (rows * cols) as f64))
}

/// The CSR index for the backward: [U, start[0..=U] padded to rows+1, sorted rows[rows], uniq[rows]]
/// (3 * rows + 2 u32s). Fixed size per batch shape, so the dispatch is made once and only this
/// buffer's contents change per step.
pub struct EmbeddingGradIndex;

impl EmbeddingGradIndex {
    pub fn len(rows: usize) -> usize {
        3 * rows + 2
    }
    /// Ids must be < vocab (checked: a bad id is an error naming the row, never a silent skip).
    pub fn build(ids: &[u32], vocab: usize) -> Result<Vec<u32>> {
        let n = ids.len();
        if let Some((r, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(crate::Error::Shape { op: "embedding_backward", msg: format!("id {id} at row {r} is outside the vocabulary of {vocab}") });
        }
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&r| (ids[r as usize], r)); // stable: rows of one id stay in increasing order
        let mut out = vec![0u32; Self::len(n)];
        let (mut u, mut prev) = (0usize, None);
        for (k, &r) in order.iter().enumerate() {
            let id = ids[r as usize];
            if prev != Some(id) {
                out[1 + u] = k as u32; // start of this id's run
                out[2 * n + 2 + u] = id;
                u += 1;
                prev = Some(id);
            }
            out[n + 2 + k] = r;
        }
        out[0] = u as u32;
        out[1 + u] = n as u32;
        Ok(out)
    }
}

/// dtable[id] += sum of dout rows with that id. `index` holds `EmbeddingGradIndex::build` output.
pub fn scatter_add(gpu: &Gpu, index: &Tensor, dout: &Tensor, dtable: &Tensor, rows: usize, vocab: usize, cols: usize) -> Result<Dispatch> {
    ensure_shape!("embedding_backward", rows > 0, "no rows");
    check_len("embedding_backward", "index", index, EmbeddingGradIndex::len(rows))?;
    check_len("embedding_backward", "dout", dout, rows * cols)?;
    check_len("embedding_backward", "dtable", dtable, vocab * cols)?;
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        vocab: vocab as u32,
        ids_off: index.off(),
        tab_off: dtable.off(),
        out_off: dout.off(),
        acc: 1.0,
        _p0: 0,
    };
    let mut g = grid(rows as u32);
    g[2] = (cols as u32).div_ceil(64);
    Ok(Dispatch::new(gpu, &KernelSpec::new("embedding", "scatter_add", BINDS), &p, &[index, dout, dtable], g)?
        .cost((rows * cols) as f64, 12.0 * (rows * cols) as f64))
}

pub mod cpu {
    pub fn gather(ids: &[u32], table: &[f32], cols: usize) -> Vec<f32> {
        ids.iter().flat_map(|&id| table[id as usize * cols..(id as usize + 1) * cols].to_vec()).collect()
    }
    pub fn scatter_add(ids: &[u32], dout: &[f32], vocab: usize, cols: usize) -> Vec<f32> {
        let mut d = vec![0f64; vocab * cols];
        for (r, &id) in ids.iter().enumerate() {
            for c in 0..cols {
                d[id as usize * cols + c] += dout[r * cols + c] as f64;
            }
        }
        d.into_iter().map(|v| v as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::DType;
    use crate::ops::testutil::*;

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let (vocab, cols) = (5, 3);
        let ids = [1u32, 4, 1, 0, 1];
        let mut r = Rng::new(40);
        let (table, w) = (r.vec(vocab * cols, 1.0), r.vec(ids.len() * cols, 1.0));
        let n = numeric_grad(&table, 1e-2, |t| dot(&cpu::gather(&ids, t, cols), &w));
        assert_close("embedding fd", &cpu::scatter_add(&ids, &w, vocab, cols), &n, 1e-3, 1e-3);
    }

    #[test]
    fn gpu_matches_cpu_and_is_deterministic() {
        let g = gpu();
        let mut r = Rng::new(41);
        // vocab 30522 as BERT; 129 rows with heavy repetition; 70 columns (> one 64-column block)
        let (vocab, cols, rows) = (30522usize, 70usize, 129usize);
        let ids: Vec<u32> = (0..rows).map(|i| if i % 3 == 0 { 101 } else { r.below(vocab) as u32 }).collect();
        let table = r.vec(vocab * cols, 1.0);
        let dout = r.vec(rows * cols, 1.0);
        let tt = g.upload_f32("table", &[vocab, cols], &table).unwrap();
        let it = g.upload_u32("ids", &[rows], &ids).unwrap();
        let base = r.vec(rows * cols, 1.0);
        let out = g.upload_f32("out", &[rows, cols], &base).unwrap();
        g.run([&gather(g, &it, &tt, &out, rows, vocab, cols, true).unwrap()]).unwrap();
        let want: Vec<f32> = cpu::gather(&ids, &table, cols).iter().zip(&base).map(|(a, b)| a + b).collect();
        assert_close("gather acc", &g.read_f32(&out).unwrap(), &want, 0.0, 1e-6);

        let index = EmbeddingGradIndex::build(&ids, vocab).unwrap();
        let ixt = g.upload_u32("index", &[index.len()], &index).unwrap();
        let dt = g.upload_f32("dout", &[rows, cols], &dout).unwrap();
        let dtab = g.zeros("dtable", &[vocab, cols], DType::F32).unwrap();
        let disp = scatter_add(g, &ixt, &dt, &dtab, rows, vocab, cols).unwrap();
        g.run([&disp]).unwrap();
        let got = g.read_f32(&dtab).unwrap();
        assert_close("scatter", &got, &cpu::scatter_add(&ids, &dout, vocab, cols), 1e-5, 1e-5);
        // a second identical run doubles it bit for bit (fixed summation order)
        g.run([&disp]).unwrap();
        let got2 = g.read_f32(&dtab).unwrap();
        assert!(got.iter().zip(&got2).all(|(a, b)| (2.0 * a).to_bits() == b.to_bits()));
        assert!(EmbeddingGradIndex::build(&[3, 30522], vocab).unwrap_err().to_string().contains("row 1"));
    }
}
