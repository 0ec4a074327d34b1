//! `vlp-engine caption` and the captioner behind `eval --task caption`: a captioning model's decode
//! plan (model::decode, the key/value cache) driven by the searches of `decoding` — greedy, beam,
//! multinomial sampling, constrained beam — over many images, `images_per_plan` at a time.
use super::ModelDir;
use crate::data::pretrain::PretrainData;
use crate::data::Tok;
use crate::decoding::{self, Constraint, Hypothesis, SearchConfig, Stepper};
use crate::gpu::Gpu;
use crate::model::decode::{Context, Decode, DecodeShape};
use crate::model::{Config, Head};
use crate::ops::matmul::Precision;
use crate::tasks::caption::{push_context, CaptionLayout};
use crate::util::Rng;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone, Debug)]
pub struct CaptionArgs {
    /// A captioning model directory (`train --task caption`: config.json, model.safetensors,
    /// tokenizer, head.json, caption.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The store holding the --image ids.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A store image to caption (repeat for several).
    #[arg(long)]
    pub image: Vec<String>,
    /// A PNG/JPEG to caption through the patch front end (as convert-images; the model must be
    /// trained on patch regions). Repeat for several.
    #[arg(long)]
    pub image_file: Vec<PathBuf>,
    /// The patch grid of --image-file (as convert-images --grid).
    #[arg(long, default_value_t = crate::data::images::DEFAULT_GRID)]
    pub grid: usize,
    /// Tags for --image-file (space-separated class names; default none).
    #[arg(long)]
    pub tags: Option<String>,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Print one JSON object (id -> caption) instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// How captions are searched for (shared by `caption` and `eval --task caption`).
#[derive(clap::Args, Clone, Debug)]
pub struct SearchArgs {
    /// Beam width (Oscar 5); 1 is greedy.
    #[arg(long, default_value_t = 5)]
    pub beam: usize,
    /// Oscar's max_gen_length: caption positions, the starting [CLS] included (20: at most 18
    /// words and the [SEP], which is forced at the limit).
    #[arg(long, default_value_t = 20)]
    pub max_gen_length: usize,
    /// Length penalty of beam search: score = Σ log p / length^penalty.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// Multinomial sampling of N captions per image instead of beam search.
    #[arg(long)]
    pub sample: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample from the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Constrained beam search (NoCaps): each image's first 3 distinct tags are constraints, of which
    /// --min-constraints must appear in the caption; --beam beams per constraint state.
    #[arg(long)]
    pub cbs: bool,
    /// CBS: constraints a caption must satisfy (Oscar 2).
    #[arg(long, default_value_t = 2)]
    pub min_constraints: usize,
    /// Images decoded together through one plan (CBS needs 44 x --beam rows per image).
    #[arg(long, default_value_t = 8)]
    pub images_per_plan: usize,
}

impl Default for SearchArgs {
    /// What clap gives for no flags.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: SearchArgs,
        }
        <Wrap as clap::Parser>::parse_from(["search"]).a
    }
}

/// The search a captioner runs.
#[derive(Clone, Debug)]
pub enum Search {
    Greedy,
    Beam(usize),
    Sample { n: usize, temperature: f32, top_k: usize, seed: u64 },
    Cbs { beams: usize, min_satisfy: usize },
}

impl SearchArgs {
    pub fn search(&self) -> Result<Search> {
        if self.max_gen_length < 2 {
            return Err(Error::Other(format!("--max-gen-length {}: a caption needs at least 2 positions ([CLS] and one token)", self.max_gen_length)));
        }
        if self.images_per_plan == 0 {
            return Err(Error::Other("--images-per-plan must be at least 1".into()));
        }
        if !(self.length_penalty.is_finite()) {
            return Err(Error::Other(format!("--length-penalty {}: must be a finite number", self.length_penalty)));
        }
        if self.cbs {
            if self.sample.is_some() {
                return Err(Error::Other("--cbs and --sample: constrained beam search does not sample; give one of them".into()));
            }
            if self.beam == 0 {
                return Err(Error::Other("--beam 0: constrained beam search needs at least 1 beam per state".into()));
            }
            return Ok(Search::Cbs { beams: self.beam, min_satisfy: self.min_constraints });
        }
        Ok(match (self.sample, self.beam) {
            (Some(0), _) => return Err(Error::Other("--sample 0: sample at least one caption".into())),
            (Some(n), _) => {
                if !(self.temperature.is_finite() && self.temperature > 0.0) {
                    return Err(Error::Other(format!("--temperature {}: must be a finite number > 0", self.temperature)));
                }
                Search::Sample { n, temperature: self.temperature, top_k: self.top_k, seed: self.seed }
            }
            (None, 0) => return Err(Error::Other("--beam 0: use 1 for greedy decoding".into())),
            (None, 1) => Search::Greedy,
            (None, k) => Search::Beam(k),
        })
    }
}

