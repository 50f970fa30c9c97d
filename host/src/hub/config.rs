//! Where the hub downloads from and caches to, following `huggingface_hub`'s environment
//! conventions so that Lantern shares a cache with Python tools and `hf-hub`.

use std::path::PathBuf;
use std::time::Duration;

use super::retry::RetryPolicy;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Download and cache settings. [`HubConfig::from_env`] reads the `HF_*` variables.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL of the Hub (`HF_ENDPOINT`), without a trailing slash.
    pub endpoint: String,
    /// The cache directory holding `models--org--name/` folders (`HF_HUB_CACHE`,
    /// else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Access token (`HF_TOKEN`, else the `$HF_HOME/token` file). Sent only to `endpoint`.
    pub token: Option<String>,
    /// Serve from the cache only; never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Most files downloading at once across all models.
    pub max_concurrent_files: usize,
    /// Most HTTP connections open at once across all files (parts of big files included).
    pub max_connections: usize,
    /// Files larger than this download as parallel byte ranges.
    pub parallel_threshold: u64,
    /// Smallest byte range of a parallel download.
    pub min_part_size: u64,
    /// How transient failures (connection drops, timeouts, 408/429/5xx) are retried.
    pub retry: RetryPolicy,
    /// A connection that delivers no bytes for this long is dropped and its range resumed.
    pub stall_timeout: Duration,
    /// How often a process downloading a blob refreshes its lock file.
    pub lock_refresh: Duration,
    /// A lock file not refreshed for this long belongs to a dead process and is taken over.
    pub lock_stale_after: Duration,
    /// How often a process waiting on another's lock checks again.
    pub lock_poll: Duration,
    /// User agent sent with every request.
    pub user_agent: String,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_truthy(name: &str) -> bool {
    matches!(
        env_nonempty(name).map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("1" | "true" | "yes" | "on")
    )
}

impl HubConfig {
    /// Settings from the environment, as `huggingface_hub` reads them.
    pub fn from_env() -> Self {
        let hf_home = env_nonempty("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache_home = env_nonempty("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                env_nonempty("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache")
            });
            cache_home.join("huggingface")
        });
        let cache_dir = env_nonempty("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let token = env_nonempty("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(hf_home.join("token")).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        let endpoint = env_nonempty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            token,
            offline: env_truthy("HF_HUB_OFFLINE"),
            max_concurrent_files: 8,
            max_connections: 8,
            parallel_threshold: 64 << 20,
            min_part_size: 16 << 20,
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(30),
            lock_refresh: Duration::from_secs(5),
            lock_stale_after: Duration::from_secs(30),
            lock_poll: Duration::from_millis(500),
            user_agent: format!("lantern/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}
