//! image-workflow: text → image → CLIP scores → LLaVA description, saved to a granted
//! directory as `image.png` and `report.json`.
//!
//! ```text
//! lantern run image_workflow.wasm --dir-rw out::/out \
//!   --allow-model black-forest-labs/FLUX.1-schnell --allow-model openai/clip-vit-base-patch32 \
//!   --allow-model llava-hf/llava-1.5-7b-hf -- "a red cat on a sofa" --alt "a dog" --alt "a bowl of fruit"
//! ```
//! Options: `--out DIR` (default /out), `--image-model K`, `--clip-model K`, `--vlm-model K`,
//! `--alt CAPTION` (repeatable), `--seed S`, `--size PIXELS`, `--steps N`, `--question TEXT`.

use lantern_sdk::generation::Sampling;
use lantern_sdk::images::ImageParams;
use lantern_sdk::{images, models, vision};
use serde_json::json;

struct ImageWorkflow;

struct Options {
    prompt: String,
    alternatives: Vec<String>,
    out: String,
    image_model: String,
    clip_model: String,
    vlm_model: String,
    question: String,
    params: ImageParams,
}

fn options(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        prompt: String::new(),
        alternatives: Vec::new(),
        out: "/out".into(),
        image_model: "stabilityai/stable-diffusion-3.5-large-turbo".into(),
        clip_model: "openai/clip-vit-base-patch32".into(),
        vlm_model: "llava-hf/llava-1.5-7b-hf".into(),
        question: "Describe this image in one sentence.".into(),
        params: ImageParams::default(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|_| format!("{text:?} is not a number"));
        match arg.as_str() {
            "--alt" => o.alternatives.push(value()?),
            "--out" => o.out = value()?,
            "--image-model" => o.image_model = value()?,
            "--clip-model" => o.clip_model = value()?,
            "--vlm-model" => o.vlm_model = value()?,
            "--question" => o.question = value()?,
            "--seed" => o.params.seed = Some(number(value()?)?),
            "--steps" => o.params.steps = Some(number(value()?)? as u32),
            "--size" => {
                let size = number(value()?)? as u32;
                (o.params.width, o.params.height) = (Some(size), Some(size));
            }
            _ if o.prompt.is_empty() => o.prompt = arg,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if o.prompt.is_empty() {
        return Err("usage: image-workflow PROMPT [--alt CAPTION]... [--out DIR] [--seed S] [--size PX] [--steps N]".into());
    }
    Ok(o)
}

/// Downloads and loads a model, showing progress on stderr.
fn prepare(model: &str) -> Result<(), String> {
    models::prepare(model, |event| {
        if let models::PreparationEvent::Downloading(p) = event {
            eprint!("\r{model}: {}/{} files, {} MB   ", p.files_done, p.files_total, p.bytes_done >> 20);
        }
    })
    .map_err(|e| format!("{model}: {e}"))?;
    eprintln!("\r{model}: ready{:30}", "");
    Ok(())
}

impl lantern_sdk::Pipeline for ImageWorkflow {
    fn run(args: Vec<String>) -> Result<String, String> {
        let o = options(args)?;
        for model in [&o.image_model, &o.clip_model, &o.vlm_model] {
            prepare(model)?;
        }
        let generation = images::generate(&o.image_model, &o.prompt, &o.params).map_err(|e| e.to_string())?;
        let image = generation.wait(|step, total| eprintln!("step {step}/{total}")).map_err(|e| e.to_string())?;
        let png_path = format!("{}/image.png", o.out.trim_end_matches('/'));
        std::fs::write(&png_path, &image.png).map_err(|e| format!("writing {png_path}: {e}"))?;

        let captions: Vec<String> = std::iter::once(o.prompt.clone()).chain(o.alternatives.iter().cloned()).collect();
        let image_vector = vision::embed_images(&o.clip_model, std::slice::from_ref(&image.png)).map_err(|e| e.to_string())?;
        let caption_vectors = vision::embed_texts(&o.clip_model, &captions).map_err(|e| e.to_string())?;
        let scores: Vec<_> = captions
            .iter()
            .zip(&caption_vectors)
            .map(|(caption, vector)| json!({ "caption": caption, "clip_score": vision::similarity(&image_vector[0], vector) }))
            .collect();

        let params = Sampling { max_tokens: Some(64), temperature: Some(0.0), ..Sampling::default() };
        let mut answer = vision::ask(&o.vlm_model, &image.png, &o.question, &params).map_err(|e| e.to_string())?;
        let description = answer.stream_to_stdout().map_err(|e| e.to_string())?;
        println!();

        let report = json!({
            "prompt": o.prompt, "image_model": o.image_model, "seed": image.seed, "width": image.width,
            "height": image.height, "truncated_tokens": image.truncated_tokens, "png": png_path,
            "clip_model": o.clip_model, "scores": scores, "vlm_model": o.vlm_model, "question": o.question,
            "description": description.trim(),
        });
        let report_path = format!("{}/report.json", o.out.trim_end_matches('/'));
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(&report_path, &text).map_err(|e| format!("writing {report_path}: {e}"))?;
        Ok(format!("wrote {png_path} and {report_path} (seed {})", image.seed))
    }
}

lantern_sdk::export!(ImageWorkflow);
