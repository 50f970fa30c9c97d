//! The sandbox: bad components get clear errors, a hostile plugin cannot hang or crash
//! the host, nothing is granted unless asked, and a plugin waiting on a slow model
//! download never blocks the async runtime.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hubmirror::Faults;
use lantern::{DirGrant, Policy, PluginError, Stdio};
use support::{guest, host, json, minilm_mirror, MINILM};

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// Counts 10 ms ticks on the current runtime until aborted: on a one-thread runtime it
/// only advances while nothing blocks that thread.
fn spawn_ticker() -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = ticks.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    (ticks, task)
}

/// A host whose hub is unreachable: for tests that need no model.
fn bare_host(cache: &std::path::Path) -> lantern::Host {
    host("http://127.0.0.1:9", cache)
}

#[test]
fn malformed_components_get_clear_errors() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let error = host.load_plugin_bytes("garbage", b"definitely not wasm").err().expect("must fail");
    assert!(matches!(error, PluginError::InvalidComponent { .. }), "{error:?}");
    assert!(error.to_string().contains("not a valid WebAssembly component"), "{error}");

    // A core module (what wasm32-wasip1 builds) is told apart from a component.
    let core_module = b"\0asm\x01\0\0\0";
    let error = host.load_plugin_bytes("core", core_module).err().expect("must fail");
    assert!(error.to_string().contains("core WebAssembly module"), "{error}");

    // Truncated component bytes.
    let bytes = std::fs::read(guest("probe")).unwrap();
    let error = host.load_plugin_bytes("cut", &bytes[..bytes.len() / 2]).err().expect("must fail");
    assert!(matches!(error, PluginError::InvalidComponent { .. }), "{error:?}");

    let error = host.load_plugin(std::path::Path::new("/no/such/plugin.wasm")).err().expect("must fail");
    assert!(error.to_string().contains("cannot read it"), "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_plugin_times_out_while_other_tasks_keep_running() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    // On a one-thread runtime the ticker only runs if the spinning guest yields.
    let (ticks, ticker) = spawn_ticker();
    let policy = Policy { timeout: Some(Duration::from_millis(800)), ..Policy::default() };
    let error = host.run(&plugin, policy, args(&["spin"]), Stdio::Capture).await.err().expect("must time out");
    assert!(matches!(error, PluginError::Timeout(_)), "{error:?}");
    ticker.abort();
    let ticks = ticks.load(Ordering::Relaxed);
    assert!(ticks >= 10, "the runtime was starved while the guest spun: {ticks} ticks in 800 ms");

    // The host is fine afterwards.
    let output = host.run(&plugin, Policy::default(), args(&["allowed"]), Stdio::Capture).await.unwrap();
    assert_eq!(json(&output.result), serde_json::json!([]));
}

#[tokio::test]
async fn a_plugin_that_eats_memory_is_stopped_at_its_limit() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let policy = Policy { max_memory_bytes: 64 << 20, ..Policy::default() };
    let error = host.run(&plugin, policy, args(&["grow"]), Stdio::Capture).await.err().expect("must fail");
    assert!(matches!(error, PluginError::OutOfMemory { limit_bytes, .. } if limit_bytes == 64 << 20), "{error:?}");
    let output = host.run(&plugin, Policy::default(), args(&["allowed"]), Stdio::Capture).await.unwrap();
    assert!(output.result.is_ok());
}

#[tokio::test]
async fn files_are_visible_only_in_granted_directories() {
    let cache = tempfile::tempdir().unwrap();
    let host = bare_host(cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("note.txt"), "granted").unwrap();

    let denied = host.run(&plugin, Policy::default(), args(&["read", "/data/note.txt"]), Stdio::Capture).await.unwrap();
    assert!(json(&denied.result).get("io-error").is_some(), "{:?}", denied.result);
    let secret = host.run(&plugin, Policy::default(), args(&["read", "/etc/passwd"]), Stdio::Capture).await.unwrap();
    assert!(json(&secret.result).get("io-error").is_some(), "{:?}", secret.result);

    let grant = DirGrant { host_path: shared.path().to_path_buf(), guest_path: "/data".into(), writable: false };
    let policy = Policy { dirs: vec![grant], ..Policy::default() };
    let allowed = host.run(&plugin, policy.clone(), args(&["read", "/data/note.txt"]), Stdio::Capture).await.unwrap();
    assert_eq!(json(&allowed.result)["read"], "granted");
    let escape = host.run(&plugin, policy, args(&["read", "/data/../../etc/passwd"]), Stdio::Capture).await.unwrap();
    assert!(json(&escape.result).get("io-error").is_some(), "{:?}", escape.result);
}

#[tokio::test(flavor = "current_thread")]
async fn a_plugin_waiting_on_a_slow_download_does_not_block_the_runtime() {
    // A slow hub: every file waits 1.5 s before its first byte. The hub, the host and the
    // ticker all share one runtime thread, so any blocking wait would freeze all three.
    let mirror = minilm_mirror(Faults { response_delay: Duration::from_millis(1500), ..Faults::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let (ticks, ticker) = spawn_ticker();
    let output = host
        .run(&plugin, Policy::default().allow_model(MINILM), args(&["embed", MINILM, "hello world"]), Stdio::Capture)
        .await
        .unwrap();
    ticker.abort();
    assert_eq!(json(&output.result)["dimensions"], 384);
    let ticks = ticks.load(Ordering::Relaxed);
    // 1.5 s of waiting at 10 ms a tick is ~150 ticks; a blocked runtime gives ~0.
    assert!(ticks >= 50, "only {ticks} ticks while the plugin waited on the download");
}
