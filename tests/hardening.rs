//! Hardening (issue 12): bad files, flags and faults give clear errors naming the file, tensor,
//! key or flag, never a panic and never a partial output. One test per class, table-driven over
//! crafted inputs, and a seeded property test feeding random bytes, truncations and byte flips to
//! every file reader. GPU parts run on lavapipe.
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vlp_engine::apps::ModelDir;
use vlp_engine::data::{store, synth, Tok};
use vlp_engine::gpu::Gpu;
use vlp_engine::model::checkpoint::{self, LoadOptions};
use vlp_engine::model::{ClassLoss, Config, Head, ParamLayout, ParamSet};
use vlp_engine::ops::matmul::Precision;
use vlp_engine::train::{train, TrainArgs};
use vlp_engine::util::Rng;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vlp-hard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn world(dir: &Path) {
    let w = synth::generate(20, 3, 38).unwrap();
    let tok = Tok::train(&w.corpus(), 300).unwrap();
    store::write_world(dir, &w, &tok).unwrap();
}

fn args(data: &Path, out: &Path, steps: usize) -> TrainArgs {
    TrainArgs {
        data: Some(data.to_path_buf()),
        out: out.to_path_buf(),
        steps,
        batch_size: 4,
        text_len: 16,
        regions: 4,
        warmup: 1,
        log_every: 1,
        eval_every: 0,
        save_every: 2,
        progress: false,
        ..TrainArgs::default()
    }
}

fn tiny(layers: usize) -> Config {
    let mut c = Config::preset("tiny").unwrap();
    c.vocab_size = 50;
    c.max_position_embeddings = 16;
    c.img_feature_dim = 10;
    c.num_hidden_layers = layers;
    c
}

fn params(gpu: &Gpu, c: &Config, head: &Head) -> ParamSet {
    let layout = Arc::new(ParamLayout::for_model(c, head, gpu.max_binding_bytes()).unwrap());
    let p = ParamSet::zeros(gpu, layout, "p").unwrap();
    p.init(gpu, 7).unwrap();
    p
}

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn write_f32(path: &Path, t: &Tensors) {
    std::fs::write(path, checkpoint::to_bytes(t, HashMap::new()).unwrap()).unwrap();
}

