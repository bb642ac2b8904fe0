"""Plain re-statement of the official `MOVA.__call__` data flow around the networks (tests only).

Written from reading OpenMOSS/MOVA `mova/diffusion/pipelines/pipeline_mova.py` @ 42fe65d and the script's
`crop_and_resize` + `mova/utils/data.py` (see NOTES.md); nothing copied. The networks are black boxes loaded
straight from the checkpoint folders with the library classes where one exists:

- tokenizer: `tokenizers.Tokenizer.from_file(tokenizer/tokenizer.json)` (what transformers 4's T5TokenizerFast
  wraps), truncation and padding to 512 set on it here;
- text encoder: `transformers.UMT5EncoderModel.from_pretrained(text_encoder/)`;
- video VAE: `diffusers.AutoencoderKLWan.from_pretrained(video_vae/)`, `diffusers.VideoProcessor` for pre/post;
- DiTs, bridge, DAC: movakit's modules (there is no library class), filled by `load_state_dict(strict=True)` from
  the safetensors files read here; the joint forward is `movakit.models.dual_tower.dual_tower_forward` at B = 1;
- timesteps / σ lookup: `sampler_reference.flow_match_grid` and `sigma_of` (checked in test_exactness_scheduler.py).

Everything runs float32 on the CPU.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import ftfy
import numpy as np
import torch
from safetensors.torch import load_file

import first_frame_reference as ffr
from sampler_reference import flow_match_grid, sigma_of

MAX_SEQUENCE_LENGTH = 512


@dataclass
class ReferenceModels:
    tokenizer: object  # tokenizers.Tokenizer
    pad_id: int
    text_encoder: torch.nn.Module
    video_vae: torch.nn.Module  # diffusers AutoencoderKLWan
    video_dit: torch.nn.Module
    video_dit_2: torch.nn.Module
    audio_dit: torch.nn.Module
    bridge: torch.nn.Module
    dac: torch.nn.Module
    scheduler_config: dict
    boundary_ratio: float


@dataclass
class ReferenceOutput:
    context: torch.Tensor  # (1, 512, text_dim)
    negative_context: torch.Tensor
    condition: torch.Tensor  # y: (1, 4 + z_dim, T, h, w)
    video_noise: torch.Tensor
    audio_noise: torch.Tensor
    video_latents: torch.Tensor  # normalised, as the loop ends it
    audio_latents: torch.Tensor
    experts: list[int]  # 0 = video_dit, 1 = video_dit_2, per step
    frames: np.ndarray  # (N, H, W, 3) uint8, from the PIL frames of postprocess_video
    audio: np.ndarray  # (hop * L,) float32, the DAC output as the script hands it to the WAV writer
    audio_num_samples: int  # int(sample_rate * N / fps)


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        weight_map = json.loads(indexes[0].read_text())["weight_map"]
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            out.update(load_file(str(folder / shard)))
        return out
    (single,) = sorted(folder.glob("*.safetensors"))
    return load_file(str(single))


def _config(folder: Path, name: str = "config.json") -> dict:
    return {k: v for k, v in json.loads((folder / name).read_text()).items() if not k.startswith("_")}


def _movakit_module(folder: Path, config_cls, module_cls) -> torch.nn.Module:
    module = module_cls(config_cls.from_dict(_config(folder)))
    module.load_state_dict(_read_state_dict(folder), strict=True)
    return module.to(torch.float32).eval()


def load_reference_models(root: str | Path) -> ReferenceModels:
    from diffusers import AutoencoderKLWan
    from tokenizers import Tokenizer
    from transformers import UMT5EncoderModel

    from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
    from movakit.models.audio_vae import DacVAE, DacVAEConfig
    from movakit.models.bridge import BridgeConfig, DualTowerBridge
    from movakit.models.video_dit import VideoDiT, VideoDiTConfig

    root = Path(root)
    tokenizer = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json"))
    pad_token = json.loads((root / "tokenizer" / "special_tokens_map.json").read_text())["pad_token"]
    pad_token = pad_token if isinstance(pad_token, str) else pad_token["content"]
    pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_truncation(max_length=MAX_SEQUENCE_LENGTH)
    tokenizer.enable_padding(length=MAX_SEQUENCE_LENGTH, pad_id=pad_id, pad_token=pad_token)
    index = json.loads((root / "model_index.json").read_text())
    return ReferenceModels(
        tokenizer=tokenizer,
        pad_id=pad_id,
        text_encoder=UMT5EncoderModel.from_pretrained(str(root / "text_encoder"), dtype=torch.float32).eval(),
        video_vae=AutoencoderKLWan.from_pretrained(str(root / "video_vae"), torch_dtype=torch.float32).eval(),
        video_dit=_movakit_module(root / "video_dit", VideoDiTConfig, VideoDiT),
        video_dit_2=_movakit_module(root / "video_dit_2", VideoDiTConfig, VideoDiT),
        audio_dit=_movakit_module(root / "audio_dit", AudioDiTConfig, AudioDiT),
        bridge=_movakit_module(root / "dual_tower_bridge", BridgeConfig, DualTowerBridge),
        dac=_movakit_module(root / "audio_vae", DacVAEConfig, DacVAE),
        scheduler_config=_config(root / "scheduler", "scheduler_config.json"),
        boundary_ratio=float(index.get("boundary_ratio", 0.9)),
    )


# --- text (official basic_clean / whitespace_clean / prompt_clean, _get_t5_prompt_embeds) ---

def prompt_clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


@torch.no_grad()  # as the official __call__; grad mode can change the CPU attention kernel's rounding
def t5_prompt_embeds(m: ReferenceModels, prompt: str) -> torch.Tensor:
    enc = m.tokenizer.encode(prompt_clean(prompt), add_special_tokens=True)
    ids = torch.tensor([enc.ids], dtype=torch.long)
    mask = torch.tensor([enc.attention_mask], dtype=torch.long)
    seq_len = int(mask.gt(0).sum())
    hidden = m.text_encoder(ids, mask).last_hidden_state.to(m.text_encoder.dtype)[0]
    kept = hidden[:seq_len]
    return torch.cat([kept, kept.new_zeros(MAX_SEQUENCE_LENGTH - seq_len, kept.shape[1])]).unsqueeze(0)


# --- image conditioning (official prepare_latents, last_image None, batch 1) ---

def prepare_condition(m: ReferenceModels, image: torch.Tensor, num_frames: int, height: int, width: int,
                      ) -> torch.Tensor:
    cfg = m.video_vae.config
    ts, ss = cfg.scale_factor_temporal, cfg.scale_factor_spatial
    lh, lw = height // ss, width // ss
    image = image.unsqueeze(2)  # (1, 3, 1, H, W)
    clip = torch.cat([image, image.new_zeros(1, 3, num_frames - 1, height, width)], dim=2)
    latent = m.video_vae.encode(clip.to(m.video_vae.dtype)).latent_dist.mode().to(torch.float32)
    mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, cfg.z_dim, 1, 1, 1)
    inv_std = (1.0 / torch.tensor(cfg.latents_std, dtype=torch.float32)).view(1, cfg.z_dim, 1, 1, 1)
    latent = (latent - mean) * inv_std

    mask = torch.ones(1, 1, num_frames, lh, lw)
    mask[:, :, list(range(1, num_frames))] = 0
    first = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=ts)
    mask = torch.concat([first, mask[:, :, 1:, :]], dim=2)
    mask = mask.view(1, -1, ts, lh, lw).transpose(1, 2)
    return torch.concat([mask, latent], dim=1)


def preprocess_image(image, height: int, width: int) -> torch.Tensor:
    """The script's crop_and_resize, then the pipeline's VideoProcessor.preprocess -> (1, 3, H, W) in [-1, 1]."""
    from diffusers.video_processor import VideoProcessor

    cropped = ffr.crop_and_resize(image.convert("RGB"), height, width)
    return VideoProcessor(vae_scale_factor=8).preprocess(cropped, height=height, width=width).to(torch.float32)


@torch.no_grad()
def reference_call(m: ReferenceModels, *, prompt: str, image, negative_prompt: str, seed: int, height: int,
                   width: int, num_frames: int, video_fps: float, num_inference_steps: int,
                   cfg_scale: float) -> ReferenceOutput:
    from diffusers.utils.torch_utils import randn_tensor
    from diffusers.video_processor import VideoProcessor

    from movakit.models.dual_tower import dual_tower_forward

    vcfg = m.video_vae.config
    # 1. check_inputs
    div = vcfg.scale_factor_spatial * 2
    if height % div or width % div:
        raise ValueError(f"height/width not divisible by {div}")
    if num_frames % vcfg.scale_factor_temporal != 1:
        raise ValueError("num_frames - 1 not divisible by the temporal scale")
    audio_num_samples = int(m.dac.sample_rate * num_frames / video_fps)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))

    # 4. timesteps: set_timesteps(n, shift=sigma_shift=5.0); pairs = two identical columns
    sc = m.scheduler_config
    kw = dict(shift=5.0, sigma_min=sc["sigma_min"], num_train_timesteps=sc["num_train_timesteps"])
    timesteps, _ = flow_match_grid(num_inference_steps, **kw)
    grid_t, grid_s = flow_match_grid(sc["num_train_timesteps"], shift=sc["shift"], sigma_min=sc["sigma_min"],
                                     num_train_timesteps=sc["num_train_timesteps"])

    # 5. latents: video noise, then the VAE encode of the clip, then audio noise (one generator)
    pixels = preprocess_image(image, height, width)
    t_lat = (num_frames - 1) // vcfg.scale_factor_temporal + 1
    shape = (1, vcfg.z_dim, t_lat, height // vcfg.scale_factor_spatial, width // vcfg.scale_factor_spatial)
    latents = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
    video_noise = latents.clone()
    condition = prepare_condition(m, pixels, num_frames, height, width)
    a_len = (audio_num_samples - 1) // int(m.dac.hop_length) + 1
    audio_latents = randn_tensor((1, m.dac.latent_dim, a_len), generator=generator, device=torch.device("cpu"),
                                 dtype=torch.float32)
    audio_noise = audio_latents.clone()

    context = t5_prompt_embeds(m, prompt)
    negative_context = t5_prompt_embeds(m, negative_prompt)

    def step_forward(dit, x_in, ctx, t):
        v, a = dual_tower_forward(dit, m.audio_dit, m.bridge, video_x=x_in, audio_x=audio_latents, context=ctx,
                                  t_video=t, t_audio=t, video_fps=video_fps)
        return v.float(), a.float()

    # diffusion steps (sticky switch, CFG as two B=1 forwards, Euler with σ lookup)
    boundary = m.boundary_ratio * sc["num_train_timesteps"]
    dit, switched, experts = m.video_dit, False, []
    n = len(timesteps)
    for i in range(n):
        t = timesteps[i]
        if not switched and t.item() < boundary:
            dit, switched = m.video_dit_2, True
        experts.append(1 if switched else 0)
        x_in = torch.cat([latents, condition], dim=1)
        tt = t.unsqueeze(0).to(torch.float32)
        pv, pa = step_forward(dit, x_in, context, tt)
        if cfg_scale == 1.0:
            vv, va = pv, pa
        else:
            nv, na = step_forward(dit, x_in, negative_context, tt)
            vv = nv + cfg_scale * (pv - nv)
            va = na + cfg_scale * (pa - na)
        s_from = sigma_of(t, grid_t, grid_s)
        s_to = sigma_of(timesteps[i + 1], grid_t, grid_s) if i + 1 < n else torch.tensor(0.0)
        latents = latents + vv * (s_to - s_from)
        audio_latents = audio_latents + va * (s_to - s_from)

    # decode video: denormalise, VAE decode, postprocess_video(output_type="pil")
    mean = torch.tensor(vcfg.latents_mean, dtype=latents.dtype).view(1, vcfg.z_dim, 1, 1, 1)
    std = torch.tensor(vcfg.latents_std, dtype=latents.dtype).view(1, vcfg.z_dim, 1, 1, 1)
    video = m.video_vae.decode(latents * std + mean).sample
    pil_frames = VideoProcessor(vae_scale_factor=vcfg.scale_factor_spatial).postprocess_video(video, output_type="pil")
    frames = np.stack([np.array(f) for f in pil_frames[0]])
    # decode audio; the script saves audio.cpu().squeeze() untrimmed at audio_vae.sample_rate
    audio = m.dac.decode(audio_latents).cpu().squeeze().numpy()
    return ReferenceOutput(
        context=context, negative_context=negative_context, condition=condition, video_noise=video_noise,
        audio_noise=audio_noise, video_latents=latents, audio_latents=audio_latents, experts=experts,
        frames=frames, audio=audio, audio_num_samples=audio_num_samples,
    )


def official_wav_pcm(audio: np.ndarray) -> np.ndarray:
    """mova/utils/data.py _write_wav_wave for a float mono signal: clip to [-1, 1], ×32767.0, astype int16."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
