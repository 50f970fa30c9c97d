//! The model registry: from a key to a loaded model, shared by every plugin.
//!
//! A request resolves the key in the catalog, awaits the hub for all of the model's
//! files at once, loads the family on a worker thread (once, however many plugins ask
//! at the same moment) and keeps the model for the next caller. Model work runs on
//! worker threads; the async runtime only waits for it.
//!
//! `images.rs` holds the image capabilities (text to image, CLIP, vision-language).

mod detect;
mod images;

pub use images::ImageEvent;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use tokio::sync::OnceCell;

use crate::batching::{BatchCounts, BatchPolicy, Batcher};
use crate::capabilities::{
    Capability, EmbedRequest, Embeddings, GenerationEvent, ImageEmbedder, ImageGenerator, PromptInput, SamplingParams,
    TextEmbedder, TextGenerator, VisionLanguageModel,
};
use crate::catalog::{Catalog, CatalogEntry, Family};
use crate::error::{LanternError, LanternResult};
use crate::families;
use crate::hub::{FetchProgress, Hub, ModelFiles, ProgressSink};
use crate::memory_budget::{MemoryBudget, DEFAULT_BUDGET_BYTES};
use crate::streaming::{EventSender, EventStream};

/// Chunks a generation may run ahead of the consumer reading them.
const GENERATION_AHEAD: usize = 16;

/// A step in preparing a model, reported to whoever asked for it.
#[derive(Debug, Clone, PartialEq)]
pub enum PrepareEvent {
    Downloading { file: String, bytes_done: u64, bytes_total: Option<u64>, files_done: u32, files_total: u32 },
    Loading,
    Ready,
}

/// Where preparation events go.
pub type PrepareSink = Arc<dyn Fn(PrepareEvent) + Send + Sync>;

/// Work of the host that a program embedding it (the CLI's progress bars, say) may
/// want to show, whichever plugin caused it.
#[derive(Debug, Clone)]
pub enum Activity {
    /// Bytes of a model's files arrived.
    Download { model: String, progress: FetchProgress },
    /// A denoising step of an image finished.
    ImageStep { model: String, step: u32, total: u32 },
    /// An image is done (or failed, or was cancelled).
    ImageFinished { model: String },
}

/// Where [`Activity`] reports go; called from worker threads and tasks, keep it cheap.
pub type ActivityObserver = Arc<dyn Fn(Activity) + Send + Sync>;

/// Facts about a catalog model for `info` and `lantern models`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub entry: CatalogEntry,
    pub cached: bool,
    pub loaded: bool,
    pub size_bytes: Option<u64>,
}

type Slot<T> = Arc<OnceCell<T>>;

/// A loaded embedding model with its batching task.
pub struct LoadedEmbedder {
    pub model: Arc<dyn TextEmbedder>,
    batcher: Batcher,
}

impl LoadedEmbedder {
    /// In use: someone holds it or the model, or a request is waiting on its batcher
    /// (the batching task itself holds one reference to the model).
    fn in_use(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) > 1 || Arc::strong_count(&self.model) > 2 || self.batcher.is_busy()
    }
}

pub struct ModelRegistry {
    catalog: Catalog,
    hub: Hub,
    device: Device,
    text_embedders: Mutex<HashMap<String, Slot<Arc<LoadedEmbedder>>>>,
    text_generators: Mutex<HashMap<String, Slot<Arc<dyn TextGenerator>>>>,
    image_generators: Mutex<HashMap<String, Slot<Arc<dyn ImageGenerator>>>>,
    image_embedders: Mutex<HashMap<String, Slot<Arc<dyn ImageEmbedder>>>>,
    vision_models: Mutex<HashMap<String, Slot<Arc<dyn VisionLanguageModel>>>>,
    /// Entries resolved from their repos for keys the catalog does not know.
    detected: Mutex<HashMap<String, CatalogEntry>>,
    observer: Option<ActivityObserver>,
    /// Generation threads running now (they end at end of answer or on cancellation).
    active_generations: Arc<std::sync::atomic::AtomicUsize>,
    /// Loaded models' weight bytes against the budget; least recently used go first.
    memory: Mutex<MemoryBudget>,
    batch_policy: BatchPolicy,
}

