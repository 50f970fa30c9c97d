//! The hostile-plugin suite: plugins that try hard to break the host, each through a
//! real component (guests/hostile, and components written here in WAT). For each attack
//! the host survives, the error is the typed one that names the cause, and it comes
//! within a bounded time; the host keeps serving afterwards. Then many hostile runs in
//! one host beside a well-behaved plugin, which must keep getting correct answers.
//!
//! The compile cache is tested here too: a damaged cache entry is hostile input of its own.

mod support;
#[path = "support/tiny_gguf.rs"]
mod tiny_gguf;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hubmirror::{Faults, Mirror};
use lantern::{CacheOutcome, Host, Plugin, PluginError, Policy, RunOutput, Stdio};
use support::{guest, host, json, minilm_dir, minilm_mirror, mirror_of_repos, smollm2_mirror, MINILM, SMOLLM2};

const SD35: &str = "stabilityai/stable-diffusion-3.5-large-turbo";
const CLIP: &str = "openai/clip-vit-base-patch32";

/// Every attack must end within this; a hang fails the test instead of stalling the suite.
const BOUND: Duration = Duration::from_secs(30);

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// A host whose hub is unreachable: any attack that got as far as a download would
/// show up as `download-failed`.
fn bare_host(cache: &Path) -> Host {
    host("http://127.0.0.1:9", cache)
}

fn hostile(host: &Host) -> Plugin {
    host.load_plugin(&guest("hostile")).expect("loading the hostile plugin")
}

async fn bounded<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, work).await.unwrap_or_else(|_| panic!("{what} did not end within {BOUND:?}"))
}

async fn attack(host: &Host, plugin: &Plugin, policy: Policy, words: &[&str]) -> Result<RunOutput, PluginError> {
    bounded(&words.join(" "), host.run(plugin, policy, args(words), Stdio::Capture)).await
}

/// The error kind (`limit-exceeded`, ...) of a hostile answer `{"error": kind, ...}`.
fn kind(answer: &serde_json::Value) -> &str {
    answer["error"].as_str().unwrap_or_else(|| panic!("expected a typed error, got {answer}"))
}

/// A policy small enough that runaway plugins are stopped quickly.
fn tight() -> Policy {
    Policy { timeout: Some(Duration::from_millis(300)), max_memory_bytes: 32 << 20, ..Policy::default() }
}

/// The host still runs plugins: a short, well-behaved hostile command.
async fn still_serves(host: &Host, plugin: &Plugin) {
    let output = attack(host, plugin, Policy::default(), &["flood", "10"]).await.expect("the host must go on");
    assert_eq!(json(&output.result)["calls"], 10);
}

#[tokio::test]
async fn runaway_plugins_end_with_an_error_that_names_the_cause() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = hostile(&host);

    let error = attack(&host, &plugin, tight(), &["loop"]).await.err().expect("an infinite loop must be stopped");
    assert!(matches!(error, PluginError::Timeout(limit) if limit == Duration::from_millis(300)), "{error:?}");

    let error = attack(&host, &plugin, tight(), &["bomb"]).await.err().expect("a memory bomb must be stopped");
    assert!(matches!(error, PluginError::OutOfMemory { limit_bytes, .. } if limit_bytes == 32 << 20), "{error:?}");
    assert!(error.to_string().contains("--max-memory-mib"), "{error}");

    let error = attack(&host, &plugin, tight(), &["recurse"]).await.err().expect("unbounded recursion must trap");
    assert!(matches!(error, PluginError::StackOverflow(_)), "{error:?}");

    // A guest panic aborts the guest: a trap for this run only, quoting the panic message
    // the guest printed (the CLI's plugins print it on the terminal themselves).
    let error = attack(&host, &plugin, tight(), &["panic"]).await.err().expect("a guest panic must end the run");
    assert!(matches!(error, PluginError::Trap(_)), "{error:?}");
    assert!(error.to_string().contains("the hostile plugin panics on purpose"), "{error}");

    still_serves(&host, &plugin).await;
}

