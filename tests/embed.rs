//! `embed` on a real Hugging Face BERT checkpoint (MiniLM-L6-H384-uncased, fetched by
//! tools/fetch_test_assets.sh) against transformers' BertTokenizer + BertModel, whose outputs
//! tools/make_fixtures.py committed in tests/fixtures/minilm_ref.safetensors.
//! Ids must be equal (with tokenizer.json and with vocab.txt); hidden states and pooled outputs
//! within 1e-3 absolute.
use safetensors::SafeTensors;
use std::path::PathBuf;
use vlp_engine::apps::embed::{embed, embed_many};
use vlp_engine::apps::ModelDir;
use vlp_engine::data::Tok;
use vlp_engine::gpu::Gpu;

fn model_dir() -> PathBuf {
    let d = std::env::var("VLP_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-assets/minilm/model")));
    assert!(d.join("model.safetensors").exists(), "{} is missing: run `bash tools/fetch_test_assets.sh` first (the README's test command does)", d.display());
    d
}

#[test]
fn embed_matches_transformers_bert_model() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minilm_ref.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let texts: Vec<(String, Option<String>)> = serde_json::from_str(&meta.metadata().as_ref().unwrap()["texts"]).unwrap();
    let f32s = |k: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let gpu = Gpu::default_device().unwrap();
    let dir = model_dir();
    let m = ModelDir::load(&gpu, &dir).unwrap();
    assert!(m.report.ignored.iter().any(|n| n.ends_with("position_ids")));
    assert!(!m.report.initialized.iter().any(|n| n.starts_with("bert.encoder") || n.starts_with("bert.pooler")));
    let vocab_tok = Tok::load(&dir.join("vocab.txt")).unwrap();
    let mut worst = 0f32;
    for (i, (a, b)) in texts.iter().enumerate() {
        let want_ids: Vec<u32> =
            bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor(&format!("input_ids.{i}")).unwrap().data()).iter().map(|&x| x as u32).collect();
        let e = embed(&gpu, &m, a, b.as_deref(), None).unwrap();
        assert_eq!(e.input_ids, want_ids, "text {i} ids (tokenizer.json)");
        let ids_a = vocab_tok.encode(a).unwrap();
        let ids_b = b.as_ref().map(|b| vocab_tok.encode(b).unwrap());
        let x = vocab_tok.oscar_text(&ids_a, ids_b.as_deref(), 512, vlp_engine::data::Truncation::Pair);
        assert_eq!(x.ids, want_ids, "text {i} ids (vocab.txt)");
        for (got, want, what) in [(&e.hidden, f32s(&format!("hidden.{i}")), "hidden"), (&e.pooled, f32s(&format!("pooled.{i}")), "pooled")] {
            assert_eq!(got.len(), want.len(), "text {i} {what} length");
            let err = got.iter().zip(&want).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(err < 1e-3, "text {i} {what}: max abs error {err}");
            worst = worst.max(err);
        }
    }
    eprintln!("MiniLM embed vs transformers: {} texts, worst max abs error {worst:.2e}", texts.len());

    // the same texts (those without tags) through one plan of batch 2: padded to the longest text,
    // the last batch partial; each must equal the reference as the one-text runs did
    let plain: Vec<(usize, String)> = texts.iter().enumerate().filter(|(_, (_, b))| b.is_none()).map(|(i, (a, _))| (i, a.clone())).collect();
    assert!(plain.len() >= 3, "the fixture needs 3 untagged texts to test a padded partial batch");
    let lens: Vec<usize> = plain.iter().map(|(_, a)| m.tok.encode(a).unwrap().len()).collect();
    assert!(lens.iter().any(|&l| l != lens[0]), "the texts must differ in length to test padding");
    let all: Vec<String> = plain.iter().map(|(_, a)| a.clone()).collect();
    let embs = embed_many(&gpu, &m, &all, None, None, 2, |_| {}).unwrap();
    assert_eq!(embs.len(), all.len());
    for ((i, _), e) in plain.iter().zip(&embs) {
        for (got, want, what) in [(&e.hidden, f32s(&format!("hidden.{i}")), "hidden"), (&e.pooled, f32s(&format!("pooled.{i}")), "pooled")] {
            assert_eq!(got.len(), want.len(), "batched text {i} {what} length");
            let err = got.iter().zip(&want).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(err < 1e-3, "batched text {i} {what}: max abs error {err}");
        }
    }
}