/// Runs blocking model work on the blocking pool; a panic in it becomes a typed error.
pub async fn run_blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> LanternResult<T> + Send + 'static,
) -> LanternResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => Err(panic_error(what, error.into_panic())),
        Err(_) => Err(LanternError::Cancelled),
    }
}

/// The typed error for a panic caught at a boundary: "`what` panicked: message".
pub(crate) fn panic_error(what: &str, payload: Box<dyn std::any::Any + Send>) -> LanternError {
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    LanternError::InferenceFailed(format!("{what} panicked: {message}"))
}

/// Counts one running generation for as long as it lives.
struct ActiveGuard(Arc<std::sync::atomic::AtomicUsize>);

impl ActiveGuard {
    fn enter(counter: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ActiveGuard(counter.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sends a generation's events into the stream its consumer reads.
struct ChannelSink<'a>(&'a EventSender<GenerationEvent>);

impl crate::capabilities::GenerationSink for ChannelSink<'_> {
    fn emit(&mut self, event: GenerationEvent) -> bool {
        self.0.send_blocking(Ok(event))
    }

    fn keep_going(&self) -> bool {
        !self.0.is_cancelled()
    }
}

/// Turns per-file fetch progress into model-wide download events.
fn download_progress(files_total: usize, sink: PrepareSink) -> ProgressSink {
    struct Totals {
        per_file: HashMap<String, (u64, Option<u64>, bool)>,
    }
    let totals = Mutex::new(Totals { per_file: HashMap::new() });
    Arc::new(move |progress: FetchProgress| {
        let event = {
            let mut totals = totals.lock().unwrap();
            totals.per_file.insert(
                progress.file.clone(),
                (progress.file_bytes_done, progress.file_bytes_total, progress.file_done),
            );
            let bytes_done = totals.per_file.values().map(|(done, _, _)| done).sum();
            let known_totals: Vec<u64> = totals.per_file.values().filter_map(|(_, total, _)| *total).collect();
            let bytes_total = (known_totals.len() == files_total).then(|| known_totals.iter().sum());
            let files_done = totals.per_file.values().filter(|(_, _, done)| *done).count() as u32;
            PrepareEvent::Downloading {
                file: progress.file,
                bytes_done,
                bytes_total,
                files_done,
                files_total: files_total as u32,
            }
        };
        sink(event);
    })
}

impl ModelRegistry {
    /// Where every model of this registry runs (see [`crate::device`]).
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn new(catalog: Catalog, hub: Hub, device: Device) -> Self {
        ModelRegistry {
            catalog,
            hub,
            device,
            text_embedders: Mutex::new(HashMap::new()),
            text_generators: Mutex::new(HashMap::new()),
            image_generators: Mutex::new(HashMap::new()),
            image_embedders: Mutex::new(HashMap::new()),
            vision_models: Mutex::new(HashMap::new()),
            detected: Mutex::new(HashMap::new()),
            observer: None,
            active_generations: Arc::default(),
            memory: Mutex::new(MemoryBudget::new(DEFAULT_BUDGET_BYTES)),
            batch_policy: BatchPolicy::default(),
        }
    }

    /// Bytes of model weights kept loaded before idle models are unloaded (default 8 GiB).
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory = Mutex::new(MemoryBudget::new(bytes));
        self
    }

    /// Reports downloads and image steps to `observer`, whichever plugin asked.
    pub fn with_observer(mut self, observer: ActivityObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, activity: Activity) {
        if let Some(observer) = &self.observer {
            observer(activity);
        }
    }

    /// How concurrent embedding requests are merged.
    pub fn with_batch_policy(mut self, policy: BatchPolicy) -> Self {
        self.batch_policy = policy;
        self
    }

    /// What the batcher of a loaded embedding model has done (None when not loaded).
    pub fn embedding_batch_counts(&self, key: &str) -> Option<BatchCounts> {
        let slot = self.text_embedders.lock().unwrap().get(key).cloned()?;
        slot.get().map(|loaded| loaded.batcher.counts())
    }

    /// Keys of the embedding models loaded now.
    pub fn loaded_text_embedders(&self) -> Vec<String> {
        let map = self.text_embedders.lock().unwrap();
        let mut keys: Vec<String> = map.iter().filter(|(_, slot)| slot.initialized()).map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys
    }

