"""config.json contents of the MOVA release, per component (docs/checkpoint.md#configs-come-from-the-folder).

Used to build modules at release size on the meta device (key listings in tests/fixtures/keys/) and as the
template of the tiny checkpoint, which keeps every key and changes only the sizes. Values not confirmed from
the shipped files are the assumed ones (Wan2.1 VAE defaults, umT5-XXL config).
"""

from __future__ import annotations

import copy

WAN21_LATENTS_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]  # fmt: skip
WAN21_LATENTS_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]  # fmt: skip

_VIDEO_DIT = {
    "_class_name": "WanModel",
    "dim": 5120,
    "in_dim": 36,
    "ffn_dim": 13824,
    "out_dim": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "eps": 1e-6,
    "patch_size": [1, 2, 2],
    "num_heads": 40,
    "num_layers": 40,
    "has_image_input": False,
    "has_image_pos_emb": False,
    "has_ref_conv": False,
    "add_control_adapter": False,
    "seperated_timestep": False,
    "require_vae_embedding": True,
    "require_clip_embedding": False,
    "fuse_vae_embedding_in_latents": False,
}

_AUDIO_DIT = {
    "_class_name": "WanAudioModel",
    "dim": 1536,
    "in_dim": 128,
    "ffn_dim": 8960,
    "out_dim": 128,
    "text_dim": 4096,
    "freq_dim": 256,
    "eps": 1e-6,
    "patch_size": [1],
    "num_heads": 12,
    "num_layers": 30,
    "has_image_input": False,
    "require_vae_embedding": False,
    "require_clip_embedding": False,
    "vae_type": "dac",
}

_BRIDGE = {
    "_class_name": "DualTowerConditionalBridge",
    "visual_layers": 40,
    "audio_layers": 30,
    "visual_hidden_dim": 5120,
    "audio_hidden_dim": 1536,
    "audio_fps": 50.0,
    "head_dim": 128,
    "interaction_strategy": "full",
    "apply_cross_rope": True,
    "apply_first_frame_bias_in_rope": False,
    "trainable_condition_scale": False,
    "pooled_adaln": False,
}

_AUDIO_VAE = {
    "_class_name": "DAC",
    "encoder_dim": 128,
    "encoder_rates": [2, 3, 4, 5, 8],
    "latent_dim": 128,
    "decoder_dim": 2048,
    "decoder_rates": [8, 5, 4, 3, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 48000,
    "continuous": True,
    "use_weight_norm": False,
}

_VIDEO_VAE = {
    "_class_name": "AutoencoderKLWan",
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": WAN21_LATENTS_MEAN,
    "latents_std": WAN21_LATENTS_STD,
}

_TEXT_ENCODER = {
    "architectures": ["UMT5EncoderModel"],
    "classifier_dropout": 0.0,
    "d_ff": 10240,
    "d_kv": 64,
    "d_model": 4096,
    "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "umt5",
    "num_decoder_layers": 24,
    "num_heads": 64,
    "num_layers": 24,
    "pad_token_id": 0,
    "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32,
    "scalable_attention": True,
    "tie_word_embeddings": False,
    "tokenizer_class": "T5Tokenizer",
    "use_cache": True,
    "vocab_size": 256384,
}

_SCHEDULER = {
    "_class_name": "FlowMatchPairScheduler",
    "num_train_timesteps": 1000,
    "shift": 5.0,
    "sigma_max": 1.0,
    "sigma_min": 0.0029940119760479044,
    "inverse_timesteps": False,
    "extra_one_step": True,
    "reverse_sigmas": False,
    "exponential_shift": False,
    "exponential_shift_mu": None,
    "shift_terminal": None,
    "num_inference_steps": 100,
}

# Official save_pretrained form (docs/checkpoint.md#model_indexjson): components named by module path, never imported.
_MODEL_INDEX = {
    "_class_name": "MOVA",
    "_diffusers_version": "0.36.0",
    "audio_dit": ["mova.diffusion.models.wan_audio_dit", "WanAudioModel"],
    "audio_vae": ["mova.diffusion.models.dac_vae", "DAC"],
    "audio_vae_type": "dac",
    "boundary_ratio": 0.9,
    "dual_tower_bridge": ["mova.diffusion.models.interactionv2", "DualTowerConditionalBridge"],
    "scheduler": ["mova.diffusion.schedulers.flow_match_pair", "FlowMatchPairScheduler"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "video_dit": ["mova.diffusion.models.wan_video_dit", "WanModel"],
    "video_dit_2": ["mova.diffusion.models.wan_video_dit", "WanModel"],
    "video_vae": ["diffusers", "AutoencoderKLWan"],
}

_RELEASE = {
    "video_dit": _VIDEO_DIT,
    "video_dit_2": _VIDEO_DIT,
    "audio_dit": _AUDIO_DIT,
    "dual_tower_bridge": _BRIDGE,
    "audio_vae": _AUDIO_VAE,
    "video_vae": _VIDEO_VAE,
    "text_encoder": _TEXT_ENCODER,
    "scheduler": _SCHEDULER,
    "model_index": _MODEL_INDEX,
}


def release_config(folder: str) -> dict:
    """A fresh copy of the release config of a component folder name (or "model_index")."""
    if folder not in _RELEASE:
        raise KeyError(f"no release config for {folder!r} (known: {', '.join(_RELEASE)})")
    return copy.deepcopy(_RELEASE[folder])
