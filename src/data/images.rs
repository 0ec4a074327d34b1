//! Images in from files, without a detector: patch features (ViLT-style) for a store.
//!
//! [`convert_images`] reads every PNG and JPEG file of a directory (not its subdirectories; other
//! files are skipped with a note), resizes each to an S×S square (aspect ratio not kept; a
//! triangle filter, so shrinking averages), cuts the square into G×G patches of p = S/G pixels
//! and stores each patch as one region of the image, patches in row-major order (top row first,
//! left to right). A region's features, `img_feature_dim` = 3·p² + 6 numbers:
//! - the patch's RGB pixels normalised to [-1, 1] as (x/255 - 0.5)/0.5, row-major and
//!   channel-last: value `(y·p + x)·3 + c` is channel c (0 R, 1 G, 2 B) of the patch's pixel at
//!   row y, column x (an alpha channel is dropped, 16-bit images are scaled to 8 bits first);
//! - the 6 box numbers of the patch in the square, as Oscar's detector regions have them:
//!   x1/W, y1/H, x2/W, y2/H, w/W, h/H with W = H = S (so a patch at row r, column c has
//!   x1 = c·p/S, y1 = r·p/S, w/W = h/H = 1/G).
//!
//! The defaults are G = 4 and p = 8 (S = 32): 16 regions of 198 numbers. Oscar's image
//! projection is a Linear(img_feature_dim, H), so these features go through it as a linear patch
//! embedding.
//!
//! **Official Oscar checkpoints were trained on detector features** (Faster R-CNN region
//! features, 2048 appearance numbers + 6 box numbers per region), not on pixels: they cannot take
//! patch features (the width differs, and so does the meaning). A model for patch features must
//! be pre-trained on them (`vlp-engine train --data STORE`), or fine-tuned on them from a text
//! checkpoint such as BERT, whose image projection then starts from scratch.
//!
//! The image id is the file's stem (`cat.png` → `cat`); two files with one stem are an error
//! naming both. Tags are empty unless a tags file gives them; captions are optional. The store is
//! written by [`super::convert::add_to_store`]: a new store, or one more split of an existing one
//! (its own feature file), built next to it and moved into place. images.jsonl gets each image's
//! original width and height and no objects.
use super::convert::{add_to_store, read_captions, NewImage};
use super::synth::Image;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Patch grid G per side by default.
pub const DEFAULT_GRID: usize = 4;
/// Patch side p in pixels by default (the square is G·p).
pub const DEFAULT_PATCH: usize = 8;

/// How images become patch regions: a `size`×`size` square cut into `grid`×`grid` patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patches {
    pub grid: usize,
    pub size: usize,
}

impl Default for Patches {
    fn default() -> Self {
        Patches { grid: DEFAULT_GRID, size: DEFAULT_GRID * DEFAULT_PATCH }
    }
}

impl Patches {
    /// `grid` patches per side of a `size` square (default G·8); the size must be a multiple of
    /// the grid.
    pub fn new(grid: usize, size: Option<usize>) -> Result<Patches> {
        if grid == 0 {
            return Err(Error::Other("--grid must be at least 1".into()));
        }
        let size = size.unwrap_or(grid * DEFAULT_PATCH);
        if size == 0 || !size.is_multiple_of(grid) {
            return Err(Error::Other(format!("--size {size} is not a positive multiple of --grid {grid}")));
        }
        if size > 4096 {
            return Err(Error::Other(format!("--size {size} is over 4096")));
        }
        Ok(Patches { grid, size })
    }

    /// The patch side p in pixels.
    pub fn patch(&self) -> usize {
        self.size / self.grid
    }

    /// Regions per image, G².
    pub fn regions(&self) -> usize {
        self.grid * self.grid
    }

    /// The feature width 3·p² + 6.
    pub fn feature_dim(&self) -> usize {
        3 * self.patch() * self.patch() + 6
    }

    /// The [G², 3·p² + 6] features of an image (see the module doc).
    pub fn features(&self, img: &image::DynamicImage) -> Vec<f32> {
        let s = self.size as u32;
        let rgb = img.to_rgb8();
        let sq = if rgb.dimensions() == (s, s) { rgb } else { image::imageops::resize(&rgb, s, s, image::imageops::FilterType::Triangle) };
        let (g, p, d) = (self.grid, self.patch(), self.feature_dim());
        let mut out = Vec::with_capacity(g * g * d);
        let sf = self.size as f32;
        for r in 0..g {
            for c in 0..g {
                for y in 0..p {
                    for x in 0..p {
                        let px = sq.get_pixel((c * p + x) as u32, (r * p + y) as u32);
                        out.extend(px.0.iter().map(|&v| (v as f32 / 255.0 - 0.5) / 0.5));
                    }
                }
                let (x1, y1, x2, y2) = ((c * p) as f32 / sf, (r * p) as f32 / sf, ((c + 1) * p) as f32 / sf, ((r + 1) * p) as f32 / sf);
                out.extend([x1, y1, x2, y2, p as f32 / sf, p as f32 / sf]);
            }
        }
        out
    }

    /// Decodes image file `path` (PNG or JPEG, by content) and returns its original width and
    /// height and its patch features; an unreadable or undecodable file is an error naming it.
    pub fn file_features(&self, path: &Path) -> Result<Decoded> {
        let img = decode(path)?;
        Ok(((img.width(), img.height()), self.features(&img)))
    }
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::io::Reader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::Other(format!("{}: cannot read image file: {e}", path.display())))?;
    let img = reader.decode().map_err(|e| Error::Other(format!("{}: cannot decode image: {e}", path.display())))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Other(format!("{}: image of size {}x{}", path.display(), img.width(), img.height())));
    }
    Ok(img)
}

