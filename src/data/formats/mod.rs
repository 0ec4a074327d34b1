//! Importers for the downstream datasets' own formats, each into plain structs (no store, no
//! model): VQA v2's official questions + annotations JSON ([`vqa`]), GQA's questions JSON
//! ([`gqa`]), NLVR2's JSON lines ([`nlvr2`]) and COCO's captions JSON ([`coco`]); [`import`]
//! appends them to a store. Malformed input is an error naming the file and the line (with
//! serde's column) or the key.
pub mod coco;
pub mod gqa;
pub mod import;
pub mod nlvr2;
pub mod vqa;

use crate::{Error, Result};
use serde::de::{DeserializeOwned, Deserializer, Error as _, MapAccess, Visitor};
use std::path::Path;

pub(crate) fn bad(file: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {msg}", file.display()))
}

/// Parses a whole JSON file as `T`; a syntax or schema error names the file, and serde names the
/// field and the line and column.
pub fn read_json<T: DeserializeOwned>(file: &Path) -> Result<T> {
    let text = std::fs::read_to_string(file).map_err(|e| bad(file, e))?;
    serde_json::from_str(&text).map_err(|e| bad(file, e))
}

/// A JSON object's members in file order, each value parsed as `T`; a value that does not parse
/// names its key, and a repeated key is an error (serde_json's maps would keep the last one).
#[derive(Debug)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Ordered<T>, A::Error> {
                let mut v = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = m.next_key::<String>()? {
                    let x = m.next_value::<serde_json::Value>()?;
                    let x = T::deserialize(x).map_err(|e| A::Error::custom(format!("key '{k}': {e}")))?;
                    if !seen.insert(k.clone()) {
                        return Err(A::Error::custom(format!("key '{k}' appears twice")));
                    }
                    v.push((k, x));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Answers seen for at least `min_count` distinct questions, most frequent first (ties by the
/// answer); `answers` yields (question id, answer).
pub fn answer_vocab<'a>(answers: impl IntoIterator<Item = (&'a str, &'a str)>, min_count: usize) -> Vec<String> {
    let mut seen: std::collections::HashMap<&str, std::collections::HashSet<&str>> = Default::default();
    for (q, a) in answers {
        seen.entry(a).or_default().insert(q);
    }
    let mut v: Vec<(&str, usize)> = seen.into_iter().map(|(a, qs)| (a, qs.len())).filter(|&(_, n)| n >= min_count.max(1)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.into_iter().map(|(a, _)| a.to_string()).collect()
}

#[cfg(test)]
pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats").join(name)
}

#[cfg(test)]
pub(crate) fn tmp_file(name: &str, body: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vlp-formats-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, body).unwrap();
    p
}