#[tokio::test]
async fn floods_of_host_calls_and_log_lines_are_survived() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = hostile(&host);

    let output = attack(&host, &plugin, Policy::default(), &["flood", "100000"]).await.unwrap();
    assert_eq!(json(&output.result)["calls"], 100_000);
    // Each lantern:ai call is counted once (the call hook counts it; the call only asks),
    // with the few other calls a run makes beside them.
    let counted = output.usage.host_calls;
    assert!((100_000..100_100).contains(&counted), "{counted} host calls counted for 100000");
    // An endless flood is ended by the run's timeout, like any other busy plugin.
    let policy = Policy { timeout: Some(Duration::from_millis(500)), ..Policy::default() };
    let error = attack(&host, &plugin, policy, &["flood", ENDLESS]).await.err().expect("must time out");
    assert!(matches!(error, PluginError::Timeout(_)), "{error:?}");
    // 200 log lines of 1 MiB: each is cut to the policy's log limit, none is refused.
    let output = attack(&host, &plugin, Policy::default(), &["log-flood", "200", "1048576"]).await.unwrap();
    assert_eq!(json(&output.result)["lines"], 200);
    still_serves(&host, &plugin).await;
}

/// A u64's largest value: a flood that never ends by itself.
const ENDLESS: &str = "18446744073709551615";

#[tokio::test]
async fn a_flood_of_wasi_calls_ends_at_the_host_call_limit() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = hostile(&host);

    // WASI calls are host calls: a thousand clock reads are counted, and are allowed.
    let output = attack(&host, &plugin, Policy::default(), &["wasi-flood", "clock", "1000"]).await.unwrap();
    assert_eq!(json(&output.result)["calls"], 1000);
    let counted = output.usage.host_calls;
    assert!((1000..1100).contains(&counted), "{counted} host calls counted for 1000 clock reads");

    // An endless flood of clock reads under the default policy (no timeout): ended by the
    // host-call limit, with the error that names it, not left to run forever.
    let started = Instant::now();
    let error = attack(&host, &plugin, Policy::default(), &["wasi-flood", "clock", ENDLESS]).await.err().expect("must be stopped");
    let elapsed = started.elapsed();
    let PluginError::LimitExceeded(message) = &error else { panic!("{error:?}") };
    let limit = Policy::default().max_host_calls;
    assert!(message.contains(&format!("made {limit} host calls")), "{message}");
    assert!(message.contains("--max-host-calls") && message.contains("limits.max_host_calls"), "{message}");
    eprintln!("{limit} clock reads, then the limit, in {elapsed:.2?}");

    // Writes to stdout, under a smaller limit from the policy.
    let policy = Policy { max_host_calls: 10_000, ..Policy::default() };
    let error = attack(&host, &plugin, policy, &["wasi-flood", "stdout", ENDLESS]).await.err().expect("must be stopped");
    let PluginError::LimitExceeded(message) = &error else { panic!("{error:?}") };
    assert!(message.contains("the limit is 10000"), "{message}");
    still_serves(&host, &plugin).await;
}

#[tokio::test]
async fn giant_inputs_are_refused_before_any_model_work() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = hostile(&host);
    let policy = Policy::default().allow_model(MINILM).allow_model(SD35).allow_model(CLIP);
    let refusal = |words: &'static [&'static str]| {
        let (host, plugin, policy) = (&host, &plugin, policy.clone());
        async move {
            let output = attack(host, plugin, policy, words).await.unwrap();
            json(&output.result)
        }
    };

    let answer = refusal(&["giant-string", MINILM, "100"]).await;
    assert_eq!(kind(&answer), "limit-exceeded", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("104857600 bytes"), "{answer}");
    let answer = refusal(&["many-texts", MINILM, "1000000"]).await;
    assert_eq!(kind(&answer), "limit-exceeded", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("1000000 inputs"), "{answer}");
    let answer = refusal(&["image-size", SD35, "1048576"]).await;
    assert_eq!(kind(&answer), "limit-exceeded", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("--max-image-side"), "{answer}");
    let answer = refusal(&["image-bytes", CLIP, "40"]).await;
    assert_eq!(kind(&answer), "limit-exceeded", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("--max-image-bytes"), "{answer}");
    // A tiny PNG whose header claims a million pixels a side: refused from the header,
    // before a byte of pixels is allocated, and before the model is downloaded.
    let answer = refusal(&["image-header", CLIP, "1048576"]).await;
    assert!(["limit-exceeded", "invalid-input"].contains(&kind(&answer)), "{answer}");
    still_serves(&host, &plugin).await;
}

