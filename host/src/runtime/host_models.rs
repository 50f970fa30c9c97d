//! `lantern:ai/models`: info, allowed, and `prepare` with progress events.

use wasmtime::component::Resource;

use super::bindings::lantern::ai::models::{self, DownloadProgress, ModelInfo, PreparationEvent};
use super::bindings::WitError;
use super::state::PluginState;
use super::streams::{PreparationState, PreparationStream};
use crate::policy::ModelAllowList;
use crate::registry::PrepareEvent;

fn to_wit_event(event: PrepareEvent) -> PreparationEvent {
    match event {
        PrepareEvent::Downloading { file, bytes_done, bytes_total, files_done, files_total } => {
            PreparationEvent::Downloading(DownloadProgress { file, bytes_done, bytes_total, files_done, files_total })
        }
        PrepareEvent::Loading => PreparationEvent::Loading,
        PrepareEvent::Ready => PreparationEvent::Ready,
    }
}

impl models::Host for PluginState {
    async fn prepare(&mut self, model: String) -> wasmtime::Result<Result<Resource<PreparationStream>, WitError>> {
        // Policy first; whether the key names a model (in the catalog, or a repo) the
        // preparation itself finds out and reports as its failure.
        if let Err(error) = self.host_call().and_then(|()| self.policy.check_model(&model)) {
            return Ok(Err(error.into()));
        }
        let (sender, receiver) = tokio::sync::watch::channel(PreparationState::Starting);
        let registry = self.registry.clone();
        // Its own task: the model keeps preparing for other plugins if this one drops the handle.
        tokio::spawn(async move {
            let progress = sender.clone();
            let sink = std::sync::Arc::new(move |event: PrepareEvent| {
                let _ = progress.send(PreparationState::Event(event));
            });
            if let Err(error) = registry.prepare(&model, Some(sink)).await {
                let _ = sender.send(PreparationState::Failed(error));
            }
        });
        Ok(Ok(self.table.push(PreparationStream::new(receiver))?))
    }

    async fn info(&mut self, model: String) -> wasmtime::Result<Result<ModelInfo, WitError>> {
        let info = self.host_call().and_then(|()| self.policy.check_model(&model)).and_then(|_| self.registry.info(&model));
        Ok(info.map_err(WitError::from).map(|info| ModelInfo {
            key: info.entry.key,
            family: info.entry.family.name().to_string(),
            capabilities: info.entry.capabilities.into_iter().map(Into::into).collect(),
            size_bytes: info.size_bytes,
            cached: info.cached,
            loaded: info.loaded,
        }))
    }

    async fn allowed(&mut self) -> wasmtime::Result<Vec<String>> {
        self.infallible_host_call()?;
        Ok(match &self.policy.models {
            ModelAllowList::AnyCataloged => self.registry.catalog().entries().map(|e| e.key.clone()).collect(),
            // The keys as granted (an `org/*` pattern too, so the plugin can tell it may
            // name any repo of that org), then the catalog's keys a pattern covers.
            ModelAllowList::Only(keys) => {
                let covered = self.registry.catalog().entries().map(|e| &e.key).filter(|key| !keys.contains(*key));
                let covered: Vec<String> = covered.filter(|key| self.policy.models.allows(key)).cloned().collect();
                keys.iter().cloned().chain(covered).collect()
            }
        })
    }
}

impl models::HostPreparation for PluginState {
    async fn next(
        &mut self,
        preparation: Resource<PreparationStream>,
    ) -> wasmtime::Result<Result<Option<PreparationEvent>, WitError>> {
        if let Err(error) = self.host_call() {
            return Ok(Err(error.into()));
        }
        let stream = self.table.get_mut(&preparation)?;
        Ok(stream.next().await.map(|event| event.map(to_wit_event)).map_err(Into::into))
    }

    async fn drop(&mut self, preparation: Resource<PreparationStream>) -> wasmtime::Result<()> {
        self.table.delete(preparation)?;
        Ok(())
    }
}
