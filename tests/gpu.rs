//! The same plugins and models on a CUDA device as on the CPU. Built only with the `cuda`
//! feature (scripts/build-cuda.sh); scripts/gpu-check.sh runs it on a GPU machine. Each
//! test prints why it is skipped and passes when no CUDA device answers, so the binary
//! also runs on the build machine: what it checks there is that it builds and links.

mod support;

use lantern::{DeviceChoice, Host, Policy, Stdio};
use support::{cosine, guest, host_on, json, vectors, MINILM, SMOLLM2};

/// CUDA device 0 when it answers; otherwise prints why the calling test is skipped.
fn cuda(test: &str) -> Option<DeviceChoice> {
    match DeviceChoice::Cuda(0).resolve() {
        Ok(_) => Some(DeviceChoice::Cuda(0)),
        Err(why) => {
            eprintln!("skipped {test}: {why}");
            None
        }
    }
}

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A probe `embed` answer's vectors for `texts` from `model`.
async fn embed(host: &Host, model: &str, texts: &[String]) -> Vec<Vec<f32>> {
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let mut args = vec!["embed".to_string(), model.to_string()];
    args.extend(texts.iter().cloned());
    let output = host.run(&plugin, Policy::default().allow_model(model), args, Stdio::Capture).await.unwrap();
    vectors(&json(&output.result))
}

fn assert_close(gpu: &[Vec<f32>], cpu: &[Vec<f32>], at_least: f32, what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: row count");
    for (row, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(g.iter().all(|x| x.is_finite()), "{what}: row {row} has non-finite values");
        let similarity = cosine(g, c);
        assert!(similarity >= at_least, "{what}: row {row}: cosine {similarity} < {at_least}");
    }
}

#[tokio::test]
async fn minilm_vectors_on_the_gpu_equal_the_cpu_and_numpy_ones() {
    let Some(device) = cuda("minilm_vectors_on_the_gpu_equal_the_cpu_and_numpy_ones") else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::workspace_root().join("tests/fixtures/minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let sentences: Vec<String> = serde_json::from_value(reference["sentences"].clone()).unwrap();
    let numpy: Vec<Vec<f32>> = serde_json::from_value(reference["vectors"].clone()).unwrap();

    let mirror = support::minilm_mirror(hubmirror::Faults::default()).await;
    let (cpu_cache, gpu_cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gpu_host = host_on(&mirror.endpoint(), gpu_cache.path(), device);
    assert!(gpu_host.registry().device().is_cuda());
    let gpu = embed(&gpu_host, MINILM, &sentences).await;
    let cpu = embed(&host_on(&mirror.endpoint(), cpu_cache.path(), DeviceChoice::Cpu), MINILM, &sentences).await;
    assert_close(&gpu, &cpu, 0.9999, "MiniLM GPU vs CPU");
    assert_close(&gpu, &numpy, 0.999, "MiniLM GPU vs NumPy");
}

#[tokio::test]
async fn smollm2_answers_the_france_question_on_the_gpu() {
    let Some(device) = cuda("smollm2_answers_the_france_question_on_the_gpu") else { return };
    let mirror = support::smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = host_on(&mirror.endpoint(), cache.path(), device);
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let output = host
        .run(&plugin, Policy::default().allow_model(SMOLLM2), words(&["generate", SMOLLM2, prompt, "--max", "32"]), Stdio::Capture)
        .await
        .unwrap();
    let answer = json(&output.result);
    assert!(answer["text"].as_str().unwrap().contains("Paris"), "{answer}");
    assert_eq!(answer["finished"]["reason"], "eos", "{answer}");
}

/// Every tiny embedding family (real layouts, random weights) gives the CPU's vectors.
#[tokio::test]
async fn every_tiny_embedding_family_runs_on_the_gpu() {
    let Some(device) = cuda("every_tiny_embedding_family_runs_on_the_gpu") else { return };
    let repos = tempfile::tempdir().unwrap();
    let mirror = support::families_mirror(repos.path()).await;
    let (cpu_cache, gpu_cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gpu_host = host_on(&mirror.endpoint(), gpu_cache.path(), device);
    let cpu_host = host_on(&mirror.endpoint(), cpu_cache.path(), DeviceChoice::Cpu);
    let texts = words(&["The cat sits outside", "A man is playing a guitar in the park tonight", "Stocks fell"]);
    for model in [support::tiny::JINA, support::tiny::STELLA_400M, support::tiny::STELLA_1_5B, support::tiny::GTE_QWEN2, support::tiny::NV_EMBED] {
        let gpu = embed(&gpu_host, model, &texts).await;
        let cpu = embed(&cpu_host, model, &texts).await;
        assert_close(&gpu, &cpu, 0.999, model);
    }
}

/// Two plugins at once on one host: both get their answers from the one device.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_plugins_share_the_device() {
    let Some(device) = cuda("two_plugins_share_the_device") else { return };
    let mirror = support::minilm_and_smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = host_on(&mirror.endpoint(), cache.path(), device);
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let policy = Policy::default().allow_model(MINILM).allow_model(SMOLLM2);
    let embedding = host.run(&plugin, policy.clone(), words(&["embed", MINILM, "a cat", "a kitten"]), Stdio::Capture);
    let generation = host.run(
        &plugin,
        policy.clone(),
        words(&["generate", SMOLLM2, "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n", "--max", "8"]),
        Stdio::Capture,
    );
    let (embedding, generation) = tokio::join!(embedding, generation);
    let vectors = vectors(&json(&embedding.unwrap().result));
    assert!(cosine(&vectors[0], &vectors[1]) > 0.7);
    assert!(!json(&generation.unwrap().result)["text"].as_str().unwrap().is_empty());
    assert!(host.registry().device().is_cuda());
}