#[tokio::test]
async fn model_keys_that_are_paths_are_refused_before_any_download() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = hostile(&host);
    let paths = [
        "../../../../etc/passwd",
        "/etc/passwd",
        "org/../../../tmp/lantern-escape",
        "..",
        "org/name/../../../../etc",
        "./org/name",
        "org\\..\\..\\windows",
        "C:/Windows/System32",
        "~/.ssh/id_rsa",
        "org/name\u{0}/../x",
        "org//name",
    ];
    // Even with every key allowed, a path is never taken for a repo: each call is
    // refused as invalid or as no repo id, never tried against the hub.
    for key in paths {
        let output = attack(&host, &plugin, Policy::default().allow_any_model(), &["model", key]).await.unwrap();
        let answer = json(&output.result);
        for call in ["info", "prepare", "embed", "generate"] {
            let refusal = kind(&answer[call]);
            assert!(["invalid-input", "model-not-supported"].contains(&refusal), "{key:?} {call}: {answer}");
        }
    }
    // Allowing a path explicitly does not make it a model either.
    let key = "org/../../../tmp/lantern-escape";
    let output = attack(&host, &plugin, Policy::default().allow_model(key), &["model", key]).await.unwrap();
    let answer = json(&output.result);
    for call in ["info", "prepare", "embed", "generate"] {
        assert!(["invalid-input", "model-not-supported"].contains(&kind(&answer[call])), "{call}: {answer}");
    }
    assert!(!Path::new("/tmp/lantern-escape").exists());

    // Models outside the allow-list: refused by policy, whatever they are.
    for key in [MINILM, "org/other", paths[0]] {
        let policy = Policy::default().allow_model("org/allowed");
        let output = attack(&host, &plugin, policy, &["model", key]).await.unwrap();
        let answer = json(&output.result);
        for call in ["info", "prepare", "embed", "generate"] {
            assert_eq!(kind(&answer[call]), "model-not-allowed", "{key:?} {call}: {answer}");
        }
    }
    // Nothing was written into the cache for any of them.
    let entries: Vec<_> = walk(cache.path()).into_iter().filter(|p| p.is_file()).collect();
    assert!(entries.is_empty(), "{entries:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// Waits until the registry runs no generation; panics after [`BOUND`].
async fn generations_end(host: &Host) {
    bounded("waiting for abandoned generations to stop", async {
        while host.registry().active_generations() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn streams_left_open_dropped_or_opened_a_thousand_times_are_cleaned_up() {
    let mirror = smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let plugin = hostile(&host);
    let policy = Policy::default().allow_model(SMOLLM2);

    // Opened and never read: the run ends, and with it the generation (up to 4096 tokens).
    let output = attack(&host, &plugin, policy.clone(), &["undrained", SMOLLM2]).await.unwrap();
    assert_eq!(json(&output.result)["opened"], 1);
    generations_end(&host).await;

    // Dropped after two chunks: the plugin can go on generating.
    let output = attack(&host, &plugin, policy.clone(), &["drop-midway", SMOLLM2, "2"]).await.unwrap();
    let answer = json(&output.result);
    assert_eq!(answer["read"], 2, "{answer}");
    assert_eq!(answer["after"]["ok"], true, "{answer}");
    generations_end(&host).await;

    // A thousand at once: the policy's number are opened, the rest are refused, typed.
    let open = policy.max_open_generations;
    let output = attack(&host, &plugin, policy.clone(), &["open-many", SMOLLM2, "1000"]).await.unwrap();
    let answer = json(&output.result);
    assert_eq!(answer["opened"], open, "{answer}");
    assert_eq!(answer["refused"], serde_json::json!({ "limit-exceeded": 1000 - open }), "{answer}");
    generations_end(&host).await;

    // A thousand preparations of one model, never read: one model, no leak, no hang.
    let output = attack(&host, &plugin, policy.clone(), &["prepare-many", SMOLLM2, "1000"]).await.unwrap();
    assert_eq!(json(&output.result)["opened"], 1000);
    let output = attack(&host, &plugin, policy, &["drop-midway", SMOLLM2, "1"]).await.unwrap();
    assert_eq!(json(&output.result)["after"]["ok"], true);
    generations_end(&host).await;
}

/// Components that are valid but do not fit the `lantern:ai/pipeline` world.
const MISFITS: [(&str, &str); 3] = [
    // Built against an interface this host does not provide.
    ("imports-unknown-interface", r#"(component
        (import "lantern:ai/telepathy@0.1.0" (instance (export "read-mind" (func (result string)))))
    )"#),
    // Exports `run`, with another signature.
    ("wrong-run-signature", r#"(component
        (core module $m (func (export "run") (result i32) i32.const 7))
        (core instance $i (instantiate $m))
        (func $run (result u32) (canon lift (core func $i "run")))
        (export "run" (func $run))
    )"#),
    // Exports nothing at all.
    ("exports-nothing", "(component)"),
];

#[tokio::test]
async fn components_that_do_not_fit_are_refused_before_they_run() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    for (name, wat) in MISFITS {
        let plugin = host.load_plugin_bytes(name, wat.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let error = host.check_plugin(&plugin).err().unwrap_or_else(|| panic!("{name} must not fit"));
        assert!(matches!(error, PluginError::WorldMismatch(_)), "{name}: {error:?}");
        let error = attack(&host, &plugin, Policy::default(), &["x"]).await.err().unwrap_or_else(|| panic!("{name} ran"));
        assert!(matches!(error, PluginError::WorldMismatch(_)), "{name}: {error:?}");
    }
    let error = host.check_plugin(&host.load_plugin_bytes("telepathy", MISFITS[0].1.as_bytes()).unwrap()).unwrap_err();
    assert!(error.to_string().contains("telepathy"), "the refusal names the missing interface: {error}");

    // Malformed and truncated bytes: refused at load, typed.
    let bytes = std::fs::read(guest("hostile")).unwrap();
    let mut bad: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("magic only".into(), b"\0asm".to_vec()),
        ("garbage".into(), b"\x7fELF this is no wasm at all".to_vec()),
    ];
    for cut in [9, 100, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        bad.push((format!("cut at {cut}"), bytes[..cut].to_vec()));
    }
    for (name, bytes) in &bad {
        let error = host.load_plugin_bytes(name, bytes).err().unwrap_or_else(|| panic!("{name}: loaded"));
        assert!(matches!(error, PluginError::InvalidComponent { .. }), "{name}: {error:?}");
    }
    // Flipped bytes: refused or, where the flip lands in data, loaded; never a crash.
    for position in (8..bytes.len()).step_by(bytes.len() / 7) {
        let mut flipped = bytes.clone();
        flipped[position] ^= 0xff;
        if let Err(error) = host.load_plugin_bytes("flipped", &flipped) {
            assert!(matches!(error, PluginError::InvalidComponent { .. }), "{error:?}");
        }
    }
    still_serves(&host, &hostile(&host)).await;
}

/// The single compile cache entry under `dir`.
fn cache_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.is_file()).collect();
    assert_eq!(entries.len(), 1, "one entry and no temporary files: {entries:?}");
    entries[0].clone()
}

#[tokio::test]
async fn the_compile_cache_loads_whole_entries_and_recompiles_damaged_ones() {
    let cache = tempfile::tempdir().unwrap();
    let components = tempfile::tempdir().unwrap();
    let cached_host = || {
        Host::builder()
            .hub_config(support::hub_config("http://127.0.0.1:9", cache.path()))
            .compile_cache(components.path())
            .build()
            .unwrap()
    };
    let outcome = |host: &Host| hostile(host).compile_cache_outcome();

    assert_eq!(outcome(&cached_host()), Some(CacheOutcome::Miss));
    assert_eq!(outcome(&cached_host()), Some(CacheOutcome::Hit));
    let entry = cache_entry(components.path());
    let whole = std::fs::read(&entry).unwrap();

    // Truncated (a disk that filled up, a copy cut short), a flipped byte in the native
    // code, garbage: each is detected, never loaded, and replaced by a whole entry.
    let damaged: [(&str, Vec<u8>); 4] = [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("header only", whole[..40].to_vec()),
        ("flipped", {
            let mut flipped = whole.clone();
            flipped[whole.len() * 2 / 3] ^= 0x01;
            flipped
        }),
        ("garbage", vec![0x90; whole.len()]),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&entry, bytes).unwrap();
        let host = cached_host();
        let plugin = hostile(&host);
        assert_eq!(plugin.compile_cache_outcome(), Some(CacheOutcome::Corrupt), "{what}");
        still_serves(&host, &plugin).await;
        assert_eq!(std::fs::read(&entry).unwrap(), whole, "{what}: the entry is whole again");
        assert_eq!(outcome(&cached_host()), Some(CacheOutcome::Hit), "{what}");
    }

    // Invalid bytes are refused and leave no entry.
    let error = cached_host().load_plugin_bytes("cut", &std::fs::read(guest("probe")).unwrap()[..500]).err().unwrap();
    assert!(matches!(error, PluginError::InvalidComponent { .. }), "{error:?}");
    cache_entry(components.path());

    // Racing processes (here: hosts on threads) that all miss: every one gets a working
    // plugin, and one whole entry is left, no temporary files.
    std::fs::remove_file(&entry).unwrap();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let host = cached_host();
            std::thread::spawn(move || hostile(&host).compile_cache_outcome())
        })
        .collect();
    for racer in racers {
        assert!(matches!(racer.join().unwrap(), Some(CacheOutcome::Miss | CacheOutcome::Hit)));
    }
    assert_eq!(std::fs::read(cache_entry(components.path())).unwrap(), whole);

    // An unusable cache directory costs the compile, nothing else.
    let file = components.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let host = Host::builder()
        .hub_config(support::hub_config("http://127.0.0.1:9", cache.path()))
        .compile_cache(&file)
        .build()
        .unwrap();
    let plugin = hostile(&host);
    assert_eq!(plugin.compile_cache_outcome(), Some(CacheOutcome::Unavailable));
    still_serves(&host, &plugin).await;
}

