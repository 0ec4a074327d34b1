//! Diagnostics for fine-tuned VQA/GQA models on the synthetic world (issue 10,
//! docs/finetuning-log.md):
//!   cargo run --release --example probe -- decode STORE [N]
//!       the first N training questions as a GQA batch, decoded: tokens, token types, mask, label
//!   cargo run --release --example probe -- qa MODEL STORE [SPLIT] [--no-tags]
//!       accuracy per question type against that type's prior (the training split's most frequent
//!       answer for the type), what the model answers; the spread of [CLS], pooled and logits
//!       across "is there a X?" questions; and the tag flip: each such question with X put into
//!       the image's tags, then taken out — a model that reads the tags says "yes" more often.
use std::collections::BTreeMap;
use std::path::Path;
use vlp_engine::apps::ModelDir;
use vlp_engine::data::pretrain::PretrainData;
use vlp_engine::data::Tok;
use vlp_engine::gpu::Gpu;
use vlp_engine::model::heads::{argmax, HeadActs};
use vlp_engine::model::Labels;
use vlp_engine::tasks::qa::Qa;
use vlp_engine::tasks::{empty_batch, push_sequence};

fn kind(q: &str) -> &'static str {
    if q.starts_with("what color") {
        "color"
    } else if q.starts_with("how many") {
        "count"
    } else if q.starts_with("is there") {
        "exist"
    } else {
        "other"
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "decode" => decode(Path::new(&args[2]), args.get(3).map_or(6, |s| s.parse().unwrap())),
        "qa" => qa(Path::new(&args[2]), Path::new(&args[3]), args.get(4).map_or("val", |s| s.as_str()), args.iter().any(|a| a == "--no-tags")),
        c => panic!("unknown {c}"),
    }
}

fn decode(data: &Path, n: usize) {
    let tok = Tok::load(&data.join("tokenizer.json")).unwrap();
    let d = PretrainData::load(data, &tok).unwrap();
    let qa = Qa::load(data, &d, &tok, false, None, 1, n, 32, 6, 0.0).unwrap();
    let picks: Vec<usize> = qa.train_pool[..n].to_vec();
    let b = qa.batch_of(&picks);
    let s = 32 + 6;
    let Labels::Class(y) = &b.labels else { panic!() };
    for (i, &label) in y.iter().enumerate().take(n) {
        let ids = &b.input_ids[i * 32..(i + 1) * 32];
        let toks: Vec<String> = ids.iter().map(|&t| tok.inner.id_to_token(t).unwrap_or_default()).collect();
        println!("{}", toks.join(" "));
        println!("  types {:?}", &b.type_ids[i * 32..(i + 1) * 32]);
        println!("  mask  {:?}", &b.mask[i * s..(i + 1) * s]);
        println!("  label {label} = {:?}", qa.answers.get(label as usize));
    }
    println!("answers {:?}", qa.answers);
}

