//! Oscar pre-training as a task (docs/oscar.md §2): masked tokens over caption and tags plus the
//! contrastive loss on pooled [CLS]; validation masked-token and contrastive accuracy.
use super::Task;
use crate::data::pretrain::{Contrast, PretrainData, Sampler};
use crate::data::Tok;
use crate::gpu::Gpu;
use crate::model::heads::{pretrain::readout, HeadActs};
use crate::model::{Batch, Config, Head, Shape, Step};
use crate::train::trainer::mix;
use crate::util::Rng;
use crate::{Error, Result};

pub struct Pretrain<'a> {
    pub train: Sampler<'a>,
    pub val: Option<Sampler<'a>>,
}

impl<'a> Pretrain<'a> {
    pub fn new(data: &'a PretrainData, tok: &'a Tok, batch: usize, text: usize, regions: usize, three_way: bool, vocab: usize) -> Result<Self> {
        let contrast = if three_way { Contrast::ThreeWay } else { Contrast::TwoWay };
        let train = Sampler::new(data, tok, "train", batch, text, regions, contrast, vocab)?;
        let val = Sampler::new(data, tok, "val", batch, text, regions, contrast, vocab).ok();
        Ok(Pretrain { train, val })
    }
}

impl Task for Pretrain<'_> {
    fn head(&self, _: &Config) -> Head {
        Head::Pretrain
    }
    fn feature_dim(&self) -> usize {
        self.train.data.feature_dim
    }
    fn train_shape(&self) -> Shape {
        self.train.shape
    }
    fn train_batch(&self, rng: &mut Rng) -> Result<Batch> {
        Ok(self.train.batch(rng))
    }
    fn eval_shape(&self) -> Option<Shape> {
        self.val.as_ref().map(|v| v.shape)
    }
    fn evaluate(&self, gpu: &Gpu, c: &Config, step: &Step, seed: u64, batches: usize) -> Result<Vec<(String, f32)>> {
        let vs = self.val.as_ref().ok_or_else(|| Error::Other("no validation split".into()))?;
        let HeadActs::Pretrain(acts) = &step.head_acts else { return Err(Error::Other("pre-training evaluation needs the pre-training head".into())) };
        let (mut loss, mut mtl, mut con) = (0f64, (0, 0), (0, 0));
        for i in 0..batches.max(1) {
            let b = vs.batch(&mut Rng::new(mix(seed, 0xE7A1, i as u64)));
            step.upload(gpu, c, &b)?;
            gpu.run(&step.forward)?;
            let l = gpu.read_f32(step.losses())?;
            loss += (l[2] + l[6]) as f64;
            let [m, k] = readout(gpu, c, acts, &b.labels)?;
            mtl = (mtl.0 + m.0, mtl.1 + m.1);
            con = (con.0 + k.0, con.1 + k.1);
        }
        let n = batches.max(1) as f64;
        Ok(vec![
            ("val_loss".into(), (loss / n) as f32),
            ("val_mtl_acc".into(), mtl.0 as f32 / mtl.1.max(1) as f32),
            ("val_contrastive_acc".into(), con.0 as f32 / con.1.max(1) as f32),
        ])
    }
    fn title(&self) -> &'static str {
        "Oscar pre-training"
    }
}
