//! semantic-search: embeds a query and some documents, prints the documents best first.
//!
//! ```text
//! lantern run semantic_search.wasm --allow-model sentence-transformers/all-MiniLM-L6-v2 \
//!     -- [--model KEY] [--top N] [--json] [--docs FILE] QUERY [DOCUMENT...]
//! ```
//! `--docs FILE` reads one document per non-empty line; the file must be in a directory
//! granted with `lantern run --dir`.

use lantern_sdk::embeddings::{embed_with, rank, EmbedOptions};
use lantern_sdk::logging;

const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

struct SemanticSearch;

struct Request {
    model: String,
    top: Option<usize>,
    json: bool,
    query: String,
    documents: Vec<String>,
}

const USAGE: &str = "usage: semantic-search [--model KEY] [--top N] [--json] [--docs FILE] QUERY [DOCUMENT...]";

fn parse(args: Vec<String>) -> Result<Request, String> {
    let mut model = DEFAULT_MODEL.to_string();
    let (mut top, mut json, mut positional, mut documents) = (None, false, Vec::new(), Vec::new());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = args.next().ok_or("--model needs a key")?,
            "--top" => top = Some(args.next().and_then(|n| n.parse().ok()).ok_or("--top needs a number")?),
            "--json" => json = true,
            "--docs" => {
                let path = args.next().ok_or("--docs needs a file")?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {path}: {e} (grant its directory with lantern run --dir)"))?;
                documents.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            }
            "--help" | "-h" => return Err(USAGE.into()),
            _ => positional.push(arg),
        }
    }
    if positional.is_empty() {
        return Err(USAGE.into());
    }
    let query = positional.remove(0);
    documents.extend(positional);
    if documents.is_empty() {
        return Err(format!("no documents to search\n{USAGE}"));
    }
    Ok(Request { model, top, json, query, documents })
}

impl lantern_sdk::Pipeline for SemanticSearch {
    fn run(args: Vec<String>) -> Result<String, String> {
        let request = parse(args)?;
        logging::info(&format!("ranking {} documents with {}", request.documents.len(), request.model));
        let query = embed_with(&request.model, &[&request.query], &EmbedOptions::query()).map_err(|e| e.to_string())?;
        let documents =
            embed_with(&request.model, &request.documents, &EmbedOptions::document()).map_err(|e| e.to_string())?;
        let mut ranking = rank(&query.vectors[0], &documents.vectors);
        ranking.truncate(request.top.unwrap_or(ranking.len()));
        if request.json {
            let rows: Vec<_> = ranking
                .iter()
                .map(|&(index, score)| serde_json::json!({ "index": index, "score": score, "text": request.documents[index] }))
                .collect();
            return Ok(serde_json::to_string(&rows).expect("JSON of plain values"));
        }
        let mut out = format!("query: {}\n", request.query);
        for (place, (index, score)) in ranking.iter().enumerate() {
            out.push_str(&format!("{:>2}. {score:.4}  {}\n", place + 1, request.documents[*index]));
        }
        Ok(out)
    }
}

lantern_sdk::export!(SemanticSearch);