fn qa(model: &Path, data_dir: &Path, split: &str, no_tags: bool) {
    let gpu = Gpu::default_device().unwrap();
    let m = ModelDir::load(&gpu, model).unwrap();
    let mut data = PretrainData::load(data_dir, &m.tok).unwrap();
    if no_tags {
        data.clear_tags();
    }
    let soft = matches!(m.head, vlp_engine::model::Head::Classifier { loss: vlp_engine::model::ClassLoss::SoftBce, .. });
    let answers = m.answers(model).unwrap();
    let (text, regions, batch) = (32, 6, 64);
    let qa = Qa::load(data_dir, &data, &m.tok, soft, Some(answers.clone()), 1, batch, text, regions, 0.0).unwrap();
    let recs: Vec<serde_json::Value> = std::fs::read_to_string(data_dir.join("vqa.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let pool = qa.pool(split);
    let (step, s) = m.eval_step(&gpu, batch, text, regions).unwrap();
    let pred = qa.predict(&gpu, &m.cfg, &step, &pool, |_| {}).unwrap();
    // per type: accuracy, majority-of-type prior (from train), distinct predictions
    let mut prior: BTreeMap<&str, BTreeMap<usize, usize>> = BTreeMap::new();
    for &q in &qa.train_pool {
        if let Some(l) = qa.questions[q].label {
            *prior.entry(kind(recs[q]["question"].as_str().unwrap())).or_default().entry(l).or_default() += 1;
        }
    }
    // per type: (questions, correct, correct by the type's prior, predictions by answer)
    type PerType = (usize, usize, usize, BTreeMap<usize, usize>);
    let mut by: BTreeMap<&str, PerType> = BTreeMap::new();
    for (&q, &p) in pool.iter().zip(&pred) {
        let k = kind(recs[q]["question"].as_str().unwrap());
        let top = prior[k].iter().max_by_key(|x| x.1).map(|x| *x.0).unwrap();
        let e = by.entry(k).or_default();
        e.0 += 1;
        e.1 += (qa.questions[q].label == Some(p)) as usize;
        e.2 += (qa.questions[q].label == Some(top)) as usize;
        *e.3.entry(p).or_default() += 1;
    }
    let (mut n, mut ok) = (0, 0);
    for (k, (cnt, acc, pri, preds)) in &by {
        n += cnt;
        ok += acc;
        let pd: Vec<String> = preds.iter().map(|(a, c)| format!("{}:{c}", answers[*a])).collect();
        println!(
            "{k:6} n {cnt:4}  acc {:5.1} %  type prior {:5.1} %  predictions {}",
            100.0 * *acc as f64 / *cnt as f64,
            100.0 * *pri as f64 / *cnt as f64,
            pd.join(" ")
        );
    }
    println!("all    n {n:4}  acc {:5.1} %", 100.0 * ok as f64 / n as f64);
    if no_tags {
        return;
    }
    // tag flip: "is there a X?" with X's tag added vs removed
    let HeadActs::Classifier(acts) = &step.head_acts else { panic!() };
    let yes = answers.iter().position(|a| a == "yes").unwrap();
    let exist: Vec<usize> = pool.iter().copied().filter(|&q| kind(recs[q]["question"].as_str().unwrap()) == "exist").collect();
    let mut res = [(0usize, 0f64); 2];
    for chunk in exist.chunks(batch) {
        for (v, add) in [true, false].into_iter().enumerate() {
            let mut b = empty_batch(&s, data.feature_dim, chunk.len());
            for (bi, &q) in chunk.iter().enumerate() {
                let qs = recs[q]["question"].as_str().unwrap();
                let class = qs.trim_start_matches("is there a ").trim_end_matches('?');
                let im = qa.questions[q].image;
                let mut t: Vec<String> = m.tok.decode(&data.images[im].0).unwrap().split_whitespace().filter(|x| *x != class).map(String::from).collect();
                if add {
                    t.insert(0, class.to_string());
                }
                let tag_ids = m.tok.encode(&t.join(" ")).unwrap();
                push_sequence(&mut b, &s, bi, &m.tok, &qa.questions[q].ids, Some(&tag_ids), &data, im);
            }
            b.labels = if soft { Labels::Soft(vec![0.0; chunk.len() * answers.len()]) } else { Labels::Class(vec![-1; chunk.len()]) };
            b.pad_to(&s, data.feature_dim);
            step.upload(&gpu, &m.cfg, &b).unwrap();
            gpu.run(&step.forward).unwrap();
            if chunk.as_ptr() == exist.as_ptr() {
                let pooled = gpu.read_f32(step.pooled()).unwrap();
                let h = m.cfg.hidden_size;
                let sat = pooled[..chunk.len() * h].iter().filter(|x| x.abs() > 0.99).count() as f64 / (chunk.len() * h) as f64;
                let mean: Vec<f64> = (0..h).map(|j| (0..chunk.len()).map(|i| pooled[i * h + j] as f64).sum::<f64>() / chunk.len() as f64).collect();
                let sd = ((0..chunk.len()).flat_map(|i| (0..h).map(move |j| (i, j))).map(|(i, j)| (pooled[i * h + j] as f64 - mean[j]).powi(2)).sum::<f64>()
                    / (chunk.len() * h) as f64)
                    .sqrt();
                let hid = gpu.read_f32(step.hidden()).unwrap();
                let sq = s.seq();
                let cls_sd = {
                    let m0: Vec<f64> = (0..h).map(|j| (0..chunk.len()).map(|i| hid[i * sq * h + j] as f64).sum::<f64>() / chunk.len() as f64).collect();
                    ((0..chunk.len()).flat_map(|i| (0..h).map(move |j| (i, j))).map(|(i, j)| (hid[i * sq * h + j] as f64 - m0[j]).powi(2)).sum::<f64>()
                        / (chunk.len() * h) as f64)
                        .sqrt()
                };
                let lg = acts.read_logits(&gpu).unwrap();
                let lsd = (0..answers.len())
                    .map(|k| {
                        let mu = lg.iter().take(chunk.len()).map(|r| r[k] as f64).sum::<f64>() / chunk.len() as f64;
                        (lg.iter().take(chunk.len()).map(|r| (r[k] as f64 - mu).powi(2)).sum::<f64>() / chunk.len() as f64).sqrt()
                    })
                    .fold(0.0, f64::max);
                println!(
                    "variant {v}: pooled |x|>0.99 {:.1} %, pooled sd across questions {sd:.4}, CLS hidden sd {cls_sd:.4}, max logit sd {lsd:.4}",
                    100.0 * sat
                );
            }
            for row in acts.read_logits(&gpu).unwrap().iter().take(chunk.len()) {
                res[v].0 += (argmax(row) == yes) as usize;
                let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let z: f64 = row.iter().map(|x| ((x - mx) as f64).exp()).sum();
                res[v].1 += ((row[yes] - mx) as f64).exp() / z;
            }
        }
    }
    let ne = exist.len() as f64;
    println!(
        "tag flip on {} 'is there' questions: X in tags -> 'yes' {:.1} % (p {:.3}); X not in tags -> 'yes' {:.1} % (p {:.3})",
        exist.len(),
        100.0 * res[0].0 as f64 / ne,
        res[0].1 / ne,
        100.0 * res[1].0 as f64 / ne,
        res[1].1 / ne
    );
}
