"""Bearer tokens of the job API: the tokens file the gateway reads, and the client side that sends a token.

The tokens file (gateway setting `tokens_file`) has one `<tenant> <sha256-hex of the token>` line per token;
blank lines and lines starting with # are ignored. It holds digests only, so reading it does not reveal a
token. A tenant may have several tokens (one per line). `mova stack up` writes one for the local user: the
token itself to <state_dir>/token and its digest to <state_dir>/tokens, both mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

import grpc

AUTH_HEADER = "authorization"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class TokensFileError(ValueError):
    """The tokens file is missing or has a malformed line (the message names the file and line)."""


def valid_tenant(name: str) -> bool:
    """Whether `name` is a tenant name a tokens file may hold (1..64 of [A-Za-z0-9._-], starting with a letter or
    digit)."""
    return _TENANT.fullmatch(name) is not None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Writes `text` to `path` created with mode 0600 (replacing any older file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


class TokenBook:
    """Token digest -> tenant, from a tokens file."""

    def __init__(self, tenants_by_digest: dict[str, str]) -> None:
        if not tenants_by_digest:
            raise TokensFileError("no token is defined")
        self._by_digest = dict(tenants_by_digest)

    @classmethod
    def load(cls, path: str | Path) -> TokenBook:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise TokensFileError(f"{path}: cannot read: {exc.strerror}") from None
        book: dict[str, str] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not _TENANT.fullmatch(parts[0]) or not _DIGEST.fullmatch(parts[1]):
                raise TokensFileError(f"{path}:{number}: expected '<tenant> <sha256 hex of the token>'")
            book[parts[1]] = parts[0]
        try:
            return cls(book)
        except TokensFileError as exc:
            raise TokensFileError(f"{path}: {exc}") from None

    def tenant(self, token: str) -> str | None:
        """The tenant of `token`, or None when the token is unknown."""
        digest = token_digest(token)
        for known, tenant in self._by_digest.items():  # constant-time comparison of every digest
            if hmac.compare_digest(known, digest):
                return tenant
        return None

    def authenticate(self, context: grpc.ServicerContext) -> str:
        """The caller's tenant from its `authorization: Bearer <token>` metadata; aborts the call with
        UNAUTHENTICATED when the header is missing, malformed or names an unknown token."""
        values = [v for k, v in context.invocation_metadata() if k == AUTH_HEADER]
        if not values:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"metadata {AUTH_HEADER}: 'Bearer <token>' is required")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"metadata {AUTH_HEADER}: expected 'Bearer <token>'")
        tenant = self.tenant(token.strip())
        if tenant is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"metadata {AUTH_HEADER}: unknown token")
        return tenant


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = (AUTH_HEADER, f"Bearer {token}")

    def _details(self, details):
        return details._replace(metadata=[*(details.metadata or []), self._header])

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # AdapterService.Upload
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """`channel` sending `authorization: Bearer <token>` on every call."""
    return grpc.intercept_channel(channel, _BearerInterceptor(token))
