//! Text embeddings end to end: a wasm plugin in the host, the real all-MiniLM-L6-v2
//! weights downloaded from a local HF-protocol hub, checked against vectors computed
//! independently (NumPy, scripts/reference/minilm_numpy.py).

mod support;

use hubmirror::Faults;
use lantern::{Policy, Stdio};
use support::{cosine, guest, host, json, minilm_mirror, MINILM};

fn minilm_policy() -> Policy {
    Policy::default().allow_model(MINILM)
}

#[tokio::test]
async fn plugin_embeddings_match_an_independent_reference() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(support::workspace_root().join("tests/fixtures/minilm_reference.json")).unwrap())
            .unwrap();
    let sentences: Vec<String> =
        reference["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let expected: Vec<Vec<f32>> = reference["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();

    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let mut args = vec!["embed".to_string(), MINILM.to_string()];
    args.extend(sentences.iter().cloned());
    let output = host.run(&plugin, minilm_policy(), args, Stdio::Capture).await.unwrap();
    let answer = json(&output.result);

    assert_eq!(answer["dimensions"], 384);
    let vectors: Vec<Vec<f32>> = serde_json::from_value(answer["vectors"].clone()).unwrap();
    assert_eq!(vectors.len(), sentences.len());
    for (index, (got, want)) in vectors.iter().zip(&expected).enumerate() {
        let similarity = cosine(got, want);
        assert!(similarity >= 0.999, "sentence {index} {:?}: cosine to the reference is {similarity}", sentences[index]);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "vectors are L2-normalised, got norm {norm}");
    }
    // The cat/kitten pair is close; unrelated text is not.
    assert!(cosine(&vectors[0], &vectors[1]) > 0.7);
    assert!(cosine(&vectors[0], &vectors[3]) < 0.3);
    // The files went into the HF cache layout.
    let repo_dir = cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2");
    assert!(repo_dir.join("refs/main").is_file());
    let commit = std::fs::read_to_string(repo_dir.join("refs/main")).unwrap();
    assert!(repo_dir.join("snapshots").join(commit.trim()).join("1_Pooling/config.json").is_file());
    assert!(std::fs::symlink_metadata(repo_dir.join("snapshots").join(commit.trim()).join("model.safetensors"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[tokio::test]
async fn semantic_search_ranks_the_kitten_sentence_first() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("semantic_search")).unwrap();
    let args = [
        "--json",
        "A kitten is sitting outdoors",
        "Stock markets fell sharply today",
        "The cat sits outside",
        "How do I bake sourdough bread?",
    ]
    .map(String::from)
    .to_vec();
    let output = host.run(&plugin, minilm_policy(), args, Stdio::Capture).await.unwrap();
    let ranking = json(&output.result);
    let ranking = ranking.as_array().unwrap();
    assert_eq!(ranking.len(), 3);
    assert_eq!(ranking[0]["text"], "The cat sits outside");
    let best = ranking[0]["score"].as_f64().unwrap();
    let next = ranking[1]["score"].as_f64().unwrap();
    assert!(best > 0.7 && next < 0.3, "scores {best} and {next}");
}

#[tokio::test]
async fn typed_errors_reach_the_plugin() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let run = |policy: Policy, args: &[&str]| {
        let args = args.iter().map(|s| s.to_string()).collect();
        let (host, plugin) = (&host, &plugin);
        async move { json(&host.run(plugin, policy, args, Stdio::Capture).await.unwrap().result) }
    };

    // Not allowed: refused before anything is downloaded.
    let answer = run(Policy::default(), &["embed", MINILM, "hello"]).await;
    assert_eq!(answer["error"], "model-not-allowed", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("--allow-model"));
    assert_eq!(mirror.stats().total_file_requests(), 0);

    // Allowed but unknown to the catalog.
    let answer = run(Policy::default().allow_model("acme/unknown-model"), &["embed", "acme/unknown-model", "hi"]).await;
    assert_eq!(answer["error"], "model-not-supported", "{answer}");

    // A capability the model does not offer.
    let answer = run(minilm_policy(), &["generate", MINILM]).await;
    assert_eq!(answer["error"], "model-not-supported", "{answer}");

    // Bad input.
    assert_eq!(run(minilm_policy(), &["embed", MINILM]).await["error"], "invalid-input");
    assert_eq!(run(minilm_policy(), &["embed", MINILM, "fine", "  "]).await["error"], "invalid-input");

    // Over-long input: truncated by default, refused in strict mode.
    let long = "word ".repeat(400);
    let answer = run(minilm_policy(), &["embed", MINILM, &long, "short"]).await;
    assert_eq!(answer["truncated_inputs"], 1, "{answer}");
    assert_eq!(answer["vectors"].as_array().unwrap().len(), 2);
    let answer = run(minilm_policy(), &["embed-strict", MINILM, &long]).await;
    assert_eq!(answer["error"], "invalid-input", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("256"), "{answer}");

    // Limits from policy.
    let policy = Policy { max_embed_inputs: 2, ..minilm_policy() };
    assert_eq!(run(policy, &["embed", MINILM, "a", "b", "c"]).await["error"], "limit-exceeded");
}

