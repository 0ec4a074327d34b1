//! Named parameters in a few large GPU arenas. Every tensor has its Hugging Face / Oscar name, a
//! shape, a weight-decay flag (no decay on biases and LayerNorm weights, as Oscar) and an init.
//! Within each block (embeddings, each layer, heads) decayed tensors come first, so AdamW needs
//! about two dispatches per block; blocks are packed into arenas that stay under the adapter's
//! binding limit. Gradients and the two AdamW moments are `ParamSet`s with the same layout.
use super::config::Config;
use super::heads::Head;
use crate::gpu::{DType, Gpu, Tensor};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Normal(f32),
    Zeros,
    Ones,
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub decay: bool,
    pub init: Init,
    pub block: usize,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where each tensor lives: (arena, element offset).
#[derive(Debug)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
    pub place: Vec<(usize, usize)>,
    pub arena_len: Vec<usize>,
    pub index: HashMap<String, usize>,
}

pub const EMB: &str = "bert.embeddings.";

/// Parameter names of layer `l` (prefix `bert.encoder.layer.{l}.`).
pub fn layer_prefix(l: usize) -> String {
    format!("bert.encoder.layer.{l}.")
}

/// Oscar's no-decay rule: names containing `bias` or `LayerNorm.weight`.
pub fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("LayerNorm.weight"))
}

/// The encoder's parameters, then the head's (in the last block, after the pooler).
pub fn specs(c: &Config, head: &Head) -> Vec<ParamSpec> {
    let (h, v, f) = (c.hidden_size, c.vocab_size, c.intermediate_size);
    let std = c.initializer_range;
    let mut out = Vec::new();
    let mut block = 0;
    let mut add = |out: &mut Vec<ParamSpec>, block: usize, name: String, shape: Vec<usize>| {
        let init = if name.ends_with("LayerNorm.weight") {
            Init::Ones
        } else if name.ends_with("bias") {
            Init::Zeros
        } else {
            Init::Normal(std)
        };
        out.push(ParamSpec { decay: decays(&name), name, shape, init, block });
    };
    let lin = |out: &mut Vec<ParamSpec>, add: &mut dyn FnMut(&mut Vec<ParamSpec>, usize, String, Vec<usize>), block: usize, n: &str, o: usize, i: usize| {
        add(out, block, format!("{n}.weight"), vec![o, i]);
        add(out, block, format!("{n}.bias"), vec![o]);
    };
    add(&mut out, block, format!("{EMB}word_embeddings.weight"), vec![v, h]);
    add(&mut out, block, format!("{EMB}position_embeddings.weight"), vec![c.max_position_embeddings, h]);
    add(&mut out, block, format!("{EMB}token_type_embeddings.weight"), vec![c.type_vocab_size, h]);
    lin(&mut out, &mut add, block, &format!("{EMB}LayerNorm"), h, 0);
    lin(&mut out, &mut add, block, "bert.img_embedding", h, c.img_feature_dim);
    if c.use_img_layernorm {
        lin(&mut out, &mut add, block, "bert.LayerNorm", h, 0);
    }
    for l in 0..c.num_hidden_layers {
        block += 1;
        let p = layer_prefix(l);
        for n in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            lin(&mut out, &mut add, block, &format!("{p}{n}"), h, h);
        }
        lin(&mut out, &mut add, block, &format!("{p}attention.output.LayerNorm"), h, 0);
        lin(&mut out, &mut add, block, &format!("{p}intermediate.dense"), f, h);
        lin(&mut out, &mut add, block, &format!("{p}output.dense"), h, f);
        lin(&mut out, &mut add, block, &format!("{p}output.LayerNorm"), h, 0);
    }
    block += 1;
    lin(&mut out, &mut add, block, "bert.pooler.dense", h, h);
    for (name, shape) in head.specs(c) {
        add(&mut out, block, name, shape);
    }
    // LayerNorm "linears" above were added as [h, 0] weights: fix them to [h].
    for s in &mut out {
        if s.shape.len() == 2 && s.shape[1] == 0 {
            s.shape = vec![s.shape[0]];
        }
    }
    out
}

impl ParamLayout {
    /// Packs `specs` (block by block, decayed first within a block) into arenas of at most
    /// `max_bytes` each.
    pub fn new(mut specs: Vec<ParamSpec>, max_bytes: u64) -> Result<ParamLayout> {
        specs.sort_by_key(|s| (s.block, !s.decay)); // stable: keeps the natural order inside a group
        let max = (max_bytes / 4) as usize;
        let (mut place, mut arena_len) = (Vec::new(), vec![0usize]);
        for s in &specs {
            let n = s.numel();
            if n > max {
                return Err(Error::TooLarge { label: s.name.clone(), bytes: 4 * n as u64, limit: max_bytes, what: "storage binding" });
            }
            if arena_len.last().unwrap() + n > max {
                arena_len.push(0);
            }
            let a = arena_len.len() - 1;
            place.push((a, arena_len[a]));
            arena_len[a] += n;
        }
        let index = specs.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        Ok(ParamLayout { specs, place, arena_len, index })
    }

