//! The caption LM head (the masked-token head alone, label-smoothed) through a Train plan with a
//! 3-D mask: its loss equals the CPU reference over its own logits, it has no contrastive
//! parameters, the pooler gets no gradient, and a few AdamW steps lower the loss.
use std::sync::Arc;
use vlp_engine::gpu::{Gpu, Recorder};
use vlp_engine::model::heads::HeadActs;
use vlp_engine::model::{Batch, Config, Head, Labels, Mode, ParamLayout, ParamSet, Shape, Step};
use vlp_engine::ops::cross_entropy::cpu::forward_smoothed;
use vlp_engine::ops::matmul::Precision;
use vlp_engine::ops::optim::AdamWConfig;
use vlp_engine::train::Optimizer;
use vlp_engine::util::Rng;

#[test]
fn caption_lm_head_trains_with_label_smoothing_on_a_seq2seq_mask() {
    let gpu = Gpu::default_device().unwrap();
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.vocab_size = 60;
    cfg.img_feature_dim = 8;
    let head = Head::CaptionLm { label_smoothing: 0.1 };
    let layout = Arc::new(ParamLayout::for_model(&cfg, &head, gpu.max_binding_bytes()).unwrap());
    assert!(layout.index.contains_key("cls.predictions.bias") && !layout.index.contains_key("cls.seq_relationship.weight"));
    let params = ParamSet::zeros(&gpu, layout.clone(), "params").unwrap();
    let grads = ParamSet::zeros(&gpu, layout.clone(), "grads").unwrap();
    params.init(&gpu, 5).unwrap();
    let s = Shape { batch: 3, text: 8, regions: 2, masked: 6, mask3d: true };
    let step = Step::new(&gpu, &cfg, &params, Some(&grads), &head, s, Mode::Train { dropout: false }, 1.0, Precision::F32).unwrap();
    let mut r = Rng::new(9);
    let sq = s.seq();
    let mut b = Batch { img: (0..s.batch * s.regions * cfg.img_feature_dim).map(|_| r.normal()).collect(), ..Default::default() };
    for _ in 0..s.batch {
        b.input_ids.extend((0..s.text).map(|_| 5 + r.below(50) as u32));
        b.type_ids.extend((0..s.text).map(|t| (t >= 5) as u32));
        b.pos_ids.extend(0..s.text as u32);
        // caption rows 0..5 causal and see tags + regions; tags and regions never see the caption
        for q in 0..sq {
            for k in 0..sq {
                b.mask.push(if q < 5 { (k <= q || k >= 5) as u32 as f32 } else { (k >= 5) as u32 as f32 });
            }
        }
    }
    // two masked caption positions per sequence
    let positions: Vec<u32> = (0..s.batch).flat_map(|bi| [(bi * sq + 2) as u32, (bi * sq + 4) as u32]).collect();
    let labels: Vec<i32> = positions.iter().map(|_| 5 + r.below(50) as i32).collect();
    b.labels = Labels::Masked { positions, labels: labels.clone(), weights: Vec::new() };
    step.upload(&gpu, &cfg, &b).unwrap();
    let opt = Optimizer::new(&gpu, &params, &grads, AdamWConfig::default(), 0.01).unwrap();
    let mut losses = Vec::new();
    for t in 1..=6u32 {
        let mut rec = Recorder::new(&gpu);
        rec.run(opt.micro_batch(&step, true));
        rec.submit();
        let l = gpu.read_f32(step.losses()).unwrap();
        if t == 1 {
            let HeadActs::Pretrain(a) = &step.head_acts else { unreachable!() };
            let logits = gpu.read_f32(&a.mlm_logits).unwrap();
            let want = forward_smoothed(&logits, &labels, cfg.vocab_size, -1, 0.1);
            assert!((l[2] as f64 - want).abs() < 1e-5, "smoothed loss {} vs CPU {want}", l[2]);
            let plain = forward_smoothed(&logits, &labels, cfg.vocab_size, -1, 0.0);
            assert!((want - plain).abs() > 1e-3, "smoothing did not change the loss");
            let pooler = gpu.read_f32(&grads.get("bert.pooler.dense.weight").unwrap()).unwrap();
            assert!(pooler.iter().all(|&g| g == 0.0), "the pooler does not reach the caption loss");
            let t_w = gpu.read_f32(&grads.get("cls.predictions.transform.dense.weight").unwrap()).unwrap();
            assert!(t_w.iter().any(|&g| g != 0.0), "the head got no gradient");
        }
        losses.push(l[2]);
        opt.adamw.set_step(&gpu, 3e-3, t).unwrap();
        gpu.run(&opt.adamw.dispatches).unwrap();
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[5] < losses[0] - 0.05, "loss did not fall: {losses:?}");
}

