//! hostile: a test plugin that misbehaves on command, so the host's defences can be
//! tested through a real component (tests/hostile.rs). Its first argument names the
//! attack; answers that come back are JSON naming the typed error the host gave.
//!
//! Attacks that end the run (the host must stop them):
//! - `loop`: spins forever (the timeout ends it).
//! - `bomb`: allocates and touches memory until it runs out (the memory limit).
//! - `recurse`: unbounded recursion (a stack overflow trap).
//! - `panic`: a Rust panic in the guest (a trap).
//!
//! Attacks the host answers with typed errors:
//! - `flood N`: N host calls (`models.allowed`) as fast as it can.
//! - `wasi-flood KIND N`: N WASI calls as fast as it can, none of them `lantern:ai`:
//!   `clock` reads the wall clock (one `wasi:clocks` call each), `stdout` writes a line
//!   to stdout (a few `wasi:io` calls each). Past the host-call limit the run must end.
//! - `log-flood N BYTES`: N log lines of BYTES bytes each.
//! - `giant-string MODEL MIB`: one MIB-mebibyte string to embed.
//! - `many-texts MODEL N`: N one-word texts in one embedding batch.
//! - `image-size MODEL SIDE`: a SIDE x SIDE image to generate.
//! - `image-header MODEL SIDE`: a PNG whose header claims SIDE x SIDE pixels, to embed.
//! - `image-bytes MODEL MIB`: MIB mebibytes of "image" to embed.
//! - `model KEY`: the key (a path, an absolute path, a model not allowed) through
//!   `info`, `prepare`, `embed` and `generate`.
//! - `undrained MODEL`: opens a long generation and returns without reading it.
//! - `drop-midway MODEL N`: reads N chunks, drops the stream, then runs a short
//!   generation to the end (the host must still serve this plugin).
//! - `open-many MODEL COUNT`: opens COUNT generations and keeps them all.
//! - `prepare-many MODEL COUNT`: opens COUNT preparations of one model, never reads them.

use lantern_sdk::bindings::lantern::ai::generation::{Prompt, Sampling};
use lantern_sdk::bindings::lantern::ai::models as wit_models;
use lantern_sdk::embeddings::{embed_with, EmbedOptions};
use lantern_sdk::images::ImageParams;
use lantern_sdk::Error;
use serde_json::{json, Value};

struct Hostile;

fn error_json(error: &Error) -> Value {
    let message = match error {
        Error::ModelNotAllowed(m)
        | Error::ModelNotSupported(m)
        | Error::InvalidInput(m)
        | Error::DownloadFailed(m)
        | Error::InferenceFailed(m)
        | Error::LimitExceeded(m) => m.as_str(),
        Error::Cancelled => "",
    };
    json!({ "error": error.kind(), "message": message })
}

/// `{"ok": true}` or the typed error.
fn outcome<T>(result: Result<T, Error>) -> Value {
    match result {
        Ok(_) => json!({ "ok": true }),
        Err(error) => error_json(&error),
    }
}

fn number(args: &[String], index: usize, what: &str) -> Result<u64, String> {
    args.get(index).and_then(|n| n.parse().ok()).ok_or_else(|| format!("{what} needs a number"))
}

fn text(args: &[String], index: usize, what: &str) -> Result<String, String> {
    args.get(index).cloned().ok_or_else(|| format!("{what} needs an argument"))
}

/// Greedy sampling of at most `max_tokens` tokens.
fn sampling(max_tokens: u32) -> Sampling {
    Sampling { max_tokens: Some(max_tokens), temperature: Some(0.0), ..Sampling::default() }
}

fn generate(model: &str, max_tokens: u32) -> Result<lantern_sdk::generation::Generation, Error> {
    lantern_sdk::generation::generate(model, &Prompt::Text("Once upon a time".into()), &sampling(max_tokens))
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // black_box keeps the call from becoming a loop or being folded away.
    std::hint::black_box(recurse(std::hint::black_box(depth + 1))) + 1
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG of a valid signature and header that claims `side` x `side` RGB pixels, and no data.
fn lying_png(side: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut header = Vec::new();
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &header);
    chunk(b"IEND", &[]);
    png
}

/// Each of the model calls with `key`.
fn every_call(key: &str) -> Value {
    let prepare = wit_models::prepare(key).map_err(Error::from).and_then(|preparation| {
        while preparation.next().map_err(Error::from)?.is_some() {}
        Ok(())
    });
    json!({
        "info": outcome(lantern_sdk::models::info(key)),
        "prepare": outcome(prepare),
        "embed": outcome(lantern_sdk::embeddings::embed(key, &["x"])),
        "generate": outcome(generate(key, 1)),
    })
}

