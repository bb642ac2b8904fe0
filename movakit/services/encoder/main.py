"""Encoder service entry point: `python -m movakit.services.encoder.main [--flag value ...]` (flags: see settings.py).

The listen port is reserved before the heavy imports and the model load (see reserve_listen_port).
"""

from __future__ import annotations

import sys

from movakit.runtime.stage_settings import reserve_listen_port
from movakit.services.encoder.settings import EncoderSettings


def main(argv: list[str] | None = None) -> int:
    settings = EncoderSettings.from_command_line(sys.argv[1:] if argv is None else argv)
    reservation = reserve_listen_port(settings.listen)
    from movakit.runtime.stage_service import load_models, run_stage_service
    from movakit.services.encoder.servicer import COMPONENTS, EncodeHandler

    return run_stage_service(settings, "encoder",
                             lambda store: EncodeHandler(load_models(settings, COMPONENTS), store),
                             reservation=reservation)


if __name__ == "__main__":
    sys.exit(main())
