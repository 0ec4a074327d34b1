//! Captioning end to end at tiny size on a small synthetic world: `train --task caption` learns the
//! captions' language, `eval --task caption` decodes every image (beam search, CBS) and scores the
//! captions, `caption` describes a store image, and `train --scst` runs self-critical steps.
use std::path::{Path, PathBuf};
use vlp_engine::apps::caption::{caption, CaptionArgs, SearchArgs};
use vlp_engine::apps::evaluate::{evaluate, EvalArgs};
use vlp_engine::data::pretrain::PretrainData;
use vlp_engine::data::{store, synth, Tok};
use vlp_engine::gpu::Gpu;
use vlp_engine::model::Config;
use vlp_engine::tasks::{caption::CaptionLayout, scst::Scst, Task};
use vlp_engine::train::{train, trainer, TrainArgs};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vlp-caption-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn args(data: &Path, out: &Path, steps: usize) -> TrainArgs {
    TrainArgs {
        task: "caption".into(),
        data: Some(data.to_path_buf()),
        out: out.to_path_buf(),
        steps,
        batch_size: 16,
        text_len: 26,
        caption_len: 20,
        regions: 6,
        warmup: 5,
        lr: 3e-3,
        log_every: 10,
        eval_every: 40,
        eval_batches: 4,
        save_every: 0,
        progress: false,
        ..TrainArgs::default()
    }
}

fn eval_args(model: &Path, data: &Path, search: SearchArgs, out: &Path) -> EvalArgs {
    EvalArgs {
        task: "caption".into(),
        model: model.to_path_buf(),
        data: data.to_path_buf(),
        split: "val".into(),
        images: Some(6),
        batch: 16,
        text_len: 26,
        regions: 6,
        no_tags: false,
        out: Some(out.to_path_buf()),
        search,
    }
}

