//! Download throughput and runtime responsiveness, over loopback from hubmirror.
//!
//! Serves ~1 GiB of random files (generated once into the temp dir) and downloads them
//! with this hub, with hf-hub's tokio API (its defaults, and with more parallel chunks),
//! and with `curl -o /dev/null` as the loopback ceiling; once at full loopback speed and
//! once with each connection capped (to mimic a real link). Then measures how late a
//! 1 ms ticker gets on a current-thread runtime during our download, against a download
//! that reads the body on the runtime thread.
//!
//! Run: `cargo bench --workspace --bench hub_download --profile dev` (dependencies are
//! optimised in the dev profile; a release build of the whole host takes far longer), or
//! `cargo bench -p lantern --bench hub_download` for a release build (set HUB_BENCH_RATE_MB to change
//! the per-connection cap, default 50 MB/s; HUB_BENCH_SKIP_CAPPED=1 skips that part).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hubmirror::{Faults, Mirror};
use lantern::hub::{Hub, RepoRef};
use lantern::HubConfig;

const REPO: &str = "bench/model";
const FILES: &[(&str, u64)] = &[
    ("config.json", 4 << 10),
    ("tokenizer.json", 2 << 20),
    ("model-00001-of-00002.safetensors", 512 << 20),
    ("model-00002-of-00002.safetensors", 384 << 20),
    ("extra.bin", 128 << 20),
];

fn total_bytes() -> u64 {
    FILES.iter().map(|f| f.1).sum()
}

/// The served files, generated on first use (xorshift: fast, incompressible enough).
fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("lantern-hub-bench-data");
    let complete = dir.join(".complete");
    if complete.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    for (index, (name, size)) in FILES.iter().enumerate() {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join(name)).unwrap());
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ index as u64;
        let mut block = vec![0u8; 1 << 20];
        let mut left = *size;
        while left > 0 {
            for chunk in block.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    }
    std::fs::write(&complete, b"").unwrap();
    dir
}

fn file_names() -> Vec<String> {
    FILES.iter().map(|f| f.0.to_string()).collect()
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("lantern-hub-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn our_config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig { endpoint: endpoint.to_string(), cache_dir: cache.to_path_buf(), token: None, offline: false, ..HubConfig::from_env() }
}

/// Until the files are verified in the cache (what a caller waits for), and until they
/// are also synced to disk (which happens in the background; waited for here so that it
/// does not slow the next method down).
async fn ours(endpoint: &str) -> (Duration, Duration) {
    let cache = Scratch::new("ours");
    let hub = Hub::new(our_config(endpoint, &cache.0)).unwrap();
    let started = Instant::now();
    hub.fetch(&RepoRef::main(REPO), &file_names(), None).await.unwrap();
    let fetched = started.elapsed();
    hub.wait_until_synced().await;
    (fetched, started.elapsed())
}

/// hf-hub as its users call it: one file after another.
async fn hf_hub(endpoint: &str, max_files: Option<usize>) -> Duration {
    let cache = Scratch::new("hfhub");
    let mut builder = hf_hub::api::tokio::ApiBuilder::new()
        .with_endpoint(endpoint.to_string())
        .with_cache_dir(cache.0.clone())
        .with_token(None)
        .with_progress(false);
    if let Some(max_files) = max_files {
        builder = builder.with_max_files(max_files);
    }
    let api = builder.build().unwrap();
    let repo = api.model(REPO.to_string());
    let started = Instant::now();
    for file in file_names() {
        repo.get(&file).await.unwrap();
    }
    started.elapsed()
}

fn curl(endpoint: &str) -> Duration {
    let started = Instant::now();
    for file in file_names() {
        let status = std::process::Command::new("curl")
            .args(["-s", "-f", "-o", "/dev/null", &format!("{endpoint}/{REPO}/resolve/main/{file}")])
            .status()
            .expect("running curl");
        assert!(status.success());
    }
    started.elapsed()
}


/// A plain HTTP/1.1 GET whose body is read and written to disk on the calling thread.
fn blocking_download(addr: SocketAddr, file: &str, out: &Path) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /{REPO}/resolve/main/{file} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut sink = std::fs::File::create(out).unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = stream.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        sink.write_all(&buffer[..n]).unwrap();
    }
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

#[path = "support/lateness.rs"]
mod lateness;
use lateness::responsiveness;

fn main() {
    let data = data_dir();
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mirror: Mirror = server
        .block_on(Mirror::builder().repo(REPO, &data).serve(SocketAddr::from(([127, 0, 0, 1], 0))))
        .expect("starting hubmirror");
    let endpoint = mirror.endpoint();
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let total = total_bytes();
    println!("{} files, {:.2} GiB, from hubmirror at {endpoint}", FILES.len(), total as f64 / (1u64 << 30) as f64);

    let rate_mb: u64 = std::env::var("HUB_BENCH_RATE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let mut links = vec![("loopback, no cap".to_string(), None)];
    if std::env::var_os("HUB_BENCH_SKIP_CAPPED").is_none() {
        links.push((format!("{rate_mb} MB/s per connection"), Some(rate_mb * 1_000_000)));
    }
    println!("\n| link | method | seconds | MB/s | ours / this |");
    println!("|---|---|---:|---:|---:|");
    for (link, cap) in links {
        server.block_on(async { mirror.set_faults(Faults { bytes_per_second: cap, ..Faults::default() }) });
        let (ours_time, ours_synced) = client.block_on(ours(&endpoint));
        let runs = [
            ("lantern hub (8 connections, ranges > 64 MiB), verified", ours_time),
            ("lantern hub, until also synced to disk (in the background)", ours_synced),
            ("hf-hub 0.4.3 tokio, defaults (max_files=1)", client.block_on(hf_hub(&endpoint, None))),
            ("hf-hub 0.4.3 tokio, max_files=8", client.block_on(hf_hub(&endpoint, Some(8)))),
            ("curl -o /dev/null, one file after another", curl(&endpoint)),
        ];
        for (method, time) in runs {
            let ratio = time.as_secs_f64() / ours_time.as_secs_f64();
            println!("| {link} | {method} | {:.2} | {:.0} | {ratio:.2}x |", time.as_secs_f64(), mb_per_s(total, time));
        }
    }

    server.block_on(async { mirror.set_faults(Faults::default()) });
    let big = "model-00001-of-00002.safetensors";
    let big_size = FILES.iter().find(|f| f.0 == big).unwrap().1;
    let addr: SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    println!("\nruntime responsiveness, current-thread runtime, {big} ({} MiB):", big_size >> 20);
    println!("| download | seconds | worst lateness of a 1 ms ticker | the same of a plain OS thread (control) |");
    println!("|---|---:|---:|---:|");
    let cache = Scratch::new("responsive");
    let config = our_config(&endpoint, &cache.0);
    // Built before the measured window: a program makes its hub once, and building the HTTP
    // client (reading the system's CA certificates) is not part of a download.
    let hub = Hub::new(config).unwrap();
    let (elapsed, worst, control) = responsiveness(|| async move {
        hub.fetch(&RepoRef::main(REPO), &[big.to_string()], None).await.unwrap();
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| lantern hub | {:.2} | {:.1} ms | {:.1} ms |", elapsed.as_secs_f64(), ms(worst), ms(control));
    let out = cache.0.join("blocking.bin");
    let (elapsed, worst, control) = responsiveness(|| async move { blocking_download(addr, big, &out) });
    println!("| body read on the runtime thread | {:.2} | {:.1} ms | {:.1} ms |", elapsed.as_secs_f64(), ms(worst), ms(control));
}
