//! Embedding Lantern in a Rust program: build a host, read a policy file, fetch the
//! models it allows with download progress, run a plugin under it (its output streams
//! to stdout as it writes), show image step progress, stream tokens from a model
//! directly, and handle every kind of error.
//!
//! ```sh
//! (cd guests && cargo build --release)
//! export HF_ENDPOINT=...   # or nothing, for the Hugging Face Hub
//! cargo run -p lantern --example embed -- \
//!   guests/target/wasm32-wasip2/release/semantic_search.wasm examples/policy.toml \
//!   [--say "a prompt for a text model the policy allows"] -- "query" "doc one" "doc two"
//! ```
//!
//! The body is [`embed`], which `tests/policy.rs` runs against a local hub.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use lantern::capabilities::{GenerationEvent, PromptInput, SamplingParams};
use lantern::{Activity, Capability, Host, HubConfig, LanternError, ModelAllowList, PluginError, Policy, Stdio};

/// What the program is asked to do.
pub struct Options {
    pub plugin: PathBuf,
    pub policy: PathBuf,
    /// Arguments for the plugin.
    pub args: Vec<String>,
    /// Where the plugin's stdout and stderr go: `Inherit` streams them as it writes.
    pub stdio: Stdio,
    /// After the plugin: stream an answer to this prompt from the first text model the
    /// policy allows.
    pub say: Option<String>,
    /// Hub settings; default: the `HF_*` environment.
    pub hub: Option<HubConfig>,
}

/// What the program reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Download { model: String, bytes_done: u64, bytes_total: Option<u64>, files_done: usize, files_total: usize },
    Step { model: String, step: u32, total: u32 },
    /// The plugin's answer (its `run` result, after any output it streamed).
    Answer(String),
    /// A piece of text streamed from a model.
    Token(String),
}

/// Why the program stopped.
#[derive(Debug)]
pub enum Failure {
    /// The policy file is missing or wrong (it names the key and line).
    Policy(lantern::PolicyFileError),
    /// A model could not be prepared or run.
    Model { model: String, error: LanternError },
    /// The plugin could not be loaded, or it trapped, timed out or went over a limit.
    Plugin(PluginError),
    /// The plugin ran and returned an error of its own.
    PluginFailed(String),
    /// The host could not start.
    Host(String),
}

/// What to tell the user for each kind of model error: the case is what to branch on.
pub fn advice(error: &LanternError) -> &'static str {
    match error {
        LanternError::ModelNotAllowed(_) => "add the key to `models.allow` in the policy file",
        LanternError::ModelNotSupported(_) => "the key names no model this host can run; see `lantern models`",
        LanternError::InvalidInput(_) => "the request itself is wrong; change the input",
        LanternError::DownloadFailed(_) => "check HF_ENDPOINT, HF_TOKEN and the network, then try again (downloads resume)",
        LanternError::InferenceFailed(_) => "the model failed to load or run; its files may be damaged (lantern rm KEY)",
        LanternError::LimitExceeded(_) => "raise the limit named in the message, in the policy file or with its flag",
        LanternError::Cancelled => "the work was cancelled; run it again",
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Policy(error) => write!(f, "policy: {error}"),
            Failure::Model { model, error } => write!(f, "{model}: {error} ({})", advice(error)),
            Failure::Plugin(error) => write!(f, "{error}"),
            Failure::PluginFailed(message) => write!(f, "the plugin failed: {message}"),
            Failure::Host(message) => write!(f, "cannot start the host: {message}"),
        }
    }
}

