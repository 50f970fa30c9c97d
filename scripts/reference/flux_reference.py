"""Reference numbers for the FLUX.1 schnell family (tests/flux.rs).

Loads the tiny random FLUX repos the Rust writer makes (tests/support/tiny_flux.rs) with
diffusers and transformers, runs them on the inputs the Rust side wrote (token ids from
our tokenizers, initial latents from the host's seeded noise) and writes
tests/fixtures/flux_reference.json:

- T5 encoder hidden states (transformers `T5EncoderModel`, the encoder half of the
  whole encoder-decoder checkpoint);
- CLIP pooled text embedding (transformers `CLIPTextModel.pooler_output`, `text_model.*`
  of the whole CLIPModel checkpoint), with the prompt padded to 77 as diffusers'
  FluxPipeline pads it (checked equal to the unpadded run);
- one transformer forward (diffusers `FluxTransformer2DModel`, BFL names converted by
  diffusers' own `convert_flux_transformer_checkpoint_to_diffusers`, whose hard-coded
  width 3072 is replaced by the tiny one) on the reference encodings;
- one AE decode (diffusers `AutoencoderKL` via `convert_ldm_vae_checkpoint`, FLUX's
  scale 0.3611 and shift 0.1159);
- a whole 4-step run as FluxPipeline does it for schnell (pack 2x2, the schnell
  scheduler config, `FlowMatchEulerDiscreteScheduler` steps, unpack, unscale, decode),
  turned into u8 as the host does: clamp to [-1, 1], (x + 1) * 127.5, rounded down.

Usage:
    FLUX_TINY_DIR=/tmp/flux-tiny cargo test -p lantern --test flux -- --ignored write_tiny_repos
    /work/refvenv/bin/python scripts/reference/flux_reference.py /tmp/flux-tiny
"""

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.loaders import single_file_utils
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

FLUX = "black-forest-labs/FLUX.1-schnell"
T5 = "google/t5-v1_1-xxl"
CLIP_L = "openai/clip-vit-large-patch14"
AE_SCALE, AE_SHIFT = 0.3611, 0.1159

torch.set_grad_enabled(False)


def rounded(tensor):
    """A tensor as {shape, values}, values to 7 significant digits (f32 carries about 7)."""
    array = tensor.detach().to(torch.float32).numpy()
    return {"shape": list(array.shape), "values": [float(f"{v:.7g}") for v in array.reshape(-1)]}


def t5_encoder(folder):
    config = T5Config.from_pretrained(folder)
    model = T5EncoderModel(config).eval()
    missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    # The encoder's embeddings are the shared ones; the decoder and lm_head are not read.
    assert set(missing) <= {"encoder.embed_tokens.weight"}, missing
    assert all(k.startswith(("decoder.", "lm_head.")) for k in unexpected), unexpected
    return model


