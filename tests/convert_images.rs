//! `convert-images`: a folder of PNG/JPEG files becomes a store of patch regions (data::images).
//! The images are made here with the image crate, not committed.
use image::{Rgb, RgbImage, Rgba, RgbaImage};
use std::path::{Path, PathBuf};
use vlp_engine::data::features::FeatureStore;
use vlp_engine::data::images::{convert_images, Patches};
use vlp_engine::data::pretrain::PretrainData;
use vlp_engine::data::store::read_jsonl;
use vlp_engine::data::synth::{Caption, Image};
use vlp_engine::data::Tok;

fn tmp(name: &str) -> PathBuf {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let d = std::env::temp_dir().join(format!("vlp-images-{name}-{}-{t}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn norm(v: u8) -> f32 {
    (v as f32 / 255.0 - 0.5) / 0.5
}

/// Top-left quadrant, top-right, bottom-left, bottom-right colours of `wide.png`.
const Q: [[u8; 3]; 4] = [[200, 100, 50], [0, 255, 10], [30, 60, 90], [255, 255, 255]];
const SQ: [u8; 3] = [17, 34, 51];

/// The pixel of `exact.png` (32×32, the default square, so not resampled) at (x, y).
fn exact_px(x: u32, y: u32) -> [u8; 3] {
    [(x * 8) as u8, (y * 8) as u8, ((x + 2 * y) * 2) as u8]
}

/// exact.png 32×32 (a gradient), photo.jpg 24×24, sq.png 16×16 RGBA of one colour, wide.png
/// 20×12 in four quadrants of colour, and a note that is not an image.
fn make_images(d: &Path) {
    RgbImage::from_fn(32, 32, |x, y| Rgb(exact_px(x, y))).save(d.join("exact.png")).unwrap();
    RgbImage::from_fn(24, 24, |x, _| Rgb([(x * 10) as u8, 128, 64])).save(d.join("photo.jpg")).unwrap();
    RgbaImage::from_fn(16, 16, |_, _| Rgba([SQ[0], SQ[1], SQ[2], 7])).save(d.join("sq.png")).unwrap();
    RgbImage::from_fn(20, 12, |x, y| Rgb(Q[(x >= 10) as usize + 2 * (y >= 6) as usize])).save(d.join("wide.png")).unwrap();
    std::fs::write(d.join("notes.txt"), "not an image").unwrap();
}

#[test]
fn a_folder_of_images_becomes_a_store_of_patch_regions() {
    let d = tmp("ok");
    let dir = d.join("imgs");
    std::fs::create_dir_all(&dir).unwrap();
    make_images(&dir);
    std::fs::write(d.join("tags.tsv"), "wide\tcube sphere\nsq\t\n").unwrap();
    std::fs::write(
        d.join("caps.jsonl"),
        "{\"image_id\": \"wide\", \"caption\": \"a red cube and a ball\"}\n{\"image_id\": \"exact\", \"caption\": \"a blue ball\"}\n{\"image_id\": \"sq\", \"caption\": \"a red cube\"}\n",
    )
    .unwrap();
    let store = d.join("store");
    let p = Patches::default();
    assert_eq!((p.grid, p.patch(), p.size, p.regions(), p.feature_dim()), (4, 8, 32, 16, 3 * 64 + 6));
    let n = convert_images(&dir, &store, "train", p, Some(&d.join("tags.tsv")), Some(&d.join("caps.jsonl"))).unwrap();
    assert_eq!(n, 4);

    let imgs: Vec<Image> = read_jsonl(&store.join("images.jsonl")).unwrap();
    let got: Vec<_> = imgs.iter().map(|i| (i.id.as_str(), i.split.as_str(), i.width, i.height, i.tags.as_str(), i.objects.len())).collect();
    assert_eq!(
        got,
        [
            ("exact", "train", 32.0, 32.0, "", 0),
            ("photo", "train", 24.0, 24.0, "", 0),
            ("sq", "train", 16.0, 16.0, "", 0),
            ("wide", "train", 20.0, 12.0, "cube sphere", 0)
        ]
    );
    let caps: Vec<Caption> = read_jsonl(&store.join("captions.jsonl")).unwrap();
    assert_eq!(caps.len(), 3);

    let fs = FeatureStore::open(&store).unwrap();
    let dim = 3 * 8 * 8 + 6;
    assert_eq!((fs.len(), fs.dim()), (4, dim));
    for id in ["exact", "photo", "sq", "wide"] {
        assert_eq!(fs.rows(fs.entry(id).unwrap()), 16, "{id}");
    }
    let region = |v: &[f32], r: usize, c: usize| v[(r * 4 + c) * dim..(r * 4 + c + 1) * dim].to_vec();
    let boxes = |r: usize, c: usize| {
        let s = 32.0f32;
        [(c * 8) as f32 / s, (r * 8) as f32 / s, ((c + 1) * 8) as f32 / s, ((r + 1) * 8) as f32 / s, 8.0 / s, 8.0 / s]
    };
    // exact.png is not resampled: every value of the patch at row 1, column 2, in the documented order
    let ex = fs.read("exact").unwrap();
    let mut want = Vec::new();
    for y in 0..8 {
        for x in 0..8 {
            want.extend(exact_px(2 * 8 + x, 8 + y).map(norm));
        }
    }
    want.extend(boxes(1, 2));
    assert_eq!(region(&ex, 1, 2), want);
    assert_eq!(&region(&ex, 1, 2)[dim - 6..], &[0.5, 0.25, 0.75, 0.5, 0.25, 0.25]);
    assert_eq!(region(&ex, 0, 0)[..3], [-1.0, -1.0, -1.0]);
    // wide.png: the corner patches keep their quadrant's colour through the resize
    let wide = fs.read("wide").unwrap();
    for (q, (r, c)) in [(0, 0), (0, 3), (3, 0), (3, 3)].into_iter().enumerate() {
        let mut want: Vec<f32> = (0..64).flat_map(|_| Q[q].map(norm)).collect();
        want.extend(boxes(r, c));
        assert_eq!(region(&wide, r, c), want, "wide.png patch ({r}, {c})");
    }
    assert_eq!(region(&wide, 3, 3)[..3], [1.0, 1.0, 1.0]);
    // sq.png (RGBA, upscaled): one colour everywhere, alpha dropped
    let sq = fs.read("sq").unwrap();
    for r in 0..4 {
        for c in 0..4 {
            let mut want: Vec<f32> = (0..64).flat_map(|_| SQ.map(norm)).collect();
            want.extend(boxes(r, c));
            assert_eq!(region(&sq, r, c), want);
        }
    }
    // the JPEG decodes; its values are in [-1, 1]
    assert!(fs.read("photo").unwrap().iter().all(|v| (-1.0..=1.0).contains(v)));

    // the store loads for pre-training
    let corpus: Vec<String> = ["a red cube and a ball", "a blue ball", "cube sphere"].iter().map(|s| s.to_string()).collect();
    let tok = Tok::train(&corpus, 60).unwrap();
    let data = PretrainData::load(&store, &tok).unwrap();
    assert_eq!((data.feature_dim, data.images.len(), data.captions.len()), (dim, 4, 3));
    assert_eq!(data.split("train").len(), 3);

    // a second folder adds a split with a feature file of its own; tags as a JSON object
    let dir2 = d.join("imgs2");
    std::fs::create_dir_all(&dir2).unwrap();
    RgbImage::from_fn(8, 40, |_, y| Rgb([y as u8, 0, 0])).save(dir2.join("tall.PNG")).unwrap();
    std::fs::write(d.join("tags.json"), r#"{"tall": "tree"}"#).unwrap();
    assert_eq!(convert_images(&dir2, &store, "val", p, Some(&d.join("tags.json")), None).unwrap(), 1);
    assert!(store.join("features.safetensors").exists() && store.join("features-val.safetensors").exists());
    let imgs: Vec<Image> = read_jsonl(&store.join("images.jsonl")).unwrap();
    assert_eq!(imgs.iter().map(|i| (i.id.as_str(), i.split.as_str())).next_back(), Some(("tall", "val")));
    assert_eq!(imgs.last().unwrap().tags, "tree");
    assert_eq!(read_jsonl::<Caption>(&store.join("captions.jsonl")).unwrap().len(), 3);
    assert_eq!(FeatureStore::open(&store).unwrap().len(), 5);
    // the same image again is an error naming its file
    let e = convert_images(&dir2, &store, "val", p, None, None).unwrap_err().to_string();
    assert!(e.contains("tall.PNG") && e.contains("'tall'") && e.contains("already"), "{e}");
    // another patch size is another feature width
    let dir3 = d.join("imgs3");
    std::fs::create_dir_all(&dir3).unwrap();
    RgbImage::new(4, 4).save(dir3.join("small.png")).unwrap();
    let e = convert_images(&dir3, &store, "val", Patches::new(2, Some(8)).unwrap(), None, None).unwrap_err().to_string();
    assert!(e.contains("small.png") && e.contains("width 54") && e.contains("(198"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_folders_and_files_are_errors_naming_them() {
    let d = tmp("bad");
    let p = Patches::default();
    let out = |n: &str| d.join(format!("store-{n}"));
    // an empty directory; one with no images
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = convert_images(&empty, &out("e"), "train", p, None, None).unwrap_err().to_string();
    assert!(e.contains("empty") && e.contains("no PNG or JPEG"), "{e}");
    std::fs::write(empty.join("readme.md"), "hi").unwrap();
    assert!(convert_images(&empty, &out("e"), "train", p, None, None).unwrap_err().to_string().contains("no PNG or JPEG"));
    // a corrupt PNG: garbage, and a real PNG cut short
    let dir = d.join("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    RgbImage::new(10, 10).save(dir.join("good.png")).unwrap();
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let e = convert_images(&dir, &out("c"), "train", p, None, None).unwrap_err().to_string();
    assert!(e.contains("broken.png") && e.contains("cannot decode"), "{e}");
    let png = std::fs::read(dir.join("good.png")).unwrap();
    std::fs::write(dir.join("broken.png"), &png[..png.len() / 2]).unwrap();
    let e = convert_images(&dir, &out("c"), "train", p, None, None).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");
    assert!(!out("c").exists());
    // a repeated stem
    let dup = d.join("dup");
    std::fs::create_dir_all(&dup).unwrap();
    RgbImage::new(10, 10).save(dup.join("cat.png")).unwrap();
    RgbImage::new(10, 10).save(dup.join("cat.jpg")).unwrap();
    let e = convert_images(&dup, &out("d"), "train", p, None, None).unwrap_err().to_string();
    assert!(e.contains("'cat'") && e.contains("cat.png") && e.contains("cat.jpg"), "{e}");
    // captions and tags of images that are not there; a malformed tags line
    std::fs::remove_file(dup.join("cat.jpg")).unwrap();
    std::fs::write(d.join("caps.json"), r#"[{"image_id": "dog", "caption": "a dog"}]"#).unwrap();
    let e = convert_images(&dup, &out("d"), "train", p, None, Some(&d.join("caps.json"))).unwrap_err().to_string();
    assert!(e.contains("caps.json") && e.contains("'dog'"), "{e}");
    std::fs::write(d.join("tags.tsv"), "cat\tanimal\ndog animal\n").unwrap();
    let e = convert_images(&dup, &out("d"), "train", p, Some(&d.join("tags.tsv")), None).unwrap_err().to_string();
    assert!(e.contains("tags.tsv:2"), "{e}");
    std::fs::write(d.join("tags.tsv"), "cat\tanimal\ndog\tanimal\n").unwrap();
    let e = convert_images(&dup, &out("d"), "train", p, Some(&d.join("tags.tsv")), None).unwrap_err().to_string();
    assert!(e.contains("tags.tsv") && e.contains("'dog'"), "{e}");
    // grid and size that do not fit
    assert!(Patches::new(3, Some(32)).is_err() && Patches::new(0, None).is_err());
    assert_eq!(Patches::new(3, None).unwrap().size, 24);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_cli_converts_a_folder() {
    let d = tmp("cli");
    let dir = d.join("imgs");
    std::fs::create_dir_all(&dir).unwrap();
    make_images(&dir);
    let store = d.join("store");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vlp-engine"))
        .args(["convert-images", "--images"])
        .arg(&dir)
        .arg("--out")
        .arg(&store)
        .args(["--grid", "2", "--size", "8", "--split", "test"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("notes.txt"));
    let fs = FeatureStore::open(&store).unwrap();
    assert_eq!((fs.len(), fs.dim(), fs.rows(fs.entry("wide").unwrap())), (4, 3 * 16 + 6, 4));
    assert!(!store.join("captions.jsonl").exists());
    let imgs: Vec<Image> = read_jsonl(&store.join("images.jsonl")).unwrap();
    assert!(imgs.iter().all(|i| i.split == "test" && i.tags.is_empty()));
    std::fs::remove_dir_all(&d).ok();
}
