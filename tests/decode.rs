//! The decode plan (key/value caches, [w_t, MASK] per step) against the full forward-only plan over
//! the same prefix with Oscar's captioning mask (docs/oscar.md §3.2): caption causal, caption →
//! tags and regions full, tags and regions → caption blocked. At every caption position the two
//! rows (w_t, MASK) must match the full forward's rows within 1e-5, and so must the next-token
//! logits; then a beam reorder must move whole cache rows.
use std::sync::Arc;
use vlp_engine::gpu::Gpu;
use vlp_engine::model::decode::{Context, Decode, DecodeShape};
use vlp_engine::model::heads::HeadActs;
use vlp_engine::model::{Batch, Config, Head, Labels, Mode, ParamLayout, ParamSet, Shape, Step};
use vlp_engine::ops::matmul::Precision;
use vlp_engine::util::Rng;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn decode_with_the_cache_matches_the_full_forward_with_a_causal_mask() {
    let gpu = Gpu::default_device().unwrap();
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.vocab_size = 50;
    cfg.img_feature_dim = 10;
    cfg.num_hidden_layers = 3;
    cfg.use_img_layernorm = true;
    let layout = Arc::new(ParamLayout::for_model(&cfg, &Head::Pretrain, gpu.max_binding_bytes()).unwrap());
    let params = ParamSet::zeros(&gpu, layout, "params").unwrap();
    params.init(&gpu, 11).unwrap();
    // 3 sequences; 4 tag slots (the last sequence has only 2 real tags), 3 regions (one padded)
    let d = DecodeShape { batch: 3, tags: 4, regions: 3, caption: 7 };
    let (b, g, ctx, h, mask_id) = (d.batch, d.caption, d.context(), cfg.hidden_size, 4u32);
    let tag_pos0 = 20u32;
    let mut r = Rng::new(3);
    let tag_ids: Vec<u32> = (0..b * d.tags).map(|_| 5 + r.below(40) as u32).collect();
    let tag_pos: Vec<u32> = (0..b).flat_map(|_| (0..d.tags as u32).map(|j| tag_pos0 + j)).collect();
    let mut valid = vec![1f32; b * ctx];
    valid[2 * ctx + 2] = 0.0;
    valid[2 * ctx + 3] = 0.0;
    valid[ctx + d.tags + 2] = 0.0;
    let img: Vec<f32> = (0..b * d.regions * cfg.img_feature_dim).map(|_| r.normal()).collect();
    let caption: Vec<Vec<u32>> = (0..b).map(|_| std::iter::once(1).chain((1..g).map(|_| 5 + r.below(40) as u32)).collect()).collect();

    let mut dec = Decode::new(&gpu, &cfg, &params, d, mask_id, Precision::F32).unwrap();
    dec.set_context(&gpu, &cfg, &Context { tag_ids: tag_ids.clone(), tag_pos: tag_pos.clone(), valid: valid.clone(), img: img.clone() }).unwrap();
    gpu.run(&dec.prefill).unwrap();

    // the full forward: text = [caption positions 0..G | tags], then regions, 3-D mask
    let text = g + d.tags;
    let shape = Shape { batch: b, text, regions: d.regions, masked: b, mask3d: true };
    let full = Step::new(&gpu, &cfg, &params, None, &Head::Pretrain, shape, Mode::Eval, 1.0, Precision::F32).unwrap();
    let sq = shape.seq();
    let mut checked = 0;
    for t in 0..g - 1 {
        let tokens: Vec<u32> = (0..b).map(|bi| caption[bi][t]).collect();
        dec.set_step(&gpu, &cfg, t, &tokens).unwrap();
        gpu.run(&dec.step).unwrap();
        let got_h = gpu.read_f32(dec.hidden()).unwrap();
        let got_l = gpu.read_f32(dec.logits()).unwrap();

        let mut bt = Batch {
            labels: Labels::Pretrain { mlm_pos: (0..b).map(|bi| (bi * sq + t + 1) as u32).collect(), mlm_labels: vec![-1; b], contrast_labels: vec![-1; b] },
            ..Default::default()
        };
        for bi in 0..b {
            for j in 0..g {
                bt.input_ids.push(if j <= t {
                    caption[bi][j]
                } else if j == t + 1 {
                    mask_id
                } else {
                    0
                });
                bt.type_ids.push(0);
                bt.pos_ids.push(j as u32);
            }
            bt.input_ids.extend(&tag_ids[bi * d.tags..(bi + 1) * d.tags]);
            bt.type_ids.extend(std::iter::repeat(1).take(d.tags));
            bt.pos_ids.extend(&tag_pos[bi * d.tags..(bi + 1) * d.tags]);
            bt.img.extend(&img[bi * d.regions * cfg.img_feature_dim..(bi + 1) * d.regions * cfg.img_feature_dim]);
            let cvalid = &valid[bi * ctx..(bi + 1) * ctx];
            for q in 0..sq {
                for k in 0..sq {
                    let attend = if q < g {
                        // caption: causal over the prefix (padding rows see themselves), full context
                        if q <= t + 1 {
                            (k < g && k <= q) || (k >= g && cvalid[k - g] > 0.0)
                        } else {
                            k == q
                        }
                    } else {
                        k >= g && cvalid[k - g] > 0.0 || k == q
                    };
                    bt.mask.push(attend as u32 as f32);
                }
            }
        }
        full.upload(&gpu, &cfg, &bt).unwrap();
        gpu.run(&full.forward).unwrap();
        let all = gpu.read_f32(full.hidden()).unwrap();
        let want_h: Vec<f32> = (0..b).flat_map(|bi| all[(bi * sq + t) * h..(bi * sq + t + 2) * h].to_vec()).collect();
        let HeadActs::Pretrain(a) = &full.head_acts else { unreachable!() };
        let want_l = gpu.read_f32(&a.mlm_logits).unwrap();
        let (eh, el) = (max_abs(&got_h, &want_h), max_abs(&got_l, &want_l));
        assert!(eh < 1e-5, "position {t}: hidden max abs error {eh}");
        assert!(el < 1e-5, "position {t}: logits max abs error {el}");
        assert!(got_l.iter().any(|&x| x != 0.0), "position {t}: the logits are all zero");
        eprintln!("position {t}: hidden max abs error {eh:.2e}, logits {el:.2e}");
        checked += 1;
    }
    assert_eq!(checked, g - 1);

    // beam reorder: sequence i takes sequence src[i]'s whole cache
    let before: Vec<Vec<f32>> = dec.k.iter().map(|t| gpu.read_f32(t).unwrap()).collect();
    let src = [2usize, 2, 0];
    dec.set_reorder(&gpu, &src).unwrap();
    gpu.run(&dec.reorder).unwrap();
    let per = d.slots() * h;
    for (l, t) in dec.k.iter().enumerate() {
        let after = gpu.read_f32(t).unwrap();
        for (i, &s) in src.iter().enumerate() {
            assert_eq!(&after[i * per..(i + 1) * per], &before[l][s * per..(s + 1) * per], "layer {l}: sequence {i} after reorder");
        }
    }
    assert!(dec.set_reorder(&gpu, &[0, 1, 3]).is_err(), "a source beyond the batch must be refused");
}
