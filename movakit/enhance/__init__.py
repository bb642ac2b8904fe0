"""Prompt enhancement: rewrite a user's prompt into the caption style MOVA was trained on (docs/prompt-enhancement.md).

Entry points: `build_enhancer(EnhancerSettings.from_env())`, then `Enhancer.run(EnhanceRequest(...))`
(or `movakit.stages.enhance.enhance`); `generate_first_frame` for text-only jobs.
"""

from movakit.enhance.enhancer import Enhancer, build_enhancer
from movakit.enhance.first_frame import FirstFrameError, generate_first_frame
from movakit.enhance.http import BackendError
from movakit.enhance.rules import PromptTooLongError, RuleRewrite, rule_rewrite
from movakit.enhance.settings import EnhancerSettings, FirstFrameSettings
from movakit.enhance.stage_types import EnhanceRequest, EnhanceResult
from movakit.enhance.validate import Issue, Validation, clean_answer, validate_caption

__all__ = [
    "BackendError",
    "EnhanceRequest",
    "EnhanceResult",
    "Enhancer",
    "EnhancerSettings",
    "FirstFrameError",
    "FirstFrameSettings",
    "Issue",
    "PromptTooLongError",
    "RuleRewrite",
    "Validation",
    "build_enhancer",
    "clean_answer",
    "generate_first_frame",
    "rule_rewrite",
    "validate_caption",
]
