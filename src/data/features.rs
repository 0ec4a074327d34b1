//! Lazily read region features of a store.
//!
//! A store directory holds its features in one or more safetensors files: `features.safetensors`
//! (written by `synth` and by the first import) and `features-<split>[-<k>].safetensors` (written
//! by each later import that adds to the store); every file named `features.safetensors` or
//! `features-*.safetensors` is part of the store, taken in name order. Each file holds one
//! [regions, D] tensor (F32 or F16) per image id.
//!
//! [`FeatureStore`] memory-maps the files and parses each header once; it keeps, per image, the
//! file, dtype, row count and byte offset (a small index), and copies one image's rows to f32 on
//! demand, so host memory does not grow with the features. Opening validates everything once:
//! headers, ids unique across files, 2-D shapes of one common width, dtype F32/F16, and every
//! value finite (a single scan through the maps, which gives the scanned pages back as it goes).
//! Errors name the file and the image id at fault.
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct FeatureFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    file: u32,
    f16: bool,
    rows: u32,
    /// Byte offset of the tensor's data in its file's map.
    start: usize,
}

/// The region features of a store, memory-mapped; see the module doc.
pub struct FeatureStore {
    files: Vec<FeatureFile>,
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    dim: usize,
}

fn err(file: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {msg}", file.display()))
}

/// The feature files of store `dir` in name order: `features.safetensors` and `features-*.safetensors`.
pub fn feature_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let e = e.map_err(|e| err(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "features.safetensors" || (name.starts_with("features-") && name.ends_with(".safetensors")) {
            out.push(e.path());
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(err(dir, "no feature files (features.safetensors or features-*.safetensors)"));
    }
    Ok(out)
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).map_err(|e| err(path, e))?;
    // SAFETY: the store's files are never modified in place (writers replace whole files by
    // rename), so the mapped bytes do not change under us.
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| err(path, format!("cannot map: {e}")))
}

/// One tensor of a file's header: id, dtype, shape, absolute byte range.
type Tensor = (String, Dtype, Vec<usize>, usize, usize);

/// The tensors of one mapped file in data order.
fn header(path: &Path, map: &[u8]) -> Result<Vec<Tensor>> {
    let (n, meta) = SafeTensors::read_metadata(map).map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
    let base = n + 8;
    let mut v: Vec<_> = meta.tensors().into_iter().map(|(id, t)| (id, t.dtype, t.shape.clone(), base + t.data_offsets.0, base + t.data_offsets.1)).collect();
    v.sort_by_key(|t| t.3);
    Ok(v)
}

/// First non-finite element of little-endian f32 or f16 data.
fn first_non_finite(data: &[u8], f16: bool) -> Option<usize> {
    if f16 {
        data.chunks_exact(2).position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00)
    } else {
        data.chunks_exact(4).position(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000)
    }
}

/// Copies little-endian f32 / f16 data into `out` as f32.
fn to_f32(data: &[u8], f16: bool, out: &mut [f32]) {
    crate::tensorfile::decode_into(if f16 { safetensors::Dtype::F16 } else { safetensors::Dtype::F32 }, data, out);
}

/// Tells the OS it may drop the pages of `map[from..to]` from this process (they stay in the page cache).
fn release(map: &memmap2::Mmap, from: usize, to: usize) {
    #[cfg(unix)]
    if to > from {
        // SAFETY: a read-only shared file mapping; dropped pages are read back from the file.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
    }
    #[cfg(not(unix))]
    let _ = (map, from, to);
}

impl FeatureStore {
    /// Opens and validates all feature files of store directory `dir` (see [`feature_files`]).
    pub fn open(dir: &Path) -> Result<FeatureStore> {
        Self::open_files(&feature_files(dir)?)
    }

    /// Opens and validates the given feature files as one store.
    pub fn open_files(paths: &[PathBuf]) -> Result<FeatureStore> {
        Self::open_with(paths, true)
    }

    /// [`FeatureStore::open`] without the scan of the values (headers, ids, shapes and dtypes
    /// are still checked): for importers that add to a big store.
    pub fn open_headers(dir: &Path) -> Result<FeatureStore> {
        Self::open_with(&feature_files(dir)?, false)
    }

