//! BERT WordPiece tokenisation through the tokenizers crate, and Oscar's input layout
//! `[CLS] text_a [SEP] text_b [SEP]` with token types 0/1 and the truncation rules of oscar.md §1.4.
use crate::{Error, Result};
use std::path::Path;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

pub struct Tok {
    pub inner: Tokenizer,
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
    /// The file it was read from (or "trained tokenizer"), for messages.
    pub source: String,
}

/// How to fit text_a and text_b into the text budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truncation {
    /// `_truncate_seq_pair`: pop one token at a time from the longer of the two (pre-training, VQA).
    Pair,
    /// Retrieval / captioning: text_a first (to at most `max_a` tokens incl. [CLS] and [SEP]),
    /// then text_b into what is left.
    AFirst { max_a: usize },
}

/// One text segment of an Oscar input: ids and token types, unpadded.
#[derive(Clone, Debug, PartialEq)]
pub struct TextInput {
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
}

fn special(tok: &Tokenizer, s: &str, file: &str) -> Result<u32> {
    tok.token_to_id(s).ok_or_else(|| Error::Other(format!("{file}: vocabulary has no {s} token")))
}

/// A vocab.txt gives each line the id of its line number: a repeated line would give one token two
/// ids (and leave an id without a token), so it is an error naming the file and both lines.
fn check_vocab_lines(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Other(format!("{}: cannot read vocabulary: {e}", path.display())))?;
    let mut seen = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end(); // as the tokenizers crate reads it
        if let Some(first) = seen.insert(t, i + 1) {
            return Err(Error::Other(format!(
                "{}:{}: token '{t}' repeats line {first}; every line of a vocab.txt must be a distinct token",
                path.display(),
                i + 1
            )));
        }
    }
    Ok(())
}

/// The BERT uncased pipeline: clean text, split CJK, lower-case + strip accents, punctuation split.
fn bert_pipeline(model: WordPiece) -> Tokenizer {
    let mut t = Tokenizer::new(model);
    t.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).expect("normalizer");
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    t.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    t
}

impl Tok {
    fn wrap(inner: Tokenizer, file: &str) -> Result<Tok> {
        Ok(Tok {
            pad: special(&inner, "[PAD]", file)?,
            unk: special(&inner, "[UNK]", file)?,
            cls: special(&inner, "[CLS]", file)?,
            sep: special(&inner, "[SEP]", file)?,
            mask: special(&inner, "[MASK]", file)?,
            inner,
            source: file.to_string(),
        })
    }

