"""Key + shape listings of components built at release size on the meta device (no memory, no weights).

`python -m movakit.testing.keys tests/fixtures/keys` rewrites the committed listings; tests compare against them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

from movakit.loading.strict import build_on_meta
from movakit.testing.release_configs import release_config

LISTED = ("audio_vae", "video_vae", "text_encoder")


def key_listing(module: nn.Module) -> list[str]:
    """One line per stored tensor, `<key>\t[d0, d1, ...]`, in state-dict order; tied tensors listed once."""
    lines: list[str] = []
    seen: set[int] = set()
    for key, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        lines.append(f"{key}\t{list(tensor.shape)}")
    return lines


def release_module_on_meta(folder: str) -> nn.Module:
    """The module of a component folder at release size, parameters on meta."""
    body = {k: v for k, v in release_config(folder).items() if not k.startswith("_")}
    if folder == "audio_vae":
        from movakit.models.audio_vae import DacVAE, DacVAEConfig

        return build_on_meta(lambda: DacVAE(DacVAEConfig.from_dict(body)))
    if folder == "video_vae":
        from diffusers import AutoencoderKLWan

        return build_on_meta(lambda: AutoencoderKLWan.from_config(body))
    if folder == "text_encoder":
        from transformers import UMT5Config, UMT5EncoderModel

        return build_on_meta(lambda: UMT5EncoderModel(UMT5Config.from_dict(body)))
    raise KeyError(f"no key listing for {folder!r} (listed: {', '.join(LISTED)})")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("tests/fixtures/keys")
    out.mkdir(parents=True, exist_ok=True)
    for folder in LISTED:
        (out / f"{folder}.txt").write_text("\n".join(key_listing(release_module_on_meta(folder))) + "\n")
        print(f"wrote {out / f'{folder}.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