/// Whether a file name has a PNG or JPEG extension (any case).
fn is_image_name(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The PNG and JPEG files of `dir` (by extension, not recursing), in name order, each with its
/// image id (the stem); other entries are skipped with a note on stderr. No image files, and two
/// files with one stem, are errors.
pub fn image_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let io = |e: std::io::Error| Error::Other(format!("{}: {e}", dir.display()));
    let mut paths = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let p = e.path();
        let is_file = std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false);
        if is_file && is_image_name(&p) {
            paths.push(p);
        } else {
            eprintln!("note: skipping {} (not a .png, .jpg or .jpeg file)", p.display());
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Other(format!("{}: no PNG or JPEG files (.png, .jpg, .jpeg)", dir.display())));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let id = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if id.is_empty() {
            return Err(Error::Other(format!("{}: no file stem to use as the image id", p.display())));
        }
        if let Some(&i) = seen.get(&id) {
            let (_, first): &(String, PathBuf) = &out[i];
            return Err(Error::Other(format!("image id '{id}' twice: {} and {} have the same stem", first.display(), p.display())));
        }
        seen.insert(id.clone(), out.len());
        out.push((id, p));
    }
    Ok(out)
}

/// Reads a tags file: a JSON object {image id: tag string}, or lines `id<TAB>tags`. Malformed
/// records and repeated ids are errors naming the file and line (or key).
pub fn read_tags(file: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    if text.trim_start().starts_with('{') {
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: bad JSON (expected an object of image id: tag string): {e}", file.display())))?;
        return v
            .into_iter()
            .map(|(k, t)| match t {
                serde_json::Value::String(s) => Ok((k, s)),
                _ => Err(Error::Other(format!("{}: image '{k}': tags must be a string", file.display()))),
            })
            .collect();
    }
    let mut out: HashMap<String, String> = HashMap::new();
    let mut line_of: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let (id, tags) = line.split_once('\t').ok_or_else(|| Error::Other(format!("{}:{n}: expected image id<TAB>tags", file.display())))?;
        if let Some(l0) = line_of.insert(id.to_string(), n) {
            return Err(Error::Other(format!("{}:{n}: image '{id}' repeats line {l0}", file.display())));
        }
        out.insert(id.to_string(), tags.trim().to_string());
    }
    Ok(out)
}

/// Converts the images of `dir` into split `split` of store `out` (see the module doc), with tags
/// from `tags` and captions from `captions` if given (tags or captions of an image that is not in
/// `dir` are errors). Decodes on all cores, with a progress bar. Returns the number of images.
pub fn convert_images(dir: &Path, out: &Path, split: &str, patches: Patches, tags: Option<&Path>, captions: Option<&Path>) -> Result<usize> {
    let files = image_files(dir)?;
    let ids: HashMap<&str, &Path> = files.iter().map(|(id, p)| (id.as_str(), p.as_path())).collect();
    let tags = match tags {
        Some(f) => {
            let t = read_tags(f)?;
            if let Some(k) = t.keys().filter(|k| !ids.contains_key(k.as_str())).min() {
                return Err(Error::Other(format!("{}: tags for image '{k}', which is not an image file in {}", f.display(), dir.display())));
            }
            t
        }
        None => HashMap::new(),
    };
    let caps = match captions {
        Some(f) => {
            let c = read_captions(f)?;
            if let Some(c) = c.iter().find(|c| !ids.contains_key(c.image_id.as_str())) {
                return Err(Error::Other(format!("{}: caption for image '{}', which is not an image file in {}", f.display(), c.image_id, dir.display())));
            }
            c
        }
        None => Vec::new(),
    };
    let feats = decode_all(&files, patches)?;
    let new = files
        .iter()
        .zip(feats)
        .map(|((id, path), ((w, h), features))| NewImage {
            image: Image {
                id: id.clone(),
                split: split.to_string(),
                width: w as f32,
                height: h as f32,
                objects: Vec::new(),
                tags: tags.get(id).cloned().unwrap_or_default(),
            },
            features,
            origin: path.display().to_string(),
        })
        .collect();
    add_to_store(out, split, new, &caps, patches.feature_dim())
}

/// An image file's original (width, height) and its patch features.
type Decoded = ((u32, u32), Vec<f32>);

/// Every file's size and features, in order, decoded on all cores with a progress bar; the
/// first file (in order) that fails is the error.
fn decode_all(files: &[(String, PathBuf)], patches: Patches) -> Result<Vec<Decoded>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images [{elapsed} < {eta}] {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(files.len()).max(1);
    let mut results: Vec<Option<Result<Decoded>>> = (0..files.len()).map(|_| None).collect();
    let parts: Vec<Vec<(usize, Result<Decoded>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= files.len() {
                            break;
                        }
                        let r = patches.file_features(&files[i].1);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        mine.push((i, r));
                        bar.inc(1);
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("an image decoding thread panicked")).collect()
    });
    bar.finish_and_clear();
    for (i, r) in parts.into_iter().flatten() {
        results[i] = Some(r);
    }
    // files after a failure may be undecoded (None); the first error in file order comes first
    let mut out = Vec::with_capacity(files.len());
    for r in results {
        match r {
            Some(Ok(x)) => out.push(x),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    if out.len() != files.len() {
        return Err(Error::Other("image decoding stopped early".into()));
    }
    Ok(out)
}
