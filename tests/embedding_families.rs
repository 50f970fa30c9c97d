//! Every embedding family of the catalog through a wasm plugin. MiniLM has real weights
//! (tests/embeddings.rs checks its numbers); Jina-BERT v2, Stella v5 400M/1.5B,
//! GTE-Qwen2 and NV-Embed v2 run on tiny random checkpoints with the real layouts
//! (tests/support/tiny.rs), so these tests check behaviour — shapes, determinism,
//! prompts, pooling that ignores padding, Matryoshka heads, errors — not semantics.

mod support;

use lantern::{Host, Policy, Stdio};
use support::tiny::{GTE_QWEN2, JINA, NV_EMBED, STELLA_1_5B, STELLA_400M};
use support::{cosine, guest, json, vectors};

const TEXTS: [&str; 3] = ["The cat sits outside", "A man is playing a guitar in the park tonight", "Stocks fell"];

struct Setup {
    host: Host,
    plugin: lantern::Plugin,
    mirror: hubmirror::Mirror,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn setup() -> Setup {
    let repos = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mirror = support::families_mirror(repos.path()).await;
    let host = support::host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    Setup { host, plugin, mirror, _dirs: (repos, cache) }
}

impl Setup {
    async fn probe(&self, args: &[&str]) -> serde_json::Value {
        let args = args.iter().map(|s| s.to_string()).collect();
        let output = self.host.run(&self.plugin, Policy::default().allow_any_model(), args, Stdio::Capture).await.unwrap();
        json(&output.result)
    }

