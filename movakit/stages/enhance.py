"""Stage 0: prompt enhancement (docs/prompt-enhancement.md). The embedded pipeline and the prompt_enhancer service
call this.

`enhance(enhancer, req)` rewrites `req.prompt` into MOVA's caption style, or returns it untouched when
`req.enabled` is False; the result always carries the prompt actually used. The enhancer holds the configured
backend and its cache; build it once per process with `build_enhancer(EnhancerSettings.from_env())`.
"""

from __future__ import annotations

from movakit.enhance.enhancer import Enhancer, build_enhancer
from movakit.enhance.first_frame import FirstFrameError, generate_first_frame
from movakit.enhance.rules import PromptTooLongError
from movakit.enhance.settings import EnhancerSettings
from movakit.enhance.stage_types import EnhanceRequest, EnhanceResult

__all__ = [
    "EnhanceRequest",
    "EnhanceResult",
    "Enhancer",
    "EnhancerSettings",
    "FirstFrameError",
    "PromptTooLongError",
    "build_enhancer",
    "enhance",
    "generate_first_frame",
]


def enhance(enhancer: Enhancer, req: EnhanceRequest) -> EnhanceResult:
    """Rewrite one prompt. Raises ValueError naming the field for an empty prompt or unreadable image, and
    PromptTooLongError (a ValueError) when the quoted speech alone exceeds the 250-word limit."""
    return enhancer.run(req)
