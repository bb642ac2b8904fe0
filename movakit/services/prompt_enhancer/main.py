"""Prompt-enhancer service entry point: `python -m movakit.services.prompt_enhancer.main [--flag value ...]`.

Deployment flags/variables: settings.py (MOVA_PROMPT_ENHANCER_*); the enhancer backend: MOVA_ENHANCER_*
(movakit.stages.enhance.EnhancerSettings). No model checkpoint is loaded here. The listen port is reserved
before the heavy imports (see reserve_listen_port).
"""

from __future__ import annotations

import sys

from movakit.runtime.stage_settings import reserve_listen_port
from movakit.services.prompt_enhancer.settings import PromptEnhancerSettings


def main(argv: list[str] | None = None) -> int:
    settings = PromptEnhancerSettings.from_command_line(sys.argv[1:] if argv is None else argv)
    reservation = reserve_listen_port(settings.listen)
    from movakit.runtime.stage_service import run_stage_service
    from movakit.stages.enhance import EnhancerSettings, build_enhancer
    from movakit.services.prompt_enhancer.servicer import EnhanceHandler

    enhancer_settings = EnhancerSettings.from_env()
    return run_stage_service(settings, "prompt-enhancer",
                             lambda store: EnhanceHandler(build_enhancer(enhancer_settings), store, enhancer_settings),
                             reservation=reservation)


if __name__ == "__main__":
    sys.exit(main())
