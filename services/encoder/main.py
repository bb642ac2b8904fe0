"""Encoder service entry point: `python -m services.encoder.main [--flag value ...]` (flags: see settings.py)."""

from __future__ import annotations

import sys

from movakit.runtime.stage_service import load_models, run_stage_service
from services.encoder.servicer import COMPONENTS, EncodeHandler, add_servicers
from services.encoder.settings import EncoderSettings


def main(argv: list[str] | None = None) -> int:
    settings = EncoderSettings.load(sys.argv[1:] if argv is None else argv)
    return run_stage_service(settings, "encoder",
                             lambda store: EncodeHandler(load_models(settings, COMPONENTS), store), add_servicers)


if __name__ == "__main__":
    sys.exit(main())