#[tokio::test]
async fn lantern_run_keeps_compiled_plugins_unless_told_not_to() {
    let home = tempfile::tempdir().unwrap();
    let plugin = guest("hostile");
    let plugin = plugin.to_str().unwrap();
    let components = home.path().join("xdg-cache/lantern/components");

    let output = support::lantern(&["--no-compile-cache", "run", plugin, "--", "flood", "3"], "http://127.0.0.1:9", home.path()).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!components.exists(), "--no-compile-cache wrote {}", components.display());
    for _ in 0..2 {
        let output = support::lantern(&["run", plugin, "--", "flood", "3"], "http://127.0.0.1:9", home.path()).await;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(String::from_utf8_lossy(&output.stdout).contains("\"calls\":3"));
        cache_entry(&components);
    }

    // `lantern compile-cache` says where and how much; --clear empties it.
    let cache_command = |words: &'static [&'static str]| {
        let home = home.path().to_path_buf();
        async move {
            let output = support::lantern(words, "http://127.0.0.1:9", &home).await;
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let shown = cache_command(&["compile-cache"]).await;
    assert!(shown.contains(&format!("{}: 1 compiled plugins", components.display())), "{shown}");
    assert!(shown.contains("limit 1024 MiB"), "{shown}");
    let cleared = cache_command(&["compile-cache", "--clear"]).await;
    assert!(cleared.starts_with("removed 1 compiled plugins"), "{cleared}");
    assert!(walk(&components).is_empty(), "left after --clear: {:?}", walk(&components));
    let shown = cache_command(&["compile-cache", "--compile-cache-max-mib", "5"]).await;
    assert!(shown.contains(": 0 compiled plugins, 0.0 MB (limit 5 MiB"), "{shown}");
}

/// A MiniLM repo whose config makes candle divide by zero while building the model
/// (`num_attention_heads: 0`): a native panic inside the family's loader.
fn panicking_minilm(dir: &Path) {
    // The weights and tokenizer are links to the real files (the test hub serves files,
    // so folders are made and their files linked).
    fn link_files(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                std::fs::create_dir(&target).unwrap();
                link_files(&path, &target);
            } else if path.file_name().unwrap() != "config.json" || from != minilm_dir() {
                std::os::unix::fs::symlink(&path, &target).unwrap();
            }
        }
    }
    link_files(&minilm_dir(), dir);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(minilm_dir().join("config.json")).unwrap()).unwrap();
    config["num_attention_heads"] = 0.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[tokio::test]
