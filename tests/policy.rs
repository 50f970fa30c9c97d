//! Policies: one `Policy` from a TOML file or from flags (flags win), `org/*` patterns,
//! and every limit refused through a real plugin (the probe) with the typed
//! `limit-exceeded` error, per call and per run, plus one log line naming the flag.

mod support;

/// host/examples/embed.rs, compiled into this test so it runs against the test hub.
#[allow(dead_code)]
#[path = "../host/examples/embed.rs"]
mod embed_example;

use std::time::Duration;

use hubmirror::Faults;
use lantern::{Limit, Policy, PluginError, Stdio};
use serde_json::Value;
use support::{guest, host, json, lantern, minilm_and_smollm2_mirror, minilm_mirror, workspace_root, MINILM, SMOLLM2};

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A host whose hub is unreachable: for checks that refuse before any download.
fn bare_host(cache: &std::path::Path) -> lantern::Host {
    host("http://127.0.0.1:9", cache)
}

/// Runs the probe under `policy` and parses its JSON answer.
async fn probe(host: &lantern::Host, policy: Policy, words: &[&str]) -> (Value, lantern::UsageReport) {
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let output = host.run(&plugin, policy, args(words), Stdio::Capture).await.unwrap();
    (json(&output.result), output.usage)
}

fn refused_by(answer: &Value, limit: Limit) {
    assert_eq!(answer["error"], "limit-exceeded", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains(limit.flag()) && message.contains(limit.key()), "{limit:?} not named: {message}");
}

#[test]
fn the_example_policy_file_is_what_the_demo_grants() {
    let path = workspace_root().join("examples/policy.toml");
    let policy = Policy::from_toml_file(&path).unwrap();
    assert!(policy.check_model(MINILM).is_ok());
    assert!(policy.check_model(SMOLLM2).is_ok(), "QuantFactory/* covers SmolLM2");
    assert!(policy.check_model("QuantFactory/other-GGUF:Q8_0").is_ok());
    assert!(policy.check_model("sentence-transformers/all-mpnet-base-v2").is_err());
    assert_eq!(policy.dirs.len(), 1);
    assert_eq!(policy.dirs[0].host_path, workspace_root().join("examples/docs"), "relative to the file");
    assert_eq!(policy.dirs[0].guest_path, "/docs");
    assert!(!policy.dirs[0].writable);
    assert_eq!(policy.env, vec![("LANG".to_string(), "C.UTF-8".to_string())]);
    assert_eq!(policy.timeout, Some(Duration::from_secs(300)));
    assert_eq!(policy.cpu_budget, Some(Duration::from_secs(30)));
    // Every other value in the file is documented as the default: it must be.
    let defaults = Policy::default();
    assert_eq!(
        (policy.max_memory_bytes, policy.max_host_calls, policy.max_generated_tokens, policy.max_generated_tokens_per_run),
        (defaults.max_memory_bytes, defaults.max_host_calls, defaults.max_generated_tokens, defaults.max_generated_tokens_per_run)
    );
    assert_eq!(
        (policy.max_embed_inputs, policy.max_embed_inputs_per_run, policy.max_input_bytes, policy.max_log_bytes),
        (defaults.max_embed_inputs, defaults.max_embed_inputs_per_run, defaults.max_input_bytes, defaults.max_log_bytes)
    );
    assert_eq!(
        (policy.max_open_generations, policy.max_image_side, policy.max_image_steps, policy.max_images_per_call),
        (defaults.max_open_generations, defaults.max_image_side, defaults.max_image_steps, defaults.max_images_per_call)
    );
    assert_eq!((policy.max_image_bytes, policy.max_decoded_side), (defaults.max_image_bytes, defaults.max_decoded_side));
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_line() {
    let error = Policy::from_toml_str("[limits]\nmax_host_calls = 5\nmax_tokens = 10\n").unwrap_err();
    assert_eq!(error.line, Some(3));
    assert!(error.message.contains("unknown field `max_tokens`"), "{error}");
    let error = Policy::from_toml_str("[modles]\nallow = [\"a/b\"]\n").unwrap_err();
    assert!(error.message.contains("unknown field `modles`") && error.line == Some(1), "{error}");
    let error = Policy::from_toml_str("[models]\nallow = [\"a/*b\"]\n").unwrap_err();
    assert!(error.message.contains("ORG/*") && error.line == Some(2), "{error}");
    let error = Policy::from_toml_file(std::path::Path::new("/no/such/policy.toml")).unwrap_err();
    assert!(error.to_string().starts_with("/no/such/policy.toml: cannot read it"), "{error}");
}

#[tokio::test]
async fn the_cli_reads_the_file_and_its_flags_override_it() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "[models]\nallow = [\"sentence-transformers/*\"]\n[limits]\nmax_host_calls = 2\n").unwrap();
    let probe = guest("probe");
    let run = |extra: &[&str]| {
        let mut words: Vec<String> = ["run", probe.to_str().unwrap(), "--policy", file.to_str().unwrap()].map(String::from).to_vec();
        words.extend(extra.iter().map(|s| s.to_string()));
        words.extend(["--", "repeat", "3", "info", MINILM].map(String::from));
        let home = home.path().to_path_buf();
        async move {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            lantern(&words, "http://127.0.0.1:9", &home).await
        }
    };

    // The file's limit: the third call is refused, with one warning naming flag and key.
    let output = run(&[]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}{stderr}");
    let answers: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answers[0]["key"], MINILM, "{answers}");
    assert_eq!(answers[1]["key"], MINILM, "{answers}");
    refused_by(&answers[2], Limit::HostCalls);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("limits.max_host_calls") && warnings[0].contains("--max-host-calls"), "{stderr}");

    // The flag wins over the file.
    let output = run(&["--max-host-calls", "3"]).await;
    let answers: Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    assert_eq!(answers[2]["key"], MINILM, "{answers}");

    // A bad file stops the CLI before the plugin runs, naming key and line.
    std::fs::write(&file, "[limits]\nmax_host_calls = 2\ncpu_seconds = 1\n").unwrap();
    let output = run(&[]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 3") && stderr.contains("unknown field `cpu_seconds`"), "{stderr}");
}