/// Files in `dir` (recursively), for "nothing was written" checks.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(listing(&p));
            } else {
                out.push(format!("{} {}", p.display(), std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    out.sort();
    out
}

fn err_of<T>(r: vlp_engine::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loading_is_strict_and_deterministic() {
    let gpu = Gpu::default_device().unwrap();
    let d = tmp("load");
    let c2 = tiny(2);
    let p = params(&gpu, &c2, &Head::Pretrain);
    let good = p.download(&gpu).unwrap();
    let rename = |t: &Tensors, from: &str, to: &str| -> Tensors { t.iter().map(|(n, s, v)| (n.replace(from, to), s.clone(), v.clone())).collect() };
    let mut dup = good.clone();
    let w = good.iter().find(|t| t.0 == "bert.embeddings.word_embeddings.weight").unwrap().clone();
    dup.push(("embeddings.word_embeddings.weight".into(), w.1.clone(), w.2.clone()));
    let mut dup_ln = good.clone();
    let ln = good.iter().find(|t| t.0 == "bert.embeddings.LayerNorm.weight").unwrap().clone();
    dup_ln.push(("bert.embeddings.LayerNorm.gamma".into(), ln.1.clone(), ln.2.clone()));
    let mut extra = good.clone();
    extra.push(("foo.bar".into(), vec![2], vec![0.0, 1.0]));
    extra.push(("bert.encoder.layer.0.attention.self.extra".into(), vec![1], vec![0.0]));
    // a file with 2 layers against configs of 1 and 3 layers
    let (c1, c3) = (tiny(1), tiny(3));
    let p1 = params(&gpu, &c1, &Head::Pretrain);
    let p3 = params(&gpu, &c3, &Head::Pretrain);
    let cases: Vec<(&str, Tensors, &ParamSet, Vec<&str>)> = vec![
        ("dup", dup, &p, vec!["'bert.embeddings.word_embeddings.weight'", "'embeddings.word_embeddings.weight'", "both"]),
        ("dup_ln", dup_ln, &p, vec!["'bert.embeddings.LayerNorm.gamma'", "'bert.embeddings.LayerNorm.weight'", "both"]),
        ("extra", extra.clone(), &p, vec!["2 unexpected tensors", "'foo.bar'", "'bert.encoder.layer.0.attention.self.extra'", "--allow-unexpected"]),
        ("more_layers", good.clone(), &p1, vec!["2 encoder layers", "config has 1", "num_hidden_layers"]),
        ("fewer_layers", good.clone(), &p3, vec!["2 encoder layers", "config has 3"]),
        ("other_prefix", rename(&good, "bert.", "roberta."), &p, vec!["unexpected tensors", "'roberta."]),
    ];
    for (name, t, set, words) in &cases {
        let f = d.join(format!("{name}.safetensors"));
        write_f32(&f, t);
        let before = set.download(&gpu).unwrap();
        let e = err_of(checkpoint::load(&gpu, set, &f));
        assert!(e.contains(&format!("{name}.safetensors")), "{name}: {e}");
        for w in words {
            assert!(e.contains(w), "{name}: '{w}' not in: {e}");
        }
        // refused before any parameter was overwritten
        let after = set.download(&gpu).unwrap();
        assert!(before.iter().zip(&after).all(|(a, b)| a.2 == b.2), "{name}: a refused load changed parameters");
        // the same error every time (no hash-map order)
        for _ in 0..3 {
            assert_eq!(err_of(checkpoint::load(&gpu, set, &f)), e, "{name}: not deterministic");
        }
    }
    // allowed: the unexpected tensors are ignored and reported
    let f = d.join("extra.safetensors");
    let r = checkpoint::load_with(&gpu, &p, &f, LoadOptions { allow_unexpected: true }).unwrap();
    assert!(r.ignored.iter().any(|n| n == "foo.bar"), "{:?}", r.ignored);
    // expected and ignored: HF buffers, the tied decoder, AdamW moments of a training checkpoint
    let mut hf = good.clone();
    hf.push(("bert.embeddings.position_ids".into(), vec![16], (0..16).map(|i| i as f32).collect()));
    hf.push(("cls.predictions.decoder.weight".into(), w.1.clone(), w.2.clone()));
    hf.push(("adam_m.bert.pooler.dense.bias".into(), vec![64], vec![0.0; 64]));
    let fhf = d.join("hf.safetensors");
    write_f32(&fhf, &hf);
    let r = checkpoint::load(&gpu, &p, &fhf).unwrap();
    assert_eq!(r.ignored.len(), 3, "{:?}", r.ignored);
    // a pre-training checkpoint into a fine-tuning model: cls.* ignored, the classifier fresh
    let cl = params(&gpu, &c2, &Head::Classifier { labels: 2, loss: ClassLoss::CrossEntropy, dropout: 0.0 });
    let fp = d.join("pretrain.safetensors");
    write_f32(&fp, &good);
    let r = checkpoint::load(&gpu, &cl, &fp).unwrap();
    assert!(r.ignored.iter().any(|n| n.starts_with("cls.")) && r.ignored.iter().all(|n| n.starts_with("cls.")), "{:?}", r.ignored);
    assert!(r.initialized.iter().any(|n| n.starts_with("classifier.")), "{:?}", r.initialized);
    // ... but a fine-tuned checkpoint into a pre-training model: its classifier is unexpected
    let ff = d.join("finetuned.safetensors");
    write_f32(&ff, &cl.download(&gpu).unwrap());
    let e = err_of(checkpoint::load(&gpu, &p, &ff));
    assert!(e.contains("finetuned.safetensors") && e.contains("'classifier."), "{e}");

    // the CLI: `embed` on a model directory with an unexpected tensor refuses it, writes nothing,
    // and takes it with --allow-unexpected
    let md = d.join("model");
    std::fs::create_dir_all(&md).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/tiny-synth").join(f), md.join(f)).unwrap();
    }
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/tiny-synth/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = st.tensors();
    let junk = [0u8; 8];
    views.push(("decoder.extra".into(), TensorView::new(Dtype::F32, vec![2], &junk).unwrap()));
    std::fs::write(md.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let out = d.join("emb.safetensors");
    let embed = |allow: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vlp-engine"));
        c.args(["embed", "--text", "a red cube"]).arg("--model").arg(&md).arg("--out").arg(&out).env("RUST_BACKTRACE", "0");
        if allow {
            c.arg("--allow-unexpected");
        }
        c.output().unwrap()
    };
    let o = embed(false);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && o.status.code() != Some(101), "{stderr}");
    assert!(stderr.contains("'decoder.extra'") && stderr.contains("--allow-unexpected"), "{stderr}");
    assert!(!out.exists() && !listing(&d).iter().any(|f| f.contains(".tmp")), "a refused embed wrote {:?}", listing(&d));
    let o = embed(true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.exists());
    std::fs::remove_dir_all(&d).ok();
}

/// Rewrites tensor `name` of a safetensors file with `dtype`/`bytes` (same shape).
fn replace_tensor(file: &Path, name: &str, f: impl Fn(&[usize], &[f32]) -> (Dtype, Vec<u8>)) {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, md) = SafeTensors::read_metadata(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let (dt, data) = f(t.shape(), &bytemuck::pod_collect_to_vec::<u8, f32>(t.data()));
    let shape = t.shape().to_vec();
    let mut views: Vec<(String, TensorView)> = st.tensors().into_iter().filter(|(n, _)| n != name).collect();
    views.push((name.to_string(), TensorView::new(dt, shape, &data).unwrap()));
    std::fs::write(file, safetensors::serialize(views, md.metadata().clone()).unwrap()).unwrap();
}

#[test]
fn resume_checks_that_it_is_the_same_run() {
    let gpu = Gpu::default_device().unwrap();
    let d = tmp("resume");
    let data = d.join("data");
    world(&data);
    // no checkpoint: an error, and nothing is created
    let mut a = args(&data, &d.join("none"), 6);
    a.resume = true;
    let e = err_of(train(&gpu, &a));
    assert!(e.contains("--resume") && e.contains("no checkpoint") && e.contains("checkpoint.safetensors"), "{e}");
    assert!(!d.join("none").exists(), "a refused --resume created its --out");
    // a run stopped at step 3 (a NaN) leaves the step-2 checkpoint
    let out = d.join("out");
    let mut first = args(&data, &out, 6);
    first.inject_nan_at = Some(3);
    let e = err_of(train(&gpu, &first));
    assert!(e.contains("step 3"), "{e}");
    let ck = out.join("checkpoint.safetensors");
    let pristine = std::fs::read(&ck).unwrap();
    let base = TrainArgs { resume: true, inject_nan_at: None, ..first.clone() };
    let same = listing(&out);
    let flag_cases: Vec<(&str, TrainArgs, &str, &str)> = vec![
        ("--batch-size", TrainArgs { batch_size: 2, ..base.clone() }, "4", "2"),
        ("--grad-accum", TrainArgs { grad_accum: 2, ..base.clone() }, "1", "2"),
        ("--text-len", TrainArgs { text_len: 12, ..base.clone() }, "16", "12"),
        ("--regions", TrainArgs { regions: 3, ..base.clone() }, "4", "3"),
        ("--precision", TrainArgs { precision: Precision::F16, ..base.clone() }, "f32", "f16"),
        ("--lr", TrainArgs { lr: 5e-4, ..base.clone() }, "0.001", "0.0005"),
        ("--warmup", TrainArgs { warmup: 2, ..base.clone() }, "1", "2"),
        ("--steps", TrainArgs { steps: 8, ..base.clone() }, "6", "8"),
        ("--weight-decay", TrainArgs { weight_decay: 0.0, ..base.clone() }, "0.01", "0"),
        ("--three-way", TrainArgs { three_way: true, ..base.clone() }, "false", "true"),
    ];
    for (flag, a, was, now) in &flag_cases {
        let e = err_of(train(&gpu, a));
        assert!(e.contains("checkpoint.safetensors"), "{flag}: {e}");
        // --three-way changes the model config (3 contrast classes), which is caught first
        if *flag == "--three-way" {
            assert!(e.contains("another model config"), "{flag}: {e}");
        } else {
            assert!(e.contains(&format!("written with {flag} {was}, resuming with {flag} {now}")), "{flag}: {e}");
        }
        assert_eq!(listing(&out), same, "{flag}: a refused resume changed --out");
    }
    // --steps at or below the checkpoint's step: the run is complete
    for steps in [1, 2] {
        let e = err_of(train(&gpu, &TrainArgs { steps, warmup: 0, ..base.clone() }));
        assert!(e.contains("the run is complete") && e.contains("step 2") && e.contains(&format!("--steps is {steps}")), "{e}");
    }
    // tensors: dtypes other than F32, and non-finite values, name the file and the tensor
    type Edit = Box<dyn Fn(&[usize], &[f32]) -> (Dtype, Vec<u8>)>;
    let tensor_cases: Vec<(&str, &str, Edit, Vec<&str>)> = vec![
        ("bert.pooler.dense.bias", "I32", Box::new(|_, v| (Dtype::I32, v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect())), vec!["I32", "F32"]),
        (
            "adam_m.bert.pooler.dense.weight",
            "F16",
            Box::new(|_, v| (Dtype::F16, v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect())),
            vec!["F16", "F32"],
        ),
        (
            "adam_v.bert.embeddings.LayerNorm.weight",
            "NaN",
            Box::new(|_, v| {
                let mut v = v.to_vec();
                v[3] = f32::NAN;
                (Dtype::F32, bytemuck::cast_slice(&v).to_vec())
            }),
            vec!["non-finite", "element 3", "cannot be resumed"],
        ),
        (
            "bert.embeddings.word_embeddings.weight",
            "inf",
            Box::new(|_, v| {
                let mut v = v.to_vec();
                v[0] = f32::INFINITY;
                (Dtype::F32, bytemuck::cast_slice(&v).to_vec())
            }),
            vec!["non-finite", "element 0"],
        ),
    ];
    for (name, what, edit, words) in &tensor_cases {
        std::fs::write(&ck, &pristine).unwrap();
        replace_tensor(&ck, name, edit);
        let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
        let e = err_of(train(&gpu, &base));
        assert!(e.contains("checkpoint.safetensors") && e.contains(&format!("'{name}'")), "{what}: {e}");
        for w in words {
            assert!(e.contains(w), "{what}: '{w}' not in {e}");
        }
        assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics, "{what}: metrics rewritten");
        assert!(!out.join("model").exists(), "{what}: model/ written");
    }
    // the pristine checkpoint resumes and finishes
    std::fs::write(&ck, &pristine).unwrap();
    let s = train(&gpu, &base).unwrap();
    assert_eq!((s.start_step, s.losses.last().unwrap().0), (2, 6));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_flag_values_are_refused_naming_the_flag() {
    let gpu = Gpu::default_device().unwrap();
    let d = tmp("flags");
    let out = d.join("out");
    let base = args(&d.join("nodata"), &out, 10);
    let cases: Vec<(TrainArgs, &str)> = vec![
        (TrainArgs { lr: -1.0, ..base.clone() }, "--lr -1"),
        (TrainArgs { lr: 0.0, ..base.clone() }, "--lr 0"),
        (TrainArgs { lr: f32::NAN, ..base.clone() }, "--lr NaN"),
        (TrainArgs { lr: f32::INFINITY, ..base.clone() }, "--lr inf"),
        (TrainArgs { weight_decay: f32::NAN, ..base.clone() }, "--weight-decay NaN"),
        (TrainArgs { weight_decay: -0.5, ..base.clone() }, "--weight-decay -0.5"),
        (TrainArgs { max_grad_norm: f32::NAN, ..base.clone() }, "--max-grad-norm NaN"),
        (TrainArgs { warmup: 11, ..base.clone() }, "--warmup 11"),
        (TrainArgs { steps: 0, ..base.clone() }, "--steps 0"),
        (TrainArgs { batch_size: 0, ..base.clone() }, "--batch-size 0"),
        (TrainArgs { grad_accum: 0, ..base.clone() }, "--grad-accum 0"),
        // NLVR2's flags on another task would be silently ignored
        (TrainArgs { pair_tags: true, ..base.clone() }, "--pair-tags is an NLVR2 flag"),
        (TrainArgs { pair_scale: 2, task: "retrieval".into(), ..base.clone() }, "--pair-scale is an NLVR2 flag"),
    ];
    for (a, words) in &cases {
        let e = err_of(train(&gpu, a));
        assert!(e.starts_with(words), "'{words}' not first in: {e}");
    }
    assert!(!out.exists(), "refused flags created --out");
    // the default warm-up (30) is capped at a shorter --steps rather than refused
    assert_eq!(TrainArgs { steps: 10, ..TrainArgs::default() }.warmup_steps(), 10);
    // clap: `--lr -1` (with a space) parses as a negative number, then is refused by its name
    #[derive(clap::Parser)]
    struct W {
        #[command(flatten)]
        a: TrainArgs,
    }
    let w = <W as clap::Parser>::try_parse_from(["train", "--lr", "-1", "--weight-decay", "-0.5", "--max-grad-norm", "-1"]).unwrap();
    assert_eq!((w.a.lr, w.a.weight_decay, w.a.max_grad_norm), (-1.0, -0.5, -1.0));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vlp-engine"))
        .args(["train", "--lr", "-1", "--out"])
        .arg(&out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("--lr -1: the learning rate must be a finite number > 0"), "{stderr}");
    assert!(!out.exists());
    // bench
    use vlp_engine::train::bench::{bench, BenchArgs};
    let b = BenchArgs { config: "tiny".into(), batch: 2, text: 8, regions: 2, train: true, steps: 0, warmup: 0, profile: false, precision: Precision::F32 };
    let e = err_of(bench(&gpu, &b, std::time::Instant::now()));
    assert!(e.contains("--steps 0"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

const GOOD_CONFIG: &str = r#"{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256,
  "vocab_size": 500, "max_position_embeddings": 32, "img_feature_dim": 38}"#;

fn config_with(key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD_CONFIG).unwrap();
    v[key] = serde_json::from_str(value).unwrap();
    v.to_string()
}

#[test]
fn config_json_is_validated_naming_the_key() {
    let d = tmp("config");
    let f = d.join("config.json");
    let cases = [
        ("max_position_embeddings", "0", "max_position_embeddings is 0"),
        ("hidden_size", "0", "hidden_size is 0"),
        ("vocab_size", "0", "vocab_size is 0"),
        ("intermediate_size", "0", "intermediate_size is 0"),
        ("img_feature_dim", "0", "img_feature_dim is 0"),
        ("num_attention_heads", "0", "num_attention_heads is 0"),
        ("num_hidden_layers", "0", "num_hidden_layers is 0"),
        ("num_hidden_layers", "100000", "num_hidden_layers 100000 is beyond"),
        ("vocab_size", "1000000000", "vocab_size 1000000000 is beyond"),
        ("hidden_size", "1001", "hidden_size 1001 is not a multiple"),
        ("max_position_embeddings", "2000000", "max_position_embeddings 2000000 is beyond"),
        ("layer_norm_eps", "0", "layer_norm_eps 0 must be"),
        ("layer_norm_eps", "-1e-12", "layer_norm_eps"),
        ("img_layer_norm_eps", "0", "img_layer_norm_eps"),
        ("hidden_dropout_prob", "1.5", "hidden_dropout_prob 1.5"),
        ("num_contrast_classes", "4", "num_contrast_classes 4"),
        ("hidden_act", "\"relu\"", "hidden_act 'relu'"),
        ("vocab_size", "-5", "invalid config"),
    ];
    let big = r#"{"hidden_size": 65536, "num_hidden_layers": 1000, "num_attention_heads": 64, "intermediate_size": 4096,
      "vocab_size": 500, "max_position_embeddings": 32}"#;
    let t0 = std::time::Instant::now();
    for (key, value, words) in cases {
        std::fs::write(&f, config_with(key, value)).unwrap();
        let e = err_of(Config::from_file(&f));
        assert!(e.contains("config.json") && e.contains(words), "{key} = {value}: {e}");
    }
    std::fs::write(&f, big).unwrap();
    let e = err_of(Config::from_file(&f));
    assert!(e.contains("cannot fit") && e.contains("num_hidden_layers 1000"), "{e}");
    assert!(t0.elapsed().as_secs() < 2, "absurd sizes are not refused up front");
    std::fs::write(&f, GOOD_CONFIG).unwrap();
    Config::from_file(&f).unwrap();
    // train with a config file: --text-len beyond its max_position_embeddings is an error (not
    // raised quietly, which would change the model's shape)
    let gpu = Gpu::default_device().unwrap();
    world(&d.join("data"));
    let tok = Tok::load(&d.join("data/tokenizer.json")).unwrap();
    std::fs::write(&f, config_with("max_position_embeddings", "12").replace("\"vocab_size\":500", &format!("\"vocab_size\":{}", tok.id_bound()))).unwrap();
    let a = TrainArgs { config: Some(f.display().to_string()), ..args(&d.join("data"), &d.join("out"), 2) };
    let e = err_of(train(&gpu, &a));
    assert!(e.contains("--text-len 16") && e.contains("max_position_embeddings 12"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn tokenizer_files_are_checked_against_file_and_config() {
    let d = tmp("tok");
    let v = d.join("vocab.txt");
    let words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "a", "cube"];
    std::fs::write(&v, words.join("\n")).unwrap();
    let e = err_of(Tok::load(&v));
    assert!(e.contains("vocab.txt:8") && e.contains("'a'") && e.contains("repeats line 6"), "{e}");
    std::fs::write(&v, words[..7].join("\n")).unwrap();
    Tok::load(&v).unwrap();
    // a model directory whose tokenizer has ids beyond the config's vocab_size
    let gpu = Gpu::default_device().unwrap();
    let md = d.join("model");
    std::fs::create_dir_all(&md).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/tiny-synth");
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(src.join(f), md.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let n = Tok::load(&src.join("tokenizer.json")).unwrap().id_bound();
    cfg["vocab_size"] = (n - 10).into();
    std::fs::write(md.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(ModelDir::load(&gpu, &md));
    assert!(e.contains("tokenizer.json") && e.contains("config.json") && e.contains(&format!("vocab_size {}", n - 10)), "{e}");
    // bench on a config with a vocabulary under 1000 tokens (random ids used to underflow)
    let f = d.join("small.json");
    std::fs::write(&f, GOOD_CONFIG).unwrap();
    use vlp_engine::train::bench::{bench, BenchArgs};
    let b = BenchArgs {
        config: f.display().to_string(),
        batch: 2,
        text: 8,
        regions: 2,
        train: true,
        steps: 1,
        warmup: 0,
        profile: false,
        precision: Precision::F32,
    };
    let r = bench(&gpu, &b, std::time::Instant::now()).unwrap();
    assert!(r.ms_per_step > 0.0);
    // ... and its max_position_embeddings (32) is not raised quietly for a longer --text
    let e = err_of(bench(&gpu, &BenchArgs { text: 40, ..b }, std::time::Instant::now()));
    assert!(e.contains("--text 40") && e.contains("max_position_embeddings 32") && e.contains("small.json"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

/// A pid that is certainly not running: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn temporary_files_and_the_output_lock() {
    let d = tmp("files");
    // a failed atomic write (the target is a non-empty directory) leaves no temporary file and
    // names it
    let target = d.join("blocked");
    std::fs::create_dir_all(target.join("inside")).unwrap();
    let e = vlp_engine::util::atomic_write(&target, b"data").unwrap_err().to_string();
    assert!(e.contains(&format!(".blocked.tmp{}", std::process::id())) && e.contains("removed"), "{e}");
    assert!(!listing(&d).iter().any(|f| f.contains(".tmp")), "{:?}", listing(&d));
    // stale temporary files of dead processes go at the start of train; a live process's stay
    let gpu = Gpu::default_device().unwrap();
    world(&d.join("data"));
    let out = d.join("out");
    std::fs::create_dir_all(out.join("model")).unwrap();
    let dead = dead_pid();
    let stale = [out.join(format!(".checkpoint.safetensors.tmp{dead}")), out.join(format!("model/.model.safetensors.tmp{dead}"))];
    let live = out.join(format!(".other.tmp{}", std::process::id()));
    for f in stale.iter().chain([&live]) {
        std::fs::write(f, b"partial").unwrap();
    }
    // a lock held by a live process (this one): refused, naming the lock and the pid, no output
    std::fs::write(out.join(".lock"), format!("{}\n", std::process::id())).unwrap();
    let a = args(&d.join("data"), &out, 2);
    let e = err_of(train(&gpu, &a));
    assert!(e.contains(".lock") && e.contains(&format!("pid {}", std::process::id())) && e.contains("in use"), "{e}");
    assert!(!out.join("metrics.jsonl").exists());
    // a lock left by a killed run is taken over; the run removes it at the end
    std::fs::write(out.join(".lock"), format!("{dead}\n")).unwrap();
    train(&gpu, &a).unwrap();
    assert!(!out.join(".lock").exists(), "the lock outlived the run");
    assert!(stale.iter().all(|f| !f.exists()), "stale temporary files kept");
    assert!(live.exists(), "a live process's temporary file was removed");
    // `train --init` is strict too: an unexpected tensor is refused unless --allow-unexpected
    let init = d.join("init.safetensors");
    let mut t: Tensors = Vec::new();
    let bytes = std::fs::read(out.join("model/model.safetensors")).unwrap();
    for (n, v) in SafeTensors::deserialize(&bytes).unwrap().tensors() {
        t.push((n, v.shape().to_vec(), bytemuck::pod_collect_to_vec(v.data())));
    }
    t.push(("bert.extra_projection.weight".into(), vec![2], vec![1.0, 2.0]));
    write_f32(&init, &t);
    let b = TrainArgs { init: Some(init.clone()), out: d.join("out2"), ..a.clone() };
    let e = err_of(train(&gpu, &b));
    assert!(e.contains("init.safetensors") && e.contains("'bert.extra_projection.weight'") && e.contains("--allow-unexpected"), "{e}");
    assert!(!d.join("out2/metrics.jsonl").exists() && !d.join("out2/model").exists());
    train(&gpu, &TrainArgs { allow_unexpected: true, ..b }).unwrap();
    std::fs::remove_dir_all(&d).ok();
}

/// Runs `f` on `input` and reports a panic as a test failure naming the reader and the input.
fn no_panic<T>(what: &str, k: usize, f: impl FnOnce() -> vlp_engine::Result<T>) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.is_err(),
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            panic!("{what}: input {k} panicked: {msg}")
        }
    }
}

#[test]
fn random_bytes_and_truncations_never_panic_any_reader() {
    let d = tmp("fuzz");
    let gpu = Gpu::default_device().unwrap();
    // valid inputs of every reader
    let c = tiny(1);
    let p = params(&gpu, &c, &Head::Pretrain);
    let ckpt = checkpoint::to_bytes(&p.download(&gpu).unwrap(), HashMap::new()).unwrap();
    let feats = {
        let f = d.join("f.safetensors");
        store::write_features(&f, &[("img1".into(), (0..20).map(|i| i as f32).collect()), ("img2".into(), vec![0.5; 10])], 10).unwrap();
        std::fs::read(&f).unwrap()
    };
    let w = synth::generate(4, 1, 8).unwrap();
    let tok = Tok::train(&w.corpus(), 60).unwrap();
    let tok_json = tok.inner.to_string(false).unwrap().into_bytes();
    let vocab: Vec<u8> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cube", "##s"].join("\n").into_bytes();
    let config = GOOD_CONFIG.as_bytes().to_vec();
    let captions: Vec<u8> = w.captions.iter().map(|c| serde_json::to_string(c).unwrap() + "\n").collect::<String>().into_bytes();
    use base64::Engine;
    let b64 = |v: &[f32]| base64::engine::general_purpose::STANDARD.encode(bytemuck::cast_slice::<f32, u8>(v));
    let tsv = format!("101\t2\t{}\n102\t1\t{}\n", b64(&[0.5; 8]), b64(&[1.5; 4])).into_bytes();
    let tsv_caps = br#"[{"image_id": 101, "caption": "a red cube"}, {"image_id": 102, "caption": "two balls"}]"#.to_vec();
    std::fs::write(d.join("caps.json"), &tsv_caps).unwrap();

    type Reader<'a> = Box<dyn Fn(&Path, usize) -> bool + 'a>;
    fn r<'a>(f: impl Fn(&Path, usize) -> bool + 'a) -> Reader<'a> {
        Box::new(f)
    }
    // (name, file name, valid bytes, reader -> is_err, whether every truncation must be an error)
    let readers: Vec<(&str, &str, &[u8], Reader, bool)> = vec![
        ("checkpoint", "m.safetensors", ckpt.as_slice(), r(|f: &Path, k| no_panic("checkpoint", k, || checkpoint::load(&gpu, &p, f))), true),
        ("features", "feat.safetensors", feats.as_slice(), r(|f: &Path, k| no_panic("features", k, || store::read_image_features(f, "img1", 10))), true),
        ("config.json", "config.json", config.as_slice(), r(|f: &Path, k| no_panic("config.json", k, || Config::from_file(f))), true),
        ("tokenizer.json", "tokenizer.json", tok_json.as_slice(), r(|f: &Path, k| no_panic("tokenizer.json", k, || Tok::load(f))), true),
        // a vocab.txt or JSONL cut at a line end is still valid
        ("vocab.txt", "vocab.txt", vocab.as_slice(), r(|f: &Path, k| no_panic("vocab.txt", k, || Tok::load(f))), false),
        ("captions.jsonl", "captions.jsonl", &captions, r(|f: &Path, k| no_panic("captions.jsonl", k, || store::read_jsonl::<synth::Caption>(f))), false),
        (
            "feature TSV",
            "features.tsv",
            &tsv,
            r(|f: &Path, k| {
                let out = f.with_file_name(format!("store{k}"));
                let err = no_panic("feature TSV", k, || vlp_engine::data::convert::convert(f, None, &f.with_file_name("caps.json"), "train", &out));
                // a failed import leaves nothing behind
                assert!(!err || !out.exists(), "feature TSV: input {k}: a failed import left {}", out.display());
                let _ = std::fs::remove_dir_all(&out);
                err
            }),
            false,
        ),
    ];
    let mut rng = Rng::new(12);
    let (mut total, mut refused) = (0usize, 0usize);
    let t0 = std::time::Instant::now();
    for (name, file, valid, read, strict) in &readers {
        let f = d.join(file);
        std::fs::write(&f, valid).unwrap();
        assert!(!read(&f, 0), "{name}: the valid input is refused");
        let mut k = 1;
        // random bytes (half of them after the valid file's first bytes, to get past magic numbers
        // and headers; always at least 16 random bytes, so that the input is not a valid file)
        for i in 0..100 {
            let n = rng.below(2 * valid.len().min(4096) + 1);
            let keep = if i % 2 == 1 { rng.below(valid.len().min(64) + 1) } else { 0 };
            let mut b = valid[..keep].to_vec();
            b.extend((0..n.max(16)).map(|_| rng.next_u64() as u8));
            std::fs::write(&f, &b).unwrap();
            assert!(read(&f, k), "{name}: random input {k} ({} bytes) was accepted", b.len());
            refused += 1;
            k += 1;
        }
        // truncations (every one an error where a cut file can never be valid)
        for _ in 0..100 {
            let n = rng.below(valid.len());
            std::fs::write(&f, &valid[..n]).unwrap();
            let err = read(&f, k);
            assert!(err || !strict, "{name}: truncation to {n} of {} bytes was accepted", valid.len());
            refused += err as usize;
            k += 1;
        }
        // flips of 1 to 4 bits: may stay valid; must not panic
        for _ in 0..100 {
            let mut b = valid.to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            std::fs::write(&f, &b).unwrap();
            refused += read(&f, k) as usize;
            k += 1;
        }
        total += k;
        eprintln!("{name}: {k} inputs, {:.1} s so far", t0.elapsed().as_secs_f64());
    }
    eprintln!("{total} inputs to {} readers ({refused} refused, none panicked) in {:.1} s", readers.len(), t0.elapsed().as_secs_f64());
    assert_eq!(total, readers.len() * 301);
    std::fs::remove_dir_all(&d).ok();
}