async fn a_native_panic_in_model_code_ends_only_that_request() {
    const PANICKY: &str = "hostile/zero-heads-minilm";
    let repo = tempfile::tempdir().unwrap();
    panicking_minilm(repo.path());
    let mirror = mirror_of_repos(&[(MINILM, minilm_dir().as_path()), (PANICKY, repo.path())]).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let probe = host.load_plugin(&guest("probe")).unwrap();
    let policy = Policy::default().allow_model(PANICKY).allow_model(MINILM);

    // Twice: a failed load is not kept, and panics again the same typed way.
    for _ in 0..2 {
        let output = bounded("the panicking model", host.run(&probe, policy.clone(), args(&["embed", PANICKY, "hello"]), Stdio::Capture))
            .await
            .unwrap();
        let answer = json(&output.result);
        assert_eq!(answer["error"], "inference-failed", "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("panicked"), "{answer}");
    }
    // The same host, the same process, a good model: a correct answer.
    let output = host.run(&probe, policy, args(&["embed", MINILM, "hello world"]), Stdio::Capture).await.unwrap();
    assert_eq!(json(&output.result)["dimensions"], 384);
}

/// A tiny phi3 GGUF (random weights) that loads, and one identical but for heads of 8
/// (`phi3.attention.key_length`, with a rotary of 8) where the weights hold heads of 16:
/// every load check of the host's dense decoder engine passes, and its first forward
/// pass slices the attention output, half as wide as `attn_output` reads, past its end —
/// a native panic on the generation's worker thread. (A zero `head_count_kv`, which made
/// candle's phi3 divide by zero, is refused at load by the engine, typed.)
fn phi3_pair(sound_dir: &Path, panicky_dir: &Path) {
    use tiny_gguf::{Arch, Spec, VocabStyle};
    let spec = Spec {
        arch: Arch::Phi3,
        vocab: VocabStyle::SentencePiece,
        specials: &["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"],
        bos: Some("<s>"),
        eos: "<|endoftext|>",
        add_bos: true,
        chat_template: None,
        context_length: 256,
        seed: 11,
        experts: 4,
        experts_used: 2,
    };
    let sound = sound_dir.join("model-F32.gguf");
    tiny_gguf::write(&spec, &sound);
    let eight = || candle_core::quantized::gguf_file::Value::U32(8);
    tiny_gguf::rewrite(
        &sound,
        &panicky_dir.join("model-F32.gguf"),
        &[("phi3.attention.key_length", eight()), ("phi3.rope.dimension_count", eight())],
        candle_core::quantized::GgmlDType::F32,
    );
}

#[tokio::test]
async fn a_native_panic_while_generating_ends_only_that_stream() {
    const SOUND: &str = "hostile/tiny-phi3";
    const PANICKY: &str = "hostile/narrow-heads-phi3";
    let (sound, panicky) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    phi3_pair(sound.path(), panicky.path());
    let mirror = mirror_of_repos(&[(SOUND, sound.path()), (PANICKY, panicky.path())]).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let probe = host.load_plugin(&guest("probe")).unwrap();
    let policy = Policy::default().allow_model(SOUND).allow_model(PANICKY);

    for _ in 0..2 {
        let words = args(&["generate", PANICKY, "Hello", "--max", "4"]);
        let output = bounded("the panicking generation", host.run(&probe, policy.clone(), words, Stdio::Capture)).await.unwrap();
        let answer = json(&output.result);
        // The panic surfaces where it happened: on the stream (or, were the forward pass
        // run while preparing, as the generate call's error); typed either way.
        let failure = if answer["failed"].is_object() { &answer["failed"] } else { &answer };
        assert_eq!(failure["error"], "inference-failed", "{answer}");
        assert!(failure["message"].as_str().unwrap().contains("panicked"), "{answer}");
        generations_end(&host).await;
    }
    // The same family in the same host, with sound weights: generates.
    let words = args(&["generate", SOUND, "Hello", "--max", "4"]);
    let output = host.run(&probe, policy, words, Stdio::Capture).await.unwrap();
    let answer = json(&output.result);
    assert_eq!(answer["finished"]["generated_tokens"], 4, "{answer}");
}

// ---- many hostile runs in one host ----

/// One attack of the soak, and what it must end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Attack {
    Loop,
    Bomb,
    Recurse,
    Panic,
    Flood,
    GiantString,
    ManyTexts,
    PathKey,
}

