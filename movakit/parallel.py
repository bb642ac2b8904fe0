"""Context (sequence) parallelism of the joint forward over torch.distributed (docs/parallel.md).

Inside `sequence_parallel(group)`, `dual_tower_forward` splits the video and audio token streams into one
contiguous chunk per rank (each stream zero-padded to a multiple of the world size), every attention runs on the
rank's chunk, and the outputs are gathered (padding removed) before unpatchify, so every rank ends with the full
prediction. Attention:
  - self-attention and the bridge's cross-modal attention (keys from a token stream): Ulysses. An all-to-all turns
    (B, L/N, H heads) into (B, L, H/N heads) for q, k and v; the padded keys are cut off; SDPA over the whole
    sequence for the rank's heads; an all-to-all turns the result back. When the head count does not divide by
    N, k and v are all-gathered instead and each rank attends with its own queries;
  - text cross-attention (keys from the text context, the same on every rank): each rank attends with its own
    queries, no communication.
Per-token tables (RoPE of both towers, the bridge's aligned cos/sin) are sliced with the tokens, so every token
keeps its global position. Padded tokens are never keys, and their outputs are dropped at the gather: the result
equals the single-process forward up to float32 rounding (tests/unit/models/test_context_parallel.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

Sdpa = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (B, heads, L, hd) each -> same as q


@dataclass
class SequenceParallel:
    """The split: the process group, and each token stream's true (unpadded) length as the current forward
    sharded it."""

    group: dist.ProcessGroup | None
    world: int
    rank: int
    lengths: dict[str, int] = field(default_factory=dict)

    # ---- tokens and tables -----------------------------------------------------------------------------------------
    def _chunk(self, length: int) -> int:
        return -(-length // self.world)

    def shard(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """(B, L, D) -> this rank's (B, ceil(L/N), D) chunk; records L for `stream`."""
        length = x.shape[1]
        self.lengths[stream] = length
        chunk = self._chunk(length)
        x = F.pad(x, (0, 0, 0, chunk * self.world - length))
        return x[:, self.rank * chunk:(self.rank + 1) * chunk].contiguous()

    def shard_table(self, table: torch.Tensor, stream: str) -> torch.Tensor:
        """A per-token table (L, ...) of a sharded stream -> this rank's rows (zeros for the padding)."""
        length = self.lengths[stream]
        chunk = self._chunk(length)
        pad = [0, 0] * (table.dim() - 1) + [0, chunk * self.world - length]
        return F.pad(table, pad)[self.rank * chunk:(self.rank + 1) * chunk]

    def gather(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """This rank's (B, l, D) -> the whole stream (B, L, D), padding removed, on every rank."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)[:, :self.lengths[stream]]

    # ---- attention -------------------------------------------------------------------------------------------------
    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, kv_stream: str | None,
                  sdpa: Sdpa) -> torch.Tensor:
        """q: this rank's queries (B, l, D); k, v: this rank's chunk of `kv_stream`, or the whole text context when
        kv_stream is None. Returns this rank's attention output (B, l, D)."""
        b, l, d = q.shape
        if kv_stream is None:
            return _merge_heads(sdpa(_split_heads(q, num_heads), _split_heads(k, num_heads),
                                     _split_heads(v, num_heads)))
        length = self.lengths[kv_stream]
        if num_heads % self.world:  # no even head split: gather the keys and values whole
            k, v = (self.gather(t, kv_stream) for t in (k, v))
            return _merge_heads(sdpa(_split_heads(q, num_heads), _split_heads(k, num_heads),
                                     _split_heads(v, num_heads)))
        qh, kh, vh = (self._seq_to_heads(t, num_heads) for t in (q, k, v))  # (B, H/N, N*l, hd)
        out = sdpa(qh, kh[:, :, :length], vh[:, :, :length])
        return self._heads_to_seq(out, l)

    def _seq_to_heads(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        """(B, l, H*hd) chunk of the sequence -> (B, H/N, N*l, hd): every chunk of the sequence, this rank's heads."""
        b, l, d = x.shape
        n, hd = self.world, d // num_heads
        send = x.reshape(b, l, n, num_heads // n, hd).permute(2, 0, 1, 3, 4).contiguous()  # (N, B, l, H/N, hd)
        received = torch.empty_like(send)
        dist.all_to_all_single(received, send, group=self.group)  # received[j]: rank j's chunk, our heads
        return received.permute(1, 3, 0, 2, 4).reshape(b, num_heads // n, n * l, hd)

    def _heads_to_seq(self, x: torch.Tensor, l: int) -> torch.Tensor:
        """(B, H/N, N*l, hd) -> (B, l, H*hd): this rank's chunk of the sequence, every head."""
        b, h_local, _, hd = x.shape
        n = self.world
        send = x.reshape(b, h_local, n, l, hd).permute(2, 0, 3, 1, 4).contiguous()  # (N, B, l, H/N, hd)
        received = torch.empty_like(send)
        dist.all_to_all_single(received, send, group=self.group)  # received[j]: our chunk, rank j's heads
        return received.permute(1, 2, 0, 3, 4).reshape(b, l, n * h_local * hd)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, l, d = x.shape
    return x.reshape(b, l, num_heads, d // num_heads).transpose(1, 2)  # (B, heads, L, hd)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, l, hd = x.shape
    return x.transpose(1, 2).reshape(b, l, h * hd)


_ACTIVE: ContextVar[SequenceParallel | None] = ContextVar("movakit_sequence_parallel", default=None)


def active_sequence_parallel() -> SequenceParallel | None:
    """The split of the forward running in this context, or None (single process, or a group of one)."""
    return _ACTIVE.get()


@contextmanager
def sequence_parallel(group: dist.ProcessGroup | None = None) -> Iterator[None]:
    """Run the joint forwards of the block split over `group` (default: the whole world); every rank of the group
    must run the same forwards on the same inputs. A group of one rank is the plain forward. The stream lengths
    are set by each forward as it shards its streams."""
    world = dist.get_world_size(group)
    if world == 1:
        yield
        return
    token = _ACTIVE.set(SequenceParallel(group, world, dist.get_rank(group)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
