"""Helpers shared by the prompt-enhancer tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import base64
import io
import threading
from dataclasses import dataclass, field

from PIL import Image


@dataclass
class Reply:
    """One scripted reply: HTTP status, JSON body (or raw bytes), and a delay before answering."""

    status: int = 200
    body: object = None
    delay_s: float = 0.0


@dataclass
class Recorded:
    path: str
    body: dict
    headers: dict[str, str]


@dataclass
class FakeOpenAI:
    """Replies are taken in order; the last one repeats. Every request is recorded."""

    base_url: str = ""
    replies: list[Reply] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.replies = list(replies)

    def next_reply(self) -> Reply:
        with self.lock:
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def chat_reply(content: str) -> Reply:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    return Reply(200, {"id": "x", "object": "chat.completion", "choices": [choice]})


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def image_reply(image: bytes) -> Reply:
    return Reply(200, {"created": 0, "data": [{"b64_json": base64.b64encode(image).decode("ascii")}]})