    /// Unloads least recently used idle models until the loaded ones fit the budget.
    fn enforce_memory_budget(&self) {
        let mut memory = self.memory.lock().unwrap();
        for key in memory.over_budget(|key| self.model_in_use(key)) {
            tracing::info!(model = %key, budget = memory.limit_bytes(), "unloading the least recently used model");
            self.text_embedders.lock().unwrap().remove(&key);
            self.text_generators.lock().unwrap().remove(&key);
            self.image_generators.lock().unwrap().remove(&key);
            self.image_embedders.lock().unwrap().remove(&key);
            self.vision_models.lock().unwrap().remove(&key);
            memory.remove(&key);
        }
    }

    /// Whether someone holds the model loaded for `key` (a request running on it).
    fn model_in_use(&self, key: &str) -> bool {
        fn held<T: ?Sized>(map: &Mutex<HashMap<String, Slot<Arc<T>>>>, key: &str) -> bool {
            map.lock().unwrap().get(key).and_then(|slot| slot.get()).is_some_and(|model| Arc::strong_count(model) > 1)
        }
        let embedder_busy = self
            .text_embedders
            .lock()
            .unwrap()
            .get(key)
            .and_then(|slot| slot.get())
            .is_some_and(|loaded| loaded.in_use());
        embedder_busy
            || held(&self.text_generators, key)
            || held(&self.image_generators, key)
            || held(&self.image_embedders, key)
            || held(&self.vision_models, key)
    }

