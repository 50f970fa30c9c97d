"""Reference numbers for the SD 3.5 family test (tests/sd35.rs).

Runs diffusers' StableDiffusion3Pipeline (SD3Transformer2DModel, AutoencoderKL,
FlowMatchEulerDiscreteScheduler with shift 3.0) and transformers' CLIPTextModelWithProjection
and T5EncoderModel on the tiny random checkpoint that tests/support/tiny_sd35.rs writes,
converting the single-file checkpoint with diffusers' own converters, and writes
tests/fixtures/sd35_reference.json.

    SD35_REFERENCE_DIR=/tmp/sd35 cargo test -p lantern --test sd35 -- --ignored write_reference_inputs
    /work/refvenv/bin/python scripts/reference/sd35_reference.py /tmp/sd35

Follows Stability's sd3_infer.py on T5's length (77 tokens, passed as
max_sequence_length), diffusers everywhere else. The prompt's token ids come from
transformers' tokenizers (padding to 77 with CLIP-L's <|endoftext|>, CLIP-G's "!", T5's
<pad>; truncation on), so the test also checks the host's tokenization.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast, T5Config,
                          T5EncoderModel)
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, convert_sd3_transformer_checkpoint_to_diffusers

torch.set_grad_enabled(False)
SAMPLE_STEP = 37  # the fixture keeps every 37th value of the large tensors
SD = "stabilityai/stable-diffusion-3.5-large-turbo"


def f32(state):
    return {k: v.float() for k, v in state.items()}


def load_strict(model, state, allowed_missing=()):
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in allowed_missing]
    assert not missing and not unexpected, (missing, unexpected)


def clip_model(path, eos, act, identity_projection):
    state = f32(load_file(path))
    width = state["text_model.embeddings.token_embedding.weight"].shape[1]
    config = CLIPTextConfig(
        vocab_size=state["text_model.embeddings.token_embedding.weight"].shape[0], hidden_size=width,
        intermediate_size=state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=2, num_attention_heads=width // 64, max_position_embeddings=77,
        hidden_act=act, layer_norm_eps=1e-5, projection_dim=width, bos_token_id=eos - 1, eos_token_id=eos,
        pad_token_id=eos)
    model = CLIPTextModelWithProjection(config).eval()
    if identity_projection:
        # diffusers' SD 3 single-file loader gives CLIP-L an identity projection.
        state["text_projection.weight"] = torch.eye(width)
    load_strict(model, state, allowed_missing=("text_model.embeddings.position_ids",))
    return model


def main(root):
    inputs = json.load(open(os.path.join(root, "inputs.json")))
    repos = inputs["repos"]
    sd = repos[SD]

    def tokenizer(repo, file, pad, eos):
        t = PreTrainedTokenizerFast(tokenizer_file=os.path.join(repos[repo], file), pad_token=pad, eos_token=eos)
        t.model_max_length = 77
        return t

    tok_l = tokenizer("openai/clip-vit-large-patch14", "tokenizer.json", "<|endoftext|>", "<|endoftext|>")
    tok_g = tokenizer("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "tokenizer.json", "!", "<|endoftext|>")
    tok_t5 = tokenizer("lmz/mt5-tokenizers", "t5-v1_1-xxl.tokenizer.json", "<pad>", "</s>")
    eos = tok_l.convert_tokens_to_ids("<|endoftext|>")

    def tokens(prompt):
        out, cut = {}, 0
        for name, tok in [("clip_l", tok_l), ("clip_g", tok_g), ("t5", tok_t5)]:
            out[name] = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
            cut = max(cut, len(tok(prompt).input_ids) - 77)
        out["truncated"] = cut
        return out

    clip_l = clip_model(os.path.join(sd, "text_encoders/clip_l.safetensors"), eos, "quick_gelu", True)
    clip_g = clip_model(os.path.join(sd, "text_encoders/clip_g.safetensors"), eos, "gelu", False)
    t5_config = T5Config(**json.load(open(os.path.join(repos["google/t5-v1_1-xxl"], "config.json"))))
    t5 = T5EncoderModel(t5_config).eval()
    load_strict(t5, f32(load_file(os.path.join(sd, "text_encoders/t5xxl_fp16.safetensors"))),
                allowed_missing=("encoder.embed_tokens.weight",))
    t5.encoder.embed_tokens = t5.shared

    checkpoint = f32(load_file(os.path.join(sd, "sd3.5_large_turbo.safetensors")))
    depth = 1 + max(int(k.split(".")[3]) for k in checkpoint if ".joint_blocks." in k)
    hidden = 64 * depth
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=depth, attention_head_dim=64,
        num_attention_heads=depth, joint_attention_dim=checkpoint["model.diffusion_model.context_embedder.weight"].shape[1],
        caption_projection_dim=hidden, pooled_projection_dim=checkpoint["model.diffusion_model.y_embedder.mlp.0.weight"].shape[1],
        out_channels=16, pos_embed_max_size=int(checkpoint["model.diffusion_model.pos_embed"].shape[1] ** 0.5),
        qk_norm="rms_norm").eval()
    load_strict(transformer, convert_sd3_transformer_checkpoint_to_diffusers(
        {k: v for k, v in checkpoint.items() if k.startswith("model.diffusion_model.")}))
    vae_config = dict(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 32, 64, 64], layers_per_block=2, latent_channels=16, norm_num_groups=32,
        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    vae = AutoencoderKL(**vae_config).eval()
    vae_state = convert_ldm_vae_checkpoint({k: v for k, v in checkpoint.items() if k.startswith("first_stage_model.")}, vae_config)
    vae_state = {k: (v.reshape(v.shape[:2]) if v.ndim == 4 and ".attentions." in k else v) for k, v in vae_state.items()}
    load_strict(vae, vae_state)

    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip_l, tokenizer=tok_l, text_encoder_2=clip_g, tokenizer_2=tok_g,
        text_encoder_3=t5, tokenizer_3=tok_t5)

    prompt, side = inputs["prompt"], inputs["side"]
    context, _, y, _ = pipe.encode_prompt(prompt, prompt, prompt, do_classifier_free_guidance=False, max_sequence_length=77)
    latents = torch.tensor(inputs["latents"], dtype=torch.float32).reshape(1, 16, side // 8, side // 8)

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    sigmas = scheduler.sigmas.tolist()
    velocities = []
    for sigma in [sigmas[0], sigmas[2]]:
        t = torch.tensor([sigma * 1000.0], dtype=torch.float32)
        v = transformer(hidden_states=latents, timestep=t, encoder_hidden_states=context, pooled_projections=y).sample
        velocities.append({"sigma": sigma, "velocity": v.flatten().tolist()})

    def decode(x):
        return vae.decode(x / vae.config.scaling_factor + vae.config.shift_factor).sample

    def to_u8(image):
        # As the host's tensor_to_png (and candle's examples): clamp, map to 0..=255, round down.
        return ((image.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)[0].permute(1, 2, 0).flatten().tolist()

    def run(**kwargs):
        final = pipe(prompt=prompt, height=side, width=side, num_inference_steps=4, latents=latents.clone(),
                     max_sequence_length=77, output_type="latent", **kwargs).images
        return to_u8(decode(final))

    image = run(guidance_scale=1.0)
    guided = run(guidance_scale=3.0, negative_prompt=inputs["negative_prompt"])
    decoded = decode(latents)
    pixels = torch.tensor(image, dtype=torch.float32)
    print(f"image: mean {pixels.mean():.1f}, std {pixels.std():.1f}, "
          f"clamped {((pixels == 0) | (pixels == 255)).float().mean():.2%}")

    fixture = {
        "about": "tests/sd35.rs reference: diffusers StableDiffusion3Pipeline + transformers on the tiny random "
                 "checkpoint of tests/support/tiny_sd35.rs; written by scripts/reference/sd35_reference.py",
        "sample_step": SAMPLE_STEP,
        "sigmas": sigmas,
        "tokens": {"prompt": tokens(prompt), "long": tokens(inputs["long_prompt"])},
        "latents": inputs["latents"],
        "context": context.flatten()[::SAMPLE_STEP].tolist(),
        "y": y.flatten().tolist(),
        "velocities": velocities,
        "vae_decode": decoded.flatten()[::SAMPLE_STEP].tolist(),
        "image": image,
        "guided_image": guided,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/fixtures/sd35_reference.json")
    with open(out, "w") as f:
        json.dump(fixture, f)
    print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out)} bytes); sigmas {sigmas}")


if __name__ == "__main__":
    main(sys.argv[1])