/// The layout a captioning model was trained with (`caption.json`).
pub fn read_layout(dir: &Path) -> Result<CaptionLayout> {
    let f = dir.join("caption.json");
    let text = std::fs::read_to_string(&f)
        .map_err(|e| Error::Other(format!("{}: {e} (a captioning model, from `train --task caption`, keeps its layout there)", f.display())))?;
    let l: CaptionLayout = serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: not a caption layout: {e}", f.display())))?;
    l.check().map_err(|e| Error::Other(format!("{}: {e}", f.display())))?;
    Ok(l)
}

/// A decode plan seen as a `decoding::Stepper`.
pub struct GpuStepper<'a> {
    pub gpu: &'a Gpu,
    pub cfg: &'a Config,
    pub dec: &'a mut Decode,
}

impl Stepper for GpuStepper<'_> {
    fn rows(&self) -> usize {
        self.dec.shape.batch
    }
    fn step(&mut self, t: usize, tokens: &[u32]) -> Result<Vec<f32>> {
        self.dec.set_step(self.gpu, self.cfg, t, tokens)?;
        self.gpu.run(&self.dec.step)?;
        let l = self.gpu.read_f32(self.dec.logits())?;
        if l.iter().any(|v| !v.is_finite()) {
            return Err(Error::Other(format!("the model produced non-finite logits at caption position {t}")));
        }
        Ok(l)
    }
    fn reorder(&mut self, src: &[usize]) -> Result<()> {
        self.dec.set_reorder(self.gpu, src)?;
        self.gpu.run(&self.dec.reorder)
    }
}

/// One image to caption: its tag ids and region features [r, D].
pub struct Input {
    pub tags: Vec<u32>,
    pub regions: Vec<f32>,
}

/// A captioning model with a decode plan for `images` images × the search's rows per image.
pub struct Captioner<'m> {
    pub m: &'m ModelDir,
    pub layout: CaptionLayout,
    pub search: Search,
    pub cfg: SearchConfig,
    pub images: usize,
    dec: Decode,
}

impl<'m> Captioner<'m> {
    pub fn new(gpu: &Gpu, m: &'m ModelDir, layout: CaptionLayout, search: Search, a: &SearchArgs) -> Result<Self> {
        if !matches!(m.head, Head::CaptionLm { .. } | Head::Pretrain) {
            return Err(Error::Other(format!("a {} model has no masked-token head to caption with", m.head.name())));
        }
        if a.max_gen_length > layout.caption_len {
            return Err(Error::Other(format!(
                "--max-gen-length {}: the model was trained with {} caption positions ([CLS] caption [SEP]); its tags start there",
                a.max_gen_length, layout.caption_len
            )));
        }
        let per = match search {
            Search::Greedy => 1,
            Search::Beam(k) => k,
            Search::Sample { n, .. } => n,
            Search::Cbs { beams, .. } => decoding::cbs_rows(decoding::MAX_CONSTRAINTS, beams),
        };
        let shape = DecodeShape { batch: a.images_per_plan * per, tags: layout.tag_slots(), regions: layout.regions, caption: a.max_gen_length };
        let dec = Decode::new(gpu, &m.cfg, &m.params, shape, m.tok.mask, Precision::F32)?;
        let cfg = SearchConfig { length_penalty: a.length_penalty, ..SearchConfig::oscar(m.tok.cls, m.tok.sep, m.tok.pad, a.max_gen_length) };
        Ok(Captioner { m, layout, search, cfg, images: a.images_per_plan, dec })
    }

    /// Rows of the plan per image.
    pub fn per_image(&self) -> usize {
        self.dec.shape.batch / self.images
    }

    /// The hypotheses of every input (one, or `n` samples, per image), `images` at a time;
    /// `done(k)` after each plan-full.
    pub fn run(&mut self, gpu: &Gpu, inputs: &[Input], mut done: impl FnMut(usize)) -> Result<Vec<Vec<Hypothesis>>> {
        let (d, per) = (self.m.cfg.img_feature_dim, self.per_image());
        let mut out = Vec::with_capacity(inputs.len());
        for (chunk_no, chunk) in inputs.chunks(self.images).enumerate() {
            let mut x = Context { tag_ids: Vec::new(), tag_pos: Vec::new(), valid: Vec::new(), img: Vec::new() };
            for i in 0..self.images {
                // a final partial plan repeats its last image; those rows are dropped
                let inp = &chunk[i.min(chunk.len() - 1)];
                push_context(&mut x, &self.layout, &self.m.tok, &inp.tags, &inp.regions, d, per);
            }
            self.dec.set_context(gpu, &self.m.cfg, &x)?;
            gpu.run(&self.dec.prefill)?;
            let mut st = GpuStepper { gpu, cfg: &self.m.cfg, dec: &mut self.dec };
            let hyps: Vec<Hypothesis> = match &self.search {
                Search::Greedy => decoding::greedy(&mut st, self.images, &self.cfg)?,
                Search::Beam(k) => decoding::beam_search(&mut st, self.images, *k, &self.cfg)?,
                Search::Sample { n, temperature, top_k, seed } => {
                    let mut rng = Rng::new(crate::train::trainer::mix(*seed, 0x5A3B, chunk_no as u64));
                    decoding::sample(&mut st, self.images, *n, *temperature, *top_k, &mut rng, &self.cfg)?
                }
                Search::Cbs { beams, min_satisfy } => {
                    let cons: Vec<Vec<Constraint>> = (0..self.images).map(|i| constraints(&self.m.tok, &chunk[i.min(chunk.len() - 1)].tags)).collect();
                    decoding::constrained_beam_search(&mut st, self.images, &cons, *min_satisfy, *beams, &self.cfg)?.into_iter().map(|c| c.hypothesis).collect()
                }
            };
            let k = hyps.len() / self.images;
            for h in hyps.chunks(k).take(chunk.len()) {
                out.push(h.to_vec());
            }
            done(out.len());
        }
        Ok(out)
    }

