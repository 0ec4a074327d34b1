//! Fine-tuning tasks end to end at tiny size on a small synthetic world (feature dim 38): each
//! trains from scratch through `train --task`, saves a model directory with its head (and answer
//! vocabulary), and `eval` scores it. GQA (cross-entropy) and VQA (soft BCE) must beat the majority
//! answer clearly: in this budget both learn what the question type gives (about 55 % against 26 %);
//! using the tags or regions to answer needs far more steps than a test has (README, "Do object tags
//! help?"). Retrieval and NLVR2 are decided by matching words to tags and regions alone: they
//! train on 4000-image worlds of fewer classes (6 and 3) with no dropout and a larger init
//! (`world_of`), where a tiny model learns that in 1000–1200 steps, and must beat chance clearly.
//! `VLP_TASKS_SEED` changes the training seed (the margins were checked on seeds 42 and 7).
use std::path::{Path, PathBuf};
use vlp_engine::apps::evaluate::{evaluate, EvalArgs};
use vlp_engine::data::{store, synth, Tok};
use vlp_engine::gpu::Gpu;
use vlp_engine::model::Config;
use vlp_engine::train::{train, TrainArgs};

fn world(dir: &Path) {
    if !dir.join("captions.jsonl").exists() {
        let w = synth::generate(300, 3, 38).unwrap();
        let tok = Tok::train(&w.corpus(), 300).unwrap();
        store::write_world(dir, &w, &tok).unwrap();
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vlp-tasks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn seed() -> u64 {
    std::env::var("VLP_TASKS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42)
}

/// `train --task` with the defaults a user gets (learning rate 1e-3), at a test's size.
fn finetune(gpu: &Gpu, data: &Path, out: &Path, task: &str, steps: usize) -> vlp_engine::train::Summary {
    let a = TrainArgs {
        task: task.into(),
        data: Some(data.to_path_buf()),
        out: out.to_path_buf(),
        steps,
        batch_size: 16,
        text_len: 16,
        regions: 6,
        warmup: 8,
        log_every: 10,
        eval_every: steps,
        eval_batches: 8,
        save_every: 0,
        head_dropout: 0.1,
        progress: false,
        seed: seed(),
        ..TrainArgs::default()
    };
    train(gpu, &a).unwrap()
}

fn eval_args(task: &str, model: &Path, data: &Path) -> EvalArgs {
    EvalArgs {
        task: task.into(),
        model: model.to_path_buf(),
        data: data.to_path_buf(),
        split: "val".into(),
        images: Some(12),
        batch: 32,
        text_len: 16,
        regions: 6,
        no_tags: false,
        out: None,
        search: Default::default(),
    }
}

/// Fine-tunes `task` (gqa or vqa) and checks that validation accuracy, and `eval`'s on all
/// validation questions, beat the training split's majority answer by `margin` points.
fn qa_beats_the_majority_answer(task: &str, steps: usize, margin: f32) -> (PathBuf, PathBuf) {
    let d = tmp(task);
    world(&d.join("data"));
    let gpu = Gpu::default_device().unwrap();
    let s = finetune(&gpu, &d.join("data"), &d.join("out"), task, steps);
    let val = s.eval.expect("evaluated at the last step")["val_accuracy"];
    // the majority answer of the training split, on the validation questions
    let tok = Tok::load(&d.join("data/tokenizer.json")).unwrap();
    let data = vlp_engine::data::pretrain::PretrainData::load(&d.join("data"), &tok).unwrap();
    let qa = vlp_engine::tasks::qa::Qa::load(&d.join("data"), &data, &tok, task == "vqa", None, 1, 16, 16, 6, 0.0).unwrap();
    let majority = qa.majority_baseline(&qa.pool("val"));
    eprintln!("{task}: val accuracy {val:.1} % vs majority answer {majority:.1} %");
    assert!((10.0..50.0).contains(&majority), "majority baseline {majority}");
    assert!(val > majority + margin, "{task} {val} % does not beat the majority answer {majority} % clearly");
    let model = d.join("out/model");
    let answers: Vec<String> = serde_json::from_str(&std::fs::read_to_string(model.join("answers.json")).unwrap()).unwrap();
    assert_eq!(answers, qa.answers, "the saved answer vocabulary");
    let out = d.join("metrics.json");
    let r = evaluate(&gpu, &EvalArgs { out: Some(out.clone()), ..eval_args(task, &model, &d.join("data")) }, false).unwrap();
    let acc = r["accuracy"].as_f64().unwrap();
    eprintln!("{task} eval: {r}");
    assert!(acc > (majority + margin) as f64, "eval accuracy {acc} on all {} val questions", r["questions"]);
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert_eq!(written["accuracy"], r["accuracy"]);
    (d, model)
}

#[test]
fn gqa_beats_the_majority_answer_and_eval_agrees() {
    let (d, model) = qa_beats_the_majority_answer("gqa", 100, 15.0);
    // a GQA model is not a retrieval model
    let gpu = Gpu::default_device().unwrap();
    let e = evaluate(&gpu, &eval_args("nlvr2", &model, &d.join("data")), false).unwrap_err().to_string();
    assert!(e.contains("cannot be evaluated on --task nlvr2"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Regression (issue 10): with the classifier's bias at zero, BCE over the answers spent the run
/// pushing every logit down and the model answered the majority answer to every question.
#[test]
fn vqa_soft_bce_beats_the_majority_answer() {
    let (d, _) = qa_beats_the_majority_answer("vqa", 100, 15.0);
    let _ = std::fs::remove_dir_all(&d);
}

/// Worlds where retrieval and NLVR2 learn from scratch in a test's budget (docs/finetuning-log.md
/// §12–13): 4000 images of the first `classes` object classes, and a tiny config with no dropout
/// and init 0.15 (at the default 0.02 and dropout 0.1 both stay at chance for thousands of steps).
/// Made once per test process and class count; returns the store and the config file.
fn world_of(classes: usize) -> (PathBuf, PathBuf) {
    static W: std::sync::Mutex<Vec<(usize, PathBuf, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut made = W.lock().unwrap();
    if let Some((_, data, config)) = made.iter().find(|w| w.0 == classes) {
        return (data.clone(), config.clone());
    }
    let d = tmp(&format!("world{classes}"));
    let w = synth::generate_with_classes(4000, 3, 38, classes).unwrap();
    let tok = Tok::train(&w.corpus(), 300).unwrap();
    store::write_world(&d.join("data"), &w, &tok).unwrap();
    let mut c = Config::preset("tiny").unwrap();
    (c.vocab_size, c.img_feature_dim, c.initializer_range) = (tok.id_bound(), 38, 0.15);
    (c.hidden_dropout_prob, c.attention_probs_dropout_prob) = (0.0, 0.0);
    std::fs::write(d.join("config.json"), c.to_json()).unwrap();
    made.push((classes, d.join("data"), d.join("config.json")));
    (d.join("data"), d.join("config.json"))
}

/// `train --task` from scratch on `world_of(classes)` at its config: 8 examples a step, no head
/// dropout.
fn finetune_on(gpu: &Gpu, classes: usize, out: &Path, task: &str, steps: usize, pair_tags: bool) -> vlp_engine::train::Summary {
    let (data, config) = world_of(classes);
    let a = TrainArgs {
        task: task.into(),
        data: Some(data),
        config: Some(config.to_string_lossy().into_owned()),
        out: out.to_path_buf(),
        steps,
        batch_size: 8,
        text_len: 24,
        regions: 6,
        warmup: 50.min(steps),
        head_dropout: 0.0,
        pair_tags,
        log_every: 100,
        eval_every: steps,
        eval_batches: 8,
        save_every: 0,
        progress: false,
        seed: seed(),
        ..TrainArgs::default()
    };
    let s = train(gpu, &a).unwrap();
    assert!(s.losses.iter().all(|l| l.1.is_finite()), "{task}: {:?}", s.losses);
    assert!(out.join("model/head.json").exists());
    s
}

/// Retrieval fine-tuned from scratch (6 classes) ranks the first 50 test images and their 250
/// captions well above chance both ways. Chance: t2i R@K = K/50; i2t R@K = 1 - C(245, K)/C(250, K)
/// (5 true captions among 250): 9.7 % at K = 5, 18.6 % at K = 10. Seeds 1, 2, 3, 7 and 42 gave
/// R@10 34–44 (i2t) and 37–51 (t2i), R@5 + R@10 at least 51.6 (docs/finetuning-log.md §13).
#[test]
fn retrieval_beats_chance_both_ways() {
    let d = tmp("retrieval");
    let gpu = Gpu::default_device().unwrap();
    finetune_on(&gpu, 6, &d, "retrieval", 1200, false);
    let (data, _) = world_of(6);
    let a = EvalArgs { split: "test".into(), images: Some(50), text_len: 24, ..eval_args("retrieval", &d.join("model"), &data) };
    let r = evaluate(&gpu, &a, false).unwrap();
    eprintln!("retrieval: {r}");
    assert_eq!((r["images"].as_u64(), r["captions"].as_u64()), (Some(50), Some(250)), "{r}");
    assert!(r["pairs_per_s"].as_f64().unwrap() > 0.0);
    let m = |k: &str| r[k].as_f64().unwrap();
    for dir in ["i2t", "t2i"] {
        let (r1, r5, r10) = (m(&format!("{dir}_R@1")), m(&format!("{dir}_R@5")), m(&format!("{dir}_R@10")));
        assert!(r1 <= r5 && r5 <= r10, "R@K must grow with K: {r}");
        // chance: R@10 about 20, R@5 + R@10 about 30
        assert!(r10 >= 30.0 && r5 + r10 >= 45.0, "{dir} does not beat chance clearly (R@5 {r5}, R@10 {r10}): {r}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// NLVR2 as Oscar runs it (statement + one image's regions per sequence, no tags), fine-tuned from
/// scratch on a 3-class world, beats the majority label of the test statements (balanced, so
/// about 50 %) clearly: seeds 42 and 7 scored 89.5 and 83.3 % against 54.1 %. With 6 classes "both
/// images contain" stays at chance in this budget (log §13).
#[test]
fn nlvr2_beats_the_majority_label() {
    let d = tmp("nlvr2");
    let gpu = Gpu::default_device().unwrap();
    let s = finetune_on(&gpu, 3, &d, "nlvr2", 1000, false);
    let (data, _) = world_of(3);
    let jsonl =
        |f: &str| -> Vec<serde_json::Value> { std::fs::read_to_string(data.join(f)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let split: std::collections::HashMap<String, String> =
        jsonl("images.jsonl").iter().map(|v| (v["id"].as_str().unwrap().to_string(), v["split"].as_str().unwrap().to_string())).collect();
    let test: Vec<_> = jsonl("nlvr2.jsonl").into_iter().filter(|r| split[r["left"].as_str().unwrap()] == "test").collect();
    let truth = 100.0 * test.iter().filter(|r| r["label"] == true).count() as f64 / test.len() as f64;
    let majority = truth.max(100.0 - truth);
    let r = evaluate(&gpu, &EvalArgs { split: "test".into(), images: None, text_len: 24, ..eval_args("nlvr2", &d.join("model"), &data) }, false).unwrap();
    eprintln!("nlvr2: {r}, val {:?}, majority label {majority:.1} %", s.eval);
    assert_eq!(r["examples"].as_u64(), Some(test.len() as u64), "{r}");
    assert!(test.len() > 200 && majority < 56.0, "{} test statements, majority label {majority} %", test.len());
    let acc = r["accuracy"].as_f64().unwrap();
    assert!(acc > majority + 12.0, "NLVR2 accuracy {acc} % does not beat the majority label {majority} % clearly: {r}");
    let _ = std::fs::remove_dir_all(&d);
}

/// `--pair-tags` (Oscar's `--use_label_seq`): the saved head says so, and `eval` reads it back (the
/// sequences it builds are checked in `tasks::nlvr2`'s unit test).
#[test]
fn nlvr2_pair_tags_are_kept_by_the_saved_head() {
    let d = tmp("nlvr2-tags");
    let gpu = Gpu::default_device().unwrap();
    finetune_on(&gpu, 3, &d, "nlvr2", 20, true);
    let head: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("model/head.json")).unwrap()).unwrap();
    assert_eq!(head["tags"], true, "{head}");
    let (data, _) = world_of(3);
    let r = evaluate(&gpu, &EvalArgs { split: "val".into(), images: None, text_len: 24, ..eval_args("nlvr2", &d.join("model"), &data) }, false).unwrap();
    assert!(r["examples"].as_u64().unwrap() > 100 && (0.0..=100.0).contains(&r["accuracy"].as_f64().unwrap()), "{r}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_folder_of_pngs_goes_through_convert_images_train_vqa_eval_and_answer_image_file() {
    use image::{Rgb, RgbImage};
    use vlp_engine::apps::query::{answer, QueryArgs};
    use vlp_engine::data::images::{convert_images, Patches};
    let d = tmp("png");
    let colours = [("red", [220u8, 20, 20]), ("green", [20, 200, 40]), ("blue", [30, 40, 210])];
    for split in ["train", "val"] {
        let dir = d.join(format!("png-{split}"));
        std::fs::create_dir_all(&dir).unwrap();
        let n = if split == "train" { 12 } else { 6 };
        for i in 0..n {
            let (_, rgb) = colours[i % 3];
            // a coloured square on a grey background, at a place that varies
            let img = RgbImage::from_fn(24, 24, |x, y| if (x + i as u32) % 24 < 14 && (y + 2 * i as u32) % 24 < 14 { Rgb(rgb) } else { Rgb([128, 128, 128]) });
            img.save(dir.join(format!("{split}{i:02}.png"))).unwrap();
        }
        convert_images(&dir, &d.join("store"), split, Patches::new(2, Some(8)).unwrap(), None, None).unwrap();
    }
    // questions about the images, and a tokenizer for their words
    let mut lines = String::new();
    for split in ["train", "val"] {
        for i in 0..(if split == "train" { 12 } else { 6 }) {
            lines.push_str(&format!("{{\"image_id\":\"{split}{i:02}\",\"question\":\"what color is the square?\",\"answer\":\"{}\"}}\n", colours[i % 3].0));
        }
    }
    std::fs::write(d.join("store/vqa.jsonl"), lines).unwrap();
    std::fs::write(d.join("store/captions.jsonl"), "{\"image_id\":\"train00\",\"caption\":\"a red square\"}\n").unwrap();
    let tok = Tok::train(&["what color is the square? red green blue a".to_string()], 100).unwrap();
    tok.save(&d.join("store/tokenizer.json")).unwrap();
    let gpu = Gpu::default_device().unwrap();
    let s = finetune(&gpu, &d.join("store"), &d.join("out"), "vqa", 30);
    assert!(s.losses.iter().all(|l| l.1.is_finite()));
    let model = d.join("out/model");
    let cfg = vlp_engine::model::Config::from_file(&model.join("config.json")).unwrap();
    assert_eq!(cfg.img_feature_dim, 3 * 4 * 4 + 6, "a tiny preset adapts to 4x4-pixel patches");
    let r = evaluate(&gpu, &eval_args("vqa", &model, &d.join("store")), false).unwrap();
    assert_eq!(r["questions"], 6);
    assert!((0.0..=100.0).contains(&r["accuracy"].as_f64().unwrap()), "{r}");
    let q = QueryArgs {
        model: model.clone(),
        data: d.join("store"),
        query: None,
        image: None,
        image_file: Some(d.join("png-val/val01.png")),
        grid: 2,
        question: Some("what color is the square?".into()),
        tags: None,
        top: 3,
        batch: 8,
        text_len: 16,
        regions: 6,
    };
    let top = answer(&gpu, &q).unwrap();
    eprintln!("answer --image-file: {top:?}");
    assert_eq!(top.len(), 3);
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1) && top.iter().all(|t| (0.0..=1.0).contains(&t.1)), "{top:?}");
    assert!(top.iter().all(|t| ["red", "green", "blue"].contains(&t.0.as_str())));
    // a file that is not an image is an error naming it
    std::fs::write(d.join("broken.png"), b"not a png").unwrap();
    let e = answer(&gpu, &QueryArgs { image_file: Some(d.join("broken.png")), ..q.clone() }).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