const ATTACKS: [Attack; 8] = [
    Attack::Loop,
    Attack::Bomb,
    Attack::Recurse,
    Attack::Panic,
    Attack::Flood,
    Attack::GiantString,
    Attack::ManyTexts,
    Attack::PathKey,
];

impl Attack {
    fn words(self) -> Vec<String> {
        let words: &[&str] = match self {
            Attack::Loop => &["loop"],
            Attack::Bomb => &["bomb"],
            Attack::Recurse => &["recurse"],
            Attack::Panic => &["panic"],
            Attack::Flood => &["flood", "2000"],
            Attack::GiantString => &["giant-string", MINILM, "2"],
            Attack::ManyTexts => &["many-texts", MINILM, "5000"],
            Attack::PathKey => &["model", "../../../../etc/passwd"],
        };
        args(words)
    }

    fn policy(self) -> Policy {
        // Only the loop should meet its timeout; the others must end for their own reason.
        let timeout = if self == Attack::Loop { Duration::from_millis(50) } else { Duration::from_secs(20) };
        Policy { timeout: Some(timeout), max_memory_bytes: 24 << 20, ..Policy::default() }
            .allow_model(MINILM)
            .allow_model("../../../../etc/passwd")
    }

    /// Panics unless `outcome` is the one this attack must get.
    fn check(self, outcome: &Result<RunOutput, PluginError>) {
        let answer = || json(&outcome.as_ref().unwrap_or_else(|e| panic!("{self:?}: {e}")).result);
        match self {
            Attack::Loop => assert!(matches!(outcome, Err(PluginError::Timeout(_))), "{self:?}: {outcome:?}"),
            Attack::Bomb => assert!(matches!(outcome, Err(PluginError::OutOfMemory { .. })), "{self:?}: {outcome:?}"),
            Attack::Recurse => assert!(matches!(outcome, Err(PluginError::StackOverflow(_))), "{self:?}: {outcome:?}"),
            Attack::Panic => assert!(matches!(outcome, Err(PluginError::Trap(_))), "{self:?}: {outcome:?}"),
            Attack::Flood => assert_eq!(answer()["calls"], 2000),
            Attack::GiantString | Attack::ManyTexts => assert_eq!(kind(&answer()), "limit-exceeded"),
            Attack::PathKey => assert!(["invalid-input", "model-not-supported"].contains(&kind(&answer()["embed"]))),
        }
    }
}

