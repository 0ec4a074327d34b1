//! Model configuration: a Hugging Face `BertConfig` JSON plus Oscar's keys, and named presets.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn d_img_dim() -> usize {
    2054
}
fn d_eps() -> f32 {
    1e-12
}
fn d_drop() -> f32 {
    0.1
}
fn d_types() -> usize {
    2
}
fn d_act() -> String {
    "gelu".into()
}
fn d_init() -> f32 {
    0.02
}
fn d_classes() -> usize {
    2
}

/// Oscar configs write `use_img_layernorm` as 0/1 or true/false.
fn bool_or_int<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        I(i64),
    }
    Ok(match B::deserialize(d)? {
        B::B(b) => b,
        B::I(i) => i != 0,
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "d_drop")]
    pub hidden_dropout_prob: f32,
    #[serde(default = "d_drop")]
    pub attention_probs_dropout_prob: f32,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_init")]
    pub initializer_range: f32,
    #[serde(default = "d_img_dim")]
    pub img_feature_dim: usize,
    #[serde(default, deserialize_with = "bool_or_int")]
    pub use_img_layernorm: bool,
    #[serde(default = "d_eps")]
    pub img_layer_norm_eps: f32,
    /// Classes of the contrastive head: 2 (vanilla Oscar) or 3 (Oscar+).
    #[serde(default = "d_classes")]
    pub num_contrast_classes: usize,
}

impl Config {
    pub fn preset(name: &str) -> Option<Config> {
        let (h, l, a, f) = match name {
            "tiny" => (64, 2, 2, 256),
            "base" => (768, 12, 12, 3072),
            "large" => (1024, 24, 16, 4096),
            _ => return None,
        };
        Some(Config {
            vocab_size: 30522,
            hidden_size: h,
            num_hidden_layers: l,
            num_attention_heads: a,
            intermediate_size: f,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            hidden_act: "gelu".into(),
            initializer_range: 0.02,
            img_feature_dim: 2054,
            use_img_layernorm: false,
            img_layer_norm_eps: 1e-12,
            num_contrast_classes: 2,
        })
    }

    /// A preset name (`tiny`, `base`, `large`), a `config.json`, or a directory holding one.
    pub fn load(spec: &str) -> Result<Config> {
        if let Some(c) = Config::preset(spec) {
            return Ok(c);
        }
        let p = Path::new(spec);
        let file = if p.is_dir() { p.join("config.json") } else { p.to_path_buf() };
        Config::from_file(&file)
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Other(format!("{}: cannot read config: {e}", path.display())))?;
        let c: Config = serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: invalid config: {e}", path.display())))?;
        c.validate().map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    /// Upper bounds that no real model reaches (BERT-large: 24 layers, H 1024, F 4096, 30 522
    /// tokens, 512 positions): a value above is a typo or a corrupt file, refused before anything is
    /// allocated.
    pub const LIMITS: [(&'static str, usize); 8] = [
        ("vocab_size", 1 << 22),
        ("hidden_size", 1 << 16),
        ("num_hidden_layers", 1000),
        ("num_attention_heads", 1024),
        ("intermediate_size", 1 << 18),
        ("max_position_embeddings", 1 << 20),
        ("type_vocab_size", 1024),
        ("img_feature_dim", 1 << 20),
    ];
    /// Parameters beyond this (2^34 f32 = 64 GiB, before gradients and AdamW) cannot be trained or
    /// run on any one GPU.
    pub const MAX_PARAMS: f64 = (1u64 << 34) as f64;

    fn sizes(&self) -> [usize; 8] {
        [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
            self.img_feature_dim,
        ]
    }

    /// The parameter count of the encoder and pooler (heads add little), in f64 so that absurd
    /// sizes do not overflow.
    pub fn approx_params(&self) -> f64 {
        let (h, f) = (self.hidden_size as f64, self.intermediate_size as f64);
        let emb = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) as f64 * h + (self.img_feature_dim as f64 + 1.0) * h;
        let layer = 4.0 * (h * h + h) + 2.0 * h * f + f + h + 4.0 * h;
        emb + self.num_hidden_layers as f64 * layer + h * h + h
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        for ((key, limit), v) in Config::LIMITS.iter().zip(self.sizes()) {
            if v == 0 {
                return Err(format!("{key} is 0; sizes must be positive"));
            }
            if v > *limit {
                return Err(format!("{key} {v} is beyond any model this engine can run (at most {limit})"));
            }
        }
        let n = self.approx_params();
        if n > Config::MAX_PARAMS {
            return Err(format!(
                "{:.1e} parameters (hidden_size {}, num_hidden_layers {}, intermediate_size {}, vocab_size {}) cannot fit in any GPU's memory",
                n, self.hidden_size, self.num_hidden_layers, self.intermediate_size, self.vocab_size
            ));
        }
        for (key, v) in [("layer_norm_eps", self.layer_norm_eps), ("img_layer_norm_eps", self.img_layer_norm_eps)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{key} {v} must be a finite number > 0 (BERT uses 1e-12)"));
            }
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return Err(format!("initializer_range {} must be a finite number >= 0", self.initializer_range));
        }
        let checks: [(bool, String); 5] = [
            (
                self.hidden_size.is_multiple_of(self.num_attention_heads),
                format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads),
            ),
            (self.hidden_act == "gelu", format!("hidden_act '{}' is not supported (Oscar uses the erf 'gelu')", self.hidden_act)),
            ((0.0..1.0).contains(&self.hidden_dropout_prob), format!("hidden_dropout_prob {} must be in [0, 1)", self.hidden_dropout_prob)),
            (
                (0.0..1.0).contains(&self.attention_probs_dropout_prob),
                format!("attention_probs_dropout_prob {} must be in [0, 1)", self.attention_probs_dropout_prob),
            ),
            ((2..=3).contains(&self.num_contrast_classes), format!("num_contrast_classes {} (2 or 3)", self.num_contrast_classes)),
        ];
        for (ok, msg) in checks {
            if !ok {
                return Err(msg);
            }
        }
        if self.type_vocab_size < 2 {
            return Err(format!("type_vocab_size {} < 2 (tags are segment 1)", self.type_vocab_size));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_bert_config_with_oscar_keys_and_rejects_bad_ones() {
        let dir = std::env::temp_dir().join(format!("vlp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.json");
        std::fs::write(
            &f,
            r#"{"architectures":["BertForMaskedLM"],"attention_probs_dropout_prob":0.1,"hidden_act":"gelu",
            "hidden_dropout_prob":0.1,"hidden_size":384,"initializer_range":0.02,"intermediate_size":1536,"layer_norm_eps":1e-12,
            "max_position_embeddings":512,"model_type":"bert","num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,
            "type_vocab_size":2,"vocab_size":30522,"use_img_layernorm":1,"img_feature_dim":2054}"#,
        )
        .unwrap();
        let c = Config::load(dir.to_str().unwrap()).unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.head_dim()), (384, 6, 32));
        assert!(c.use_img_layernorm);
        std::fs::write(
            &f,
            r#"{"hidden_size":100,"num_attention_heads":12,"num_hidden_layers":1,"intermediate_size":4,"vocab_size":5,"max_position_embeddings":8}"#,
        )
        .unwrap();
        let e = Config::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("not a multiple"), "{e}");
        std::fs::write(&f, "{ not json").unwrap();
        assert!(Config::from_file(&f).unwrap_err().to_string().contains("invalid config"));
        assert_eq!(Config::preset("base").unwrap().num_hidden_layers, 12);
        std::fs::remove_dir_all(&dir).ok();
    }
}
