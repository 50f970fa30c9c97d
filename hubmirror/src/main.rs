//! `hubmirror`: serve local directories as Hugging Face Hub repos on 127.0.0.1.
//!
//! Used by the offline demo: `hubmirror --repo sentence-transformers/all-MiniLM-L6-v2=DIR`,
//! then point Lantern at the printed endpoint with `HF_ENDPOINT`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Serve local directories as Hugging Face Hub repos (for tests and offline demos)")]
struct Args {
    /// A repo to serve, as ID=DIR (e.g. sentence-transformers/all-MiniLM-L6-v2=./models/minilm).
    #[arg(long = "repo", value_name = "ID=DIR", required = true)]
    repos: Vec<String>,
    /// Address to listen on. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the endpoint URL to this file once serving (for scripts).
    #[arg(long)]
    endpoint_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = hubmirror::Mirror::builder();
    for spec in &args.repos {
        let (id, dir) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--repo {spec:?}: expected ID=DIR"))?;
        builder = builder.repo(id, dir);
    }
    let mirror = builder.serve(args.listen).await?;
    let endpoint = mirror.endpoint();
    if let Some(path) = &args.endpoint_file {
        std::fs::write(path, &endpoint)?;
    }
    println!("{endpoint}");
    tokio::signal::ctrl_c().await?;
    drop(mirror);
    Ok(())
}
