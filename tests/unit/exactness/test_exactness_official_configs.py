"""config.json as the official classes write it (diffusers register_to_config: every constructor argument,
plus _class_name/_diffusers_version) must load. Argument lists read from the official constructors:
WanModel (mova/diffusion/models/wan_video_dit.py), WanAudioModel (wan_audio_dit.py),
DualTowerConditionalBridge (interactionv2.py); see tests/reference/NOTES.md."""

from __future__ import annotations

import tiny_weights as tw

from movakit.models.audio_dit import AudioDiTConfig
from movakit.models.bridge import BridgeConfig
from movakit.models.video_dit import VideoDiTConfig

WAN_MODEL_ARGS = ("dim", "in_dim", "ffn_dim", "out_dim", "text_dim", "freq_dim", "eps", "patch_size", "num_heads",
                  "num_layers", "has_image_input", "has_image_pos_emb", "has_ref_conv", "add_control_adapter",
                  "in_dim_control_adapter", "seperated_timestep", "require_vae_embedding", "require_clip_embedding",
                  "fuse_vae_embedding_in_latents")
WAN_AUDIO_ARGS = WAN_MODEL_ARGS + ("vae_type",)
BRIDGE_ARGS = ("visual_layers", "audio_layers", "visual_hidden_dim", "audio_hidden_dim", "audio_fps", "head_dim",
               "interaction_strategy", "apply_cross_rope", "apply_first_frame_bias_in_rope",
               "trainable_condition_scale", "pooled_adaln")
DIFFUSERS_META = {"_diffusers_version": "0.36.0"}


def _full(cfg: dict, args: tuple[str, ...], class_name: str) -> dict:
    full = {"_class_name": class_name, **DIFFUSERS_META, "in_dim_control_adapter": 24, "has_image_pos_emb": False,
            "has_ref_conv": False, "add_control_adapter": False, "seperated_timestep": False,
            "fuse_vae_embedding_in_latents": False, **cfg}
    assert set(k for k in full if not k.startswith("_")) == set(args)
    return full


def test_video_config_with_every_official_constructor_argument_loads():
    cfg = _full(tw.video_dit_config(), WAN_MODEL_ARGS, "WanModel")
    c = VideoDiTConfig.from_dict(cfg)
    assert (c.dim, c.num_heads, tuple(c.patch_size)) == (48, 2, (1, 2, 2))


def test_audio_config_with_every_official_constructor_argument_loads():
    cfg = _full(tw.audio_dit_config(), WAN_AUDIO_ARGS, "WanAudioModel")
    c = AudioDiTConfig.from_dict(cfg)
    assert (c.dim, c.vae_type, tuple(c.patch_size)) == (72, "dac", (1,))


def test_bridge_config_with_every_official_constructor_argument_loads():
    cfg = {"_class_name": "DualTowerConditionalBridge", **DIFFUSERS_META,
           **tw.bridge_config(tw.video_dit_config(), tw.audio_dit_config())}
    assert set(k for k in cfg if not k.startswith("_")) == set(BRIDGE_ARGS)
    c = BridgeConfig.from_dict(cfg)
    assert c.num_interaction_layers == 2
