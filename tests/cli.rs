//! The `lantern` binary, configured the way a user does it: HF_ENDPOINT and HF_HOME.

mod support;

use hubmirror::Faults;
use support::{guest, lantern, minilm_mirror, MINILM};


fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn run_prints_the_ranking_using_hf_endpoint() {
    let mirror = minilm_mirror(Faults::default()).await;
    let home = tempfile::tempdir().unwrap();
    let plugin = guest("semantic_search");
    let output = lantern(
        &[
            "run",
            plugin.to_str().unwrap(),
            "--allow-model",
            MINILM,
            "--",
            "A kitten is sitting outdoors",
            "Stock markets fell sharply today",
            "The cat sits outside",
        ],
        &mirror.endpoint(),
        home.path(),
    )
    .await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", text(&output.stderr));
    let first = stdout.lines().find(|l| l.trim_start().starts_with("1.")).expect("a ranking");
    assert!(first.contains("The cat sits outside"), "{stdout}");
    assert!(home.path().join("hub/models--sentence-transformers--all-MiniLM-L6-v2/refs/main").is_file());
}

#[tokio::test]
async fn a_model_that_was_not_allowed_fails_the_run_with_the_typed_error() {
    let mirror = minilm_mirror(Faults::default()).await;
    let home = tempfile::tempdir().unwrap();
    let plugin = guest("semantic_search");
    let output = lantern(&["run", plugin.to_str().unwrap(), "--", "query", "doc"], &mirror.endpoint(), home.path()).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("model not allowed"), "{stderr}");
    assert!(stderr.contains("--allow-model sentence-transformers/all-MiniLM-L6-v2"), "{stderr}");
}

#[tokio::test]
async fn malformed_wasm_gets_a_message_not_a_panic() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm garbage").unwrap();
    for command in ["run", "inspect"] {
        let output = lantern(&[command, bad.to_str().unwrap()], "http://127.0.0.1:9", home.path()).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("is not a valid WebAssembly component"), "{command}: {stderr}");
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
}

#[tokio::test]
async fn inspect_prints_the_world() {
    let home = tempfile::tempdir().unwrap();
    let plugin = guest("semantic_search");
    let output = lantern(&["inspect", plugin.to_str().unwrap()], "http://127.0.0.1:9", home.path()).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("import lantern:ai/embeddings@0.1.0"), "{stdout}");
    assert!(stdout.contains("export run: func(args: list<string>) -> result<string, string>"), "{stdout}");
    assert!(stdout.contains("fits lantern:ai/pipeline"), "{stdout}");
}

#[tokio::test]
async fn models_and_pull_use_the_cache() {
    let mirror = minilm_mirror(Faults::default()).await;
    let home = tempfile::tempdir().unwrap();
    let output = lantern(&["pull", MINILM], &mirror.endpoint(), home.path()).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = lantern(&["models"], &mirror.endpoint(), home.path()).await;
    let stdout = text(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with(MINILM)).expect("MiniLM listed");
    assert!(line.contains("91.3 MB"), "{stdout}");
}

#[tokio::test]
async fn a_catalog_file_adds_models_and_its_errors_name_the_line() {
    let mirror = minilm_mirror(Faults::default()).await;
    let home = tempfile::tempdir().unwrap();
    let catalog = home.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "[[model]]\nkey = \"my/minilm\"\nrepo = \"sentence-transformers/all-MiniLM-L6-v2\"\nfamily = \"bert\"\n\
         files = [\"config.json\", \"tokenizer.json\", \"model.safetensors\", \"1_Pooling/config.json\"]\n\
         description = \"MiniLM under my own key\"\n",
    )
    .unwrap();
    let catalog_arg = catalog.display().to_string();
    let output = lantern(&["--catalog", &catalog_arg, "models"], &mirror.endpoint(), home.path()).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("my/minilm ")).unwrap_or_else(|| panic!("not listed: {stdout}"));
    assert!(line.contains(&catalog_arg) && line.contains("text-embedding"), "{line}");
    // Columns line up: every row's FAMILY starts where the header's does.
    let header = stdout.lines().next().unwrap();
    let family_column = header.find("FAMILY").unwrap();
    assert_eq!(&line[family_column..family_column + 4], "bert", "{stdout}");

    // The added key downloads and runs like a built-in one.
    let output = lantern(&["--catalog", &catalog_arg, "pull", "my/minilm"], &mirror.endpoint(), home.path()).await;
    assert!(output.status.success(), "{}", text(&output.stderr));

    std::fs::write(&catalog, "[[model]]\nkey = \"a/b\"\nfamily = \"unet\"\nfiles = [\"x\"]\n").unwrap();
    let output = lantern(&["--catalog", &catalog_arg, "models"], &mirror.endpoint(), home.path()).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&format!("{catalog_arg} line 3: unknown family \"unet\"")), "{stderr}");
}

/// `--device`: a misspelling is a usage error; cuda in a build without the feature names
/// the feature; auto falls back to the CPU and the command works.
#[tokio::test]
async fn device_choices_are_checked_and_cuda_needs_the_feature() {
    let home = tempfile::tempdir().unwrap();
    let output = lantern(&["--device", "gpu0", "models"], "http://127.0.0.1:9", home.path()).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected cpu, cuda, cuda:N or auto"), "{stderr}");

    let output = lantern(&["--device", "auto", "models"], "http://127.0.0.1:9", home.path()).await;
    assert!(output.status.success(), "{}", text(&output.stderr));

    if !lantern::device::CUDA_BUILT {
        let output = lantern(&["--device", "cuda:1", "models"], "http://127.0.0.1:9", home.path()).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cuda:1 needs a build with the `cuda` feature"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