    /// The text of a hypothesis (WordPiece joined, special tokens dropped).
    pub fn text(&self, h: &Hypothesis) -> Result<String> {
        self.m.tok.decode(&h.tokens)
    }
}

/// The words of a tag sequence (a word's "##" pieces joined to it), in order.
pub fn tag_words(tok: &Tok, tags: &[u32]) -> Vec<Vec<u32>> {
    let mut words: Vec<Vec<u32>> = Vec::new();
    for &t in tags {
        let piece = tok.inner.id_to_token(t).unwrap_or_default();
        match words.last_mut() {
            Some(w) if piece.starts_with("##") => w.push(t),
            _ => words.push(vec![t]),
        }
    }
    words
}

/// NoCaps-style constraints of an image: its first 3 distinct tag words (Oscar picks the detector's
/// most confident classes; a store keeps its tags in the detector's order).
pub fn constraints(tok: &Tok, tags: &[u32]) -> Vec<Constraint> {
    let mut seen: Vec<Vec<u32>> = Vec::new();
    for w in tag_words(tok, tags) {
        if !seen.contains(&w) && seen.len() < decoding::MAX_CONSTRAINTS {
            seen.push(w);
        }
    }
    seen.iter().map(|w| Constraint::new(&w[..w.len().min(decoding::MAX_CONSTRAINT_TOKENS)])).collect()
}

/// Fraction of an image's (up to 3) distinct tag words that a caption's ids mention.
pub fn tag_recall(tok: &Tok, tags: &[u32], caption: &[u32]) -> Option<f64> {
    let cons = constraints(tok, tags);
    if cons.is_empty() {
        return None;
    }
    let hit = cons.iter().filter(|c| {
        let w: Vec<u32> = c.slots.iter().map(|s| s[0]).collect();
        caption.windows(w.len()).any(|x| x == w.as_slice())
    });
    Some(hit.count() as f64 / cons.len() as f64)
}

/// Store images as captioner inputs.
pub fn store_inputs(data: &PretrainData, images: &[usize], regions: usize) -> Vec<Input> {
    images
        .iter()
        .map(|&im| {
            let mut f = vec![0f32; regions * data.feature_dim];
            let r = data.features.read_into(data.feature_of[im], &mut f);
            f.truncate(r * data.feature_dim);
            Input { tags: data.images[im].0.clone(), regions: f }
        })
        .collect()
}

/// `vlp-engine caption`: (image id or file, caption) pairs; several per image when sampling.
pub fn caption(gpu: &Gpu, a: &CaptionArgs) -> Result<Vec<(String, String)>> {
    let m = ModelDir::load(gpu, &a.model)?;
    let layout = read_layout(&a.model)?;
    if a.image.is_empty() && a.image_file.is_empty() {
        return Err(Error::Other("caption takes --image ID (with --data STORE) or --image-file PATH, at least one".into()));
    }
    let d = m.cfg.img_feature_dim;
    let mut names = Vec::new();
    let mut inputs = Vec::new();
    if !a.image.is_empty() {
        let dir = a.data.as_ref().ok_or_else(|| Error::Other("--image needs --data STORE".into()))?;
        let data = PretrainData::load(dir, &m.tok)?;
        if data.feature_dim != d {
            return Err(Error::Other(format!("{}: features are {}-d but the model takes {d}", dir.display(), data.feature_dim)));
        }
        let index = data.image_index();
        let ims: Vec<usize> = a
            .image
            .iter()
            .map(|id| index.get(id.as_str()).copied().ok_or_else(|| Error::Other(format!("{}: no image '{id}'", dir.display()))))
            .collect::<Result<_>>()?;
        inputs.extend(store_inputs(&data, &ims, layout.regions));
        names.extend(a.image.iter().cloned());
    }
    if !a.image_file.is_empty() {
        let patches = m.patches(&a.model, a.grid)?;
        let tags = m.tok.encode(a.tags.as_deref().unwrap_or(""))?;
        for f in &a.image_file {
            let (_, regions) = patches.file_features(f)?;
            inputs.push(Input { tags: tags.clone(), regions });
            names.push(f.display().to_string());
        }
    }
    let mut cap = Captioner::new(gpu, &m, layout, a.search.search()?, &a.search)?;
    let hyps = cap.run(gpu, &inputs, |_| {})?;
    let mut out = Vec::new();
    for (name, hs) in names.into_iter().zip(hyps) {
        for h in hs {
            out.push((name.clone(), cap.text(&h)?));
        }
    }
    Ok(out)
}
