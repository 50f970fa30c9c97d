//! Dynamic batching and the loaded-model memory budget, through wasm plugins.

mod support;

use std::time::Duration;

use hubmirror::Faults;
use lantern::batching::BatchPolicy;
use lantern::{Host, Policy, Stdio};
use support::tiny::{GTE_QWEN2, JINA, NV_EMBED};
use support::{cosine, guest, hub_config, json, minilm_mirror, vectors, MINILM};

const PLUGINS: usize = 16;

fn sentence(plugin: usize, index: usize) -> String {
    format!("Plugin {plugin} asks about topic {} with {} extra words", plugin * 7 + index, "many ".repeat(plugin % 5))
}

/// Runs PLUGINS probe plugins at once, each embedding two sentences; returns their
/// vectors in plugin order.
async fn embed_concurrently(host: &Host) -> Vec<Vec<Vec<f32>>> {
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let runs = (0..PLUGINS).map(|p| {
        let args = vec!["embed".to_string(), MINILM.to_string(), sentence(p, 0), sentence(p, 1)];
        let (host, plugin) = (host, &plugin);
        async move { vectors(&json(&host.run(plugin, Policy::default().allow_model(MINILM), args, Stdio::Capture).await.unwrap().result)) }
    });
    futures::future::join_all(runs).await
}

fn host_with(endpoint: &str, cache: &std::path::Path, policy: BatchPolicy) -> Host {
    Host::builder().hub_config(hub_config(endpoint, cache)).batch_policy(policy).build().unwrap()
}

#[tokio::test]
async fn concurrent_requests_share_model_calls_and_get_their_own_vectors() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();

    // Reference: no merging at all (a batch holds one request).
    let alone = host_with(&mirror.endpoint(), cache.path(), BatchPolicy { max_wait: Duration::ZERO, max_inputs: 1 });
    let expected = embed_concurrently(&alone).await;
    let counts = alone.registry().embedding_batch_counts(MINILM).unwrap();
    assert_eq!((counts.requests, counts.model_calls), (PLUGINS as u64, PLUGINS as u64), "{counts:?}");

    let batched = host_with(&mirror.endpoint(), cache.path(), BatchPolicy { max_wait: Duration::from_millis(5), max_inputs: 64 });
    let got = embed_concurrently(&batched).await;
    let counts = batched.registry().embedding_batch_counts(MINILM).unwrap();
    assert_eq!(counts.requests, PLUGINS as u64);
    assert_eq!(counts.inputs, 2 * PLUGINS as u64, "no input ran twice: {counts:?}");
    assert!(counts.model_calls < PLUGINS as u64 / 2, "16 concurrent requests took {} model calls", counts.model_calls);

    for (plugin, (got, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(want) {
            let similarity = cosine(g, w);
            assert!(similarity > 0.99999, "plugin {plugin}: batched vector differs from its unbatched one ({similarity})");
        }
    }
}

#[tokio::test]
async fn a_refused_request_does_not_fail_the_requests_batched_with_it() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host_with(&mirror.endpoint(), cache.path(), BatchPolicy { max_wait: Duration::from_millis(20), max_inputs: 64 });
    let registry = host.registry();
    registry.text_embedder(MINILM, None).await.unwrap();
    let strict = |text: String| lantern::capabilities::EmbedRequest { truncate: false, ..lantern::capabilities::EmbedRequest::new(vec![text]) };
    let (long, short) = tokio::join!(
        registry.embed(MINILM, strict("word ".repeat(400))),
        registry.embed(MINILM, strict("a short sentence".into()))
    );
    assert!(matches!(long, Err(lantern::LanternError::InvalidInput(_))), "{long:?}");
    assert_eq!(short.unwrap().vectors.len(), 1);
}

fn weight_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[tokio::test]
async fn idle_models_are_unloaded_least_recently_used_first_but_never_in_use() {
    let repos = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mirror = support::families_mirror(repos.path()).await;
    let sizes: Vec<u64> =
        [JINA, GTE_QWEN2, NV_EMBED].iter().map(|repo| weight_bytes(&repos.path().join(repo.replace('/', "--")))).collect();
    // Room for any one of the tiny models, not for two.
    let budget = sizes.iter().max().unwrap() * 3 / 2;
    assert!(budget < sizes.iter().min().unwrap() * 2);
    let host = Host::builder().hub_config(hub_config(&mirror.endpoint(), cache.path())).model_memory_budget(budget).build().unwrap();
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let embed = |model: &'static str| {
        let (host, plugin) = (&host, &plugin);
        async move {
            let args = vec!["embed".to_string(), model.to_string(), "hello there".to_string()];
            vectors(&json(&host.run(plugin, Policy::default().allow_any_model(), args, Stdio::Capture).await.unwrap().result))
        }
    };
    let registry = host.registry();

    let jina_first = embed(JINA).await;
    assert_eq!(registry.loaded_text_embedders(), vec![JINA.to_string()]);
    embed(GTE_QWEN2).await;
    assert_eq!(registry.loaded_text_embedders(), vec![GTE_QWEN2.to_string()], "the idle Jina model made room");

    // A model someone holds stays loaded, even over budget.
    let held = registry.text_embedder(GTE_QWEN2, None).await.unwrap();
    embed(NV_EMBED).await;
    assert_eq!(registry.loaded_text_embedders(), vec![GTE_QWEN2.to_string(), NV_EMBED.to_string()]);
    drop(held);

    // Reloading an evicted model gives the same vectors; the least recently used idle one goes.
    let jina_again = embed(JINA).await;
    assert!(cosine(&jina_first[0], &jina_again[0]) > 0.99999);
    assert_eq!(registry.loaded_text_embedders(), vec![JINA.to_string()]);
}