    fn open_with(paths: &[PathBuf], scan: bool) -> Result<FeatureStore> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = Vec::new();
        for (fi, p) in paths.iter().enumerate() {
            let map = map_file(p)?;
            for t in header(p, &map)? {
                tensors.push((fi, t));
            }
            files.push(FeatureFile { path: p.clone(), map });
        }
        // the common width is the most frequent one, so the error names an image that differs
        let mut widths: HashMap<usize, usize> = HashMap::new();
        for (_, (_, _, s, _, _)) in &tensors {
            if s.len() == 2 {
                *widths.entry(s[1]).or_default() += 1;
            }
        }
        let dim = widths.iter().max_by_key(|(w, c)| (**c, std::cmp::Reverse(**w))).map(|(w, _)| *w);
        let mut entries = Vec::with_capacity(tensors.len());
        let mut index = HashMap::with_capacity(tensors.len());
        for (fi, (id, dtype, shape, start, _)) in &tensors {
            let path = &files[*fi].path;
            let f16 = match dtype {
                Dtype::F32 => false,
                Dtype::F16 => true,
                d => return Err(err(path, format!("image '{id}' has dtype {d:?}, expected F32 or F16"))),
            };
            let d = dim.unwrap_or(0);
            if shape.len() != 2 {
                return Err(err(path, format!("image '{id}' has shape {shape:?}, expected [regions, {d}]")));
            }
            if shape[1] != d || d == 0 {
                let (oi, other) = tensors.iter().find(|(_, t)| t.2.len() == 2 && t.2[1] == d).map(|(f, t)| (*f, t.0.as_str())).unwrap_or((*fi, ""));
                return Err(err(
                    path,
                    format!(
                        "image '{id}' has features of width {} (shape {shape:?}); the store's other images have width {d} (e.g. '{other}' in {})",
                        shape[1],
                        files[oi].path.display()
                    ),
                ));
            }
            if let Some(&j) = index.get(id) {
                let e: &Entry = &entries[j];
                return Err(err(
                    path,
                    format!("image '{id}' also has features in {}; image ids must be unique in a store", files[e.file as usize].path.display()),
                ));
            }
            let rows = u32::try_from(shape[0]).map_err(|_| err(path, format!("image '{id}' has {} regions", shape[0])))?;
            index.insert(id.clone(), entries.len());
            entries.push(Entry { file: *fi as u32, f16, rows, start: *start });
        }
        let dim = dim.ok_or_else(|| err(&paths[0], "no image features"))?;
        let store = FeatureStore { files, entries, index, dim };
        if scan {
            store.check_finite(&tensors.iter().map(|(_, t)| t.0.as_str()).collect::<Vec<_>>())?;
        }
        store.random_access();
        Ok(store)
    }

    /// One scan through the maps: every value finite. `ids[i]` names entry i.
    fn check_finite(&self, ids: &[&str]) -> Result<()> {
        const STEP: usize = 8 << 20;
        let mut released = vec![0usize; self.files.len()];
        for (i, e) in self.entries.iter().enumerate() {
            let f = &self.files[e.file as usize];
            let end = e.start + self.bytes(e);
            if let Some(k) = first_non_finite(&f.map[e.start..end], e.f16) {
                return Err(err(&f.path, format!("image '{}' has a non-finite feature value (region {}, column {})", ids[i], k / self.dim, k % self.dim)));
            }
            let r = &mut released[e.file as usize];
            if end - *r >= STEP {
                release(&f.map, *r, end);
                *r = end;
            }
        }
        for (f, r) in self.files.iter().zip(released) {
            release(&f.map, r, f.map.len());
        }
        Ok(())
    }

    /// Batches read images in random order: no read-around, so a read maps only its own pages.
    fn random_access(&self) {
        #[cfg(unix)]
        for f in &self.files {
            let _ = f.map.advise(memmap2::Advice::Random);
        }
    }

    fn bytes(&self, e: &Entry) -> usize {
        e.rows as usize * self.dim * if e.f16 { 2 } else { 4 }
    }

    /// The feature width D.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of image `id`, for [`FeatureStore::rows`] and [`FeatureStore::read_into`].
    pub fn entry(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The image ids, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|s| s.as_str())
    }

    /// The number of regions of entry `e`.
    pub fn rows(&self, e: usize) -> usize {
        self.entries[e].rows as usize
    }

    /// Copies the first min(regions, out.len() / D) rows of entry `e` into `out` as f32 and
    /// returns how many rows it copied; the rest of `out` is left as it was.
    pub fn read_into(&self, e: usize, out: &mut [f32]) -> usize {
        let en = &self.entries[e];
        let r = (en.rows as usize).min(out.len() / self.dim);
        let n = r * self.dim;
        let w = if en.f16 { 2 } else { 4 };
        let map = &self.files[en.file as usize].map;
        to_f32(&map[en.start..en.start + n * w], en.f16, &mut out[..n]);
        // the kernel maps whole page-cache folios on a fault (up to MiBs); give them back so the
        // process does not grow with the images it has read
        release(map, en.start, en.start + n * w);
        r
    }

    /// All [regions, D] features of image `id` as f32.
    pub fn read(&self, id: &str) -> Result<Vec<f32>> {
        let e = self.entry(id).ok_or_else(|| Error::Other(format!("no features for image '{id}' in {}", self.describe())))?;
        let mut v = vec![0.0; self.rows(e) * self.dim];
        self.read_into(e, &mut v);
        Ok(v)
    }

    /// The store's files, for messages.
    pub fn describe(&self) -> String {
        self.files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// Reads image `id`'s features from one file without validating the others in it: maps the
/// file, parses the header and copies that tensor (F32 or F16 -> f32), checking the width.
pub fn read_one(file: &Path, id: &str, dim: usize) -> Result<Vec<f32>> {
    let map = map_file(file)?;
    let (_, dtype, shape, start, end) =
        header(file, &map)?.into_iter().find(|t| t.0 == id).ok_or_else(|| err(file, format!("no features for image '{id}'")))?;
    if shape.len() != 2 || shape[1] != dim {
        return Err(err(file, format!("image '{id}' has shape {shape:?}, expected [regions, {dim}]")));
    }
    let f16 = match dtype {
        Dtype::F32 => false,
        Dtype::F16 => true,
        d => return Err(err(file, format!("image '{id}' has dtype {d:?}, expected F32 or F16"))),
    };
    let mut v = vec![0.0; shape[0] * dim];
    to_f32(&map[start..end], f16, &mut v);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::store::{read_all_features, write_features};
    use safetensors::tensor::TensorView;

    fn tmp(name: &str) -> PathBuf {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("vlp-features-{name}-{}-{t}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A safetensors file of raw tensors (id, dtype, shape, little-endian bytes).
    fn write_raw(path: &Path, items: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView)> = items.iter().map(|(id, d, s, b)| (id.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn f16_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
    }

    fn vals(n: usize, k: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + k).sin() * 3.0).collect()
    }

    #[test]
    fn lazy_read_equals_the_eager_read_for_f32_and_f16_over_several_files() {
        let d = tmp("lazy");
        let dim = 5;
        let a: Vec<(String, Vec<f32>)> = (0..7).map(|i| (format!("a{i}"), vals((i % 4 + 1) * dim, i as f32))).collect();
        write_features(&d.join("features.safetensors"), &a, dim).unwrap();
        let h: Vec<(String, Vec<f32>)> = (0..5).map(|i| (format!("h{i}"), vals((i % 3 + 1) * dim, 10.0 + i as f32))).collect();
        let raw: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = h.iter().map(|(id, v)| (id.as_str(), Dtype::F16, vec![v.len() / dim, dim], f16_bytes(v))).collect();
        write_raw(&d.join("features-val.safetensors"), &raw);
        std::fs::write(d.join("features.txt"), "not a feature file").unwrap();
        let fs = FeatureStore::open(&d).unwrap();
        assert_eq!((fs.dim(), fs.len()), (dim, 12));
        for f in ["features.safetensors", "features-val.safetensors"] {
            let (eager, ed) = read_all_features(&d.join(f)).unwrap();
            assert_eq!(ed, dim);
            for (id, want) in &eager {
                let got = fs.read(id).unwrap();
                assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{f} {id}");
                // a batch slot of 2 regions takes the first rows and leaves the rest alone
                let mut slot = vec![-7.0; 2 * dim + 1];
                let r = fs.read_into(fs.entry(id).unwrap(), &mut slot);
                assert_eq!(r, (want.len() / dim).min(2));
                assert_eq!(&slot[..r * dim], &want[..r * dim]);
                assert!(slot[r * dim..].iter().all(|&x| x == -7.0));
            }
        }
        // the f16 values are the f16 roundings of the originals
        assert_eq!(fs.read("h1").unwrap(), h[1].1.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect::<Vec<_>>());
        assert_eq!(read_one(&d.join("features-val.safetensors"), "h2", dim).unwrap(), fs.read("h2").unwrap());
        assert!(fs.read("nope").unwrap_err().to_string().contains("'nope'"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn validation_errors_name_the_file_and_the_image() {
        let d = tmp("bad");
        let f32b = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
        let ok = |id: &'static str, r: usize| (id, Dtype::F32, vec![r, 4], f32b(&vals(r * 4, 1.0)));
        let main = d.join("features.safetensors");
        let second = d.join("features-val.safetensors");
        let open_err = || FeatureStore::open(&d).err().expect("opening should fail").to_string();
        // one image of another width, in the first or in the second file; the bad one is named
        write_raw(&main, &[ok("a", 2), ok("b", 1), ("c", Dtype::F32, vec![1, 5], f32b(&vals(5, 0.0))), ok("e", 3)]);
        let e = open_err();
        assert!(e.contains("features.safetensors") && e.contains("image 'c'") && e.contains("width 5"), "{e}");
        write_raw(&main, &[ok("a", 2), ok("b", 1)]);
        write_raw(&second, &[("z", Dtype::F32, vec![1, 3], f32b(&vals(3, 0.0)))]);
        let e = open_err();
        assert!(e.contains("features-val.safetensors") && e.contains("image 'z'") && e.contains("width 3"), "{e}");
        // the same id in two files
        write_raw(&second, &[ok("q", 1), ok("b", 2)]);
        let e = open_err();
        assert!(e.contains("image 'b'") && e.contains("features-val.safetensors") && e.contains("features.safetensors") && e.contains("unique"), "{e}");
        // not 2-D, not a float dtype
        write_raw(&second, &[("t", Dtype::F32, vec![1, 2, 2], f32b(&vals(4, 0.0)))]);
        let e = open_err();
        assert!(e.contains("features-val.safetensors") && e.contains("image 't'") && e.contains("[1, 2, 2]"), "{e}");
        write_raw(&second, &[("i", Dtype::I32, vec![1, 4], vec![0; 16])]);
        let e = open_err();
        assert!(e.contains("image 'i'") && e.contains("I32"), "{e}");
        // non-finite values, f32 and f16
        let mut v = vals(8, 2.0);
        v[6] = f32::NAN;
        write_raw(&second, &[ok("q", 1), ("n", Dtype::F32, vec![2, 4], f32b(&v))]);
        let e = open_err();
        assert!(e.contains("features-val.safetensors") && e.contains("image 'n'") && e.contains("non-finite") && e.contains("region 1, column 2"), "{e}");
        v[6] = f32::INFINITY;
        write_raw(&second, &[("h", Dtype::F16, vec![2, 4], f16_bytes(&v)), ok("q", 1)]);
        let e = open_err();
        assert!(e.contains("image 'h'") && e.contains("non-finite"), "{e}");
        // a broken file
        std::fs::write(&second, b"garbage").unwrap();
        let e = open_err();
        assert!(e.contains("features-val.safetensors") && e.contains("not a valid safetensors"), "{e}");
        std::fs::remove_file(&second).unwrap();
        assert_eq!(FeatureStore::open(&d).unwrap().len(), 2);
        std::fs::remove_dir_all(&d).ok();
    }
}