def clip_text(folder):
    weights = load_file(folder / "model.safetensors")
    embed = weights["text_model.embeddings.token_embedding.weight"]
    layers = len({k.split(".")[3] for k in weights if k.startswith("text_model.encoder.layers.")})
    config = CLIPTextConfig(
        vocab_size=embed.shape[0],
        hidden_size=embed.shape[1],
        intermediate_size=weights["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=embed.shape[1] // 64,  # CLIP ViT-L/14: heads of 64
        max_position_embeddings=weights["text_model.embeddings.position_embedding.weight"].shape[0],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=weights["text_projection.weight"].shape[0],
        # CLIP-L's config keeps the legacy eos_token_id 2: pool at the arg-max id.
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    model = CLIPTextModel(config).eval()
    # transformers 5's CLIPTextModel names its weights without the `text_model.` prefix
    # (from_pretrained renames them); strip it when the model's own names lack it.
    own = set(model.state_dict())
    prefix = "" if any(k.startswith("text_model.") for k in own) else "text_model."
    text = {k[len(prefix):]: v for k, v in weights.items() if k.startswith("text_model.")}
    missing, unexpected = model.load_state_dict(text, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model


def transformer(path, t5_width, clip_width):
    checkpoint = load_file(path)
    hidden, _ = checkpoint["img_in.weight"].shape
    head_dim = checkpoint["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0]
    # Counted before the conversion, which empties `checkpoint`.
    depth = len({k.split(".")[1] for k in checkpoint if k.startswith("double_blocks.")})
    single_depth = len({k.split(".")[1] for k in checkpoint if k.startswith("single_blocks.")})
    # diffusers' converter hard-codes FLUX's width 3072 to split fused q/k/v/mlp weights.
    source = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    assert "inner_dim = 3072" in source
    namespace = dict(vars(single_file_utils))
    exec(source.replace("inner_dim = 3072", f"inner_dim = {hidden}"), namespace)
    converted = namespace["convert_flux_transformer_checkpoint_to_diffusers"](checkpoint)
    first = head_dim // 8
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=depth,
        num_single_layers=single_depth,
        attention_head_dim=head_dim,
        num_attention_heads=hidden // head_dim,
        joint_attention_dim=t5_width,
        pooled_projection_dim=clip_width,
        guidance_embeds=False,
        axes_dims_rope=(first, (head_dim - first) // 2, (head_dim - first) // 2),
    ).eval()
    model.load_state_dict(converted, strict=True)
    return model


def autoencoder(path):
    checkpoint = load_file(path)
    levels = len({k.split(".")[2] for k in checkpoint if k.startswith("decoder.up.")})
    channels = [checkpoint[f"decoder.up.{level}.block.0.conv1.weight"].shape[0] for level in range(levels)]
    blocks = len({k.split(".")[4] for k in checkpoint if k.startswith("decoder.up.0.block.")}) - 1
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        block_out_channels=channels,
        layers_per_block=blocks,
        latent_channels=checkpoint["decoder.conv_in.weight"].shape[1],
        norm_num_groups=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=AE_SCALE,
        shift_factor=AE_SHIFT,
    )
    model = AutoencoderKL(**config).eval()
    model.load_state_dict(single_file_utils.convert_ldm_vae_checkpoint(checkpoint, config), strict=True)
    return model


def pack(latents):
    """FluxPipeline._pack_latents and _prepare_latent_image_ids."""
    b, c, h, w = latents.shape
    packed = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return packed, ids.reshape(-1, 3)


def unpack(packed, h, w):
    b, _, c4 = packed.shape
    return packed.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def velocity(model, packed, img_ids, txt, pooled, sigma):
    return model(
        hidden_states=packed,
        encoder_hidden_states=txt,
        pooled_projections=pooled,
        timestep=torch.tensor([sigma], dtype=torch.float32),
        img_ids=img_ids,
        txt_ids=torch.zeros(txt.shape[1], 3),
        guidance=None,
        return_dict=False,
    )[0]


def decode(vae, latents):
    return vae.decode(latents / AE_SCALE + AE_SHIFT, return_dict=False)[0]


def main():
    root = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "tests/fixtures/flux_reference.json"
    inputs = json.loads((root / "inputs.json").read_text())
    repos = {repo: Path(folder) for repo, folder in inputs["repos"].items()}

    t5 = t5_encoder(repos[T5])
    t5_ids = torch.tensor([inputs["t5_ids"]])
    txt = t5(input_ids=t5_ids).last_hidden_state

    clip = clip_text(repos[CLIP_L])
    clip_ids = inputs["clip_ids"]
    eos = clip_ids[-1]
    pooled = clip(input_ids=torch.tensor([clip_ids + [eos] * (77 - len(clip_ids))])).pooler_output
    unpadded = clip(input_ids=torch.tensor([clip_ids])).pooler_output
    assert torch.allclose(pooled, unpadded, atol=1e-6), "padding after the end-of-text token must not matter"

    model = transformer(repos[FLUX] / "flux1-schnell.safetensors", txt.shape[-1], pooled.shape[-1])
    case = inputs["transformer"]
    side = case["side"] // 8
    latents = torch.tensor(case["latents"]).reshape(1, 16, side, side)
    packed, img_ids = pack(latents)
    forward = velocity(model, packed, img_ids, txt, pooled, case["sigma"])

    vae = autoencoder(repos[FLUX] / "ae.safetensors")
    case = inputs["decoder"]
    side = case["side"] // 8
    decoded = decode(vae, torch.tensor(case["latents"]).reshape(1, 16, side, side))

    # The whole run, as FluxPipeline runs schnell (its scheduler_config.json).
    run = inputs["run"]
    side, steps = run["side"] // 8, run["steps"]
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False,
        base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
    )
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device="cpu")
    assert np.allclose(scheduler.sigmas.numpy(), np.linspace(1.0, 0.0, steps + 1)), scheduler.sigmas
    packed, img_ids = pack(torch.tensor(run["latents"]).reshape(1, 16, side, side))
    for t in scheduler.timesteps:
        v = velocity(model, packed, img_ids, txt, pooled, float(t) / 1000)
        packed = scheduler.step(v, t, packed, return_dict=False)[0]
    image = decode(vae, unpack(packed, side, side))[0]
    rgb = torch.floor((image.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(1, 2, 0).reshape(-1)

    fixture = {
        "about": "scripts/reference/flux_reference.py: diffusers/transformers on the tiny FLUX repos of tests/support/tiny_flux.rs",
        "prompt": inputs["prompt"],
        "t5_ids": inputs["t5_ids"],
        "clip_ids": clip_ids,
        "t5_hidden": rounded(txt),
        "clip_pooled": rounded(pooled),
        "transformer": {"seed": inputs["transformer"]["seed"], "sigma": inputs["transformer"]["sigma"], "velocity": rounded(forward)},
        "decoder": {"seed": inputs["decoder"]["seed"], "image": rounded(decoded)},
        "run": {"seed": run["seed"], "steps": steps, "width": run["side"], "height": run["side"], "rgb": rgb.tolist()},
    }
    out.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes); image spans {int(rgb.min())}..{int(rgb.max())}")


if __name__ == "__main__":
    main()
