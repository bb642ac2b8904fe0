"""LoRA adapters at inference: the official formats, our stored form, the official target layers and the math.

docs/lora.md walks through it. Modules: targets (which layers, base identity), adapter (LoraAdapter, checks,
unmerged hooks and merge), official (the two official save formats), store (safetensors + manifest),
base_model (checks against a checkpoint without loading weights), registry (adapters/<tenant>/<name>/ in S3),
cache (the denoiser's bounded LRU). The adapter name rule is movakit.request's (LORA_NAME).
"""