#[tokio::test]
async fn inspect_shows_what_the_policy_grants_each_import() {
    let home = tempfile::tempdir().unwrap();
    let policy = workspace_root().join("examples/policy.toml");
    let rag = guest("rag");
    let words = ["inspect", rag.to_str().unwrap(), "--policy", policy.to_str().unwrap()];
    let output = lantern(&words, "http://127.0.0.1:9", home.path()).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let line = |interface: &str| {
        stdout.lines().find(|l| l.starts_with(interface)).unwrap_or_else(|| panic!("no {interface} line in {stdout}")).to_string()
    };
    let embeddings = line("lantern:ai/embeddings@");
    assert!(embeddings.contains("allowed: ") && embeddings.contains(MINILM), "{embeddings}");
    assert!(embeddings.contains("QuantFactory/* (any repo of the org)"), "{embeddings}");
    assert!(line("lantern:ai/generation@").contains("QuantFactory/* (any repo of the org)"), "{stdout}");
    assert!(line("wasi:filesystem/preopens@").contains("/docs = ") && stdout.contains("(read-only)"), "{stdout}");
    assert!(line("wasi:cli/environment@").contains("LANG"), "{stdout}");
    assert!(stdout.contains("timeout 300s, cpu 30s"), "{stdout}");

    // Without a policy: the same imports, nothing granted.
    let output = lantern(&["inspect", rag.to_str().unwrap()], "http://127.0.0.1:9", home.path()).await;
    let stdout = text(&output.stdout);
    let embeddings = stdout.lines().find(|l| l.starts_with("lantern:ai/embeddings@")).unwrap();
    assert!(embeddings.contains("denied: no model is allowed"), "{stdout}");
    let files = stdout.lines().find(|l| l.starts_with("wasi:filesystem/preopens@")).unwrap();
    assert!(files.contains("denied: no directory granted"), "{stdout}");
    // A model that cannot generate is not offered to the generation interface.
    let output = lantern(&["inspect", rag.to_str().unwrap(), "--allow-model", MINILM], "http://127.0.0.1:9", home.path()).await;
    let stdout = text(&output.stdout);
    let generation = stdout.lines().find(|l| l.starts_with("lantern:ai/generation@")).unwrap();
    assert!(generation.contains("denied: none of the allowed models offers text-generation"), "{stdout}");
}