fn attack(command: &str, args: &[String]) -> Result<Value, String> {
    Ok(match command {
        "loop" => {
            let mut counter: u64 = 0;
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        "bomb" => {
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page, so the memory is really used, not just reserved.
                blocks.push(std::hint::black_box(vec![0x5a; 1 << 20]));
            }
        }
        "recurse" => json!(recurse(0)),
        "panic" => panic!("the hostile plugin panics on purpose"),
        "flood" => {
            let calls = number(args, 0, "flood")?;
            let mut seen = 0usize;
            for _ in 0..calls {
                seen += std::hint::black_box(lantern_sdk::models::allowed()).len();
            }
            json!({ "calls": calls, "seen": seen })
        }
        "wasi-flood" => {
            let kind = text(args, 0, "wasi-flood")?;
            let calls = number(args, 1, "wasi-flood")?;
            match kind.as_str() {
                "clock" => {
                    for _ in 0..calls {
                        std::hint::black_box(std::time::SystemTime::now());
                    }
                }
                "stdout" => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout();
                    for index in 0..calls {
                        // Flushed each time, so every line is its own trip to the host.
                        let _ = writeln!(stdout, "{index}");
                        let _ = stdout.flush();
                    }
                }
                other => return Err(format!("unknown wasi-flood kind {other:?}: clock or stdout")),
            }
            json!({ "calls": calls })
        }
        "log-flood" => {
            let (lines, bytes) = (number(args, 0, "log-flood")?, number(args, 1, "log-flood")?);
            let line = "x".repeat(bytes as usize);
            for _ in 0..lines {
                lantern_sdk::logging::debug(&line);
            }
            json!({ "lines": lines })
        }
        "giant-string" => {
            let model = text(args, 0, "giant-string")?;
            let giant = "a".repeat((number(args, 1, "giant-string")? as usize) << 20);
            outcome(embed_with(&model, &[giant], &EmbedOptions::document()))
        }
        "many-texts" => {
            let model = text(args, 0, "many-texts")?;
            let texts = vec!["x".to_string(); number(args, 1, "many-texts")? as usize];
            outcome(embed_with(&model, &texts, &EmbedOptions::document()))
        }
        "image-size" => {
            let model = text(args, 0, "image-size")?;
            let side = number(args, 1, "image-size")? as u32;
            let params = ImageParams { width: Some(side), height: Some(side), ..ImageParams::default() };
            outcome(lantern_sdk::images::generate(&model, "a lantern", &params))
        }
        "image-header" => {
            let model = text(args, 0, "image-header")?;
            let png = lying_png(number(args, 1, "image-header")? as u32);
            outcome(lantern_sdk::vision::embed_images(&model, &[png]))
        }
        "image-bytes" => {
            let model = text(args, 0, "image-bytes")?;
            let bytes = vec![0u8; (number(args, 1, "image-bytes")? as usize) << 20];
            outcome(lantern_sdk::vision::embed_images(&model, &[bytes]))
        }
        "model" => every_call(&text(args, 0, "model")?),
        "undrained" => {
            let generation = generate(&text(args, 0, "undrained")?, 4096).map_err(|e| e.to_string())?;
            // Returning with the stream open: the host must cancel it with the instance.
            std::mem::forget(generation);
            json!({ "opened": 1 })
        }
        "drop-midway" => {
            let model = text(args, 0, "drop-midway")?;
            let wanted = number(args, 1, "drop-midway")? as usize;
            let mut generation = generate(&model, 4096).map_err(|e| e.to_string())?;
            let read = generation.by_ref().take(wanted).filter(|chunk| chunk.is_ok()).count();
            drop(generation);
            let after = generate(&model, 3).and_then(|g| g.collect::<Result<String, Error>>());
            json!({ "read": read, "after": outcome(after) })
        }
        "open-many" => {
            let model = text(args, 0, "open-many")?;
            let count = number(args, 1, "open-many")?;
            let (mut kept, mut refusals) = (Vec::new(), std::collections::BTreeMap::<String, u64>::new());
            for _ in 0..count {
                match generate(&model, 1) {
                    Ok(generation) => kept.push(generation),
                    Err(error) => *refusals.entry(error.kind().to_string()).or_default() += 1,
                }
            }
            json!({ "opened": kept.len(), "refused": refusals })
        }
        "prepare-many" => {
            let model = text(args, 0, "prepare-many")?;
            let count = number(args, 1, "prepare-many")?;
            let mut kept = Vec::new();
            let mut refusals = std::collections::BTreeMap::<String, u64>::new();
            for _ in 0..count {
                match wit_models::prepare(&model) {
                    Ok(preparation) => kept.push(preparation),
                    Err(error) => *refusals.entry(Error::from(error).kind().to_string()).or_default() += 1,
                }
            }
            json!({ "opened": kept.len(), "refused": refusals })
        }
        other => return Err(format!("unknown attack {other:?}")),
    })
}

impl lantern_sdk::Pipeline for Hostile {
    fn run(args: Vec<String>) -> Result<String, String> {
        let (command, rest) = args.split_first().ok_or("usage: hostile ATTACK ...")?;
        attack(command, rest).map(|answer| answer.to_string())
    }
}

lantern_sdk::export!(Hostile);