    /// Records a use of `key` (with its weight bytes when this call loaded it) and,
    /// after a load, unloads idle models beyond the budget.
    fn account(&self, key: &str, loaded_now: Option<u64>) {
        self.memory.lock().unwrap().touch(key, loaded_now);
        if loaded_now.is_some() {
            self.enforce_memory_budget();
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The catalog entry of `key` (`KEY:TAG` picks a GGUF quantisation), checked to
    /// offer `capability`.
    /// Keys resolved from their repos (see [`ModelRegistry::resolve_entry`]) count too.
    pub fn entry(&self, key: &str, capability: Option<Capability>) -> LanternResult<CatalogEntry> {
        let entry = self.catalog.resolve(key).or_else(|| self.detected.lock().unwrap().get(key).cloned()).ok_or_else(|| {
            LanternError::ModelNotSupported(format!("{key:?} is not in this host's model catalog (see `lantern models`)"))
        })?;
        Self::check_offers(&entry, capability)?;
        Ok(entry)
    }

    fn check_offers(entry: &CatalogEntry, capability: Option<Capability>) -> LanternResult<()> {
        match capability {
            Some(capability) if !entry.offers(capability) => {
                Err(LanternError::ModelNotSupported(format!("{} does not offer {capability}", entry.key)))
            }
            _ => Ok(()),
        }
    }

    /// The entry of `key`: from the catalog, or, for a key it does not know, resolved
    /// from the repo of that name (the plugin's policy has already allowed the key).
    pub async fn resolve_entry(&self, key: &str, capability: Option<Capability>) -> LanternResult<CatalogEntry> {
        let entry = match self.catalog.resolve(key) {
            Some(entry) => entry,
            None => self.detect(key).await?,
        };
        Self::check_offers(&entry, capability)?;
        Ok(entry)
    }

    /// The entry with its files known: for a GGUF repo of many quantisations, the file
    /// (or every part of the split file) of the chosen tag, from the repo's listing.
    pub async fn entry_with_files(&self, key: &str, capability: Option<Capability>) -> LanternResult<CatalogEntry> {
        let mut entry = self.resolve_entry(key, capability).await?;
        if let Some(tag) = entry.gguf_quant.clone() {
            let listing = self.hub.list_files(&entry.repo).await?;
            entry.files = families::gguf::files::select_quant(&listing, &tag).map_err(|message| {
                LanternError::ModelNotSupported(format!("{}: {message}", entry.repo.repo))
            })?;
        }
        Ok(entry)
    }

    pub fn info(&self, key: &str) -> LanternResult<ModelInfo> {
        let mut entry = self.entry(key, None)?;
        if let Some(tag) = &entry.gguf_quant {
            // Which files the tag means, as far as the cache knows (no network here).
            let cached = self.hub.repo_cache(&entry.repo.repo).snapshot_files(&entry.repo.revision).unwrap_or_default();
            entry.files = families::gguf::files::select_quant(&cached, tag).unwrap_or_default();
        }
        let parts = entry.all_repos();
        let cached = !entry.files.is_empty() && parts.iter().all(|(repo, files)| self.hub.is_cached(repo, files));
        let size_bytes = cached.then(|| {
            parts
                .iter()
                .flat_map(|(repo, files)| {
                    let cache = self.hub.repo_cache(&repo.repo);
                    files.iter().filter_map(move |f| cache.cached_file(&repo.revision, f)).collect::<Vec<_>>()
                })
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum()
        });
        fn has<T: ?Sized>(map: &Mutex<HashMap<String, Slot<Arc<T>>>>, key: &str) -> bool {
            map.lock().unwrap().get(key).is_some_and(|slot| slot.initialized())
        }
        let loaded = self.text_embedders.lock().unwrap().get(key).is_some_and(|slot| slot.initialized())
            || has(&self.text_generators, key)
            || has(&self.image_generators, key)
            || has(&self.image_embedders, key)
            || has(&self.vision_models, key);
        Ok(ModelInfo { entry, cached, loaded, size_bytes })
    }

    /// Every file of the model, from all its repos at once.
    async fn fetch(&self, entry: &CatalogEntry, sink: Option<&PrepareSink>) -> LanternResult<ModelFiles> {
        let to_caller = sink.map(|sink| download_progress(entry.file_count(), sink.clone()));
        let to_observer = self.observer.clone().map(|observer| {
            let model = entry.key.clone();
            Arc::new(move |progress: FetchProgress| observer(Activity::Download { model: model.clone(), progress }))
                as ProgressSink
        });
        let progress: Option<ProgressSink> = match (to_caller, to_observer) {
            (Some(a), Some(b)) => Some(Arc::new(move |p: FetchProgress| {
                a(p.clone());
                b(p);
            })),
            (a, b) => a.or(b),
        };
        Ok(self.hub.fetch_from_repos(&entry.all_repos(), progress).await?)
    }

    /// The model behind `key` in `slots`: fetched and loaded with `load` on a worker
    /// thread the first time (once, however many callers ask at once), then wrapped by
    /// `wrap` (given the weights' size) and shared. Also tells the weights' size when
    /// this call loaded it.
    async fn load_shared<M: Send + 'static, T: Clone>(
        &self,
        slots: &Mutex<HashMap<String, Slot<T>>>,
        key: &str,
        capability: Capability,
        sink: Option<PrepareSink>,
        load: fn(Family, &ModelFiles, &Device) -> LanternResult<M>,
        wrap: impl FnOnce(M, u64) -> T,
    ) -> LanternResult<(T, Option<u64>)> {
        self.resolve_entry(key, Some(capability)).await?;
        let slot = slots.lock().unwrap().entry(key.to_string()).or_default().clone();
        let mut loaded_now = None;
        let model = slot
            .get_or_try_init(|| async {
                let entry = self.entry_with_files(key, Some(capability)).await?;
                let files = self.fetch(&entry, sink.as_ref()).await?;
                if let Some(sink) = &sink {
                    sink(PrepareEvent::Loading);
                }
                let device = self.device.clone();
                tracing::info!(model = %entry.key, family = entry.family.name(), "loading model");
                let weight_bytes = families::weight_bytes(&files);
                let model = run_blocking("loading the model", move || {
                    let model = load(entry.family, &files, &device);
                    crate::allocator::release_freed_memory();
                    model
                })
                .await
                    .map_err(|error| crate::device::unsupported_on_device(&self.device, error))?;
                loaded_now = Some(weight_bytes);
                Ok::<_, LanternError>(wrap(model, weight_bytes))
            })
            .await?
            .clone();
        if let Some(sink) = &sink {
            sink(PrepareEvent::Ready);
        }
        Ok((model, loaded_now))
    }

    /// The loaded text embedder for `key`: downloaded and loaded on first use, shared after.
    pub async fn text_embedder(&self, key: &str, sink: Option<PrepareSink>) -> LanternResult<Arc<dyn TextEmbedder>> {
        Ok(self.loaded_text_embedder(key, sink).await?.model.clone())
    }

    async fn loaded_text_embedder(&self, key: &str, sink: Option<PrepareSink>) -> LanternResult<Arc<LoadedEmbedder>> {
        let policy = self.batch_policy;
        let (loaded, loaded_now) = self
            .load_shared(&self.text_embedders, key, Capability::TextEmbedding, sink, families::load_text_embedder, |model, _| {
                let batcher = Batcher::spawn(model.clone(), policy);
                Arc::new(LoadedEmbedder { model, batcher })
            })
            .await?;
        self.account(key, loaded_now);
        Ok(loaded)
    }

    /// The loaded text generator for `key`: downloaded and loaded on first use, shared after.
    pub async fn text_generator(&self, key: &str, sink: Option<PrepareSink>) -> LanternResult<Arc<dyn TextGenerator>> {
        let load = families::load_text_generator;
        let (model, loaded_now) = self.load_shared(&self.text_generators, key, Capability::TextGeneration, sink, load, |m, _| m).await?;
        self.account(key, loaded_now);
        Ok(model)
    }

    /// Starts a generation with `key`. Errors known before the first token (a prompt too
    /// long for the context, say) are returned here; the text then streams from a worker
    /// thread of its own, which stops as soon as the returned stream is dropped.
    pub async fn generate(
        &self,
        key: &str,
        prompt: PromptInput,
        params: SamplingParams,
    ) -> LanternResult<EventStream<GenerationEvent>> {
        let model = self.text_generator(key, None).await?;
        let preparing = model.clone();
        let prepared = run_blocking("preparing the prompt", move || preparing.prepare(&prompt)).await?;
        Ok(self.stream_text(key, move |sink| model.generate(&prepared, &params, sink)))
    }

    /// Runs `work` on a worker thread of its own, streaming its text into the returned
    /// stream; a panic or an error ends the stream with a typed error.
    fn stream_text(
        &self,
        key: &str,
        work: impl FnOnce(&mut dyn crate::capabilities::GenerationSink) -> LanternResult<crate::capabilities::Generated>
            + Send
            + 'static,
    ) -> EventStream<GenerationEvent> {
        let (sender, stream) = EventStream::channel(GENERATION_AHEAD);
        let key = key.to_string();
        let active = ActiveGuard::enter(&self.active_generations);
        tokio::task::spawn_blocking(move || {
            let _active = active;
            let mut sink = ChannelSink(&sender);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut sink)));
            let error = match outcome {
                Ok(Ok(_)) => return,
                Ok(Err(error)) => error,
                Err(_) => LanternError::InferenceFailed(format!("{key}: the generation panicked")),
            };
            sender.send_blocking(Err(error));
        });
        stream
    }

    /// How many generations are running on worker threads right now.
    pub fn active_generations(&self) -> usize {
        self.active_generations.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Downloads and loads `key` for whatever capability it offers first.
    pub async fn prepare(&self, key: &str, sink: Option<PrepareSink>) -> LanternResult<()> {
        let entry = self.resolve_entry(key, None).await?;
        match entry.capabilities.first() {
            Some(Capability::TextEmbedding) => self.text_embedder(key, sink).await.map(|_| ()),
            Some(Capability::TextGeneration) => self.text_generator(key, sink).await.map(|_| ()),
            Some(Capability::TextToImage) => self.image_generator(key, sink).await.map(|_| ()),
            Some(Capability::ImageEmbedding) => self.image_embedder(key, sink).await.map(|_| ()),
            Some(Capability::VisionLanguage) => self.vision_model(key, sink).await.map(|_| ()),
            None => Err(LanternError::ModelNotSupported(format!("{key} offers no capability"))),
        }
    }

    /// Embeds texts with `key`, off the async runtime.
    pub async fn embed(&self, key: &str, request: EmbedRequest) -> LanternResult<Embeddings> {
        if request.inputs.is_empty() {
            return Err(LanternError::InvalidInput("no inputs to embed".into()));
        }
        if let Some(index) = request.inputs.iter().position(|s| s.trim().is_empty()) {
            return Err(LanternError::InvalidInput(format!("input {index} is empty")));
        }
        let loaded = self.loaded_text_embedder(key, None).await?;
        // Files this request needs beyond the base model (Stella's head for its dimension).
        let extra = loaded.model.request_files(&request)?;
        if !extra.is_empty() {
            let repo = self.entry(key, None)?.repo.clone();
            let files = self.hub.fetch(&repo, &extra, None).await?;
            let model = loaded.model.clone();
            run_blocking("loading request files", move || model.load_request_files(&files)).await?;
        }
        loaded.batcher.embed(request).await
    }
}