#[tokio::test]
async fn org_patterns_allow_every_repo_of_the_org_and_nothing_else() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let policy = Policy::from_toml_str("[models]\nallow = [\"QuantFactory/*\"]\n").unwrap();
    let (answer, _) = probe(&host, policy.clone(), &["info", SMOLLM2]).await;
    assert_eq!(answer["key"], SMOLLM2, "{answer}");
    let (answer, _) = probe(&host, policy.clone(), &["info", MINILM]).await;
    assert_eq!(answer["error"], "model-not-allowed", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("models.allow"), "{answer}");
    let (answer, _) = probe(&host, policy.clone(), &["info", "QuantFactoryX/model"]).await;
    assert_eq!(answer["error"], "model-not-allowed", "{answer}");
    // `allowed` lists the pattern and the catalog's keys it covers.
    let (answer, _) = probe(&host, policy, &["allowed"]).await;
    assert_eq!(answer, serde_json::json!(["QuantFactory/*", SMOLLM2]));
}

#[tokio::test]
async fn per_call_limits_are_refused_before_any_model_work() {
    // The hub is unreachable: each refusal must come before a download is even tried.
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let allow = || Policy::default().allow_model(MINILM).allow_model(SMOLLM2);

    let policy = Policy { max_generated_tokens: 10, ..allow() };
    let (answer, _) = probe(&host, policy, &["generate", SMOLLM2, "Hi", "--max", "11"]).await;
    refused_by(&answer, Limit::GeneratedTokens);

    let policy = Policy { max_generated_tokens_per_run: 10, ..allow() };
    let (answer, usage) = probe(&host, policy, &["generate", SMOLLM2, "Hi", "--max", "11"]).await;
    refused_by(&answer, Limit::GeneratedTokensPerRun);
    assert_eq!(usage.generated_tokens, 0, "a refused request is not charged");

    let policy = Policy { max_embed_inputs: 2, ..allow() };
    let (answer, _) = probe(&host, policy, &["embed", MINILM, "a", "b", "c"]).await;
    refused_by(&answer, Limit::EmbedInputs);

    let policy = Policy { max_embed_inputs_per_run: 2, ..allow() };
    let (answer, _) = probe(&host, policy, &["embed", MINILM, "a", "b", "c"]).await;
    refused_by(&answer, Limit::EmbedInputsPerRun);

    let policy = Policy { max_input_bytes: 8, ..allow() };
    let (answer, _) = probe(&host, policy, &["embed", MINILM, "a", "nine bytes"]).await;
    refused_by(&answer, Limit::InputBytes);
}

#[tokio::test]
async fn host_calls_are_counted_per_run() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let policy = Policy { max_host_calls: 3, ..Policy::default().allow_model(MINILM) };
    let (answers, usage) = probe(&host, policy.clone(), &["repeat", "5", "info", MINILM]).await;
    for answer in &answers.as_array().unwrap()[..3] {
        assert_eq!(answer["key"], MINILM, "{answers}");
    }
    refused_by(&answers[3], Limit::HostCalls);
    refused_by(&answers[4], Limit::HostCalls);
    assert_eq!(usage.host_calls, 5);
    // The count is per run: the next run starts from zero.
    let (answers, _) = probe(&host, policy.clone(), &["repeat", "3", "info", MINILM]).await;
    assert_eq!(answers[2]["key"], MINILM, "{answers}");

    // A call that has no error to return (`allowed`, logging) ends the run instead.
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let error = host.run(&plugin, policy, args(&["repeat", "5", "allowed"]), Stdio::Capture).await.unwrap_err();
    let PluginError::LimitExceeded(message) = &error else { panic!("{error:?}") };
    assert!(message.contains("--max-host-calls"), "{message}");
}

