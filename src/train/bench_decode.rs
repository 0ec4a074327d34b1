//! `vlp-engine bench --mode decode`: caption decoding speed with the per-layer key/value cache
//! (model::decode: the tags and regions run once, then each step feeds 2 rows) against recomputing
//! the whole prefix at every step (a forward-only plan per length, made before timing, as Oscar's
//! decoder without its fast path). Both run the same greedy loop on random parameters and inputs,
//! with the host work a real decoder does per step (upload the step, read the logits back), side by
//! side in one process.
use crate::gpu::Gpu;
use crate::model::decode::{Context, Decode, DecodeShape};
use crate::model::heads::HeadActs;
use crate::model::{Batch, Config, Head, Labels, Mode, ParamLayout, ParamSet, Shape, Step};
use crate::ops::matmul::Precision;
use crate::tasks::caption::{write_sequence, CaptionLayout};
use crate::util::Rng;
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, serde::Serialize)]
pub struct DecodeBench {
    pub adapter: String,
    pub config: String,
    pub sequences: usize,
    pub tags: usize,
    pub regions: usize,
    pub length: usize,
    pub cached_tokens_per_s: f64,
    pub recompute_tokens_per_s: f64,
    /// cached / recompute, measured in the same run.
    pub speedup: f64,
}

fn argmax_rows(l: &[f32], v: usize) -> Vec<u32> {
    l.chunks(v).map(|r| crate::model::heads::argmax(r) as u32).collect()
}

/// Times `reps` greedy decodes of `length` tokens for `batch` sequences both ways.
pub fn bench_decode(gpu: &Gpu, config: &str, batch: usize, tags: usize, regions: usize, length: usize, reps: usize) -> Result<DecodeBench> {
    if batch == 0 || tags < 1 || length == 0 || reps == 0 {
        return Err(Error::Other("bench --mode decode needs --batch, --text (tag slots), a length and --steps of at least 1".into()));
    }
    let mut c = Config::load(config)?;
    c.max_position_embeddings = c.max_position_embeddings.max(length + 2 + tags);
    let head = Head::CaptionLm { label_smoothing: 0.0 };
    let layout = Arc::new(ParamLayout::for_model(&c, &head, gpu.max_binding_bytes())?);
    let params = ParamSet::zeros(gpu, layout, "params")?;
    params.init(gpu, 7)?;
    let (v, d) = (c.vocab_size, c.img_feature_dim);
    let mut rng = Rng::new(3);
    let tag_ids: Vec<u32> = (0..batch * tags).map(|_| 5 + rng.below(v - 5) as u32).collect();
    let img: Vec<f32> = (0..batch * regions * d).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    let (cls, mask_id) = (2u32, 4u32);

    // cached: prefill once, then one 2-row step per token
    let ds = DecodeShape { batch, tags, regions, caption: length + 2 };
    let mut dec = Decode::new(gpu, &c, &params, ds, mask_id, Precision::F32)?;
    let x = Context {
        tag_ids: tag_ids.clone(),
        tag_pos: (0..batch).flat_map(|_| (0..tags).map(|j| (length + 2 + j) as u32)).collect(),
        valid: vec![1.0; batch * (tags + regions)],
        img: img.clone(),
    };
    let mut cached = || -> Result<Vec<u32>> {
        dec.set_context(gpu, &c, &x)?;
        gpu.run(&dec.prefill)?;
        let mut last = vec![cls; batch];
        let mut out = Vec::new();
        for t in 0..length {
            dec.set_step(gpu, &c, t, &last)?;
            gpu.run(&dec.step)?;
            last = argmax_rows(&gpu.read_f32(dec.logits())?, v);
            out.extend(&last);
        }
        Ok(out)
    };
    cached()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        cached()?;
    }
    let cached_s = t0.elapsed().as_secs_f64();

    // recompute: the prefix + MASK + tags + regions through a forward-only plan of that length
    let plans: Vec<(Step, Shape, CaptionLayout)> = (0..length)
        .map(|t| {
            let lay = CaptionLayout { caption_len: t + 2, text_len: t + 2 + tags, regions };
            let s = Shape { batch, text: lay.text_len, regions, masked: batch, mask3d: true };
            Ok((Step::new(gpu, &c, &params, None, &head, s, Mode::Eval, 1.0, Precision::F32)?, s, lay))
        })
        .collect::<Result<_>>()?;
    let recompute = || -> Result<Vec<u32>> {
        let mut prefix: Vec<Vec<u32>> = vec![vec![cls]; batch];
        let mut out = Vec::new();
        for (step, s, lay) in &plans {
            let mut b = Batch { img: img.clone(), mask: vec![0.0; s.mask_len()], ..Default::default() };
            for (bi, p) in prefix.iter().enumerate() {
                let mut a = p.clone();
                a.push(mask_id);
                write_sequence(&mut b, s, lay, bi, 0, &a, &tag_ids[bi * tags..(bi + 1) * tags], regions);
                // the tags sit where the decode plan puts them
                for j in 0..tags {
                    b.pos_ids[bi * s.text + lay.caption_len + j] = (length + 2 + j) as u32;
                }
            }
            let positions: Vec<u32> = (0..batch).map(|bi| (bi * s.seq() + lay.caption_len - 1) as u32).collect();
            b.labels = Labels::Masked { positions, labels: vec![-1; batch], weights: Vec::new() };
            step.upload(gpu, &c, &b)?;
            gpu.run(&step.forward)?;
            let HeadActs::Pretrain(a) = &step.head_acts else { unreachable!("the caption LM head") };
            let next = argmax_rows(&gpu.read_f32(&a.mlm_logits)?, v);
            for (p, &w) in prefix.iter_mut().zip(&next) {
                p.push(w);
            }
            out.extend(next);
        }
        Ok(out)
    };
    let a = recompute()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        recompute()?;
    }
    let recompute_s = t0.elapsed().as_secs_f64();
    // the two decoders must agree, or the comparison times different work
    let b = cached()?;
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    if same * 10 < a.len() * 9 {
        return Err(Error::Other(format!("cached and recomputed greedy decoding disagree on {} of {} tokens", a.len() - same, a.len())));
    }
    let tokens = (reps * batch * length) as f64;
    let (ct, rt) = (tokens / cached_s.max(1e-9), tokens / recompute_s.max(1e-9));
    Ok(DecodeBench {
        adapter: gpu.summary(),
        config: config.to_string(),
        sequences: batch,
        tags,
        regions,
        length,
        cached_tokens_per_s: ct,
        recompute_tokens_per_s: rt,
        speedup: ct / rt,
    })
}