/// What a soak did.
struct Soak {
    runs: usize,
    by_attack: BTreeMap<String, usize>,
    good_runs: usize,
    elapsed: Duration,
}

/// The reference MiniLM vectors of the fixture sentences.
fn minilm_reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let path = support::workspace_root().join("tests/fixtures/minilm_reference.json");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sentences = serde_json::from_value(reference["sentences"].clone()).unwrap();
    let vectors = serde_json::from_value(reference["vectors"].clone()).unwrap();
    (sentences, vectors)
}

/// A well-behaved run: the probe embeds the fixture sentences; the vectors must match.
async fn good_run(host: &Host, probe: &Plugin) {
    let (sentences, expected) = minilm_reference();
    let mut words = args(&["embed", MINILM]);
    words.extend(sentences);
    let output = bounded("a good run", host.run(probe, Policy::default().allow_model(MINILM), words, Stdio::Capture))
        .await
        .expect("the well-behaved plugin must run");
    let vectors = support::vectors(&json(&output.result));
    assert_eq!(vectors.len(), expected.len());
    for (got, want) in vectors.iter().zip(&expected) {
        let cosine = support::cosine(got, want);
        assert!(cosine > 0.9999, "a good answer went wrong beside hostile runs: cosine {cosine}");
    }
}

/// `runs` hostile runs, eight at a time, in `host`, while the probe keeps embedding
/// beside them and checks every answer.
async fn soak(host: &Host, hostile: &Plugin, probe: &Plugin, runs: usize) -> Soak {
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let attacks = futures::stream::iter(0..runs)
        .map(|index| {
            let attack = ATTACKS[index % ATTACKS.len()];
            async move {
                let outcome = bounded("a hostile run", host.run(hostile, attack.policy(), attack.words(), Stdio::Capture)).await;
                attack.check(&outcome);
                attack
            }
        })
        .buffer_unordered(8)
        .fold(BTreeMap::new(), |mut counts, attack| async move {
            *counts.entry(format!("{attack:?}")).or_insert(0) += 1;
            counts
        });
    let attacks = async {
        let counts = attacks.await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        counts
    };
    let good = async {
        let mut good_runs = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            good_run(host, probe).await;
            good_runs += 1;
        }
        good_runs
    };
    let (by_attack, good_runs) = tokio::join!(attacks, good);
    Soak { runs, by_attack, good_runs, elapsed: started.elapsed() }
}