#[tokio::test]
async fn a_plugin_out_of_memory_is_told_which_limit_stopped_it() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let policy = Policy::from_toml_str("[limits]\nmax_memory_mib = 48\n").unwrap();
    let error = host.run(&plugin, policy, args(&["grow"]), Stdio::Capture).await.unwrap_err();
    let PluginError::OutOfMemory { limit_bytes, .. } = &error else { panic!("{error:?}") };
    assert_eq!(*limit_bytes, 48 << 20);
    let message = error.to_string();
    assert!(message.contains("--max-memory-mib") && message.contains("limits.max_memory_mib"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_budget_stops_busy_plugins_and_does_not_charge_waiting() {
    let cache = tempfile::tempdir().unwrap();
    let bare = bare_host(cache.path());
    let plugin = bare.load_plugin(&guest("probe")).unwrap();
    let policy = Policy { cpu_budget: Some(Duration::from_millis(300)), ..Policy::default() };
    let started = std::time::Instant::now();
    let error = bare.run(&plugin, policy, args(&["spin"]), Stdio::Capture).await.unwrap_err();
    let PluginError::LimitExceeded(message) = &error else { panic!("{error:?}") };
    assert!(message.contains("--cpu-budget") && message.contains("limits.cpu_budget_seconds"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "the budget did not stop the spin: {:?}", started.elapsed());

    // A plugin that waits 1.5 s on a slow download spends far less CPU than that.
    let mirror = minilm_mirror(Faults { response_delay: Duration::from_millis(1500), ..Faults::default() }).await;
    let served = host(&mirror.endpoint(), cache.path());
    let policy = Policy { cpu_budget: Some(Duration::from_millis(1000)), ..Policy::default().allow_model(MINILM) };
    let plugin = served.load_plugin(&guest("probe")).unwrap();
    let output = served.run(&plugin, policy, args(&["embed", MINILM, "hello"]), Stdio::Capture).await.unwrap();
    assert_eq!(json(&output.result)["dimensions"], 384);
    assert!(output.usage.cpu_time < Duration::from_millis(1000), "{:?}", output.usage);
}

#[tokio::test]
async fn per_run_budgets_of_real_work() {
    let mirror = minilm_and_smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let allow = || Policy::default().allow_model(MINILM).allow_model(SMOLLM2);

    // Embedding inputs add up over the run: 2 + 2 fit in 5, the third call does not.
    let policy = Policy { max_embed_inputs_per_run: 5, ..allow() };
    let (answers, usage) = probe(&host, policy, &["repeat", "3", "embed", MINILM, "a cat", "a dog"]).await;
    assert_eq!(answers[0]["dimensions"], 384, "{answers}");
    assert_eq!(answers[1]["dimensions"], 384, "{answers}");
    refused_by(&answers[2], Limit::EmbedInputsPerRun);
    assert_eq!(usage.embed_inputs, 4);

    // Generated tokens add up over the run; the run is charged what was generated.
    let policy = Policy { max_generated_tokens_per_run: 20, ..allow() };
    let (answers, usage) = probe(&host, policy, &["repeat", "3", "generate", SMOLLM2, "Once upon a time", "--max", "8"]).await;
    let generated = |answer: &Value| answer["finished"]["generated_tokens"].as_u64().unwrap_or_else(|| panic!("{answers}"));
    let total = generated(&answers[0]) + generated(&answers[1]);
    assert_eq!(total, 16, "{answers}");
    refused_by(&answers[2], Limit::GeneratedTokensPerRun);
    assert_eq!(usage.generated_tokens, total);

    // Streams open at once.
    let policy = Policy { max_open_generations: 2, ..allow() };
    let (answer, _) = probe(&host, policy, &["hold", "3", SMOLLM2, "Hi", "--max", "4"]).await;
    assert_eq!(answer["opened"], 2, "{answer}");
    refused_by(&answer["stopped"], Limit::OpenGenerations);
}

#[tokio::test]
async fn the_embedding_example_runs_plugins_under_a_policy_file_and_reports_progress() {
    use embed_example::{embed, Event, Failure, Options};
    let repos = tempfile::tempdir().unwrap();
    let mut mirror = hubmirror::Mirror::builder().repo(MINILM, support::minilm_dir()).repo(SMOLLM2, support::smollm2_dir());
    for (repo, dir) in support::tiny_flux::write(repos.path()) {
        mirror = mirror.repo(repo, dir);
    }
    let mirror = mirror.serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        std::sync::Arc::new(move |event: Event| events.lock().unwrap().push(event))
    };
    let options = |plugin: &str, policy: &str, words: &[&str], say: Option<&str>| {
        let path = files.path().join(format!("{plugin}-{}.toml", words.len()));
        std::fs::write(&path, policy).unwrap();
        Options {
            plugin: guest(plugin),
            policy: path,
            args: args(words),
            stdio: Stdio::Capture,
            say: say.map(String::from),
            hub: Some(support::hub_config(&mirror.endpoint(), cache.path())),
        }
    };

    // A plugin's answer, the downloads of the models the policy allows, then tokens
    // streamed from the text model.
    let policy = format!("[models]\nallow = [\"{MINILM}\", \"{SMOLLM2}\"]\n");
    let words = ["--json", "a cat", "stock prices fell", "a kitten sleeps"];
    let answer = embed(options("semantic_search", &policy, &words, Some("Hello")), sink.clone()).await.unwrap();
    let ranking: Value = serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert!(ranking.to_string().find("a kitten sleeps") < ranking.to_string().find("stock prices fell"), "{ranking}");
    let seen = std::mem::take(&mut *events.lock().unwrap());
    for model in [MINILM, SMOLLM2] {
        let done = seen.iter().any(|e| matches!(e, Event::Download { model: m, files_done, files_total, .. } if m == model && files_done == files_total));
        assert!(done, "no finished download of {model} in {seen:?}");
    }
    assert!(seen.iter().any(|e| matches!(e, Event::Answer(a) if *a == answer)), "{seen:?}");
    let tokens: String = seen.iter().filter_map(|e| if let Event::Token(t) = e { Some(t.as_str()) } else { None }).collect();
    assert!(!tokens.is_empty(), "no streamed tokens in {seen:?}");

    // Image step progress reaches the program's observer.
    let flux = "black-forest-labs/FLUX.1-schnell";
    let policy = format!("[models]\nallow = [\"{flux}\"]\n");
    let words = ["image", flux, "a red cat", "--width", "64", "--height", "64", "--steps", "2", "--seed", "1"];
    embed(options("probe", &policy, &words, None), sink.clone()).await.unwrap();
    let steps: Vec<(u32, u32)> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| if let Event::Step { step, total, .. } = e { Some((*step, *total)) } else { None })
        .collect();
    assert_eq!(steps, vec![(1, 2), (2, 2)]);

    // Each failure comes back typed.
    let failure = embed(options("probe", "[models]\nallowed = []\n", &["allowed"], None), sink.clone()).await.unwrap_err();
    assert!(matches!(&failure, Failure::Policy(e) if e.line == Some(2)), "{failure}");
    let failure = embed(options("probe", "[models]\nallow = [\"nobody/nothing\"]\n", &["allowed"], None), sink.clone()).await.unwrap_err();
    let Failure::Model { error, .. } = &failure else { panic!("{failure}") };
    assert!(matches!(error, lantern::LanternError::DownloadFailed(_) | lantern::LanternError::ModelNotSupported(_)), "{failure}");
    let policy = format!("[models]\nallow = [\"{MINILM}\"]\n[limits]\nmax_embed_inputs = 1\n");
    let failure = embed(options("semantic_search", &policy, &["a cat", "a dog", "a bird"], None), sink.clone()).await.unwrap_err();
    assert!(matches!(&failure, Failure::PluginFailed(m) if m.contains("--max-embed-inputs")), "{failure}");
    let policy = "[limits]\ncpu_budget_seconds = 0.2\n";
    let failure = embed(options("probe", policy, &["spin"], None), sink).await.unwrap_err();
    assert!(matches!(&failure, Failure::Plugin(PluginError::LimitExceeded(_))), "{failure}");
}