    async fn embed(&self, command: &str, model: &str, extra: &[&str], texts: &[&str]) -> serde_json::Value {
        let mut args = vec![command, model];
        args.extend_from_slice(extra);
        args.extend_from_slice(texts);
        self.probe(&args).await
    }
}

fn assert_unit_rows(answer: &serde_json::Value, rows: usize, dims: usize) {
    assert_eq!(answer["dimensions"], dims, "{answer}");
    let vectors = vectors(answer);
    assert_eq!(vectors.len(), rows);
    for vector in &vectors {
        assert_eq!(vector.len(), dims);
        assert!(vector.iter().all(|x| x.is_finite()), "non-finite component");
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

fn assert_same(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let similarity = cosine(x, y);
        assert!(similarity > 0.99999, "{what}: cosine {similarity}");
    }
}

/// Shape, normalisation, determinism across fresh hosts, and that an input's vector
/// does not depend on what it was batched with (padding is masked or avoided).
async fn check_family(model: &str, dims: usize) {
    let one = setup().await;
    let batch = one.embed("embed", model, &[], &TEXTS).await;
    assert_unit_rows(&batch, 3, dims);
    assert!(batch["prompt_tokens"].as_u64().unwrap() > 10, "{batch}");
    let batch = vectors(&batch);
    let distinct = cosine(&batch[0], &batch[1]);
    assert!(distinct < 0.9999, "different texts gave the same vector ({distinct})");

    for (index, text) in TEXTS.iter().enumerate() {
        let alone = vectors(&one.embed("embed", model, &[], &[text]).await);
        assert_same(&alone, &batch[index..=index], &format!("{model}: input {index} alone vs in a padded batch"));
    }

    let other = setup().await;
    let again = vectors(&other.embed("embed", model, &[], &TEXTS).await);
    assert_same(&again, &batch, &format!("{model}: a fresh host with a fresh download"));
}

#[tokio::test]
async fn jina_bert_embeds_without_instructions() {
    check_family(JINA, 32).await;
    let s = setup().await;
    let document = vectors(&s.embed("embed", JINA, &[], &TEXTS[..1]).await);
    let query = vectors(&s.embed("embed-query", JINA, &[], &TEXTS[..1]).await);
    assert_same(&query, &document, "Jina reads queries and documents alike");
    let answer = s.embed("embed-instruct", JINA, &["Find cats"], &TEXTS[..1]).await;
    assert_eq!(answer["error"], "invalid-input", "{answer}");
    // Not Matryoshka-trained: no other output size.
    let answer = s.embed("embed-dims", JINA, &["16"], &TEXTS[..1]).await;
    assert_eq!(answer["error"], "invalid-input", "{answer}");
    assert_eq!(s.embed("embed-dims", JINA, &["32"], &TEXTS[..1]).await["dimensions"], 32);
    // Over-long input: cut to the tiny config's 512 positions, or refused.
    let long = "word ".repeat(700);
    let answer = s.embed("embed", JINA, &[], &[&long, "short"]).await;
    assert_eq!(answer["truncated_inputs"], 1, "{answer}");
    assert_eq!(s.embed("embed-strict", JINA, &[], &[&long]).await["error"], "invalid-input");
}

async fn check_instructions(model: &str) {
    let s = setup().await;
    let document = vectors(&s.embed("embed", model, &[], &TEXTS[..1]).await);
    let query = s.embed("embed-query", model, &[], &TEXTS[..1]).await;
    let instructed = vectors(&s.embed("embed-instruct", model, &["Find sentences about pets"], &TEXTS[..1]).await);
    assert!(
        query["prompt_tokens"].as_u64().unwrap() > s.embed("embed", model, &[], &TEXTS[..1]).await["prompt_tokens"].as_u64().unwrap(),
        "the query prompt adds tokens"
    );
    let query = vectors(&query);
    assert!(cosine(&query[0], &document[0]) < 0.9999, "{model}: a query reads differently from a document");
    assert!(cosine(&query[0], &instructed[0]) < 0.9999, "{model}: a custom instruction differs from the default one");
    let answer = s.embed("embed-dims", model, &["16"], &TEXTS[..1]).await;
    assert_eq!(answer["error"], "invalid-input", "{model} is not Matryoshka-trained: {answer}");
}

#[tokio::test]
async fn gte_qwen2_pools_the_last_token_and_follows_instructions() {
    check_family(GTE_QWEN2, 32).await;
    check_instructions(GTE_QWEN2).await;
}

#[tokio::test]
async fn nv_embed_pools_latent_attention_and_follows_instructions() {
    check_family(NV_EMBED, 32).await;
    check_instructions(NV_EMBED).await;
}

/// Stella: default 1024-dim head, query prompt, and only the asked head is downloaded.
async fn check_stella(model: &str) {
    check_family(model, 1024).await;
    let s = setup().await;
    let head = |size: usize| format!("2_Dense_{size}/model.safetensors");
    let document = vectors(&s.embed("embed", model, &[], &TEXTS[..1]).await);
    let query = vectors(&s.embed("embed-query", model, &[], &TEXTS[..1]).await);
    assert!(cosine(&query[0], &document[0]) < 0.9999, "{model}: queries get the s2p prompt");
    assert_eq!(s.mirror.stats().file_requests(model, &head(1024)), 1);
    assert_eq!(s.mirror.stats().file_requests(model, &head(256)), 0);

    let small = s.embed("embed-dims", model, &["256"], &TEXTS[..1]).await;
    assert_unit_rows(&small, 1, 256);
    assert_eq!(s.mirror.stats().file_requests(model, &head(256)), 1);
    for size in [768, 2048, 4096, 6144, 8192] {
        assert_eq!(s.mirror.stats().file_requests(model, &head(size)), 0, "head {size} was never asked for");
    }
    // A size between heads is the Matryoshka prefix of the next larger head.
    let prefix = vectors(&s.embed("embed-dims", model, &["512"], &TEXTS[..1]).await);
    let mut full = vectors(&s.embed("embed-dims", model, &["768"], &TEXTS[..1]).await).remove(0);
    full.truncate(512);
    assert_same(&prefix, &[full], "512 dims are the 768 head's prefix");
    let answer = s.embed("embed-dims", model, &["9000"], &TEXTS[..1]).await;
    assert_eq!(answer["error"], "invalid-input", "{answer}");
}

#[tokio::test]
async fn stella_400m_uses_the_requested_matryoshka_head() {
    check_stella(STELLA_400M).await;
}

#[tokio::test]
async fn stella_1_5b_uses_the_requested_matryoshka_head() {
    check_stella(STELLA_1_5B).await;
}