#[tokio::test]
async fn preparation_reports_progress_and_concurrent_plugins_share_one_download() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();

    // Eight plugins prepare the model at the same moment.
    let runs = (0..8).map(|_| {
        host.run(&plugin, minilm_policy(), vec!["prepare".into(), MINILM.into()], Stdio::Capture)
    });
    let outputs = futures::future::join_all(runs).await;
    for output in &outputs {
        let answer = json(&output.as_ref().unwrap().result);
        assert!(answer.get("failed").is_none(), "{answer}");
        let events = answer["events"].as_array().unwrap();
        assert_eq!(events.last().unwrap(), "ready", "{answer}");
    }
    // Whoever watched the download saw byte counts reach the model's total.
    let totals: Vec<u64> = outputs
        .iter()
        .flat_map(|o| json(&o.as_ref().unwrap().result)["events"].as_array().unwrap().clone())
        .filter_map(|e| e["downloading"]["bytes_total"].as_u64())
        .collect();
    let repo_size: u64 = ["config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json", "sentence_bert_config.json"]
        .iter()
        .map(|f| mirror.repo(MINILM).unwrap().files[*f].size)
        .sum();
    assert!(totals.contains(&repo_size), "no event carried the full size {repo_size}: {totals:?}");
    // One transfer per file, however many plugins asked.
    assert_eq!(mirror.stats().file_requests(MINILM, "model.safetensors"), 1);
    assert_eq!(mirror.stats().total_file_requests(), 5);

    // Once loaded, preparing again is immediate and downloads nothing.
    let output = host.run(&plugin, minilm_policy(), vec!["prepare".into(), MINILM.into()], Stdio::Capture).await.unwrap();
    assert_eq!(json(&output.result)["events"], serde_json::json!(["ready"]));
    let info = host.run(&plugin, minilm_policy(), vec!["info".into(), MINILM.into()], Stdio::Capture).await.unwrap();
    let info = json(&info.result);
    assert_eq!((info["cached"].as_bool(), info["loaded"].as_bool()), (Some(true), Some(true)), "{info}");
    assert_eq!(mirror.stats().total_file_requests(), 5);
}

#[tokio::test]
async fn offline_mode_serves_the_cache_and_names_what_is_missing() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let offline = |cache: &std::path::Path| {
        let config = lantern::HubConfig { offline: true, ..support::hub_config(&mirror.endpoint(), cache) };
        lantern::Host::builder().hub_config(config).build().unwrap()
    };
    let args = || vec!["embed".to_string(), MINILM.to_string(), "hello".to_string()];

    // Empty cache, offline: a clear download error, no request made.
    let host = offline(cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let answer = json(&host.run(&plugin, minilm_policy(), args(), Stdio::Capture).await.unwrap().result);
    assert_eq!(answer["error"], "download-failed", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("HF_HUB_OFFLINE"), "{answer}");
    assert_eq!(mirror.stats().total_file_requests(), 0);

    // Fill the cache online, then a fresh offline host answers from it.
    let online = support::host(&mirror.endpoint(), cache.path());
    let plugin = online.load_plugin(&guest("probe")).unwrap();
    json(&online.run(&plugin, minilm_policy(), args(), Stdio::Capture).await.unwrap().result);
    let requests = mirror.stats().total_file_requests();
    let host = offline(cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let answer = json(&host.run(&plugin, minilm_policy(), args(), Stdio::Capture).await.unwrap().result);
    assert_eq!(answer["dimensions"], 384, "{answer}");
    assert_eq!(mirror.stats().total_file_requests(), requests);
}