#[test]
fn a_tiny_captioner_trains_decodes_scores_and_runs_self_critical_steps() {
    let d = tmp("e2e");
    let data = d.join("data");
    let w = synth::generate(300, 5, 38).unwrap();
    let tok = Tok::train(&w.corpus(), 300).unwrap();
    store::write_world(&data, &w, &tok).unwrap();
    let gpu = Gpu::default_device().unwrap();

    let s = train(&gpu, &args(&data, &d.join("ce"), 160)).unwrap();
    let metrics = std::fs::read_to_string(d.join("ce/metrics.jsonl")).unwrap();
    let acc: Vec<f64> =
        metrics.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().get("val_token_acc").and_then(|v| v.as_f64())).collect();
    assert_eq!(acc.len(), 4, "validated every 40 steps: {metrics}");
    // the grounding diagnostic: accuracy on the masked words that are one of the image's tags
    let tag_acc: Vec<f64> =
        metrics.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().get("val_tag_word_acc").and_then(|v| v.as_f64())).collect();
    assert!(tag_acc.len() == 4 && tag_acc.iter().all(|v| (0.0..=1.0).contains(v)), "{metrics}");
    // object-aware masking is a share of the captions: outside [0, 1] is an error naming the flag
    let e = train(&gpu, &TrainArgs { mask_tag_words: 1.5, ..args(&data, &d.join("bad"), 10) }).unwrap_err().to_string();
    assert!(e.contains("--mask-tag-words 1.5"), "{e}");
    // a self-critical flag without --scst is an error, not plain caption training
    let e = train(&gpu, &TrainArgs { scst_sampler: "beam".into(), ..args(&data, &d.join("bad"), 10) }).unwrap_err().to_string();
    assert!(e.contains("--scst-sampler") && e.contains("add --scst"), "{e}");
    eprintln!("val_token_acc {acc:?}, loss {:?} -> {:?}", s.losses.first(), s.losses.last());
    // the caption language (grammar, [SEP] to stop) is learned in a few dozen steps
    assert!(acc[3] > 0.3 && acc[3] > acc[0] + 0.05, "masked caption tokens: {acc:?}");
    let model = d.join("ce/model");
    assert!(model.join("caption.json").exists() && model.join("head.json").exists());

    // beam search over the validation images: one caption each, scored
    let beam = SearchArgs { beam: 3, max_gen_length: 14, images_per_plan: 4, ..SearchArgs::default() };
    let o = evaluate(&gpu, &eval_args(&model, &data, beam, &d.join("beam")), false).unwrap();
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(d.join("beam/captions.json")).unwrap()).unwrap();
    assert_eq!(caps.len(), 6);
    assert!(caps.values().all(|c| !c.as_str().unwrap().trim().is_empty()), "{caps:?}");
    for k in ["BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"] {
        let v = o[k].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v >= 0.0, "{k} = {v} in {o}");
    }
    assert!(o["BLEU-1"].as_f64().unwrap() > 0.2, "captions in the world's language share words with its references: {o}");
    let baseline = o["tags_baseline"]["CIDEr"].as_f64().unwrap_or(f64::NAN);
    assert!(baseline > 0.0, "{o}");
    assert!(d.join("beam/metrics.json").exists());
    // an image whose detector missed everything has empty tags: the baseline is still reported,
    // that image's empty caption scoring nothing
    let images = std::fs::read_to_string(data.join("images.jsonl")).unwrap();
    let mut blanked = false;
    let lines: Vec<String> = images
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if !blanked && v["split"] == "val" && v["tags"] != "" {
                v["tags"] = "".into();
                blanked = true;
            }
            v.to_string()
        })
        .collect();
    assert!(blanked);
    std::fs::write(data.join("images.jsonl"), lines.join("\n")).unwrap();
    let greedy = SearchArgs { beam: 1, max_gen_length: 14, images_per_plan: 6, ..SearchArgs::default() };
    let o = evaluate(&gpu, &eval_args(&model, &data, greedy, &d.join("blank")), false).unwrap();
    std::fs::write(data.join("images.jsonl"), &images).unwrap();
    let b = o["tags_baseline"]["CIDEr"].as_f64().unwrap_or(f64::NAN);
    assert!(b >= 0.0 && b < baseline, "the baseline with one image's tags blanked: {b} (all tags: {baseline}) in {o}");

    // constrained beam search mentions the tags (at least 2 of up to 3 per image) where beam search need not
    let cbs = SearchArgs { beam: 1, max_gen_length: 14, cbs: true, images_per_plan: 2, ..SearchArgs::default() };
    let oc = evaluate(&gpu, &eval_args(&model, &data, cbs, &d.join("cbs")), false).unwrap();
    let (rb, rc) = (o["tag_recall"].as_f64().unwrap(), oc["tag_recall"].as_f64().unwrap());
    eprintln!("tag recall: beam {rb:.3}, cbs {rc:.3}");
    assert!(rc >= 0.6 && rc > rb, "CBS tag recall {rc} vs beam {rb}");

    // the caption command: one store image, two samples
    let id = caps.keys().next().unwrap().clone();
    let search = SearchArgs { sample: Some(2), max_gen_length: 14, images_per_plan: 1, ..SearchArgs::default() };
    let a =
        CaptionArgs { model: model.clone(), data: Some(data.clone()), image: vec![id.clone()], image_file: vec![], grid: 4, tags: None, search, json: false };
    let got = caption(&gpu, &a).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(i, c)| *i == id && !c.is_empty()));
    // careless input: a longer caption than the model was trained for, CBS and sampling at once
    let long = SearchArgs { max_gen_length: 40, ..SearchArgs::default() };
    let e = caption(&gpu, &CaptionArgs { search: long, ..a.clone() }).unwrap_err().to_string();
    assert!(e.contains("--max-gen-length 40"), "{e}");
    let both = SearchArgs { cbs: true, sample: Some(2), ..SearchArgs::default() };
    let e = caption(&gpu, &CaptionArgs { search: both, ..a.clone() }).unwrap_err().to_string();
    assert!(e.contains("--cbs") && e.contains("--sample"), "{e}");
    let e = caption(&gpu, &CaptionArgs { image: vec!["nope".into()], ..a }).unwrap_err().to_string();
    assert!(e.contains("no image 'nope'"), "{e}");

    // self-critical steps from the captioner: rewards logged, the loss finite
    let sc = TrainArgs {
        init: Some(model.clone()),
        scst: true,
        scst_samples: 3,
        scst_max_gen_length: 12,
        batch_size: 2,
        steps: 3,
        warmup: 0,
        lr: 1e-4,
        log_every: 1,
        eval_every: 3,
        ..args(&data, &d.join("scst"), 3)
    };
    // careless --keep-best: a metric SCST's evaluation lacks, or no evaluations at all
    let e = train(&gpu, &TrainArgs { keep_best: Some("val_accuracy".into()), ..sc.clone() }).unwrap_err().to_string();
    assert!(e.contains("--keep-best val_accuracy") && e.contains("reports val_cider_d"), "{e}");
    let e = train(&gpu, &TrainArgs { keep_best: Some("val_cider_d".into()), eval_every: 0, ..sc.clone() }).unwrap_err().to_string();
    assert!(e.contains("--keep-best val_cider_d") && e.contains("--eval-every 0"), "{e}");
    let s = train(&gpu, &sc).unwrap();
    assert!(s.losses.iter().all(|(_, l, _)| l.is_finite()));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(d.join("scst/metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        let (r, b) = (l["reward"].as_f64().unwrap(), l["greedy_reward"].as_f64().unwrap());
        assert!(r.is_finite() && r >= 0.0 && b.is_finite() && b >= 0.0, "{l}");
    }
    assert!(lines[2]["val_cider_d"].as_f64().is_some_and(|v| v.is_finite()), "{}", lines[2]);
    assert!(d.join("scst/model/caption.json").exists());

    // the gradient pass is that of the expected reward: on one image, whose references fix the
    // optimum, 100 self-critical steps raise the mean reward of the samples
    let rewards = one_image_scst(&gpu, &data, &model, &d.join("scst1"), 100, 1e-3, false);
    keeps_the_best_evaluation(&d.join("scst1"));
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let (first, last) = (mean(&rewards[..20]), mean(&rewards[80..]));
    eprintln!("one-image SCST, mean sample reward: steps 1-20 {first:.3}, 81-100 {last:.3}");
    assert!(last > first + 0.15 && last > 1.5 * first, "the samples' reward must rise: {first:.3} -> {last:.3} ({rewards:?})");
    // --scst-sampler beam: the captions are a beam search's 5 best, the same at every step while
    // the model stands still, where multinomial samples differ
    let still = |beam, out: &str| one_image_scst(&gpu, &data, &model, &d.join(out), 3, 1e-12, beam);
    let (beam, sampled) = (still(true, "scst_beam"), still(false, "scst_still"));
    assert!(beam.iter().all(|&r| r == beam[0] && r > 0.0), "beam-searched captions: {beam:?}");
    assert!(sampled.iter().any(|&r| r != sampled[0]), "sampled captions: {sampled:?}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Self-critical training on the store's first training image only (5 samples a step, or the 5
/// best of a beam search); the mean reward of each step's captions. Sampled runs also evaluate
/// every 20 steps and keep the best model (`--keep-best val_cider_d`).
fn one_image_scst(gpu: &Gpu, data: &Path, model: &Path, out: &Path, steps: usize, lr: f32, beam: bool) -> Vec<f64> {
    let tok = Tok::load(&data.join("tokenizer.json")).unwrap();
    let cfg = Config::load(&model.join("config.json").display().to_string()).unwrap();
    let pd = PretrainData::load(data, &tok).unwrap();
    let texts = store::caption_texts(data).unwrap();
    let layout = CaptionLayout { caption_len: 20, text_len: 26, regions: 6 };
    let mut t = Scst::new(&pd, &tok, &texts, layout, 1, 5, 12, true).unwrap();
    t.train_images.truncate(1);
    t.val_images = t.train_images.clone();
    t.beam_samples = beam;
    let a = TrainArgs {
        init: Some(model.to_path_buf()),
        scst: true,
        scst_samples: 5,
        scst_max_gen_length: 12,
        batch_size: 1,
        warmup: 0,
        lr,
        log_every: 1,
        eval_every: if beam { 0 } else { 20 },
        keep_best: (!beam).then(|| "val_cider_d".into()),
        ..args(data, out, steps)
    };
    trainer::run(gpu, &a, &cfg, &t.head(&cfg), &t, &tok, Some(&model.join("model.safetensors"))).unwrap();
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let r: Vec<f64> = lines.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reward"].as_f64().unwrap()).collect();
    assert_eq!(r.len(), steps, "{lines}");
    r
}

/// OUT/best of a `--keep-best val_cider_d` run is a whole model directory holding the evaluation
/// (the start's included) with the highest validation CIDEr-D.
fn keeps_the_best_evaluation(out: &Path) {
    let best: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("best/best.json")).unwrap()).unwrap();
    let (step, value) = (best["step"].as_u64().unwrap(), best["value"].as_f64().unwrap());
    let evals: Vec<(u64, f64)> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v["val_cider_d"].as_f64()?)))
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [20, 40, 60, 80, 100], "evaluations every 20 steps");
    assert!(evals.iter().all(|e| e.1 <= value + 1e-6), "best {value} at step {step}; evaluations {evals:?}");
    assert!(step > 0, "100 steps on the one validation image beat the start: best {value} at step {step}; {evals:?}");
    {
        let at = evals.iter().find(|e| e.0 == step).expect("the best step is an evaluation");
        assert!((at.1 - value).abs() < 1e-6, "{at:?} vs {value}");
    }
    let meta = safetensors::SafeTensors::read_metadata(&std::fs::read(out.join("best/model.safetensors")).unwrap()).unwrap().1;
    assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("step")).map(String::as_str), Some(step.to_string().as_str()));
    for f in ["config.json", "head.json", "tokenizer.json", "caption.json"] {
        assert!(out.join("best").join(f).exists(), "best/{f}");
    }
}