/// Resident memory of this process, from /proc.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

async fn soak_host(mirror: &Mirror, cache: &Path) -> (Host, Plugin, Plugin) {
    let host = host(&mirror.endpoint(), cache);
    let (hostile, probe) = (hostile(&host), host.load_plugin(&guest("probe")).unwrap());
    (host, hostile, probe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_hostile_runs_beside_a_plugin_that_still_gets_correct_answers() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let (host, hostile, probe) = soak_host(&mirror, cache.path()).await;
    good_run(&host, &probe).await;
    let soak = soak(&host, &hostile, &probe, 200).await;
    assert_eq!(soak.by_attack.values().sum::<usize>(), 200);
    assert!(soak.good_runs >= 1, "the good plugin never ran");
    eprintln!("{} hostile runs {:?}, {} good runs beside them, {:?}", soak.runs, soak.by_attack, soak.good_runs, soak.elapsed);
    good_run(&host, &probe).await;
}

/// The "Robustness" figures of BENCHMARKS.md: 1,000 hostile runs, and the process's
/// resident memory before (after a warm-up round) and after.
/// `cargo test -p lantern --test hostile -- --ignored --nocapture a_thousand`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak: run by hand for BENCHMARKS.md"]
async fn a_thousand_hostile_runs_return_memory_to_its_baseline() {
    let mirror = minilm_mirror(Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let (host, hostile, probe) = soak_host(&mirror, cache.path()).await;
    // Warm-up: the model loaded, every attack many times over, so lazily built state and
    // the allocator's arenas for this concurrency are in the baseline.
    for round in 0..std::env::var("SOAK_WARMUP").ok().and_then(|n| n.parse().ok()).unwrap_or(5) {
        soak(&host, &hostile, &probe, 200).await;
        eprintln!("warm-up {round}: {} MiB", resident_bytes() >> 20);
    }
    let before = resident_bytes();
    let soak = soak(&host, &hostile, &probe, 1000).await;
    let after = resident_bytes();
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    eprintln!(
        "ROBUSTNESS runs={} faults={:?} good_runs={} time={:.1}s rss_before={:.1}MiB rss_after={:.1}MiB change={:+.1}%",
        soak.runs,
        soak.by_attack,
        soak.good_runs,
        soak.elapsed.as_secs_f64(),
        mib(before),
        mib(after),
        (after as f64 / before as f64 - 1.0) * 100.0
    );
    assert!((after as f64) < before as f64 * 1.10, "resident memory grew from {before} to {after} bytes");
}