    pub fn for_model(c: &Config, head: &Head, max_bytes: u64) -> Result<ParamLayout> {
        ParamLayout::new(specs(c, head), max_bytes)
    }

    pub fn numel(&self) -> usize {
        self.arena_len.iter().sum()
    }

    /// Maximal runs of one decay flag inside one arena: (arena, start, len, decay).
    pub fn runs(&self) -> Vec<(usize, usize, usize, bool)> {
        let mut runs: Vec<(usize, usize, usize, bool)> = Vec::new();
        for (s, &(a, off)) in self.specs.iter().zip(&self.place) {
            match runs.last_mut() {
                Some(r) if r.0 == a && r.3 == s.decay && r.1 + r.2 == off => r.2 += s.numel(),
                _ => runs.push((a, off, s.numel(), s.decay)),
            }
        }
        runs
    }
}

/// One full set of arenas (parameters, gradients, or an AdamW moment) with named views.
#[derive(Clone)]
pub struct ParamSet {
    pub layout: Arc<ParamLayout>,
    pub arenas: Vec<Tensor>,
}

impl ParamSet {
    pub fn zeros(gpu: &Gpu, layout: Arc<ParamLayout>, label: &str) -> Result<ParamSet> {
        let arenas =
            layout.arena_len.iter().enumerate().map(|(i, &n)| gpu.zeros(&format!("{label}.arena{i}"), &[n], DType::F32)).collect::<Result<Vec<_>>>()?;
        Ok(ParamSet { layout, arenas })
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        let i = *self.layout.index.get(name).ok_or_else(|| Error::Other(format!("no parameter named '{name}'")))?;
        let (a, off) = self.layout.place[i];
        self.arenas[a].view(off, &self.layout.specs[i].shape)
    }

    pub fn has(&self, name: &str) -> bool {
        self.layout.index.contains_key(name)
    }

    pub fn bytes(&self) -> u64 {
        4 * self.layout.numel() as u64
    }

    /// Host copy of every tensor, by name (checkpoints, tests).
    pub fn download(&self, gpu: &Gpu) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
        let data: Vec<Vec<f32>> = self.arenas.iter().map(|t| gpu.read_f32(t)).collect::<Result<_>>()?;
        Ok(self
            .layout
            .specs
            .iter()
            .zip(&self.layout.place)
            .map(|(s, &(a, off))| (s.name.clone(), s.shape.clone(), data[a][off..off + s.numel()].to_vec()))
            .collect())
    }

    pub fn upload(&self, gpu: &Gpu, name: &str, data: &[f32]) -> Result<()> {
        let t = self.get(name)?;
        if data.len() != t.numel() {
            return Err(Error::Shape { op: "upload", msg: format!("{name}: {} values for shape {:?}", data.len(), t.shape) });
        }
        gpu.write_f32(&t, data)
    }

    /// Oscar's init (N(0, std) weights, zero biases, unit LayerNorm gains) from a seeded generator.
    /// Zeros, ones, or N(0, std) per tensor (BERT's initialiser), drawn on the GPU from the counter
    /// RNG: a function of (seed, tensor index, element). One submit; on the CPU, 113M normals took
    /// 2.5 s, most of the time before the first step.
    pub fn init(&self, gpu: &Gpu, seed: u64) -> Result<()> {
        use crate::ops::elementwise::{fill, fill_normal};
        let seed = (seed ^ (seed >> 32)) as u32;
        let mut list = Vec::with_capacity(self.layout.specs.len());
        for (i, s) in self.layout.specs.iter().enumerate() {
            let t = self.get(&s.name)?;
            list.push(match s.init {
                Init::Zeros => fill(gpu, &t, 0.0)?,
                Init::Ones => fill(gpu, &t, 1.0)?,
                Init::Normal(std) => fill_normal(gpu, &t, std, seed, i as u32)?,
            });
        }
        gpu.run(&list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_packs_under_the_limit_and_groups_decay() {
        let c = Config::preset("base").unwrap();
        let l = ParamLayout::for_model(&c, &Head::Pretrain, 128 << 20).unwrap();
        assert!(l.arena_len.iter().all(|&n| 4 * n as u64 <= 128 << 20));
        // BERT-base + image projection + heads: ~110M + 1.58M + heads
        let n = l.numel();
        assert!((110_000_000..115_000_000).contains(&n), "{n}");
        // about two AdamW runs per block (embeddings, 12 layers, heads), not one per tensor
        assert!(l.runs().len() <= 2 * 14 + l.arena_len.len(), "{} runs", l.runs().len());
        for (s, decay) in
            [("bert.encoder.layer.3.attention.self.query.bias", false), ("bert.embeddings.LayerNorm.weight", false), ("cls.seq_relationship.weight", true)]
        {
            assert_eq!(l.specs[l.index[s]].decay, decay, "{s}");
        }
        // a single tensor larger than the limit is a clear error naming it
        let e = ParamLayout::for_model(&c, &Head::Pretrain, 64 << 20).unwrap_err().to_string();
        assert!(e.contains("word_embeddings"), "{e}");
    }
}
