"""Key + shape listings of components built at release size on the meta device (no memory, no weights).

`python -m movakit.testing.keys tests/fixtures/keys` rewrites the committed listings; tests compare against them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

from movakit.loading.strict import build_on_meta
from movakit.loading.release_configs import release_config
from movakit.loading.demo import build_component, stored_tensors

LISTED = ("audio_vae", "video_vae", "text_encoder")


def key_listing(module: nn.Module) -> list[str]:
    """One line per stored tensor, `<key>\t[d0, d1, ...]`, in state-dict order; tied tensors listed once."""
    return [f"{key}\t{list(tensor.shape)}" for key, tensor in stored_tensors(module).items()]


def release_module_on_meta(folder: str) -> nn.Module:
    """The module of a component folder at release size, parameters on meta."""
    if folder not in LISTED:
        raise KeyError(f"no key listing for {folder!r} (listed: {', '.join(LISTED)})")
    return build_on_meta(lambda: build_component(folder, release_config(folder)))


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("tests/fixtures/keys")
    out.mkdir(parents=True, exist_ok=True)
    for folder in LISTED:
        (out / f"{folder}.txt").write_text("\n".join(key_listing(release_module_on_meta(folder))) + "\n")
        print(f"wrote {out / f'{folder}.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
