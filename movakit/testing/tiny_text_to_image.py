"""A tiny Stable Diffusion folder with RANDOM weights, built offline (no download): what the local first-frame
source (movakit/enhance/local_image.py) is tested with. Its images are noise.

`python -m movakit.testing.tiny_text_to_image DIR` writes one; `write_tiny_text_to_image(DIR)` from code.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

_SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _write_clip_vocab(folder: Path) -> None:
    """A character-level CLIP BPE vocabulary (no merges): every word becomes its letters."""
    symbols = [*string.ascii_lowercase, *string.digits, *".,!?'\"-"]
    tokens = [*symbols, *(s + "</w>" for s in symbols), *_SPECIAL]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def write_tiny_text_to_image(folder: Path, *, seed: int = 0) -> Path:
    """Saves a StableDiffusionPipeline (tiny UNet, VAE and CLIP text encoder from configs, DDIM scheduler) to
    `folder` with save_pretrained; returns the folder."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    vocab_dir = folder / "_vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    _write_clip_vocab(vocab_dir)
    tokenizer = CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"), model_max_length=16)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    for path in vocab_dir.iterdir():
        path.unlink()
    vocab_dir.rmdir()
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m movakit.testing.tiny_text_to_image DIR")
    print(f"wrote a tiny random-weight text-to-image pipeline to {write_tiny_text_to_image(Path(sys.argv[1]))}")
    print("WARNING: the weights are random; its images are noise.", file=sys.stderr)
