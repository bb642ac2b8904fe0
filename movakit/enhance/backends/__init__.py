"""LLM backends of the prompt enhancer. Each returns raw text; the enhancer cleans and validates it."""

from movakit.enhance.backends.base import Answer, ChatBackend

__all__ = ["Answer", "ChatBackend"]