#[test]
fn soft_bce_classifier_gradient_is_the_mean_of_sigmoid_minus_target() {
    // d(sum over answers, mean over the batch of BCE)/d bias_k = mean_b (sigmoid(x_bk) - y_bk)
    let gpu = Gpu::default_device().unwrap();
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.vocab_size = 40;
    cfg.img_feature_dim = 8;
    let (n, b) = (5usize, 4usize);
    let head = Head::Classifier { labels: n, loss: vlp_engine::model::ClassLoss::SoftBce, dropout: 0.0 };
    let layout = Arc::new(ParamLayout::for_model(&cfg, &head, gpu.max_binding_bytes()).unwrap());
    let params = ParamSet::zeros(&gpu, layout.clone(), "params").unwrap();
    let grads = ParamSet::zeros(&gpu, layout.clone(), "grads").unwrap();
    params.init(&gpu, 3).unwrap();
    // a bias far from zero so sigmoid(x) - y is not symmetric
    params.upload(&gpu, "classifier.bias", &[0.5, -1.0, 2.0, 0.0, -0.3]).unwrap();
    let s = Shape { batch: b, text: 6, regions: 2, masked: 1, mask3d: false };
    let step = Step::new(&gpu, &cfg, &params, Some(&grads), &head, s, Mode::Train { dropout: false }, 1.0, Precision::F32).unwrap();
    let mut r = Rng::new(4);
    let targets: Vec<f32> = (0..b * n).map(|i| [0.0, 0.3, 1.0, 0.0, 0.6][i % 5] * (i % 3 != 0) as u32 as f32).collect();
    let batch = Batch {
        input_ids: (0..b * 6).map(|_| 5 + r.below(30) as u32).collect(),
        type_ids: vec![0; b * 6],
        pos_ids: (0..b).flat_map(|_| 0..6u32).collect(),
        img: (0..b * 2 * 8).map(|_| r.normal()).collect(),
        mask: vec![1.0; b * 8],
        labels: Labels::Soft(targets.clone()),
    };
    step.upload(&gpu, &cfg, &batch).unwrap();
    let opt = Optimizer::new(&gpu, &params, &grads, AdamWConfig::default(), 0.01).unwrap();
    let mut rec = Recorder::new(&gpu);
    rec.run(opt.micro_batch(&step, true));
    rec.submit();
    let HeadActs::Classifier(a) = &step.head_acts else { unreachable!() };
    let logits = gpu.read_f32(&a.logits).unwrap();
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    let want: Vec<f32> = (0..n).map(|k| (0..b).map(|i| sig(logits[i * n + k]) - targets[i * n + k]).sum::<f32>() / b as f32).collect();
    let got = gpu.read_f32(&grads.get("classifier.bias").unwrap()).unwrap();
    for k in 0..n {
        assert!((got[k] - want[k]).abs() < 1e-5, "bias grad {k}: {} vs {}", got[k], want[k]);
    }
    let loss: f32 = (0..b * n)
        .map(|i| {
            let x = logits[i];
            x.max(0.0) - x * targets[i] + (1.0 + (-x.abs()).exp()).ln()
        })
        .sum::<f32>()
        / b as f32;
    let l = gpu.read_f32(step.losses()).unwrap()[2];
    assert!((l - loss).abs() < 1e-4 * loss.max(1.0), "loss {l} vs {loss}");
    // the encoder gets a gradient too (through pooled)
    let q = gpu.read_f32(&grads.get("bert.encoder.layer.0.attention.self.query.weight").unwrap()).unwrap();
    assert!(q.iter().any(|&g| g != 0.0));
}
