"""Decoder service entry point: `python -m services.decoder.main [--flag value ...]` (flags: see settings.py)."""

from __future__ import annotations

import sys

from movakit.runtime.stage_service import load_models, run_stage_service
from services.decoder.servicer import COMPONENTS, DecodeHandler, add_servicers
from services.decoder.settings import DecoderSettings


def main(argv: list[str] | None = None) -> int:
    settings = DecoderSettings.load(sys.argv[1:] if argv is None else argv)
    return run_stage_service(settings, "decoder",
                             lambda store: DecodeHandler(load_models(settings, COMPONENTS), store), add_servicers)


if __name__ == "__main__":
    sys.exit(main())
