"""Decoder service entry point: `python -m movakit.services.decoder.main [--flag value ...]` (flags: see settings.py).

The listen port is reserved before the heavy imports and the model load (see reserve_listen_port).
"""

from __future__ import annotations

import sys

from movakit.runtime.stage_settings import reserve_listen_port
from movakit.services.decoder.settings import DecoderSettings


def main(argv: list[str] | None = None) -> int:
    settings = DecoderSettings.from_command_line(sys.argv[1:] if argv is None else argv)
    reservation = reserve_listen_port(settings.listen)
    from movakit.runtime.stage_service import load_models, run_stage_service
    from movakit.services.decoder.servicer import COMPONENTS, DecodeHandler

    return run_stage_service(settings, "decoder",
                             lambda store: DecodeHandler(load_models(settings, COMPONENTS), store),
                             reservation=reservation)


if __name__ == "__main__":
    sys.exit(main())
