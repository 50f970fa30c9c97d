//! `lantern inspect`: the WIT world a component imports and exports, decoded from the
//! component itself, whether it fits this host's `lantern:ai/pipeline` world, and what a
//! policy would grant each of its imports.

use anyhow::bail;
use wit_component::WitPrinter;
use wit_parser::decoding::DecodedWasm;

use crate::capabilities::Capability;
use crate::catalog::Catalog;
use crate::policy::{ModelAllowList, Policy};

/// Prints the component's world as WIT. With `with_dependencies`, the interfaces it
/// uses are printed in full after it.
pub fn component_wit(bytes: &[u8], with_dependencies: bool) -> anyhow::Result<String> {
    let DecodedWasm::Component(resolve, world) = wit_parser::decoding::decode(bytes)? else {
        bail!("this is a WIT package, not a component");
    };
    let package = resolve.worlds[world].package.expect("a decoded component's world has a package");
    let nested: Vec<_> = if with_dependencies {
        resolve.packages.iter().map(|(id, _)| id).filter(|id| *id != package).collect()
    } else {
        Vec::new()
    };
    let mut printer = WitPrinter::default();
    printer.print(&resolve, package, &nested)?;
    Ok(printer.output.to_string())
}

/// One line per import of `plugin`: the interface, then what `policy` grants through it
/// (models by capability, directories, variables) or why it is denied.
pub fn grants(plugin: &super::Plugin, policy: &Policy, catalog: &Catalog) -> String {
    let component = plugin.component();
    let imports: Vec<String> = component.component_type().imports(component.engine()).map(|(name, _)| name.to_string()).collect();
    let width = imports.iter().map(String::len).max().unwrap_or(0);
    let mut lines = String::new();
    for name in &imports {
        lines.push_str(&format!("{name:<width$}  {}\n", grant(name, policy, catalog)));
    }
    lines.push_str(&format!("limits: {}\n", limits(policy)));
    lines
}

/// What `policy` grants through the interface `name` (`package/interface@version`).
fn grant(name: &str, policy: &Policy, catalog: &Catalog) -> String {
    let interface = name.split('@').next().unwrap_or(name);
    match interface {
        "lantern:ai/models" => models(policy, catalog, &[]),
        "lantern:ai/embeddings" => models(policy, catalog, &[Capability::TextEmbedding]),
        "lantern:ai/generation" => models(policy, catalog, &[Capability::TextGeneration]),
        "lantern:ai/images" => models(policy, catalog, &[Capability::TextToImage]),
        "lantern:ai/vision" => models(policy, catalog, &[Capability::ImageEmbedding, Capability::VisionLanguage]),
        "lantern:ai/logging" | "lantern:ai/types" => "allowed".into(),
        "wasi:filesystem/types" | "wasi:filesystem/preopens" if policy.dirs.is_empty() => {
            "denied: no directory granted, the plugin sees no files (--dir, --dir-rw, `[[dirs]]`)".into()
        }
        "wasi:filesystem/types" | "wasi:filesystem/preopens" => {
            let dirs: Vec<String> = policy
                .dirs
                .iter()
                .map(|d| format!("{} = {} ({})", d.guest_path, d.host_path.display(), if d.writable { "read-write" } else { "read-only" }))
                .collect();
            format!("allowed: {}", dirs.join(", "))
        }
        "wasi:cli/environment" if policy.env.is_empty() => "allowed: its arguments; no variables (--env, `[env]`)".into(),
        "wasi:cli/environment" => {
            let names: Vec<&str> = policy.env.iter().map(|(name, _)| name.as_str()).collect();
            format!("allowed: its arguments and the variables {}", names.join(", "))
        }
        _ if interface.starts_with("wasi:sockets/") => "denied: no network, ever (the host grants none)".into(),
        _ if interface.starts_with("wasi:http/") => "denied: this host does not provide it".into(),
        // Streams, stdio, clocks and randomness carry no authority over the host.
        _ if interface.starts_with("wasi:") => "allowed".into(),
        _ => "denied: this host does not provide it".into(),
    }
}

/// The granted models that offer one of `wanted` (any, when empty).
fn models(policy: &Policy, catalog: &Catalog, wanted: &[Capability]) -> String {
    let ModelAllowList::Only(keys) = &policy.models else { return "allowed: any model (--allow-all-models)".into() };
    if keys.is_empty() {
        return "denied: no model is allowed (--allow-model, `models.allow`)".into();
    }
    let mut granted = Vec::new();
    for key in keys {
        if key.ends_with("/*") {
            granted.push(format!("{key} (any repo of the org)"));
            continue;
        }
        match catalog.resolve(key) {
            Some(entry) if wanted.is_empty() || entry.capabilities.iter().any(|c| wanted.contains(c)) => granted.push(key.clone()),
            Some(_) => {}
            None => granted.push(format!("{key} (not in the catalog: resolved from its repo)")),
        }
    }
    if granted.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|c| c.wit_name()).collect();
        return format!("denied: none of the allowed models offers {}", names.join(" or "));
    }
    format!("allowed: {}", granted.join(", "))
}

fn limits(policy: &Policy) -> String {
    let clock = |d: Option<std::time::Duration>| d.map(|d| format!("{d:?}")).unwrap_or_else(|| "none".into());
    format!(
        "memory {} MiB, timeout {}, cpu {}, host calls {}, tokens {}/request {}/run, embed inputs {}/call {}/run, \
         open generations {}, image side {}, image steps {}",
        policy.max_memory_bytes >> 20,
        clock(policy.timeout),
        clock(policy.cpu_budget),
        policy.max_host_calls,
        policy.max_generated_tokens,
        policy.max_generated_tokens_per_run,
        policy.max_embed_inputs,
        policy.max_embed_inputs_per_run,
        policy.max_open_generations,
        policy.max_image_side,
        policy.max_image_steps,
    )
}