/// Runs the plugin under the policy file; `Ok` is the plugin's answer.
pub async fn embed(options: Options, on_event: Arc<dyn Fn(Event) + Send + Sync>) -> Result<String, Failure> {
    let policy = Policy::from_toml_file(&options.policy).map_err(Failure::Policy)?;

    // The observer sees every download and image step of every plugin this host runs.
    let events = on_event.clone();
    let observer = Arc::new(move |activity: Activity| match activity {
        Activity::Download { model, progress } => events(Event::Download {
            model,
            bytes_done: progress.model_bytes_done,
            bytes_total: progress.model_bytes_total,
            files_done: progress.files_done,
            files_total: progress.files_total,
        }),
        Activity::ImageStep { model, step, total } => events(Event::Step { model, step, total }),
        Activity::ImageFinished { .. } => {}
    });
    let mut builder = Host::builder().observer(observer);
    if let Some(hub) = options.hub {
        builder = builder.hub_config(hub);
    }
    let host = builder.build().map_err(|e| Failure::Host(format!("{e:#}")))?;

    // Fetch the models the policy names before the plugin starts, so their downloads
    // show up front (a plugin may also prepare them itself; the hub fetches once).
    let keys: Vec<String> = match &policy.models {
        ModelAllowList::Only(keys) => keys.iter().filter(|key| !key.ends_with("/*")).cloned().collect(),
        ModelAllowList::AnyCataloged => Vec::new(),
    };
    for key in &keys {
        host.registry().prepare(key, None).await.map_err(|error| Failure::Model { model: key.clone(), error })?;
    }

    let allowed = policy.models.clone();
    let plugin = host.load_plugin(&options.plugin).map_err(Failure::Plugin)?;
    let output = host.run(&plugin, policy, options.args, options.stdio).await.map_err(Failure::Plugin)?;
    let mut answer = output.result.map_err(Failure::PluginFailed)?;
    if options.stdio == Stdio::Capture {
        answer = format!("{}{answer}", String::from_utf8_lossy(&output.stdout));
    }
    on_event(Event::Answer(answer.clone()));

    if let Some(prompt) = options.say {
        // The first text model the policy names, else one of the catalog's it covers (`org/*`).
        let catalog = host.registry().catalog();
        let covered = catalog.entries().map(|entry| entry.key.clone()).filter(|key| allowed.allows(key));
        let model = keys
            .iter()
            .cloned()
            .chain(covered)
            .find(|key| catalog.resolve(key).is_some_and(|entry| entry.capabilities.contains(&Capability::TextGeneration)))
            .ok_or_else(|| Failure::Model {
                model: "--say".into(),
                error: LanternError::ModelNotAllowed("the policy allows no text generation model".into()),
            })?;
        let failed = |error| Failure::Model { model: model.clone(), error };
        let mut stream =
            host.registry().generate(&model, PromptInput::Text(prompt), SamplingParams::greedy(16)).await.map_err(failed)?;
        while let Some(event) = stream.next(|event| matches!(event, GenerationEvent::Finished { .. })).await.map_err(failed)? {
            if let GenerationEvent::Text(text) = event {
                on_event(Event::Token(text));
            }
        }
    }
    Ok(answer)
}

/// `PLUGIN POLICY [--say PROMPT] [-- ARGS...]`
fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: embed PLUGIN.wasm POLICY.toml [--say PROMPT] [-- PLUGIN ARGS...]";
    let plugin = args.next().ok_or(usage)?.into();
    let policy = args.next().ok_or(usage)?.into();
    let mut say = None;
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--say" => say = Some(args.next().ok_or(usage)?),
            "--" => rest.extend(args.by_ref()),
            _ => rest.push(arg),
        }
    }
    Ok(Options { plugin, policy, args: rest, stdio: Stdio::Inherit, say, hub: None })
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let print = Arc::new(|event: Event| match event {
        Event::Download { model, bytes_done, bytes_total, files_done, files_total } => {
            let total = bytes_total.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
            eprintln!("download {model}: {bytes_done}/{total} bytes, {files_done}/{files_total} files");
        }
        Event::Step { model, step, total } => eprintln!("{model}: step {step}/{total}"),
        Event::Answer(answer) => println!("{}", answer.trim_end()),
        Event::Token(text) => {
            use std::io::Write;
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    });
    match embed(options, print).await {
        Ok(_) => {
            println!();
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(1)
        }
    }
}
