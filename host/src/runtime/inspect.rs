//! `lantern inspect`: the WIT world a component imports and exports, decoded from the
//! component itself, and whether it fits this host's `lantern:ai/pipeline` world.

use anyhow::bail;
use wit_component::WitPrinter;
use wit_parser::decoding::DecodedWasm;

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