    /// `tokenizer.json`, a BERT `vocab.txt`, or a directory holding either (tokenizer.json first).
    pub fn load(path: &Path) -> Result<Tok> {
        if path.is_dir() {
            for f in ["tokenizer.json", "vocab.txt"] {
                if path.join(f).exists() {
                    return Tok::load(&path.join(f));
                }
            }
            return Err(Error::Other(format!("{}: no tokenizer.json or vocab.txt", path.display())));
        }
        let name = path.display().to_string();
        if path.extension().is_some_and(|e| e == "txt") {
            check_vocab_lines(path)?;
            let wp = WordPiece::from_file(&name).unk_token("[UNK]".into()).build().map_err(|e| Error::Other(format!("{name}: {e}")))?;
            return Tok::wrap(bert_pipeline(wp), &name);
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Other(format!("{name}: cannot read tokenizer: {e}")))?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| Error::Other(format!("{name}: not valid JSON ({e}); truncated or corrupt?")))?;
        // the tokenizers crate panics on some malformed (valid-JSON) files: a panic there is an error
        let loaded = std::panic::catch_unwind(|| text.parse::<Tokenizer>())
            .map_err(|_| Error::Other(format!("{name}: cannot load tokenizer: malformed tokenizer.json (the tokenizers crate failed on it)")))?;
        let mut t = loaded.map_err(|e| Error::Other(format!("{name}: cannot load tokenizer: {e}")))?;
        // tokenizer.json files often carry padding/truncation settings (sentence-transformers pads
        // to 128); Oscar's layout does its own, so tokenise plain text only.
        t.with_padding(None);
        t.with_truncation(None).map_err(|e| Error::Other(format!("{name}: {e}")))?;
        Tok::wrap(t, &name)
    }

    /// Trains a WordPiece vocabulary (BERT special tokens first) on a corpus, with the BERT pipeline.
    pub fn train(corpus: &[String], vocab_size: usize) -> Result<Tok> {
        let mut t = bert_pipeline(WordPiece::default());
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
        let trainer = WordPieceTrainer::builder().vocab_size(vocab_size).min_frequency(1).show_progress(false).special_tokens(specials).build();
        let mut trainer: tokenizers::models::TrainerWrapper = trainer.into();
        t.train(&mut trainer, corpus.iter()).map_err(|e| Error::Other(format!("training the tokenizer: {e}")))?;
        Tok::wrap(t, "trained tokenizer")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(|e| Error::Other(e.to_string()))?;
        crate::util::atomic_write(path, json.as_bytes()).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// One more than the largest token id: the embedding rows the ids need (= `vocab_size` for a
    /// dense vocabulary).
    pub fn id_bound(&self) -> usize {
        self.inner.get_vocab(true).values().map(|&i| i as usize + 1).max().unwrap_or(0)
    }

    /// Errors unless every token id is below `vocab_size` (of the config `config`).
    pub fn check_fits(&self, vocab_size: usize, config: &Path) -> Result<()> {
        let bound = self.id_bound();
        if bound > vocab_size {
            let (tok, id) = self.inner.get_vocab(true).into_iter().max_by_key(|x| x.1).unwrap_or_default();
            return Err(Error::Other(format!(
                "{}: token '{tok}' has id {id} but {} has vocab_size {vocab_size}: the tokenizer does not belong to this model ({} tokens)",
                self.source,
                config.display(),
                self.vocab_size()
            )));
        }
        Ok(())
    }

    /// WordPiece ids of `text`, no special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(|e| Error::Other(format!("tokenising {text:?}: {e}")))?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Other(e.to_string()))
    }

    /// `[CLS] a [SEP] (b [SEP])` within `max_len` tokens; types 0 for [CLS] a [SEP], 1 for b [SEP].
    pub fn oscar_text(&self, a: &[u32], b: Option<&[u32]>, max_len: usize, trunc: Truncation) -> TextInput {
        let (mut a, mut b) = (a.to_vec(), b.map(|b| b.to_vec()));
        match (trunc, b.as_mut()) {
            (Truncation::Pair, Some(bb)) => {
                let budget = max_len.saturating_sub(3);
                while a.len() + bb.len() > budget {
                    if a.len() > bb.len() {
                        a.pop();
                    } else {
                        bb.pop();
                    }
                }
            }
            (Truncation::AFirst { max_a }, Some(bb)) => {
                a.truncate(max_a.min(max_len).saturating_sub(2));
                bb.truncate(max_len.saturating_sub(a.len() + 3));
            }
            (_, None) => a.truncate(max_len.saturating_sub(2)),
        }
        let mut ids = vec![self.cls];
        ids.extend(&a);
        ids.push(self.sep);
        let mut types = vec![0; ids.len()];
        if let Some(bb) = b {
            ids.extend(&bb);
            ids.push(self.sep);
            types.resize(ids.len(), 1);
        }
        TextInput { ids, types }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_tok() -> Tok {
        let dir = std::env::temp_dir().join(format!("vlp-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("vocab.txt");
        let words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cafe", "dog", "##s", "on", "the", "mat", ",", "!", "run", "##ning"];
        std::fs::write(&f, words.join("\n")).unwrap();
        Tok::load(&f).unwrap()
    }

    #[test]
    fn vocab_txt_is_uncased_accent_stripping_with_punctuation_split() {
        let t = vocab_tok();
        let ids = t.encode("A red CAFÉ, dogs running!").unwrap();
        let toks: Vec<String> = ids.iter().map(|&i| t.inner.id_to_token(i).unwrap()).collect();
        assert_eq!(toks, ["a", "red", "cafe", ",", "dog", "##s", "run", "##ning", "!"]);
        assert_eq!(t.encode("zebra").unwrap(), vec![t.unk]);
    }

    #[test]
    fn oscar_layout_and_truncation() {
        let t = vocab_tok();
        let a: Vec<u32> = (10..16).collect();
        let b: Vec<u32> = (20..23).collect();
        // pair truncation pops from the longer side: budget 10 - 3 = 7 -> a keeps 4, b keeps 3
        let x = t.oscar_text(&a, Some(&b), 10, Truncation::Pair);
        assert_eq!(x.ids, vec![t.cls, 10, 11, 12, 13, t.sep, 20, 21, 22, t.sep]);
        assert_eq!(x.types, vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
        // caption first: a to 5 tokens with [CLS]/[SEP], tags into the rest (10 - 5 - 1 = 4 -> all 3)
        let x = t.oscar_text(&a, Some(&b), 10, Truncation::AFirst { max_a: 5 });
        assert_eq!(x.ids, vec![t.cls, 10, 11, 12, t.sep, 20, 21, 22, t.sep]);
    }

    #[test]
    fn trains_a_vocabulary_with_bert_specials_first() {
        let corpus: Vec<String> = (0..50).map(|i| format!("a red cube left of a blue sphere number{}", i % 5)).collect();
        let t = Tok::train(&corpus, 80).unwrap();
        assert_eq!((t.pad, t.unk, t.cls, t.sep, t.mask), (0, 1, 2, 3, 4));
        let ids = t.encode("A Red cube").unwrap();
        assert!(!ids.contains(&t.unk), "{ids:?}");
    }
}
